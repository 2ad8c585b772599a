//! Running a sequence of kernel calls on several threads: a persistent worker pool.
//!
//! A [`Session`](super::Session) keeps a [`Pool`] of `threads - 1` workers, created on the
//! first run with that thread count; between runs they spin for [`IDLE_SPIN`] (runs of a serving
//! or benchmark loop follow each other within microseconds, and a parked worker woken by the next
//! run joins its first kernel tens of microseconds late, more under a hypervisor), then park.
//! For a run, the caller publishes the list of calls and wakes the workers; then every thread
//! (the caller included) walks the same list: for each call, the threads claim chunks of its work
//! items ([`Claims`]: each thread first from its own contiguous share, guided, then from the
//! others') until none are left, then meet at a barrier before the next call, because a call may
//! read what the previous one wrote. Items of one call write disjoint outputs (the kernel ABI
//! guarantees it), so the chunks never race, and claiming them dynamically keeps the threads
//! balanced when one of them is descheduled.
//!
//! The barrier spins briefly (kernels are tens of microseconds to milliseconds apart, and waking a
//! parked thread costs tens of microseconds, far more under a hypervisor) and then parks on a
//! condition variable, so idle or oversubscribed threads do not burn a core.
//!
//! This module is one of the runtime's `unsafe` boundaries: it calls JIT-compiled code, and it
//! hands the workers a pointer to the caller's call list, valid until the run's last barrier.

#![allow(unsafe_code)]

