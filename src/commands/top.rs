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

/// One input's line of `--format jsonl`: `{"image", "top": [{"class", "label", "prob"}]}`.
pub fn jsonl(top: &ImageTop) -> anyhow::Result<String> {
    Ok(serde_json::to_string(top)? + "\n")
}

/// The `--format jsonl` line of an input that could not be read: `{"image", "error"}`.
pub fn jsonl_error(image: &str, error: &str) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct Failed<'a> {
        image: &'a str,
        error: &'a str,
    }
    Ok(serde_json::to_string(&Failed { image, error })? + "\n")
}

/// One input's rows of `--format csv` (columns `image,rank,class,label,prob`; rank 1 is the most
/// likely class; an unknown label is empty).
pub fn csv_rows(top: &ImageTop) -> String {
    let mut out = String::new();
    for (rank, r) in top.top.iter().enumerate() {
        out += &format!(
            "{},{},{},{},{}\n",
            csv_field(top.image),
            rank + 1,
            r.class,
            csv_field(r.label.unwrap_or("")),
            r.prob
        );
    }
    out
}

/// A CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma, a quote or a line
/// break, or starts or ends with a space.
fn csv_field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ') {
        format!("\"{}\"", text.replace('"', "\"\"")).into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(super::csv_field("tench"), "tench");
        assert_eq!(super::csv_field("tench, Tinca tinca"), "\"tench, Tinca tinca\"");
        assert_eq!(super::csv_field("a \"b\"\nc"), "\"a \"\"b\"\"\nc\"");
    }
}
