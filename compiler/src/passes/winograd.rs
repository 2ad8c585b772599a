//! Winograd convolution for 3x3 stride-1 layers, where a cost model says it pays.
//!
//! Rewrite: a fused conv with a 3x3 kernel, stride 1, dilation 1, one group, padding at most 2 and
//! no prologue becomes kind `Winograd(F2 | F4)`; its weight slot `g` becomes the symbolic
//! transform `winograd(g, F(m x m, 3x3))` (evaluated once, in f64, when weights are bound or a
//! bundle is packed), every other slot and the epilogue are kept.
//!
//! Precondition: exactly that geometry (the kernels tile the output in `m x m` tiles over the
//! padded input; wider padding than 2 would need tiles reading only padding, which the cost model
//! would never pick anyway).
//!
//! Soundness: Winograd's minimal filtering computes the same correlation as the direct loop up to
//! rounding (see [`crate::ir::winograd`], whose tests check it against the definition). The
//! transformed filter is a linear function of the folded one, so composing it with the BatchNorm
//! fold (`winograd(scale_rows(w, s))`) is exact in f64.
//!
//! Cost model (inputs and decisions: `netc ir --stats` lists each layer's choice): the time of a
//! layer is estimated in vector operations of 16 lanes, for the direct kernel and for F(2x2) and
//! F(4x4), and the cheapest wins. Direct: `9 Cin Cout OH OW / (16 e)`, `e` the share of used lanes
//! of its column tiles. Winograd over `V` vectors of tiles (`T / (16 e_w)`, `e_w` the share of used
//! lanes over the tile grid): the `a^2` GEMMs `a^2 Cin Cout V`, the input transform (`~64` (F2) or
//! `~240` (F4) operations per channel and vector, once per block) and the output transform (`~110`
//! or `~400` per output channel and vector, stores lane by lane included). Small planes favour
//! F(2x2) (F(4x4) has too few tiles to fill the lanes), large ones F(4x4); thin layers (a 3-channel
//! stem) stay direct. Each estimate is at least the cycles to stream the layer's weights once per
//! block of output from memory (`~4` bytes per cycle): on small planes Winograd's `a^2/9` times
//! larger weights are read for few outputs each, and the layer is bound by memory, not FMAs.

use super::{slots, Pass};
use crate::codegen::Isa;
use crate::ir::{ConvKind, FusedConv, Graph, NodeId, Op, WeightExpr, WinogradTile};

pub struct Winograd;

impl Pass for Winograd {
    fn name(&self) -> &'static str {
        "winograd"
    }

    fn summary(&self) -> &'static str {
        "3x3 stride-1 convs use Winograd F(2x2) or F(4x4) where the cost model says it pays"
    }

    fn explain(&self, graph: &Graph, _target: Isa) -> Vec<String> {
        let mut notes = Vec::new();
        for id in graph.node_ids() {
            let node = graph.node(id);
            let (Op::FusedConv(f), Some((_, oh, ow))) = (&node.op, node.shape.as_chw()) else { continue };
            if !eligible(f) {
                continue;
            }
            let (ci, co) = (f.conv.in_channels, f.conv.out_channels);
            let (direct, [f2, f4]) = costs(ci, co, oh, ow);
            let choice = choose(ci, co, oh, ow).map_or("direct", WinogradTile::name);
            notes.push(format!(
                "{}: {ci}->{co} @{oh}x{ow}: cost direct {:.0}k, F(2x2) {:.0}k, F(4x4) {:.0}k -> {choice}",
                node.name,
                direct / 1e3,
                f2 / 1e3,
                f4 / 1e3
            ));
        }
        notes
    }

    fn run(&self, graph: &mut Graph, _target: Isa) -> usize {
        let ids: Vec<NodeId> = graph.node_ids().collect();
        let mut rewrites = 0;
        for id in ids {
            let node = graph.node(id);
            let Op::FusedConv(f) = &node.op else { continue };
            if !eligible(f) {
                continue;
            }
            let Some((_, oh, ow)) = node.shape.as_chw() else { continue };
            let Some(tile) = choose(f.conv.in_channels, f.conv.out_channels, oh, ow) else { continue };
            let mut f = f.clone();
            f.kind = ConvKind::Winograd(tile);
            let node = graph.node_mut(id);
            let mut slots = slots::by_name(node);
            let g = slots.remove("weight").expect("a conv has a weight slot");
            slots.insert("weight", WeightExpr::Winograd { x: Box::new(g), tile });
            slots::rebuild(node, Op::FusedConv(f), slots);
            rewrites += 1;
        }
        rewrites
    }
}

/// The geometry the Winograd kernels implement.
pub fn eligible(f: &FusedConv) -> bool {
    let c = &f.conv;
    f.kind == ConvKind::Direct
        && c.kernel == [3, 3]
        && c.stride == [1, 1]
        && c.dilation == [1, 1]
        && c.groups == 1
        && c.padding[0] <= 2
        && c.padding[1] <= 2
        && f.prologue.is_none()
}

