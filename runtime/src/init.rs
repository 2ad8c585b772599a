//! Deterministic He initialisation (`netc init`): the seed architectures' paper practice.
//!
//! * conv and linear weights: normal(0, sqrt(2 / fan_in)), `fan_in = prod(shape[1..])`
//!   (He et al. 2015, "Delving Deep into Rectifiers");
//! * conv and linear biases: 0;
//! * BatchNorm: weight 1, bias 0, running_mean 0, running_var 1 (identity statistics), plus the
//!   int64 `num_batches_tracked = 0` PyTorch keeps, so the file also loads into the equivalent
//!   PyTorch model with `load_state_dict(strict=True)`.
//!
//! Every tensor draws from its own ChaCha8 stream (seed = the user's seed, stream = FNV-1a of the
//! key), so a tensor's values depend only on the seed and its key, not on the order of the graph.

use crate::fill::fnv1a64;
use crate::weights::{expected_tensors, OwnedTensor};
use netc_compiler::ir::{Graph, Op};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;

/// Weights that do not fit in memory.
#[derive(Debug, thiserror::Error)]
#[error("cannot allocate {bytes} bytes for weight `{tensor}` ({total} bytes of weights in all)")]
pub struct InitError {
    pub tensor: String,
    pub bytes: u128,
    pub total: u128,
}

/// He-initialised weights for every tensor of `graph` (training-only parts included), by key.
/// Allocation is fallible: weights larger than memory are an error, not an abort.
pub fn he_init(graph: &Graph, seed: u64) -> Result<BTreeMap<String, OwnedTensor>, InitError> {
    let expected = expected_tensors(graph);
    let total: u128 = expected.iter().map(|e| 4 * e.shape.iter().map(|&d| d as u128).product::<u128>()).sum();
    let mut out = BTreeMap::new();
    for e in expected {
        let node = graph.node(e.node);
        let too_big = |e: &crate::weights::ExpectedTensor| InitError {
            tensor: e.key.clone(),
            bytes: 4 * e.shape.iter().map(|&d| d as u128).product::<u128>(),
            total,
        };
        let n = crate::tensor::element_count(&e.shape).ok_or_else(|| too_big(&e))?;
        let mut data: Vec<f32> = Vec::new();
        data.try_reserve_exact(n).map_err(|_| too_big(&e))?;
        let suffix = e.key.rsplit('.').next().unwrap_or_default();
        let data = match (&node.op, suffix) {
            (Op::Conv(_) | Op::Linear(_), "weight") => {
                let fan_in: usize = e.shape[1..].iter().product();
                let std = (2.0 / fan_in as f64).sqrt();
                let normal = Normal::new(0.0, std).expect("a positive, finite standard deviation");
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(fnv1a64(&e.key));
                data.extend((0..n).map(|_| normal.sample(&mut rng) as f32));
                data
            }
            (Op::BatchNorm(_), "weight" | "running_var") => {
                data.resize(n, 1.0);
                data
            }
            _ => {
                data.resize(n, 0.0);
                data
            }
        };
        if let Op::BatchNorm(_) = node.op {
            if suffix == "running_var" {
                let counter = e.key.replacen("running_var", "num_batches_tracked", 1);
                out.insert(counter, OwnedTensor::I64 { shape: Vec::new(), data: vec![0] });
            }
        }
        out.insert(e.key, OwnedTensor::F32 { shape: e.shape, data });
    }
    Ok(out)
}

/// The metadata key `netc init` sets in the files it writes; its value says how they were made.
pub const INIT_KEY: &str = "netc.init";
/// [`INIT_KEY`]'s value for random weights.
pub const RANDOM: &str = "random";

/// The safetensors metadata of weights made by [`he_init`] with `seed` for `model`: it travels with
/// the file (and into bundles compiled from it), so that whoever runs them can be told that the
/// weights are random and the predictions meaningless ([`random_weights_note`]).
pub fn metadata(model: &str, seed: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INIT_KEY.to_string(), RANDOM.to_string()),
        ("netc.init.scheme".to_string(), "he-normal".to_string()),
        ("netc.init.seed".to_string(), seed.to_string()),
        ("netc.model".to_string(), model.to_string()),
    ])
}

/// A one-line note for weights whose metadata says they are random (written by `netc init`), or
/// `None` for any other weights.
pub fn random_weights_note(metadata: &BTreeMap<String, String>) -> Option<String> {
    if metadata.get(INIT_KEY).map(String::as_str) != Some(RANDOM) {
        return None;
    }
    let seed = metadata.get("netc.init.seed").map_or(String::new(), |s| format!(", seed {s}"));
    Some(format!(
        "the weights are random (written by `netc init`{seed}): the predictions are meaningless; \
         bind trained weights (see the README, \"Weights\") for real ones"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Graph {
        let src = "network tiny(x: [3, 8, 8]) {\n  x |> conv(4, 3, pad = 1) @c |> batchnorm @bn |> relu |> flatten |> linear(10) @fc\n}\n";
        netc_compiler::compile_source(std::path::Path::new("tiny.net"), src, &Default::default()).unwrap()
    }

    #[test]
    fn he_init_is_deterministic_and_scaled_by_fan_in() {
        let g = graph();
        let a = he_init(&g, 7).unwrap();
        assert_eq!(a, he_init(&g, 7).unwrap());
        assert_ne!(a, he_init(&g, 8).unwrap());
        let OwnedTensor::F32 { data, shape } = &a["c.weight"] else { panic!() };
        assert_eq!(shape, &vec![4, 3, 3, 3]);
        let var: f64 = data.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / data.len() as f64;
        assert!(var > 0.5 * 2.0 / 27.0 && var < 2.0 * 2.0 / 27.0, "variance {var}");
        assert_eq!(a["bn.running_var"], OwnedTensor::F32 { shape: vec![4], data: vec![1.0; 4] });
        assert_eq!(a["bn.running_mean"], OwnedTensor::F32 { shape: vec![4], data: vec![0.0; 4] });
        assert_eq!(a["bn.num_batches_tracked"], OwnedTensor::I64 { shape: vec![], data: vec![0] });
        assert!(matches!(&a["fc.bias"], OwnedTensor::F32 { data, .. } if data.iter().all(|&v| v == 0.0)));
    }

    #[test]
    fn only_init_metadata_gets_the_random_weights_note() {
        let note = random_weights_note(&metadata("tiny", 3)).unwrap();
        assert!(note.contains("random") && note.contains("seed 3"), "{note}");
        assert_eq!(random_weights_note(&BTreeMap::new()), None);
        let trained = BTreeMap::from([(INIT_KEY.to_string(), "pretrained".to_string())]);
        assert_eq!(random_weights_note(&trained), None);
    }
}
