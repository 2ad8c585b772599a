//! The kernel registry: an ordered list of named implementations, each an algorithm on a tile
//! backend with a predicate on the kernel's shape.
//!
//! The optimiser chooses the algorithm (a convolution's [`ConvKind`](crate::ir::ConvKind), visible
//! in `netc ir --stage optimized`); code generation picks, for the ISA it generates for, the first
//! implementation in [`REGISTRY`] whose ISA the target has and whose predicate accepts the
//! kernel. Entries are ordered widest ISA first, so `--isa avx2` on an AVX-512 host skips the
//! avx512 entries and every host gets the widest tiles it can run. Families without register tiles
//! (pooling, LRN, elementwise, softmax) are f32x4 Cranelift code on every ISA (`*.sse`).
//!
//! On hosts whose zmm FMAs run at the ymm rate (AMD Zen 4), a convolution that fills clearly more
//! lanes with 8-lane vectors (7x7 planes) takes the avx2 implementation.
//!
//! The chosen name travels with the compiled kernel: `netc bench --profile` and
//! `netc ir --stage asm` print it.

use super::conv::{ConvPath, ConvPlan};
use super::isa::Isa;
use super::{CodegenError, KernelSpec};

/// One implementation: its name, the ISA of its code, and which kernels it accepts.
pub struct Implementation {
    /// `family.algorithm.isa`, e.g. `conv.rowpanel.avx512`.
    pub name: &'static str,
    /// The instruction set its tiles use (the target must have at least this one).
    pub isa: Isa,
    accepts: fn(&KernelSpec) -> bool,
}

impl Implementation {
    /// Whether this implementation can run `spec` for a target of `isa`.
    pub fn applies(&self, spec: &KernelSpec, isa: Isa) -> bool {
        self.isa <= isa && (self.accepts)(spec)
    }
}

impl std::fmt::Debug for Implementation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn gemm1x1(spec: &KernelSpec) -> bool {
    matches!(spec, KernelSpec::Conv(c) if ConvPath::of(c) == ConvPath::Direct1x1)
}

/// Whether a convolution should take 8-lane tiles on an AVX-512 host: where zmm FMAs do not
/// double the peak ([`super::isa::zmm_doubles_peak`]) and 8-lane vectors hold clearly more outputs
/// (a 7x7 plane is 49 of 64 zmm lanes but 49 of 56 ymm ones).
fn prefers_ymm(spec: &KernelSpec) -> bool {
    let KernelSpec::Conv(c) = spec else { return false };
    if super::isa::zmm_doubles_peak() {
        return false;
    }
    match (ConvPlan::new(c, Isa::Avx512), ConvPlan::new(c, Isa::Avx2)) {
        (Ok(wide), Ok(narrow)) => narrow.lane_share() > 1.05 * wide.lane_share(),
        _ => false,
    }
}

fn gemm1x1_zmm(spec: &KernelSpec) -> bool {
    gemm1x1(spec) && !prefers_ymm(spec)
}

fn rowpanel_zmm(spec: &KernelSpec) -> bool {
    rowpanel(spec) && !prefers_ymm(spec)
}

fn winograd_zmm(spec: &KernelSpec) -> bool {
    winograd(spec) && !prefers_ymm(spec)
}

fn rowpanel(spec: &KernelSpec) -> bool {
    matches!(spec, KernelSpec::Conv(c) if ConvPath::of(c) == ConvPath::RowPanel)
}

fn winograd(spec: &KernelSpec) -> bool {
    matches!(spec, KernelSpec::Conv(c) if matches!(ConvPath::of(c), ConvPath::Winograd(_)))
}

fn chanvec(spec: &KernelSpec) -> bool {
    matches!(spec, KernelSpec::Conv(c) if ConvPath::of(c) == ConvPath::ChanVec)
}

fn depthwise(spec: &KernelSpec) -> bool {
    matches!(spec, KernelSpec::Conv(c) if ConvPath::of(c) == ConvPath::Depthwise)
}

fn linear(spec: &KernelSpec) -> bool {
    matches!(spec, KernelSpec::Linear(_))
}

fn pool(spec: &KernelSpec) -> bool {
    matches!(spec, KernelSpec::Pool(_))
}

fn lrn(spec: &KernelSpec) -> bool {
    matches!(spec, KernelSpec::Lrn(_))
}

fn eltwise(spec: &KernelSpec) -> bool {
    matches!(spec, KernelSpec::Eltwise(_))
}

fn softmax(spec: &KernelSpec) -> bool {
    matches!(spec, KernelSpec::Softmax(_))
}

const fn entry(name: &'static str, isa: Isa, accepts: fn(&KernelSpec) -> bool) -> Implementation {
    Implementation { name, isa, accepts }
}

