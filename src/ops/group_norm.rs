//! Group normalisation (`shaders/group_norm.wgsl`), torch.nn.GroupNorm semantics (biased
//! variance, eps inside the square root; Wu & He 2018), optionally fused with the SiLU that
//! follows every GroupNorm in diffusers' ResnetBlock2D.

use crate::error::{Error, Result};
use crate::gpu::{expect_shape, grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::ops::elementwise::nchw;
use crate::shaders::{GROUP_NORM, GROUP_NORM_V4};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GroupNormParams {
    group_numel: u32,
    hw: u32,
    channels_per_group: u32,
    groups: u32,
    num_groups_total: u32,
    silu: u32,
    eps: f32,
    stats_offset: u32,
}

/// Whether group norm of planes of `hw` values takes the vec4 kernels
/// (`group_norm_v4.wgsl`, `group_norm_backward_v4.wgsl`): every plane then starts on a vec4
/// and the tensor is whole vec4s. On llvmpipe they read and write a quarter as often.
pub(crate) fn use_v4(hw: usize) -> bool {
    hw.is_multiple_of(4)
}

/// out = GroupNorm(x; groups, eps) · gamma + beta, then SiLU if `silu`.
/// x, out: (N, C, H, W); gamma, beta: (C); C must be divisible by `groups`.
/// `out` may not alias `x`. With `saved` (training; length
/// [`crate::ops::group_norm_backward::group_norm_saved_len`]) it also writes each group's
/// statistics (m1, m_lo, rstd, 0) there after the first 2·N·C elements, for
/// [`crate::ops::group_norm_backward::group_norm_backward`], which then need not recompute
/// them (the same bits: the same statistics code).
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    out: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
    saved: Option<&Tensor>,
) -> Result<()> {
    let [n, c, h, w] = nchw(x, "group_norm: x")?;
    if groups == 0 || c % groups != 0 {
        return Err(Error::shape(format!(
            "group_norm: x has {c} channels, not divisible into {groups} groups"
        )));
    }
    expect_shape(gamma, &[c], "group_norm: gamma")?;
    expect_shape(beta, &[c], "group_norm: beta")?;
    expect_shape(out, &x.shape, "group_norm: out")?;
    if let Some(s) = saved {
        let len = crate::ops::group_norm_backward::group_norm_saved_len(n, c, groups);
        expect_shape(s, &[len], "group_norm: saved statistics")?;
    }
    let too_big = |what: &str| Error::shape(format!("group_norm: {what} is too large"));
    let group_numel = u32::try_from(c / groups * h * w).map_err(|_| too_big("a group"))?;
    let total = u32::try_from(n * groups).map_err(|_| too_big("N * groups"))?;
    if x.numel() > u32::MAX as usize
        || crate::ops::group_norm_backward::group_norm_saved_len(n, c, groups) > u32::MAX as usize
    {
        return Err(too_big("x"));
    }
    if group_numel == 0 || total == 0 {
        return Ok(());
    }
    let params = GroupNormParams {
        group_numel,
        hw: (h * w) as u32,
        channels_per_group: (c / groups) as u32,
        groups: groups as u32,
        num_groups_total: total,
        silu: silu as u32,
        eps,
        stats_offset: (2 * n * c) as u32,
    };
    let v4 = use_v4(h * w);
    let entry = match (v4, saved.is_some()) {
        (false, false) => "group_norm",
        (false, true) => "group_norm_stats",
        (true, false) => "group_norm_v4",
        (true, true) => "group_norm_v4_stats",
    };
    let outputs: Vec<&crate::gpu::BufferView> = match saved {
        Some(s) => vec![&out.buffer, &s.buffer],
        None => vec![&out.buffer],
    };
    ctx.record(
        program,
        DispatchDesc {
            label: "group_norm",
            shader: if v4 { &GROUP_NORM_V4 } else { &GROUP_NORM },
            entry,
            constants: &ctx.reduction_constants(),
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[&x.buffer, &gamma.buffer, &beta.buffer],
            outputs: &outputs,
            workgroups: grid_1d(total as u64)?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random, REDUCTION_WORKGROUPS};

    /// f64 reference of torch.nn.GroupNorm (+ SiLU).
    fn reference(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        shape: [usize; 4],
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> Vec<f64> {
        let [n, c, h, w] = shape;
        let cg = c / groups;
        let len = cg * h * w;
        let mut out = vec![0.0; x.len()];
        for g in 0..n * groups {
            let xs = &x[g * len..(g + 1) * len];
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
            let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for (i, &v) in xs.iter().enumerate() {
                let ch = (g % groups) * cg + i / (h * w);
                let y = (v as f64 - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
                out[g * len + i] = if silu { y / (1.0 + (-y).exp()) } else { y };
            }
        }
        out
    }

    fn check(shape: [usize; 4], groups: usize, offset: f32, silu: bool, seed: u64) {
        let ctx = ctx();
        let [n, c, h, w] = shape;
        let x: Vec<f32> = random(n * c * h * w, seed)
            .iter()
            .map(|v| v + offset)
            .collect();
        let gamma: Vec<f32> = random(c, seed + 1).iter().map(|v| 1.0 + 0.5 * v).collect();
        let beta = random(c, seed + 2);
        let tx = ctx.upload(&x, &shape).unwrap();
        let tg = ctx.upload(&gamma, &[c]).unwrap();
        let tb = ctx.upload(&beta, &[c]).unwrap();
        let want = reference(&x, &gamma, &beta, shape, groups, 1e-5, silu);
        for wg in REDUCTION_WORKGROUPS {
            ctx.set_reduction_workgroup(wg);
            let out = ctx.zeros(&shape).unwrap();
            let mut p = Program::new();
            group_norm(&ctx, &mut p, &tx, &tg, &tb, &out, groups, 1e-5, silu, None).unwrap();
            ctx.run(&p).unwrap();
            let got = block_on(ctx.read(&out)).unwrap();
            // gamma is in [0.5, 1.5] and |x - mean| / std <= ~1.8, so |y| <~ 4: 1e-5 absolute
            // is a few f32 ulps of the result (the offset-100 case relies on the two-pass mean).
            assert_close(
                &got,
                &want,
                1e-5,
                0.0,
                &format!("group_norm {shape:?} g{groups} +{offset} silu={silu} WG={wg}"),
            );
        }
    }

    #[test]
    fn group_norm_small_odd_shape() {
        check([2, 6, 7, 7], 3, 0.0, false, 10);
        check([2, 6, 7, 7], 3, 0.0, true, 11);
        check([3, 5, 3, 1], 5, 0.0, false, 12);
        // H·W a multiple of 4: the vec4 kernel.
        check([2, 6, 4, 3], 3, 0.0, true, 13);
        check([3, 4, 4, 1], 4, 0.0, false, 14);
    }

    #[test]
    fn group_norm_unet_shape() {
        check([1, 64, 28, 28], 32, 0.0, false, 20);
        check([1, 64, 28, 28], 32, 0.0, true, 21);
        // A group larger than 256 * 64 values, so every thread loops many times.
        check([1, 4, 130, 129], 1, 0.0, true, 22);
    }

    #[test]
    fn group_norm_large_mean_is_stable() {
        // A one-pass E[x²] - E[x]² would lose all digits of the variance here.
        check([2, 6, 7, 7], 3, 100.0, false, 30);
        check([1, 64, 28, 28], 32, 100.0, true, 31);
        check([1, 8, 33, 31], 2, -1000.0, false, 32);
    }

    #[test]
    fn group_norm_bad_shapes_are_errors() {
        let ctx = ctx();
        let x = ctx.zeros(&[1, 6, 4, 4]).unwrap();
        let g = ctx.zeros(&[6]).unwrap();
        let g5 = ctx.zeros(&[5]).unwrap();
        let out = ctx.zeros(&[1, 6, 4, 4]).unwrap();
        let mut p = Program::new();
        let r = group_norm(&ctx, &mut p, &x, &g, &g, &out, 4, 1e-5, false, None);
        assert!(matches!(r, Err(Error::Shape(_))));
        let r = group_norm(&ctx, &mut p, &x, &g5, &g, &out, 3, 1e-5, false, None);
        assert!(matches!(r, Err(Error::Shape(_))));
        let r = group_norm(&ctx, &mut p, &x, &g, &g, &g, 3, 1e-5, false, None);
        assert!(matches!(r, Err(Error::Shape(_))));
        assert!(p.is_empty());
    }
}
