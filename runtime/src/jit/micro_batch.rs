//! Micro-batching: a batch runs as consecutive micro-batches of `m` samples when the whole batch's
//! activations would spill out of the last-level cache between kernels and the weights are cheap
//! to read again.
//!
//! Every kernel runs its layer on all samples of a call before the next kernel starts. At batch 8,
//! MobileNetV2's 112x112 layers hold 5-6 MB of activations per sample (a 16->96 expansion reads
//! 0.8 MB and writes 4.8 MB), 40-48 MB for the batch: more than the 32 MB L3 of the Zen 3 host
//! measured, so each of those layers writes its output to memory and the next one reads it back.
//! Two samples at a time (12 MB) stay in L3, for the price of reading the weights (14 MB) once per
//! micro-batch instead of once per batch. Measured on that host (AVX2, `netc bench --batch 8`,
//! 4 interleaved rounds, time relative to the whole batch): MobileNetV2 m = 2 0.82 (one thread),
//! 0.87 (two), m = 1 0.85 / 0.95, m = 4 0.91 / 0.99; EfficientNet-B0 m = 2 0.96 / 0.88. Models
//! whose weights are large for their activation traffic lose instead (ResNet-50 m = 2 1.2 / 1.1,
//! m = 4 1.02 / 1.08; ResNet-18 m = 4 1.02 / 1.11), and so do those whose activations fit anyway.
//!
//! The choice is a cost model in FMA-peak flop equivalents (see [`choose`]), not a measurement at
//! run time, so it is deterministic: a batch of `n` always runs the same way on the same host.
//! Results do not depend on it: every kernel computes each sample on its own (work items never mix
//! samples, every output is the same k-ascending sum), so a micro-batch's outputs are bit-for-bit
//! the whole batch's.

use std::num::NonZeroUsize;

/// How a session splits a batch into micro-batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MicroBatch {
    /// As the cost model of [`choose`] says for the model, the batch size and the host's cache.
    #[default]
    Auto,
    /// The whole batch in one pass.
    Whole,
    /// At most this many samples per pass.
    Samples(NonZeroUsize),
}

impl MicroBatch {
    /// Parses `auto`, `whole` or a positive sample count.
    pub fn parse(text: &str) -> Result<MicroBatch, String> {
        match text {
            "auto" => Ok(MicroBatch::Auto),
            "whole" => Ok(MicroBatch::Whole),
            _ => text
                .parse::<NonZeroUsize>()
                .map(MicroBatch::Samples)
                .map_err(|_| format!("expected auto, whole or a positive number of samples, got `{text}`")),
        }
    }
}

/// What one kernel step moves and computes per sample, for the cost model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCost {
    /// Floating-point operations per sample (two per multiply-add).
    pub flops: f64,
    /// Bytes of the step's inputs and output per sample.
    pub activation_bytes: f64,
    /// Bytes of the step's weight buffers (read once per pass).
    pub weight_bytes: f64,
}

/// Flops one core can do in the time it reads one byte from memory: the FMA peak over a core's
/// share of memory bandwidth (Zen 3 AVX2: ~95 GFLOP/s against ~20 GB/s).
const FLOPS_PER_MEMORY_BYTE: f64 = 5.0;

/// A step's activations for the whole micro-batch stay in the last-level cache for the next step
/// when they take at most this share of it (the rest holds weights and the other threads' data).
const CACHE_SHARE_FOR_ACTIVATIONS: f64 = 0.5;

/// Micro-batches are chosen only when the model predicts at least this much less time than the
/// whole batch: below that, its constants are not precise enough to tell.
const MARGIN: f64 = 0.03;

/// The micro-batch size for a batch of `n` samples of the model whose steps cost `steps`, on a
/// host whose last-level cache holds `cache_bytes`.
///
/// The model (in flop equivalents, per pass of `m` samples summed over the `ceil(n / m)` passes):
/// - compute: `n x` the flops of every step (the same for every `m`);
/// - activations: a step whose `m` samples' inputs and outputs exceed
///   [`CACHE_SHARE_FOR_ACTIVATIONS`] of the cache moves them through memory:
///   `n x activation_bytes x` [`FLOPS_PER_MEMORY_BYTE`];
/// - weights: every pass reads every step's weights from memory once:
///   `ceil(n / m) x weight_bytes x` [`FLOPS_PER_MEMORY_BYTE`].
///
/// The whole batch runs in one pass unless some `m` is predicted at least [`MARGIN`] cheaper; then
/// the cheapest `m` (the largest of equals). A batch of one is one pass.
pub fn choose(steps: &[StepCost], n: usize, cache_bytes: usize) -> usize {
    if n <= 1 {
        return n.max(1);
    }
    let budget = cache_bytes as f64 * CACHE_SHARE_FOR_ACTIVATIONS;
    let compute: f64 = steps.iter().map(|s| s.flops).sum::<f64>() * n as f64;
    let weights: f64 = steps.iter().map(|s| s.weight_bytes).sum();
    let cost = |m: usize| {
        let spilled: f64 =
            steps.iter().filter(|s| s.activation_bytes * m as f64 > budget).map(|s| s.activation_bytes).sum();
        let passes = n.div_ceil(m) as f64;
        compute + FLOPS_PER_MEMORY_BYTE * (n as f64 * spilled + passes * weights)
    };
    let whole = cost(n);
    let (best, best_cost) =
        (1..n).map(|m| (m, cost(m))).fold((n, whole), |b, c| if c.1 < b.1 { c } else { b });
    if best_cost <= whole * (1.0 - MARGIN) {
        best
    } else {
        n
    }
}