/// Lanes of the widest vectors the cost model plans for.
const LANES: f64 = 16.0;

/// The share of computed lanes that hold outputs over a plane of `rows x cols` outputs: the best
/// of one row per vector run and of blocks of rows laid end to end with `pad` columns between them
/// (as the kernels' flat panels do, at most 16 vectors a block).
pub(super) fn lane_share(rows: usize, cols: usize, pad: usize) -> f64 {
    lane_share_in(LANES as usize, rows, cols, pad)
}

/// [`lane_share`] for vectors of `lanes` lanes.
pub(super) fn lane_share_in(lanes: usize, rows: usize, cols: usize, pad: usize) -> f64 {
    let lanes = lanes as f64;
    let vectors = |n: usize| (n as f64 / lanes).ceil();
    let mut best = cols as f64 / (vectors(cols) * lanes);
    for rb in 1..=rows {
        let span = (rb - 1) * (cols + pad) + cols;
        if vectors(span) > 16.0 {
            break;
        }
        best = best.max((rb * cols) as f64 / (vectors(span) * lanes));
    }
    best
}

/// Vector operations of the input transform per input channel and vector of tiles (loads, the
/// program over rows and columns, stores), and of the output transform per output channel
/// (loads, program, epilogue, and stores lane by lane to the tiles' pixels).
fn transform_costs(tile: WinogradTile) -> (f64, f64) {
    match tile {
        WinogradTile::F2 => (64.0, 110.0),
        WinogradTile::F4 => (240.0, 400.0),
    }
}

/// Bytes of weights a core streams per cycle from memory (about 14 GB/s at 3.5 GHz): a layer
/// whose weights are read once per block of output is bound by this when the blocks are small.
const WEIGHT_BYTES_PER_CYCLE: f64 = 4.0;

/// Estimated cost of each way to run a 3x3 stride-1 layer (see the module documentation), in
/// cycles (16-lane vector operations, or streaming the weights once per block, whichever is
/// slower) per sample: `(direct, [F2, F4])`.
pub fn costs(cin: usize, cout: usize, oh: usize, ow: usize) -> (f64, [f64; 2]) {
    let (cin, cout) = (cin as f64, cout as f64);
    let direct_ops = 9.0 * cin * cout * (oh * ow) as f64 / (LANES * lane_share(oh, ow, 2));
    // The direct kernels take a plane of up to about 64 outputs per block of rows.
    let direct_blocks = ((oh * ow) as f64 / 64.0).ceil().min(oh as f64);
    let direct = direct_ops.max(4.0 * 9.0 * cin * cout * direct_blocks / WEIGHT_BYTES_PER_CYCLE);
    let channels = cin as usize;
    let winograd = WinogradTile::ALL.map(|tile| {
        let (m, a2) = (tile.m(), (tile.alpha() * tile.alpha()) as f64);
        let (th, tw) = (oh.div_ceil(m), ow.div_ceil(m));
        // The kernels' blocks: `rb` tile rows in `t` lanes.
        let (rb, t) = crate::ir::winograd::block(tile, channels, th, tw, LANES as usize);
        let blocks = th.div_ceil(rb) as f64;
        let vectors = blocks * t as f64 / LANES;
        let (input, output) = transform_costs(tile);
        let ops = (a2 * cin * cout + input * cin + output * cout) * vectors;
        ops.max(4.0 * a2 * cin * cout * blocks / WEIGHT_BYTES_PER_CYCLE)
    });
    (direct, winograd)
}

/// The tile to use, or `None` when the direct kernel is estimated cheaper.
pub fn choose(cin: usize, cout: usize, oh: usize, ow: usize) -> Option<WinogradTile> {
    let (direct, [f2, f4]) = costs(cin, cout, oh, ow);
    let (tile, best) = if f4 <= f2 { (WinogradTile::F4, f4) } else { (WinogradTile::F2, f2) };
    (best < direct).then_some(tile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_of_many_tiles_take_f4_the_smallest_f2() {
        assert_eq!(choose(64, 64, 56, 56), Some(WinogradTile::F4));
        assert_eq!(choose(128, 128, 28, 28), Some(WinogradTile::F4));
        assert_eq!(choose(256, 256, 14, 14), Some(WinogradTile::F4));
        // 7x7: F(4x4) has 4 tiles for 16 lanes, F(2x2) 16.
        assert_eq!(choose(512, 512, 7, 7), Some(WinogradTile::F2));
    }

    /// A 2x2 plane is one F(2x2) tile: 16 lanes computed for 1 tile, and 16/9 the weights to
    /// stream, against 4 outputs of the direct kernel.
    #[test]
    fn tiny_planes_stay_direct() {
        assert_eq!(choose(512, 512, 2, 2), None);
    }

    #[test]
    fn thin_layers_stay_direct() {
        // Three input channels (a stem): the transforms cost more than the GEMMs save.
        assert_eq!(choose(3, 64, 224, 224), None);
    }
}
