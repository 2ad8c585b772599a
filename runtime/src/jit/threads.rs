//! Running a sequence of kernel calls on several threads.
//!
//! Worker threads (scoped, spawned once per run) and the caller walk the same list of calls; for each
//! call, thread `t` of `T` runs its contiguous share of the work items, then all meet at a barrier
//! before the next call, because a call may read what the previous one wrote. Items of one call
//! write disjoint outputs (the kernel ABI guarantees it), so the shares never race.
//!
//! This module is one of the runtime's `unsafe` boundaries: it calls JIT-compiled code.

#![allow(unsafe_code)]

use netc_compiler::codegen::{CompiledKernel, KernelArgs};
use std::sync::Barrier;

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
}

// SAFETY: a `Call` only carries pointers into the arena and the weight buffers, which outlive the
// run, and kernels only ever write disjoint items of their output from different threads (see the
// module documentation); sending and sharing the pointers is therefore sound.
unsafe impl Send for Call<'_> {}
unsafe impl Sync for Call<'_> {}

/// The share of `0..items` of thread `t` of `threads`.
fn share(items: u64, t: u64, threads: u64) -> (u64, u64) {
    (items * t / threads, items * (t + 1) / threads)
}

fn run_share(
    calls: &[Call],
    t: usize,
    threads: usize,
    scratch: &mut [f32],
    barrier: Option<&Barrier>,
    mut times: Option<&mut Vec<f64>>,
) {
    for call in calls {
        let start = times.is_some().then(std::time::Instant::now);
        let (begin, end) = share(call.items, t as u64, threads as u64);
        if begin < end {
            let args = KernelArgs {
                inputs: &call.inputs,
                output: call.output,
                weights: &call.weights,
                scratch: scratch.as_mut_ptr(),
                batch: call.batch,
            };
            // SAFETY: the executor built the pointers from the memory plan for this batch size
            // (every value lies inside the arena), the weight buffers have the lengths the kernel's
            // layout asks for (checked in `Executable::new`), `scratch` is this thread's own buffer
            // of the largest size any kernel needs, and `begin..end` is this thread's disjoint share
            // of the call's items.
            unsafe { call.kernel.call(&args, begin, end) };
        }
        if let Some(b) = barrier {
            b.wait();
        }
        if let (Some(times), Some(start)) = (times.as_deref_mut(), start) {
            times.push(start.elapsed().as_secs_f64());
        }
    }
}

/// Runs `calls` in order on `threads` threads (the caller's included); with `times`, records the
/// wall time of each call (barrier included) as seen by the calling thread.
pub fn run_all(calls: &[Call], threads: usize, scratch: usize, times: Option<&mut Vec<f64>>) {
    let threads = threads.max(1);
    if threads == 1 {
        let mut buf = vec![0f32; scratch];
        run_share(calls, 0, 1, &mut buf, None, times);
        return;
    }
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 1..threads {
            let barrier = &barrier;
            s.spawn(move || {
                let mut buf = vec![0f32; scratch];
                run_share(calls, t, threads, &mut buf, Some(barrier), None);
            });
        }
        let mut buf = vec![0f32; scratch];
        run_share(calls, 0, threads, &mut buf, Some(&barrier), times);
    });
}