/// The last-level cache of the CPU the process runs on (Linux sysfs, CPU 0's highest cache
/// level), or 8 MiB where that is not known. Read once.
pub fn last_level_cache_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| read_last_level_cache().unwrap_or(8 << 20))
}

fn read_last_level_cache() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    let mut best: Option<(u32, usize)> = None;
    for entry in dir.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let (Some(level), Some(size)) = (read("level"), read("size")) else { continue };
        let Ok(level) = level.trim().parse::<u32>() else { continue };
        let Some(bytes) = parse_cache_size(size.trim()) else { continue };
        if best.is_none_or(|(l, b)| level > l || (level == l && bytes > b)) {
            best = Some((level, bytes));
        }
    }
    best.map(|(_, bytes)| bytes)
}

/// `32768K`, `1M` or a plain byte count, as sysfs writes cache sizes.
fn parse_cache_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 1 << 10),
        b'M' | b'm' => (&text[..text.len() - 1], 1 << 20),
        b'G' | b'g' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1024.0 * 1024.0;
    const L3: usize = 32 << 20;

    /// A MobileNetV2-like model: a few early steps with 5-6 MB of activations per sample, many
    /// small ones, 14 MB of weights, 0.6 GFLOP per sample.
    fn inverted_residuals() -> Vec<StepCost> {
        let mut steps =
            vec![StepCost { flops: 0.04e9, activation_bytes: 5.6 * MB, weight_bytes: 0.01 * MB }; 2];
        steps.extend(vec![
            StepCost { flops: 0.01e9, activation_bytes: 0.5 * MB, weight_bytes: 0.27 * MB };
            52
        ]);
        steps
    }

    /// A ResNet-50-like model: 8 GFLOP per sample, 100 MB of weights, early steps of ~4 MB.
    fn bottlenecks() -> Vec<StepCost> {
        let mut steps =
            vec![StepCost { flops: 0.2e9, activation_bytes: 4.0 * MB, weight_bytes: 0.1 * MB }; 8];
        steps
            .extend(vec![StepCost { flops: 0.17e9, activation_bytes: 1.0 * MB, weight_bytes: 2.1 * MB }; 45]);
        steps
    }

    #[test]
    fn activations_that_spill_at_the_whole_batch_run_in_micro_batches_that_fit() {
        // 2 x 5.6 MB fits half the L3, 3 x does not; 8 x spills.
        assert_eq!(choose(&inverted_residuals(), 8, L3), 2);
        assert_eq!(choose(&inverted_residuals(), 32, L3), 2);
    }

    #[test]
    fn heavy_weights_and_compute_keep_the_whole_batch() {
        assert_eq!(choose(&bottlenecks(), 8, L3), 8);
    }

    #[test]
    fn a_batch_whose_activations_fit_is_one_pass() {
        assert_eq!(choose(&inverted_residuals(), 2, L3), 2);
        assert_eq!(choose(&inverted_residuals(), 8, 256 << 20), 8);
    }

    #[test]
    fn a_batch_of_one_or_none_is_one_pass() {
        assert_eq!(choose(&inverted_residuals(), 1, L3), 1);
        assert_eq!(choose(&inverted_residuals(), 0, L3), 1);
        assert_eq!(choose(&[], 8, L3), 8);
    }

    #[test]
    fn micro_batch_settings_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(MicroBatch::parse("auto"), Ok(MicroBatch::Auto));
        assert_eq!(MicroBatch::parse("whole"), Ok(MicroBatch::Whole));
        assert_eq!(MicroBatch::parse("3"), Ok(MicroBatch::Samples(NonZeroUsize::new(3).unwrap())));
        for bad in ["0", "-1", "two", ""] {
            let e = MicroBatch::parse(bad).unwrap_err();
            assert!(e.contains("auto, whole or a positive number"), "{e}");
        }
    }

    #[test]
    fn cache_sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cache_size("32768K"), Some(32 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size("lots"), None);
    }
}
