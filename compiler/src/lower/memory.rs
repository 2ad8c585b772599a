//! The static memory plan: where every activation lives in one arena.
//!
//! Every value is stored batch-major (`[N, C, H, W]`, C order), so a plan made per sample holds for any
//! batch size: sizes and offsets are in floats per sample and scale by N. A value either owns a buffer
//! or is a view into another value's buffer:
//! - a channel slice is a view of its input (offset `start * H * W`, the input's sample stride);
//! - `flatten` is a view of its input (same bytes, other shape);
//! - each input of an in-place concat is a view into the concat's buffer at its channel offset, so its
//!   producer writes there directly ([`concat_layout`]); chained concats nest, so a DenseNet block
//!   (every layer reading the concat of all features before it) lives in one block-wide buffer, each
//!   layer writing its slice and each intermediate concat a prefix view of it;
//! - an elementwise op (ReLU and the other activations, affine, add, mul) writes over an input of
//!   its shape whose buffer dies at that op and that no view reads; so does a convolution with a
//!   fused residual add over that residual (as ONNX Runtime's Conv+Sum does): every kernel's
//!   epilogue reads residual element `i` only to store output element `i`, so no element is
//!   overwritten before its one reader has read it. A ResNet block's last convolution then stores
//!   into the lines it has just read instead of fetching separate output lines for ownership.
//!
//! Buffers get arena offsets by liveness: a buffer is live from the first node that writes into it to
//! the last node that reads from it (graph outputs live to the end), and two buffers may share bytes
//! only when their lifetimes do not overlap. Offsets are assigned greedily, largest buffer first, at the
//! lowest offset that fits.

use crate::ir::{Graph, NodeId, Op, ValueId};
use std::collections::{HashMap, HashSet};

/// A buffer of the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub usize);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    /// Floats per sample.
    pub size: usize,
    /// Offset in the arena, in floats per sample (the byte offset is `offset * N * 4`).
    pub offset: usize,
    /// Execution steps (positions in `MemoryPlan::order`) during which the buffer holds live data.
    pub live: (usize, usize),
}

/// Where a value is: a buffer, an offset into it and the distance between samples (floats, per sample
/// of the buffer: the element `(n, i)` of the value is at `buffer.offset * N + n * sample_stride + offset + i`,
/// all in floats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub buffer: BufferId,
    pub offset: usize,
    pub sample_stride: usize,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryPlan {
    /// The execution order the lifetimes refer to.
    pub order: Vec<NodeId>,
    pub buffers: Vec<Buffer>,
    pub values: HashMap<ValueId, Placement>,
    /// Arena size in floats per sample.
    pub arena: usize,
}

impl MemoryPlan {
    /// Arena bytes for a batch of `n`.
    pub fn arena_bytes(&self, n: usize) -> usize {
        self.arena * n * 4
    }
}

/// The sum of every value's size, bytes per sample: what executing without a plan would allocate.
pub fn naive_bytes(graph: &Graph) -> usize {
    graph.node_ids().map(|id| graph.node(id).shape.elements() * 4).sum()
}

/// How a value is stored, before offsets are known.
#[derive(Clone, Copy)]
enum Home {
    Own(BufferId),
    View { of: ValueId, offset: usize },
}

