//! `netc summary --depth N`: the layers added up per block instance, torchinfo's view.
//!
//! Layers are grouped by their weight scope's first parts: `layer1.0.conv1` is in `layer1` at
//! depth 1 and in `layer1.0` at depth 2. Every group of depth 1 to N gets a row, the groups
//! nested in it right after it (a layer's groups appear where its first layer does), so the
//! rows read as a tree (the table indents them by depth). A group's row carries the sum of its
//! layers' parameters and MACs and the output shape of its last layer (the block's output, in
//! topological order); the totals are the model's, counted once.

use netc_compiler::ir::{LayerRow, Summary};
use std::collections::HashMap;

/// The scope prefix of `name` at `depth` parts (the whole name when it has fewer).
fn prefix(name: &str, depth: usize) -> &str {
    match name.match_indices('.').nth(depth.saturating_sub(1)) {
        Some((at, _)) => &name[..at],
        None => name,
    }
}

/// `summary` with each row's name indented two spaces per level it is nested (`layer1.0` under
/// `layer1`), for the table.
pub fn indented(mut summary: Summary) -> Summary {
    for row in &mut summary.layers {
        row.name = format!("{}{}", "  ".repeat(row.name.matches('.').count()), row.name);
    }
    summary
}

/// `summary` with a row per scope prefix of 1 to `depth` parts; totals are unchanged.
pub fn aggregate(summary: Summary, depth: usize) -> Summary {
    // Each group: its row, and how many layers it holds.
    let mut groups: Vec<(LayerRow, usize)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in summary.layers {
        let mut keys: Vec<&str> = (1..=depth).map(|d| prefix(&row.name, d)).collect();
        keys.dedup();
        for key in keys {
            match index.get(key) {
                Some(&i) => {
                    let (group, count) = &mut groups[i];
                    group.params += row.params;
                    group.macs += row.macs;
                    group.output_shape = row.output_shape.clone();
                    *count += 1;
                }
                None => {
                    index.insert(key.to_string(), groups.len());
                    groups.push((LayerRow { name: key.to_string(), ..row.clone() }, 1));
                }
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

    fn row(name: &str, params: u64) -> LayerRow {
        LayerRow {
            name: name.into(),
            op: "conv".into(),
            output_shape: netc_compiler::ir::Shape(vec![params as usize]),
            params,
            macs: 10 * params,
        }
    }

    #[test]
    fn groups_nest_after_their_parent_and_add_up() {
        let layers = vec![row("stem", 1), row("b.0.x", 2), row("b.0.y", 3), row("b.1.x", 4), row("fc", 5)];
        let summary = Summary {
            model: "m".into(),
            input: netc_compiler::ir::Shape(vec![3]),
            total_params: 15,
            total_macs: 150,
            layers,
        };
        let two = aggregate(summary, 2);
        let rows: Vec<(&str, u64, &str)> =
            two.layers.iter().map(|l| (l.name.as_str(), l.params, l.op.as_str())).collect();
        assert_eq!(
            rows,
            [
                ("stem", 1, "conv"),
                ("b", 9, "3 layers"),
                ("b.0", 5, "2 layers"),
                ("b.1", 4, "conv"),
                ("fc", 5, "conv")
            ]
        );
        assert_eq!(two.layers[1].output_shape.0, [4], "a group's output is its last layer's");
        assert_eq!((two.total_params, two.total_macs), (15, 150));
        let names: Vec<String> = indented(two).layers.into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["stem", "b", "  b.0", "  b.1", "fc"]);
    }
}