/// Every implementation, in the order they are tried.
pub static REGISTRY: &[Implementation] = &[
    entry("conv.gemm1x1.avx512", Isa::Avx512, gemm1x1_zmm),
    entry("conv.gemm1x1.avx2", Isa::Avx2, gemm1x1),
    entry("conv.gemm1x1.sse", Isa::Sse, gemm1x1),
    entry("conv.rowpanel.avx512", Isa::Avx512, rowpanel_zmm),
    entry("conv.rowpanel.avx2", Isa::Avx2, rowpanel),
    entry("conv.rowpanel.sse", Isa::Sse, rowpanel),
    entry("conv.winograd.avx512", Isa::Avx512, winograd_zmm),
    entry("conv.winograd.avx2", Isa::Avx2, winograd),
    entry("conv.winograd.sse", Isa::Sse, winograd),
    entry("conv.chanvec.avx512", Isa::Avx512, chanvec),
    entry("conv.chanvec.avx2", Isa::Avx2, chanvec),
    entry("conv.chanvec.sse", Isa::Sse, chanvec),
    // No `prefers_ymm` here: the depthwise kernels' row tails are k-masked on avx512 but
    // `vmaskmovps` stores on avx2, which are microcoded and slow on AMD cores (the 14x14 -> 7x7
    // layer of MobileNetV2 ran 3x slower on avx2 than on avx512 on this Zen 4 host).
    entry("conv.depthwise.avx512", Isa::Avx512, depthwise),
    entry("conv.depthwise.avx2", Isa::Avx2, depthwise),
    entry("conv.depthwise.sse", Isa::Sse, depthwise),
    entry("linear.avx512", Isa::Avx512, linear),
    entry("linear.avx2", Isa::Avx2, linear),
    entry("linear.sse", Isa::Sse, linear),
    entry("pool.sse", Isa::Sse, pool),
    entry("lrn.sse", Isa::Sse, lrn),
    entry("eltwise.sse", Isa::Sse, eltwise),
    entry("softmax.sse", Isa::Sse, softmax),
];

/// The implementation `spec` gets on a target of `isa`.
pub fn select(spec: &KernelSpec, isa: Isa) -> Result<&'static Implementation, CodegenError> {
    REGISTRY.iter().find(|i| i.applies(spec, isa)).ok_or_else(|| {
        CodegenError::Unsupported(format!("no {isa} implementation of {}", spec.describe(Isa::Sse)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::conv::ConvSpec;
    use crate::codegen::pool::{PoolKind, PoolSpec};
    use crate::ir::{Conv2d, ConvKind, FusedConv, Relu};

    fn conv(kind: ConvKind, k: usize) -> KernelSpec {
        let op = FusedConv {
            conv: Conv2d {
                in_channels: 8,
                out_channels: 8,
                kernel: [k, k],
                stride: [1, 1],
                padding: [0, 0],
                dilation: [1, 1],
                groups: 1,
                bias: true,
            },
            kind,
            prologue: None,
            affine: false,
            residual: false,
            post_affine: false,
            relu: Relu::None,
            activation: None,
            channel_scale: false,
        };
        KernelSpec::Conv(ConvSpec::contiguous(op, [8, 16, 16]).unwrap())
    }

    #[test]
    fn every_isa_gets_its_widest_implementation_of_the_chosen_algorithm() {
        let one = conv(ConvKind::Gemm1x1, 1);
        let three = conv(ConvKind::Direct, 3);
        for (isa, suffix) in [(Isa::Sse, "sse"), (Isa::Avx2, "avx2"), (Isa::Avx512, "avx512")] {
            assert_eq!(select(&one, isa).unwrap().name, format!("conv.gemm1x1.{suffix}"));
            assert_eq!(select(&three, isa).unwrap().name, format!("conv.rowpanel.{suffix}"));
        }
        // A 1x1 convolution the optimiser left as a general one runs the row panel.
        assert_eq!(select(&conv(ConvKind::Direct, 1), Isa::Avx2).unwrap().name, "conv.rowpanel.avx2");
    }

    /// A 7x7 plane fills 49 of 64 zmm lanes, 49 of 56 ymm ones: where zmm FMAs do not double the
    /// peak, 8-lane tiles win; elsewhere the zmm ones do.
    #[test]
    fn small_planes_take_ymm_tiles_where_zmm_does_not_double_the_peak() {
        let op = match conv(ConvKind::Gemm1x1, 1) {
            KernelSpec::Conv(c) => c.op,
            _ => unreachable!(),
        };
        let small = KernelSpec::Conv(ConvSpec::contiguous(op, [8, 7, 7]).unwrap());
        let want =
            if crate::codegen::isa::zmm_doubles_peak() { "conv.gemm1x1.avx512" } else { "conv.gemm1x1.avx2" };
        assert_eq!(select(&small, Isa::Avx512).unwrap().name, want);
    }

    #[test]
    fn families_without_tiles_run_their_f32x4_code_on_every_isa() {
        let pool = KernelSpec::Pool(PoolSpec {
            kind: PoolKind::Max,
            input: [4, 6, 6],
            output: [4, 3, 3],
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            dilation: [1, 1],
            in_stride: 144,
            out_stride: 36,
        });
        for isa in Isa::ALL {
            let chosen = select(&pool, isa).unwrap();
            assert_eq!((chosen.name, chosen.isa), ("pool.sse", Isa::Sse));
        }
    }

    #[test]
    fn names_say_family_algorithm_and_isa() {
        for i in REGISTRY {
            assert!(i.name.ends_with(&format!(".{}", i.isa.name())), "{}", i.name);
        }
        let three = conv(ConvKind::Direct, 3);
        for isa in Isa::ALL {
            let chosen = select(&three, isa).unwrap();
            assert_eq!(chosen.name, format!("{}.{}", three.algorithm(), chosen.isa));
        }
    }
}
