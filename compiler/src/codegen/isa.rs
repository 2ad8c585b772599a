//! The target: x86-64 with AVX2 and FMA, feature flags set explicitly.
//!
//! Cranelift's x64 backend lowers 128-bit vectors only. `fma` becomes `vfmadd*ps` only when both
//! `has_avx` and `has_fma` are set; the `znver3` / `x86-64-v3` presets leave `has_avx` off, and then
//! every vector `fma` turns into four libcalls. So the flags are set one by one here, after checking
//! that the host really has them.

use super::CodegenError;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};

/// How hard Cranelift optimises a kernel family.
///
/// Measured on this machine (see `benches/kernels.rs` and the notes in `../shared/reference`): the
/// e-graph pass of `speed` re-places pure instructions (splats, FMAs) at their uses, undoing the
/// generator's interleaving of register-blocked GEMM tiles, which then spill; `none` keeps the order
/// the generator chose. Kernels whose loops are already written out by the generator use `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OptLevel {
    None,
    Speed,
}

impl OptLevel {
    fn flag(self) -> &'static str {
        match self {
            OptLevel::None => "none",
            OptLevel::Speed => "speed",
        }
    }
}

/// The CPU features every kernel relies on, by their `is_x86_feature_detected!` names.
pub const REQUIRED_FEATURES: [&str; 7] = ["sse3", "ssse3", "sse4.1", "sse4.2", "avx", "avx2", "fma"];

/// Checks that the host has every feature in [`REQUIRED_FEATURES`].
pub fn check_host() -> Result<(), CodegenError> {
    #[cfg(target_arch = "x86_64")]
    {
        let have = [
            is_x86_feature_detected!("sse3"),
            is_x86_feature_detected!("ssse3"),
            is_x86_feature_detected!("sse4.1"),
            is_x86_feature_detected!("sse4.2"),
            is_x86_feature_detected!("avx"),
            is_x86_feature_detected!("avx2"),
            is_x86_feature_detected!("fma"),
        ];
        let missing: Vec<&str> =
            REQUIRED_FEATURES.iter().zip(have).filter(|(_, ok)| !ok).map(|(name, _)| *name).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CodegenError::UnsupportedHost(format!("the CPU lacks {}", missing.join(", "))))
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Err(CodegenError::UnsupportedHost(format!(
            "netc generates x86-64 code (AVX2 + FMA); this is {}",
            std::env::consts::ARCH
        )))
    }
}

/// Builds the host ISA with SSE3..SSE4.2, AVX, AVX2 and FMA enabled explicitly.
pub fn build(opt: OptLevel) -> Result<OwnedTargetIsa, CodegenError> {
    check_host()?;
    let err = |e: &dyn std::fmt::Display| CodegenError::Cranelift(format!("ISA setup: {e}"));
    let mut shared = settings::builder();
    for (name, value) in [
        ("opt_level", opt.flag()),
        ("is_pic", "false"),
        ("enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" }),
    ] {
        shared.set(name, value).map_err(|e| err(&e))?;
    }
    // `false`: do not infer flags from the host, set exactly the ones below.
    let mut isa = cranelift_native::builder_with_options(false).map_err(|e| err(&e))?;
    for flag in ["has_sse3", "has_ssse3", "has_sse41", "has_sse42", "has_avx", "has_avx2", "has_fma"] {
        isa.enable(flag).map_err(|e| err(&e))?;
    }
    isa.finish(settings::Flags::new(shared)).map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_has_avx_and_fma() {
        let isa = build(OptLevel::None).expect("the test machine has AVX2 and FMA");
        let flags = isa.isa_flags();
        for name in ["has_avx", "has_avx2", "has_fma", "has_sse41"] {
            let v = flags.iter().find(|v| v.name == name).expect("flag exists");
            assert_eq!(v.as_bool(), Some(true), "{name}");
        }
        assert_eq!(isa.flags().opt_level(), cranelift_codegen::settings::OptLevel::None);
    }
}
