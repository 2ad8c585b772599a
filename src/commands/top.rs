//! `netc run`'s top-k report: the most likely classes of each input with softmax probabilities,
//! as text for people or JSON for programs.

use super::labels::Labels;
use netc_runtime::Tensor;

/// One of an input's most likely classes.
#[derive(serde::Serialize)]
pub struct Ranked<'a> {
    pub class: usize,
    /// The class name, when known (ImageNet's for 1000 classes, or `--labels`).
    pub label: Option<&'a str>,
    pub prob: f64,
}

/// The most likely classes of one input.
#[derive(serde::Serialize)]
pub struct ImageTop<'a> {
    /// The input file (with `[i]` for the i-th sample of a batched `.npy`).
    pub image: &'a str,
    pub top: Vec<Ranked<'a>>,
}

/// The `k` most likely classes of every sample of `logits` (`[N, classes]`), with their softmax
/// probabilities, most likely first (ties by class id).
pub fn rank<'a>(logits: &Tensor, images: &'a [String], labels: &'a Labels, k: usize) -> Vec<ImageTop<'a>> {
    let classes = logits.shape[1];
    images
        .iter()
        .enumerate()
        .map(|(n, image)| {
            let row = logits.sample(n);
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let exps: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let top = order
                .into_iter()
                .take(k)
                .map(|c| Ranked { class: c, label: labels.name(c, classes), prob: exps[c] / sum })
                .collect();
            ImageTop { image, top }
        })
        .collect()
}

/// Each input's name, then one line per class: probability, class id, name.
pub fn text(tops: &[ImageTop]) -> String {
    let mut out = String::new();
    for t in tops {
        out += &format!("{}:\n", t.image);
        for r in &t.top {
            let label = r.label.map_or_else(|| format!("class {}", r.class), str::to_string);
            out += &format!("  {:>7.4}  {:>4}  {label}\n", r.prob, r.class);
        }
    }
    out
}

/// A JSON array with one object per input: `{"image", "top": [{"class", "label", "prob"}]}`.
pub fn json(tops: &[ImageTop]) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(tops)? + "\n")
}
