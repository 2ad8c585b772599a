//! Splitting independent work over threads, without `unsafe` and without shared mutable state.

use std::ops::Range;

/// Runs `f` on `0..n` cut into at most `threads` contiguous ranges, in parallel (scoped threads),
/// and returns the results in order. With one thread (or one item) it runs inline.
pub(crate) fn split<R: Send>(n: usize, threads: usize, f: impl Fn(Range<usize>) -> R + Sync) -> Vec<R> {
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return vec![f(0..n)];
    }
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> =
            (0..n).step_by(per).map(|start| s.spawn(move || f(start..(start + per).min(n)))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_covers_every_index_once_in_order() {
        for threads in 1..5 {
            for n in 0..10 {
                let parts = super::split(n, threads, |r| r.collect::<Vec<_>>());
                assert_eq!(parts.concat(), (0..n).collect::<Vec<_>>());
            }
        }
    }
}