/// Plans the arena for `graph` (normally optimised), executing nodes in topological order.
pub fn plan(graph: &Graph) -> MemoryPlan {
    let order = graph.topo_order().expect("a verified graph is acyclic");
    let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut sizes: Vec<usize> = Vec::new();
    let mut homes: HashMap<ValueId, Home> = HashMap::new();

    // Views into in-place concats are decided by the concats, which come after their inputs.
    let layout = concat_layout(graph, &order, |id| matches!(&graph.node(id).op, Op::Concat(c) if c.in_place));
    let concat_slot = &layout.within;
    // The values stored in each in-place concat's buffer, to keep an elementwise op from writing over
    // that buffer while one of them is still to be read.
    let mut parts: HashMap<ValueId, Vec<ValueId>> = HashMap::new();
    for &v in concat_slot.keys() {
        parts.entry(layout.root(v).0).or_default().push(v);
    }
    // Readers left per value, to find where a buffer dies (for in-place elementwise ops).
    let mut last_reader: HashMap<ValueId, usize> = HashMap::new();
    for &id in &order {
        for v in graph.inputs(id) {
            last_reader.insert(v, position[&id]);
        }
    }
    let outputs: Vec<ValueId> = graph.outputs.iter().map(|o| o.value).collect();

    // Whether node `id` may write its output over input `i`'s buffer: `i` owns its buffer, has the
    // output's shape, dies at `id`, is read once there, is no graph output and no view reads it.
    let overwritable = |i: ValueId, id: NodeId, homes: &HashMap<ValueId, Home>| -> bool {
        matches!(homes.get(&i), Some(Home::Own(_)))
            && graph.shape(i) == &graph.node(id).shape
            // A view of the input (a chunk's slice, a flatten) may be read later.
            && graph.consumers(i).iter().all(|&c| !matches!(graph.node(c).op, Op::Slice(_) | Op::Flatten))
            && last_reader.get(&i) == Some(&position[&id])
            && !outputs.contains(&i)
            && graph.consumers(i).iter().filter(|&&c| c == id).count() == 1
            && !concat_slot.contains_key(&i)
            // The parts of a concat stored in its buffer are read no later than here.
            && parts.get(&i).is_none_or(|ps| {
                ps.iter().all(|p| {
                    !outputs.contains(p) && last_reader.get(p).is_none_or(|&r| r <= position[&id])
                })
            })
    };
    for &id in &order {
        let v = id.value();
        let node = graph.node(id);
        let inputs = graph.inputs(id);
        let overwritable = |i: ValueId, id: NodeId| overwritable(i, id, &homes);
        let home = match &node.op {
            Op::Slice(s) => {
                let plane: usize = node.shape.dims()[1..].iter().product();
                Home::View { of: inputs[0], offset: s.start * plane }
            }
            Op::Flatten => Home::View { of: inputs[0], offset: 0 },
            _ if concat_slot.contains_key(&v) => {
                let (concat, offset) = concat_slot[&v];
                Home::View { of: concat, offset }
            }
            Op::Relu | Op::Activation(_) | Op::Affine(_) | Op::Add | Op::Mul => {
                // Write over the first input whose own buffer dies here and holds exactly this value
                // (of the output's shape: never a product's per-channel factor).
                let reusable = inputs.iter().find(|&&i| overwritable(i, id));
                match reusable {
                    Some(&i) => own_buffer_of(&homes, i),
                    None => new_buffer(&mut sizes, node.shape.elements()),
                }
            }
            // A convolution's residual (input 1) is read only by the epilogue that stores the output
            // element at the same index, so the output may overwrite it where it dies (never the
            // convolution's input: other output elements read each input element).
            Op::FusedConv(f) if f.residual && overwritable(inputs[1], id) => own_buffer_of(&homes, inputs[1]),
            _ => new_buffer(&mut sizes, node.shape.elements()),
        };
        homes.insert(v, home);
    }
    // In-place concat inputs were planned as views of the concat before the concat itself existed in
    // `homes`; resolve every value to (root buffer, offset) now.
    fn resolve(homes: &HashMap<ValueId, Home>, v: ValueId) -> (BufferId, usize) {
        match homes[&v] {
            Home::Own(b) => (b, 0),
            Home::View { of, offset } => {
                let (b, base) = resolve(homes, of);
                (b, base + offset)
            }
        }
    }
    let mut values = HashMap::new();
    let mut live: Vec<(usize, usize)> = vec![(usize::MAX, 0); sizes.len()];
    let end = order.len();
    for &id in &order {
        let v = id.value();
        let (buffer, offset) = resolve(&homes, v);
        values.insert(v, Placement { buffer, offset, sample_stride: sizes[buffer.0] });
        let at = position[&id];
        let span = &mut live[buffer.0];
        span.0 = span.0.min(at);
        span.1 = span.1.max(at);
        if let Some(&r) = last_reader.get(&v) {
            span.1 = span.1.max(r);
        }
        if outputs.contains(&v) {
            span.1 = end;
        }
    }
    let mut buffers: Vec<Buffer> =
        sizes.iter().zip(live).map(|(&size, live)| Buffer { size, offset: 0, live }).collect();
    let arena = assign_offsets(&mut buffers);
    MemoryPlan { order, buffers, values, arena }
}

