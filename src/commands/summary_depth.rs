//! `netc summary --depth N`: the rows of each block instance added up, torchinfo's view.
//!
//! Layers are grouped by their weight scope's first N parts (`layer1.0.conv1` is in `layer1` at
//! depth 1 and in `layer1.0` at depth 2), in the order the groups first appear. A group's row
//! carries the sum of its parameters and MACs and the output shape of its last layer (the
//! block's output, in topological order).

use netc_compiler::ir::{LayerRow, Summary};

/// The scope prefix of `name` at `depth` parts (the whole name when it has fewer).
fn prefix(name: &str, depth: usize) -> &str {
    match name.match_indices('.').nth(depth.saturating_sub(1)) {
        Some((at, _)) => &name[..at],
        None => name,
    }
}

/// `summary` with its layers grouped by scope prefix up to `depth` parts; totals are unchanged.
pub fn aggregate(summary: Summary, depth: usize) -> Summary {
    let mut groups: Vec<(LayerRow, usize)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for row in summary.layers {
        let key = prefix(&row.name, depth).to_string();
        match index.get(&key) {
            Some(&i) => {
                let (group, count): &mut (LayerRow, usize) = &mut groups[i];
                group.params += row.params;
                group.macs += row.macs;
                group.output_shape = row.output_shape;
                *count += 1;
            }
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((LayerRow { name: key, ..row }, 1));
            }
        }
    }
    let layers = groups
        .into_iter()
        .map(|(mut row, count)| {
            if count > 1 {
                row.op = format!("{count} layers");
            }
            row
        })
        .collect();
    Summary { layers, ..summary }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_keep_the_first_parts() {
        assert_eq!(prefix("layer1.0.conv1", 1), "layer1");
        assert_eq!(prefix("layer1.0.conv1", 2), "layer1.0");
        assert_eq!(prefix("layer1.0.conv1", 3), "layer1.0.conv1");
        assert_eq!(prefix("layer1.0.conv1", 9), "layer1.0.conv1");
        assert_eq!(prefix("fc", 1), "fc");
    }
}