use netc_compiler::codegen::{CompiledKernel, KernelArgs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One kernel call: the kernel, its argument pointers and its work items (the pointer lists and
/// claim counters borrowed from flat buffers the executor builds once per run).
pub struct Call<'k> {
    pub kernel: &'k CompiledKernel,
    pub inputs: &'k [*const f32],
    pub output: *mut f32,
    pub weights: &'k [*const f32],
    pub batch: usize,
    /// Who has claimed which items so far.
    pub claims: Claims<'k>,
}

// SAFETY: a `Call` only carries pointers into the arena and the weight buffers, which outlive the
// run, and kernels only ever write disjoint items of their output from different threads (see the
// module documentation); sending and sharing the pointers is therefore sound.
unsafe impl Send for Call<'_> {}
unsafe impl Sync for Call<'_> {}

/// How long a thread spins at a barrier before parking.
const SPIN: Duration = Duration::from_micros(200);

/// How long a worker spins after a run for the next one before parking (as ONNX Runtime's
/// intra-op threads do by default): at most this much CPU time per run is spent waiting.
const IDLE_SPIN: Duration = Duration::from_millis(1);

/// Spins while `waiting()` holds, for at most about `limit` (the clock is read every 64 rounds).
fn spin_while(waiting: impl Fn() -> bool, limit: Duration) {
    let start = Instant::now();
    let mut spins = 0u32;
    while waiting() {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 && start.elapsed() > limit {
            break;
        }
    }
}

/// A reusable barrier for `total` threads that spins for [`SPIN`] before parking.
struct Barrier {
    total: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Barrier {
    fn new(total: usize) -> Barrier {
        Barrier {
            total,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    fn wait(&self) {
        let generation = self.generation.load(Ordering::SeqCst);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.total {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::SeqCst);
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.wake.notify_all();
            }
            return;
        }
        spin_while(|| self.generation.load(Ordering::Acquire) == generation, SPIN);
        // Park. The waiter's increment of `sleepers` and the releaser's bump of `generation` are
        // both SeqCst, and each then reads the other's variable: either the releaser sees a
        // sleeper and notifies (under the lock, so not before the waiter sleeps), or the waiter
        // sees the new generation and does not sleep.
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while self.generation.load(Ordering::SeqCst) == generation {
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The calls of one run, as the workers see them.
#[derive(Clone, Copy)]
struct Job {
    calls: *const Call<'static>,
    len: usize,
    scratch: usize,
}

// SAFETY: the pointer is only dereferenced by workers between the caller's publication of the job
// and the run's last barrier, while the caller keeps the calls alive (see `Pool::run`).
unsafe impl Send for Job {}

struct State {
    generation: u64,
    job: Option<Job>,
    shutdown: bool,
}

struct Shared {
    threads: usize,
    /// `State::generation` of the last published run (or shutdown), readable without the lock by
    /// spinning workers.
    published: AtomicU64,
    state: Mutex<State>,
    wake: Condvar,
    barrier: Barrier,
}

/// `threads - 1` persistent workers; the caller is the last thread of every run.
pub struct Pool {
    shared: Arc<Shared>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

/// Why a pool could not be started.
#[derive(Debug, thiserror::Error)]
/// The OS error is part of the message, not a `source()`: printed once by chain printers.
#[error("cannot start worker thread {index} of {threads}: {error}")]
pub struct PoolError {
    pub index: usize,
    pub threads: usize,
    pub error: std::io::Error,
}

impl Pool {
    /// Starts `threads - 1` workers (none for one thread).
    pub fn new(threads: usize) -> Result<Pool, PoolError> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            threads,
            published: AtomicU64::new(0),
            state: Mutex::new(State { generation: 0, job: None, shutdown: false }),
            wake: Condvar::new(),
            barrier: Barrier::new(threads),
        });
        let mut pool = Pool { shared, handles: Vec::with_capacity(threads - 1) };
        for t in 1..threads {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name(format!("netc-worker-{t}"))
                .spawn(move || worker(&shared, t))
                .map_err(|error| PoolError { index: t, threads, error })?;
            pool.handles.push(handle);
        }
        Ok(pool)
    }

    /// Threads of a run, the caller's included.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Runs `calls` in order on every thread of the pool; with `times`, records the wall time of
    /// each call as seen by the calling thread: from the end of the previous call (its barrier) to
    /// the end of this one's. Returns when every thread has finished the last call.
    /// `buf` is the caller's scratch, at least `scratch` floats; the workers keep their own.
    pub fn run(&self, calls: &[Call], buf: &mut [f32], scratch: usize, times: Option<&mut Vec<f64>>) {
        let threads = self.shared.threads;
        debug_assert!(buf.len() >= scratch);
        if threads == 1 {
            run_calls(calls, 0, buf, None, times);
            return;
        }
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.generation += 1;
            // The workers only read the calls through this pointer until the last barrier below,
            // which the caller reaches before `calls` can go out of scope.
            state.job = Some(Job { calls: calls.as_ptr().cast(), len: calls.len(), scratch });
            self.shared.published.store(state.generation, Ordering::Release);
            self.shared.wake.notify_all();
        }
        run_calls(calls, 0, buf, Some(&self.shared.barrier), times);
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.job = None;
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.shutdown = true;
            state.generation += 1;
            self.shared.published.store(state.generation, Ordering::Release);
            self.shared.wake.notify_all();
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0;
    let mut buf: Vec<f32> = Vec::new();
    loop {
        // Spin for the next run a while (only a hint: the locked loop below decides).
        spin_while(|| shared.published.load(Ordering::Acquire) == seen, IDLE_SPIN);
        let job = {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if state.shutdown {
                    return;
                }
                if state.generation != seen {
                    if let Some(job) = state.job {
                        seen = state.generation;
                        break job;
                    }
                }
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        if buf.len() < job.scratch {
            buf.resize(job.scratch, 0.0);
        }
        // SAFETY: the caller published `len` calls at `calls` and keeps them alive until every
        // thread has passed the barrier after the last call (see `Pool::run`).
        let calls = unsafe { std::slice::from_raw_parts(job.calls, job.len) };
        run_calls(calls, index, &mut buf, Some(&shared.barrier), None);
    }
}

/// A call's work items split into one contiguous home share per thread (thread `t` owns items
/// `items * t / threads .. items * (t + 1) / threads`), each with its own counter of the next
/// unclaimed item. A thread claims chunks of its own share first, then, when that is done, of the
/// others' (the next thread's first), from the same counters, so a late or descheduled thread's
/// share is still finished by whoever is free.
///
/// Why shares: consecutive kernels mostly split their work the same way (the channel blocks of a
/// depthwise layer and the channel panels of a chanvec expansion before it, samples at batch 8),
/// so a thread more often reads what it wrote itself a kernel earlier, from its own core's caches,
/// than when one shared counter dealt the items out in interleaved chunks (two threads, batch 1:
/// MobileNetV2, EfficientNet-B0 and ResNet-50 0.99x).
pub struct Claims<'c> {
    next: &'c [Counter],
    items: u64,
}

/// A share's counter of the next unclaimed item, alone in its cache line: the threads claim from
/// their own shares at the same time, and counters sharing a line would bounce it between their
/// cores at every claim.
#[repr(align(64))]
#[derive(Default)]
pub struct Counter(AtomicU64);

impl<'c> Claims<'c> {
    /// `items` work items shared by as many threads as `counters` has (at least one), which are
    /// set to the start of each share.
    pub fn new(items: u64, counters: &'c [Counter]) -> Claims<'c> {
        let threads = counters.len().max(1) as u64;
        for (t, next) in counters.iter().enumerate() {
            next.0.store(items * t as u64 / threads, Ordering::Relaxed);
        }
        Claims { next: counters, items }
    }

    /// The end of thread `t`'s share.
    fn end(&self, t: usize) -> u64 {
        self.items * (t as u64 + 1) / self.next.len() as u64
    }

    /// The next chunk for thread `me` (its own share first, then the others' in turn), or `None`
    /// when every item is claimed. `run`: items that share set-up work (see [`claim_in`]).
    pub fn claim(&self, me: usize, run: u64) -> Option<(u64, u64)> {
        let threads = self.next.len();
        (0..threads).map(|k| (me + k) % threads).find_map(|t| claim_in(&self.next[t].0, self.end(t), run))
    }
}

/// Claims the next chunk of a share ending at `end` from its counter `next`, or `None` when it is
/// all claimed. Guided: half of what is left of the share (few claims while much is left, single
/// items at the end, so a thread that steals from the share finishes within about one item of its
/// owner), rounded up to whole runs of `run` items that share set-up work (chunks then end on run
/// boundaries) while more than a run is left; then halves down to single items, so the threads
/// finish together: a run split between threads is set up by each of them once (a thread's chunks
/// of one call share it through the call's set-up memo, see `KernelArgs::setup`).
fn claim_in(next: &AtomicU64, end: u64, run: u64) -> Option<(u64, u64)> {
    let mut begin = next.load(Ordering::Relaxed);
    loop {
        if begin >= end {
            return None;
        }
        let left = end - begin;
        let run = if left <= run { 1 } else { run.max(1) };
        let stop = (begin + left.div_ceil(2)).next_multiple_of(run).min(end);
        match next.compare_exchange_weak(begin, stop, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some((begin, stop)),
            Err(now) => begin = now,
        }
    }
}

/// Claims and runs chunks of every call's items, meeting at the barrier after each call.
fn run_calls(
    calls: &[Call],
    me: usize,
    scratch: &mut [f32],
    barrier: Option<&Barrier>,
    mut times: Option<&mut Vec<f64>>,
) {
    // Each call's time runs from the end of the previous call (its barrier) to the end of its own,
    // on one timeline: a thread descheduled between calls cannot lose the time another thread
    // spends on the next call's items (a profile on a busy machine once showed 0.01 ms for a
    // multi-millisecond kernel the other thread had run alone).
    let mut mark = times.is_some().then(Instant::now);
    for call in calls {
        let run = call.kernel.items_sharing_setup();
        // This thread's scratch holds nothing of this call yet; its chunks share what it sets up.
        let mut setup = -1i64;
        while let Some((begin, end)) = call.claims.claim(me, run) {
            let args = KernelArgs {
                inputs: call.inputs,
                output: call.output,
                weights: call.weights,
                scratch: scratch.as_mut_ptr(),
                batch: call.batch,
                setup: &mut setup,
            };
            // SAFETY: the executor built the pointers from the memory plan for this batch size
            // (every value lies inside the arena), the weight buffers have the lengths the kernel's
            // layout asks for (checked in `Executable::new`), `scratch` is this thread's own buffer
            // of the largest size any kernel needs, and `begin..end` was claimed by this thread
            // alone from the call's counter; `setup` is this thread's memo for this call only.
            unsafe { call.kernel.call(&args, begin, end) };
        }
        if let Some(b) = barrier {
            b.wait();
        }
        if let (Some(times), Some(mark)) = (times.as_deref_mut(), mark.as_mut()) {
            let now = Instant::now();
            times.push(now.duration_since(*mark).as_secs_f64());
            *mark = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(threads: usize) -> Vec<Counter> {
        (0..threads).map(|_| Counter::default()).collect()
    }

    /// Every claim of one thread that finds the others never arrive (it ends up claiming all).
    fn claims(items: u64, threads: usize, run: u64) -> Vec<(u64, u64)> {
        let counters = counters(threads);
        let c = Claims::new(items, &counters);
        std::iter::from_fn(|| c.claim(0, run)).collect()
    }

    /// Every item is claimed exactly once; a thread claims its own share first, from its start,
    /// in shrinking chunks.
    #[test]
    fn threads_claim_their_own_share_first_and_every_item_once() {
        for (items, threads) in [(1, 2), (11, 2), (21, 2), (256, 2), (1000, 8), (5, 1), (3, 4)] {
            let counters = counters(threads as usize);
            let c = Claims::new(items, &counters);
            let mut seen = vec![0u32; items as usize];
            let mut mine: Vec<Vec<(u64, u64)>> = vec![Vec::new(); threads as usize];
            // Round-robin: one claim per thread in turn.
            let mut active = true;
            while active {
                active = false;
                for (t, chunks) in mine.iter_mut().enumerate() {
                    if let Some((b, e)) = c.claim(t, 1) {
                        active = true;
                        assert!(e > b);
                        (b..e).for_each(|i| seen[i as usize] += 1);
                        chunks.push((b, e));
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{items} on {threads}: {seen:?}");
            for (t, chunks) in mine.iter().enumerate() {
                let (lo, hi) = (items * t as u64 / threads, items * (t as u64 + 1) / threads);
                // Its own share from its start, in shrinking chunks; then, if it finished first,
                // parts of the others'.
                let own: Vec<u64> =
                    chunks.iter().take_while(|&&(b, e)| b >= lo && e <= hi).map(|(b, e)| e - b).collect();
                // (Equal shares claimed in turn finish together: nobody needs the others'.)
                if items % threads == 0 {
                    assert_eq!(chunks[0].0, lo, "{items} on {threads}: thread {t} {chunks:?}");
                    assert_eq!(
                        own.iter().sum::<u64>(),
                        hi - lo,
                        "{items} on {threads}: thread {t} {chunks:?}"
                    );
                }
                assert!(own.windows(2).all(|w| w[1] <= w[0]), "{items} on {threads}: {own:?}");
            }
        }
        // 22 items on two threads: 11 each, claimed 6, 3, 1, 1.
        let two = counters(2);
        let c = Claims::new(22, &two);
        let sizes: Vec<u64> = std::iter::from_fn(|| c.claim(1, 1)).take(4).map(|(b, e)| e - b).collect();
        assert_eq!(sizes, [6, 3, 1, 1]);
    }

    /// A thread that finds its share done takes the rest of the others' shares: a descheduled
    /// thread's work is still done.
    #[test]
    fn a_thread_alone_claims_every_share() {
        for (items, threads, run) in [(40, 2, 4), (7, 3, 1), (100, 8, 3)] {
            let c = claims(items, threads, run);
            let mut covered: Vec<u64> = c.iter().flat_map(|&(b, e)| b..e).collect();
            covered.sort();
            assert_eq!(covered, (0..items).collect::<Vec<_>>(), "{items} on {threads}");
        }
    }

    #[test]
    fn claims_keep_runs_of_items_sharing_set_up_together_until_the_last_ones() {
        let two = counters(2);
        // Row blocks of 4 chunks, 20 items per share: whole blocks while more than a block of
        // the share is left, then halves down to single chunks.
        let c = Claims::new(40, &two);
        let own: Vec<(u64, u64)> = std::iter::from_fn(|| c.claim(1, 4)).take_while(|c| c.0 >= 20).collect();
        assert_eq!(own, [(20, 32), (32, 36), (36, 38), (38, 39), (39, 40)]);
        // A share starting inside a run (7 blocks of 2 chunks on two threads: 7 items each)
        // ends its first chunk on a run boundary.
        let c = Claims::new(14, &two);
        assert_eq!(c.claim(1, 2), Some((7, 12)));
    }
}