/// The buffer value `i` owns (it is never a view: [`plan`] only reuses owned buffers).
fn own_buffer_of(homes: &HashMap<ValueId, Home>, i: ValueId) -> Home {
    match homes[&i] {
        Home::Own(b) => Home::Own(b),
        Home::View { .. } => unreachable!("only owned buffers are reused"),
    }
}

fn new_buffer(sizes: &mut Vec<usize>, size: usize) -> Home {
    sizes.push(size);
    Home::Own(BufferId(sizes.len() - 1))
}

/// Where in-place concatenations store their inputs: the decision shared by the `concat-in-place`
/// pass (which concats to mark) and [`plan`] (which follows the marks).
#[derive(Debug, Clone, Default)]
pub struct ConcatLayout {
    /// A value stored inside another one: `v -> (container, offset)`, the offset in floats per sample
    /// of the container. A container is an in-place concat, or for a concat that is only a view of
    /// parts already placed (see [`concat_layout`]), the buffer those parts live in.
    pub within: HashMap<ValueId, (ValueId, usize)>,
    /// The concats whose inputs all lie where the concat would copy them: they move no data.
    pub in_place: HashSet<NodeId>,
}

impl ConcatLayout {
    /// The outermost value `v` is stored in, and `v`'s offset in it (floats per sample).
    pub fn root(&self, mut v: ValueId) -> (ValueId, usize) {
        let mut offset = 0;
        while let Some(&(of, at)) = self.within.get(&v) {
            offset += at;
            v = of;
        }
        (v, offset)
    }
}

/// Whether `v` may be stored inside a concat's buffer: its producer writes it there (not a graph
/// input, a view or dropout, which have no producer of their own to redirect) and no caller reads it
/// after the run.
fn may_live_in_a_concat(graph: &Graph, v: ValueId) -> bool {
    !matches!(graph.node(v.producer()).op, Op::Input | Op::Slice(_) | Op::Flatten | Op::Dropout(_))
        && !graph.is_output(v)
}

/// Decides which of the concats `consider` accepts can be in place, and where every value then lives.
///
/// Concats are visited from the last in `order` to the first, so a concat's own place is known when
/// it is visited (every concat that reads it was visited before). A concat at `(buffer, o)` (its own
/// buffer, or where a later concat put it) is in place when each input `i`, whose channels start at
/// float offset `off_i`, either
/// - is not placed yet and may live in a concat: it is placed at `(buffer, o + off_i)`; or
/// - is already placed exactly there (a value read by several concats, as in a DenseNet block written
///   with one concat per layer of every feature so far).
///
/// A concat not placed by a later one, whose inputs are all placed already, one after the other in
/// one buffer, becomes a view of them there. Any other concat (an input placed elsewhere, an input
/// twice) is not in place and places nothing: it copies.
///
/// So `x2 = concat(x1, f2)`, `x3 = concat(x2, f3)`: `x3` owns a buffer, `x2` is its prefix and `f3` its
/// tail; `x2`'s own inputs, `x1` and `f2`, lie inside that prefix, and so on down the chain: one
/// buffer for the block, each producer writing its slice once.
///
/// Why it is sound: a value is placed once and only inside the range of the concat that places it,
/// at its channel offset there, so distinct inputs of a concat get disjoint bytes and a concat's
/// range holds exactly its inputs' bytes, in order (also for a concat that becomes a view of placed
/// inputs: they lie there already). Every byte of such a buffer is written by one producer, once;
/// concats in place write nothing. So no value stored there is overwritten while it is live, except
/// by an elementwise op reusing the whole buffer, which [`plan`] allows only once every value stored
/// in it has been read for the last time. [`MemoryPlan::check`] verifies the result.
pub fn concat_layout(graph: &Graph, order: &[NodeId], consider: impl Fn(NodeId) -> bool) -> ConcatLayout {
    let mut layout = ConcatLayout::default();
    for &id in order.iter().rev() {
        if !matches!(graph.node(id).op, Op::Concat(_)) || !consider(id) {
            continue;
        }
        let c = id.value();
        let plane: usize = graph.node(id).shape.dims()[1..].iter().product();
        let inputs = graph.inputs(id);
        let mut offsets = Vec::with_capacity(inputs.len());
        let mut channel = 0;
        for &v in &inputs {
            offsets.push(channel * plane);
            channel += graph.shape(v).dims()[0];
        }
        let placed: Vec<Option<(ValueId, usize)>> =
            inputs.iter().map(|&v| layout.within.contains_key(&v).then(|| layout.root(v))).collect();
        if !layout.within.contains_key(&c) && placed.iter().all(Option::is_some) {
            // A view of parts placed by later concats, if they lie one after the other.
            let Some((buffer, start)) = placed[0] else { unreachable!() };
            let contiguous = placed.iter().zip(&offsets).all(|(p, &off)| *p == Some((buffer, start + off)));
            if contiguous && may_live_in_a_concat(graph, c) {
                layout.within.insert(c, (buffer, start));
                layout.in_place.insert(id);
            }
            continue;
        }
        let (buffer, start) = layout.root(c);
        let mut new = Vec::new();
        let fits = inputs.iter().zip(&offsets).zip(&placed).all(|((&v, &off), p)| match p {
            Some(at) => *at == (buffer, start + off),
            None if may_live_in_a_concat(graph, v) && !new.iter().any(|&(n, _)| n == v) => {
                new.push((v, off));
                true
            }
            None => false,
        });
        if fits {
            for (v, off) in new {
                layout.within.insert(v, (c, off));
            }
            layout.in_place.insert(id);
        }
    }
    layout
}

