//! Running a sequence of kernel calls on several threads: a persistent worker pool.
//!
//! A [`Session`](super::Session) keeps a [`Pool`] of `threads - 1` workers, created on the
//! first run with that thread count; between runs they spin for [`IDLE_SPIN`] (runs of a serving
//! or benchmark loop follow each other within microseconds, and a parked worker woken by the next
//! run joins its first kernel tens of microseconds late, more under a hypervisor), then park.
//! For a run, the caller publishes the list of calls and wakes the workers; then every thread
//! (the caller included) walks the same list: for each call, the threads claim chunks of its work
//! items from a shared counter (guided: each a fraction of what is left) until none are left, then
//! meet at a barrier before the next call, because a call may read what the previous one wrote.
//! Items of one call write disjoint outputs (the kernel ABI guarantees it), so the chunks never
//! race, and claiming them dynamically keeps the threads balanced when one of them is
//! descheduled.
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

/// A raw arena pointer shared by the threads of one run.
#[derive(Clone, Copy)]
pub struct SharedPtr(pub *mut f32);

/// One kernel call: the kernel, its argument pointers and its number of work items.
pub struct Call<'k> {
    pub kernel: &'k CompiledKernel,
    pub inputs: Vec<*const f32>,
    pub output: *mut f32,
    pub weights: Vec<*const f32>,
    pub items: u64,
    pub batch: usize,
    /// The next unclaimed item.
    pub next: AtomicU64,
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
            run_calls(calls, 1, buf, None, times);
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
        run_calls(calls, threads, buf, Some(&self.shared.barrier), times);
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

fn worker(shared: &Shared, _index: usize) {
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
        run_calls(calls, shared.threads, &mut buf, Some(&shared.barrier), None);
    }
}

/// Claims the next chunk of a call's `items` from its counter `next`, or `None` when all are
/// claimed. Guided: a chunk is half of a thread's even share of the items still unclaimed (few
/// claims while much is left, single items at the end, so the threads finish within about one item
/// of each other, and a late thread still finds work), rounded up to whole runs of `run` items that
/// share set-up work (chunks then start and end on run boundaries; a run longer than a thread's
/// even share is cut to that share). Once less than a run per thread is left, the rest goes item
/// by item, so the threads finish together: the last runs' set-up is then done by each thread
/// that takes part of them, once (a thread's chunks of one call share it through the call's
/// set-up memo, see `KernelArgs::setup`). Whole runs to the end split a Winograd layer of 4
/// blocks of 2, 2, 2 and 1 tile rows 4 to 3 between two threads at batch 1.
fn claim(next: &AtomicU64, items: u64, threads: usize, run: u64) -> Option<(u64, u64)> {
    let run = run.min(items.div_ceil(threads as u64)).max(1);
    let mut begin = next.load(Ordering::Relaxed);
    loop {
        if begin >= items {
            return None;
        }
        let left = items - begin;
        let run = if left < threads as u64 * run { 1 } else { run };
        let end = (begin + left.div_ceil(2 * threads as u64)).next_multiple_of(run).min(items);
        match next.compare_exchange_weak(begin, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some((begin, end)),
            Err(now) => begin = now,
        }
    }
}

/// Claims and runs chunks of every call's items, meeting at the barrier after each call.
fn run_calls(
    calls: &[Call],
    threads: usize,
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
        while let Some((begin, end)) = claim(&call.next, call.items, threads, run) {
            let args = KernelArgs {
                inputs: &call.inputs,
                output: call.output,
                weights: &call.weights,
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

    fn claims(items: u64, threads: usize, run: u64) -> Vec<(u64, u64)> {
        let next = AtomicU64::new(0);
        std::iter::from_fn(|| claim(&next, items, threads, run)).collect()
    }

    #[test]
    fn claims_cover_every_item_once_in_shrinking_chunks() {
        for (items, threads) in [(1, 2), (11, 2), (21, 2), (256, 2), (1000, 8), (5, 1)] {
            let c = claims(items, threads, 1);
            let mut at = 0;
            for &(b, e) in &c {
                assert_eq!(b, at, "{items} items on {threads}: contiguous");
                assert!(e > b);
                at = e;
            }
            assert_eq!(at, items);
            let sizes: Vec<u64> = c.iter().map(|(b, e)| e - b).collect();
            assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{items} on {threads}: {sizes:?}");
            assert_eq!(*sizes.last().unwrap(), 1, "{items} on {threads}: ends with single items");
        }
        // 11 items on two threads: 3, 2, 2, 1, 1, 1, 1.
        assert_eq!(claims(11, 2, 1).iter().map(|(b, e)| e - b).collect::<Vec<_>>(), [3, 2, 2, 1, 1, 1, 1]);
    }

    #[test]
    fn claims_keep_runs_of_items_sharing_set_up_together_until_the_last_ones() {
        // Row blocks of 4 chunks: whole blocks while two or more are left, then single chunks.
        for c in claims(40, 2, 4) {
            if c.0 < 36 {
                assert_eq!((c.0 % 4, c.1 % 4), (0, 0), "{c:?}");
            } else {
                assert_eq!(c.1 - c.0, 1, "{c:?}");
            }
        }
        // 4 blocks of 3 chunks on two threads: whole blocks up to the last, whose chunks are
        // claimed one by one.
        let c = claims(12, 2, 3);
        assert!(c.iter().filter(|c| c.1 <= 9).all(|c| c.0 % 3 == 0 && c.1 % 3 == 0), "{c:?}");
        assert_eq!(c.iter().filter(|c| c.0 >= 9).map(|c| c.1 - c.0).collect::<Vec<_>>(), [1, 1, 1]);
        // A run longer than a thread's share is cut to the share; the last share goes item by item.
        assert_eq!(claims(6, 2, 8).iter().map(|(b, e)| e - b).collect::<Vec<_>>(), [3, 1, 1, 1]);
    }
}