/// Greedy placement: largest first, each at the lowest offset not overlapping (in bytes) any placed
/// buffer whose lifetime overlaps its own. Returns the arena size.
fn assign_offsets(buffers: &mut [Buffer]) -> usize {
    let mut by_size: Vec<usize> = (0..buffers.len()).collect();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(buffers[i].size), i));
    let mut placed: Vec<usize> = Vec::new();
    let mut arena = 0;
    for i in by_size {
        let (lo, hi) = buffers[i].live;
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| buffers[j].live.0 <= hi && lo <= buffers[j].live.1)
            .map(|&j| (buffers[j].offset, buffers[j].offset + buffers[j].size))
            .collect();
        conflicts.sort_unstable();
        let mut offset = 0;
        for (start, end) in conflicts {
            if offset + buffers[i].size <= start {
                break;
            }
            offset = offset.max(end);
        }
        buffers[i].offset = offset;
        arena = arena.max(offset + buffers[i].size);
        placed.push(i);
    }
    arena
}

impl MemoryPlan {
    /// Checks that no value is overwritten while it is still to be read: buffers whose lifetimes overlap
    /// occupy disjoint arena ranges, every value fits its buffer, and within a buffer no write lands on a
    /// live value except an elementwise op writing over the input it is reading for the last time.
    pub fn check(&self, graph: &Graph) -> Result<(), String> {
        for (i, a) in self.buffers.iter().enumerate() {
            for b in &self.buffers[i + 1..] {
                let time = a.live.0 <= b.live.1 && b.live.0 <= a.live.1;
                let space = a.offset < b.offset + b.size && b.offset < a.offset + a.size;
                if time && space && a.size > 0 && b.size > 0 {
                    return Err(format!("buffers {a:?} and {b:?} overlap while both are live"));
                }
            }
        }
        let position: HashMap<NodeId, usize> =
            self.order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let end = self.order.len();
        let last_read = |v: ValueId| -> usize {
            let mut last =
                graph.consumers(v).iter().map(|c| position[c]).max().unwrap_or(position[&v.producer()]);
            if graph.is_output(v) {
                last = end;
            }
            last
        };
        let range = |v: ValueId| {
            let p = self.values[&v];
            (p.buffer, p.offset, p.offset + graph.shape(v).elements())
        };
        for &id in &self.order {
            let (buffer, _, stop) = range(id.value());
            if stop > self.buffers[buffer.0].size {
                return Err(format!("`{}` does not fit its buffer", graph.node(id).name));
            }
        }
        // Every value, views included, against every node that writes (views write nothing).
        let writes: Vec<NodeId> = self
            .order
            .iter()
            .copied()
            .filter(|&id| match graph.node(id).op {
                Op::Slice(_) | Op::Flatten => false,
                Op::Concat(_) => !self.concat_is_view(graph, id),
                _ => true,
            })
            .collect();
        for &v_id in &self.order {
            let v = v_id.value();
            let (vb, vs, ve) = range(v);
            let (born, dies) = (position[&v_id], last_read(v));
            for &w_id in &writes {
                let t = position[&w_id];
                if w_id == v_id || t <= born || t > dies {
                    continue;
                }
                let (wb, ws, we) = range(w_id.value());
                if wb == vb && ws < ve && vs < we {
                    let in_place = t == dies
                        && match &graph.node(w_id).op {
                            Op::Relu | Op::Activation(_) | Op::Affine(_) | Op::Add | Op::Mul => {
                                graph.inputs(w_id).contains(&v)
                            }
                            Op::FusedConv(f) => f.residual && graph.inputs(w_id)[1] == v,
                            _ => false,
                        };
                    if !in_place {
                        return Err(format!(
                            "`{}` overwrites `{}` while it is still to be read",
                            graph.node(w_id).name,
                            graph.node(v_id).name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether concat `id` needs no kernel: every input already lies where the concat would copy it
    /// (same buffer, at the concat's offset plus the input's channel offset, same sample stride).
    pub fn concat_is_view(&self, graph: &Graph, id: NodeId) -> bool {
        let Some(out) = self.values.get(&id.value()) else { return false };
        let plane: usize = graph.node(id).shape.dims()[1..].iter().product();
        let mut channel = 0;
        graph.inputs(id).into_iter().all(|v| {
            let want = Placement { offset: out.offset + channel * plane, ..*out };
            channel += graph.shape(v).dims()[0];
            self.values.get(&v) == Some(&want)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes;
    use std::path::Path;

    fn optimized(text: &str) -> Graph {
        let mut g = crate::compile_source(Path::new("t.net"), text, &Default::default())
            .unwrap_or_else(|d| panic!("{d}"));
        passes::optimize(&mut g, &passes::Options { verify_each: true, ..Default::default() }).unwrap();
        g
    }

    #[test]
    fn a_chain_reuses_two_buffers() {
        let g = optimized("network n(x: [4, 8, 8]) { x |> conv(4, 3, pad = 1) @a |> conv(4, 3, pad = 1) @b |> conv(4, 3, pad = 1) @c |> conv(4, 3, pad = 1) @d }");
        let p = plan(&g);
        p.check(&g).unwrap();
        assert_eq!(p.arena, 2 * 4 * 64);
        assert_eq!(naive_bytes(&g), 5 * 4 * 64 * 4);
    }

    /// A bottleneck-style block: `s` is the shortcut, `c2` the last convolution of the main path.
    const RESIDUAL_BLOCK: &str = "network n(x: [8, 8, 8]) {
        s = x |> conv(8, 1) @s
        t = s |> conv(8, 3, pad = 1) @c1 |> relu |> conv(8, 3, pad = 1) @c2
        (t + s) |> relu
      }";

    #[test]
    fn a_convolution_with_a_residual_writes_over_the_residual_where_it_dies() {
        let g = optimized(RESIDUAL_BLOCK);
        let c2 = g.find("c2").unwrap();
        assert!(matches!(&g.node(c2).op, Op::FusedConv(f) if f.residual), "the add fused into c2");
        let p = plan(&g);
        p.check(&g).unwrap();
        let s = g.find("s").unwrap().value();
        assert_eq!(p.values[&c2.value()], p.values[&s], "c2's output is stored over `s`");
    }

    #[test]
    fn a_residual_read_again_later_keeps_its_buffer() {
        let g = optimized(&RESIDUAL_BLOCK.replace("(t + s) |> relu", "((t + s) |> relu) + s"));
        let c2 = g.find("c2").unwrap();
        assert!(matches!(&g.node(c2).op, Op::FusedConv(f) if f.residual));
        let p = plan(&g);
        p.check(&g).unwrap();
        let s = g.find("s").unwrap().value();
        assert_ne!(p.values[&c2.value()].buffer, p.values[&s].buffer);
    }

    #[test]
    fn a_convolution_never_writes_over_its_own_input_even_when_it_is_also_the_residual() {
        let g = optimized(
            "network n(x: [8, 8, 8]) { s = x |> conv(8, 1) @s \n (s |> conv(8, 3, pad = 1) @c) + s }",
        );
        let c = g.find("c").unwrap();
        assert!(matches!(&g.node(c).op, Op::FusedConv(f) if f.residual));
        let p = plan(&g);
        p.check(&g).unwrap();
        assert_ne!(p.values[&c.value()].buffer, p.values[&g.find("s").unwrap().value()].buffer);
    }

    /// The check rejects a plan that stores a convolution's output over its input.
    #[test]
    fn the_check_rejects_a_convolution_written_over_its_input() {
        let g = optimized(RESIDUAL_BLOCK);
        let mut p = plan(&g);
        let (c1, s) = (g.find("c1").unwrap().value(), g.find("s").unwrap().value());
        let home = p.values[&s];
        p.values.insert(c1, home);
        assert!(p.check(&g).is_err());
    }

    #[test]
    fn in_place_concat_inputs_are_views_of_the_concat_buffer() {
        let g = optimized(
            "network n(x: [4, 8, 8]) { concat(x |> conv(2, 1) @a, x |> conv(3, 3, pad = 1) @b) |> relu }",
        );
        let p = plan(&g);
        p.check(&g).unwrap();
        let concat = g.node_ids().find(|&id| matches!(g.node(id).op, Op::Concat(_))).unwrap();
        let (a, b) = (g.find("a").unwrap().value(), g.find("b").unwrap().value());
        let (pa, pb, pc) = (p.values[&a], p.values[&b], p.values[&concat.value()]);
        assert_eq!((pa.buffer, pb.buffer), (pc.buffer, pc.buffer));
        assert_eq!((pa.offset, pb.offset, pa.sample_stride), (0, 2 * 64, 5 * 64));
    }

    fn concats(g: &Graph) -> Vec<NodeId> {
        g.node_ids().filter(|&id| matches!(g.node(id).op, Op::Concat(_))).collect()
    }

    /// A DenseNet block, one concat per layer: `x_{k+1} = concat(x_k, layer(x_k))`.
    const DENSE_CHAIN: &str = "network n(image: [3, 8, 8]) {
        x = image |> conv(4, 3, pad = 1) @stem
        for i in 0..3 as layer{i} {
          x = concat(x, x |> batchnorm @n |> relu |> conv(8, 1, bias = false) @a |> relu |> conv(2, 3, pad = 1) @b)
        }
        x |> relu
      }";

    #[test]
    fn a_dense_chain_of_concats_lives_in_one_buffer_each_layer_writing_its_slice() {
        let g = optimized(DENSE_CHAIN);
        let p = plan(&g);
        p.check(&g).unwrap();
        let cs = concats(&g);
        assert_eq!(cs.len(), 3);
        assert!(cs.iter().all(|&c| p.concat_is_view(&g, c)), "no concat copies");
        let last = p.values[&cs[2].value()];
        let plane = 64;
        assert_eq!(last.sample_stride, 10 * plane, "the block's buffer: 4 + 3 x 2 channels");
        for (k, &c) in cs.iter().enumerate() {
            // Each concat is the block buffer's prefix; layer k's new features follow it.
            assert_eq!((p.values[&c.value()].buffer, p.values[&c.value()].offset), (last.buffer, 0));
            let new = g.find(&format!("layer{k}.b")).unwrap().value();
            assert_eq!(p.values[&new], Placement { offset: (4 + 2 * k) * plane, ..last });
        }
        // The block's input is written by its producer at the start of the block buffer.
        assert_eq!(p.values[&g.find("stem").unwrap().value()], Placement { offset: 0, ..last });
    }

    #[test]
    fn a_concat_of_values_already_placed_one_after_the_other_is_a_view_of_them() {
        // torchvision's form: each layer concatenates every feature so far.
        let g = optimized(
            "network n(x: [4, 8, 8]) {
               s = x |> conv(4, 1) @s
               a = s |> conv(2, 3, pad = 1) @a
               b = concat(s, a) |> conv(2, 3, pad = 1) @b
               concat(s, a, b) |> relu
             }",
        );
        let p = plan(&g);
        p.check(&g).unwrap();
        let cs = concats(&g);
        assert!(cs.iter().all(|&c| p.concat_is_view(&g, c)));
        let (prefix, all) = (p.values[&cs[0].value()], p.values[&cs[1].value()]);
        assert_eq!((prefix.buffer, prefix.offset, prefix.sample_stride), (all.buffer, 0, 8 * 64));
    }

    #[test]
    fn a_value_two_concats_need_at_different_places_is_copied_by_one() {
        let g = optimized(
            "network n(x: [4, 8, 8]) {
               a = x |> conv(2, 1) @a
               p = concat(a, x |> conv(2, 1) @b)
               q = concat(x |> conv(2, 1) @c, a)
               p + q
             }",
        );
        let p = plan(&g);
        p.check(&g).unwrap();
        let in_place: Vec<bool> = concats(&g).iter().map(|&c| p.concat_is_view(&g, c)).collect();
        assert_eq!(in_place, [false, true], "the later concat places `a`, the earlier copies it");
    }

    #[test]
    fn an_elementwise_op_does_not_write_over_a_concat_whose_part_is_read_later() {
        // `a` lives in the concat's buffer and is read after the ReLU of the concat, which must not
        // write over it.
        let g = optimized(
            "network n(x: [4, 8, 8]) {
               a = x |> conv(4, 1) @a
               c = concat(a, x |> conv(4, 1) @b)
               r = relu(c)
               z = concat(a, a) |> conv(8, 1) @z
               r + z
             }",
        );
        let p = plan(&g);
        p.check(&g).unwrap();
        let c = concats(&g)[0];
        let r = g.consumers(c.value())[0];
        assert_eq!(g.node(r).op.label(), "relu");
        assert!(p.concat_is_view(&g, c));
        assert_ne!(p.values[&r.value()].buffer, p.values[&c.value()].buffer);
    }

    #[test]
    fn slices_view_the_merged_gemm_output() {
        let g = optimized(
            "network n(x: [4, 8, 8]) { a = x |> conv(2, 1) @a |> conv(2, 3, pad = 1) @a2 \n b = x |> conv(3, 1) @b |> conv(2, 3, pad = 1) @b2 \n a + b }",
        );
        let p = plan(&g);
        p.check(&g).unwrap();
        let slices: Vec<_> = g.node_ids().filter(|&id| matches!(g.node(id).op, Op::Slice(_))).collect();
        assert_eq!(slices.len(), 2);
        let merged = g.inputs(slices[0])[0];
        assert!(slices.iter().all(|s| p.values[&s.value()].buffer == p.values[&merged].buffer));
    }

    #[test]
    fn every_seed_model_has_a_sound_plan_far_below_the_naive_sum() {
        for (path, mut g) in crate::testing::seed_models() {
            passes::optimize(&mut g, &passes::Options::default()).unwrap();
            let p = plan(&g);
            p.check(&g).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(p.arena_bytes(1) * 2 < naive_bytes(&g), "{}", path.display());
            if path.ends_with("resnet50.net") {
                // Every bottleneck's last conv writes over its shortcut but layer1.0's, whose
                // shortcut is a channel slice of the merged conv1|downsample GEMM (the other
                // stages' downsamples are strided and stay apart from their conv1).
                let (mut in_place, mut residual) = (0, 0);
                for id in g.node_ids() {
                    if matches!(&g.node(id).op, Op::FusedConv(f) if f.residual) {
                        residual += 1;
                        let shortcut = g.inputs(id)[1];
                        in_place += usize::from(p.values[&id.value()] == p.values[&shortcut]);
                    }
                }
                assert_eq!((in_place, residual), (15, 16));
            }
        }
    }
}
