//! Backward of group normalisation (`shaders/group_norm_backward.wgsl`), optionally through
//! the SiLU that [`crate::ops::group_norm::group_norm`] fuses after the affine. Mean and
//! variance are either recomputed from the forward input, with the forward's own two-pass
//! algorithm (so large mean offsets lose no accuracy), or — in training, where the forward ran
//! [`crate::ops::group_norm::group_norm`] with `saved` — read from what it saved (the same
//! bits, without the two statistics passes and their four workgroup barriers).

use crate::error::{Error, Result};
use crate::gpu::{expect_shape, grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::ops::elementwise::nchw;
use crate::shaders::{GROUP_NORM_BACKWARD, GROUP_NORM_BACKWARD_V4};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GroupNormBackwardParams {
    group_numel: u32,
    hw: u32,
    channels_per_group: u32,
    groups: u32,
    num_groups_total: u32,
    silu: u32,
    eps: f32,
    accumulate: u32,
    batch: u32,
    channels: u32,
    saved: u32,
    stats_offset: u32,
}

/// Shape of the `scratch` tensor [`group_norm_backward`] needs: per-(n, c) partial sums of
/// dγ and dβ, reduced over n in a second pass so the result is deterministic.
pub fn group_norm_backward_scratch_shape(n: usize, c: usize) -> [usize; 3] {
    [2, n, c]
}

/// Length of the `saved` buffer of [`crate::ops::group_norm::group_norm`] and
/// [`GroupNormStats::Saved`]: the backward's scratch (2·N·C) followed by the forward's
/// (m1, m_lo, rstd, 0) per (n, group).
pub fn group_norm_saved_len(n: usize, c: usize, groups: usize) -> usize {
    2 * n * c + 4 * n * groups
}

/// Where [`group_norm_backward`] gets the forward's statistics, and its scratch.
#[derive(Clone, Copy)]
pub enum GroupNormStats<'a> {
    /// Recomputed from x; the tensor is the scratch
    /// ([`group_norm_backward_scratch_shape`]).
    Recompute(&'a Tensor),
    /// Saved by the forward in this tensor (`saved` of [`crate::ops::group_norm::group_norm`],
    /// length [`group_norm_saved_len`]), which also serves as the scratch. Same bits.
    Saved(&'a Tensor),
}

/// Gradients of out = GroupNorm(x)·γ + β (then SiLU if `silu`), given dout = dL/dout.
/// x, dout, dx: (N, C, H, W); gamma, beta, dgamma, dbeta: (C); `stats`: the statistics'
/// source and the scratch. dx is overwritten, or added to if `accumulate_dx`; dgamma and
/// dbeta are always overwritten (sums over the batch). No output may alias an input. Two
/// dispatches.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    dout: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
    accumulate_dx: bool,
    stats: GroupNormStats,
) -> Result<()> {
    let (scratch, saved) = match stats {
        GroupNormStats::Recompute(t) => (t, false),
        GroupNormStats::Saved(t) => (t, true),
    };
    let [n, c, h, w] = nchw(x, "group_norm_backward: x")?;
    if groups == 0 || c % groups != 0 {
        return Err(Error::shape(format!(
            "group_norm_backward: x has {c} channels, not divisible into {groups} groups"
        )));
    }
    expect_shape(gamma, &[c], "group_norm_backward: gamma")?;
    expect_shape(beta, &[c], "group_norm_backward: beta")?;
    expect_shape(dout, &x.shape, "group_norm_backward: dout")?;
    expect_shape(dx, &x.shape, "group_norm_backward: dx")?;
    expect_shape(dgamma, &[c], "group_norm_backward: dgamma")?;
    expect_shape(dbeta, &[c], "group_norm_backward: dbeta")?;
    if saved {
        expect_shape(
            scratch,
            &[group_norm_saved_len(n, c, groups)],
            "group_norm_backward: saved statistics",
        )?;
    } else {
        expect_shape(
            scratch,
            &group_norm_backward_scratch_shape(n, c),
            "group_norm_backward: scratch",
        )?;
    }
    let too_big = |what: &str| Error::shape(format!("group_norm_backward: {what} is too large"));
    let group_numel = u32::try_from(c / groups * h * w).map_err(|_| too_big("a group"))?;
    let total = u32::try_from(n * groups).map_err(|_| too_big("N * groups"))?;
    if x.numel() > u32::MAX as usize || scratch.numel() > u32::MAX as usize {
        return Err(too_big("x"));
    }
    if c == 0 {
        return Ok(());
    }
    let params = GroupNormBackwardParams {
        group_numel,
        hw: (h * w) as u32,
        channels_per_group: (c / groups) as u32,
        groups: groups as u32,
        num_groups_total: total,
        silu: silu as u32,
        eps,
        accumulate: accumulate_dx as u32,
        batch: n as u32,
        channels: c as u32,
        saved: saved as u32,
        stats_offset: (2 * n * c) as u32,
    };
    let bytes = bytemuck::bytes_of(&params);
    let inputs = [&*x.buffer, &*gamma.buffer, &*beta.buffer, &*dout.buffer];
    let outputs = [
        &*scratch.buffer,
        &*dx.buffer,
        &*dgamma.buffer,
        &*dbeta.buffer,
    ];
    // An empty group (H·W = 0) still needs dγ = dβ = 0: the dx pass then writes zero partials.
    if total > 0 {
        let v4 = crate::ops::group_norm::use_v4(h * w);
        ctx.record(
            program,
            DispatchDesc {
                label: "group_norm_backward_dx",
                shader: if v4 {
                    &GROUP_NORM_BACKWARD_V4
                } else {
                    &GROUP_NORM_BACKWARD
                },
                entry: if v4 {
                    "group_norm_backward_dx_v4"
                } else {
                    "group_norm_backward_dx"
                },
                constants: &ctx.reduction_constants(),
                params: Params::Static(bytes),
                inputs: &inputs,
                outputs: &outputs,
                workgroups: grid_1d(total as u64)?,
            },
        )?;
    }
    ctx.record(
        program,
        DispatchDesc {
            label: "group_norm_backward_params",
            shader: &GROUP_NORM_BACKWARD,
            entry: "group_norm_backward_params",
            constants: &[],
            params: Params::Static(bytes),
            inputs: &inputs,
            outputs: &outputs,
            workgroups: grid_1d((c as u64).div_ceil(256))?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};
    use crate::ops::elementwise_backward::grad_check::*;

    fn silu64(z: f64) -> f64 {
        z / (1.0 + (-z).exp())
    }

    /// f64 forward (torch.nn.GroupNorm + optional SiLU).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
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
            let mean = xs.iter().sum::<f64>() / len as f64;
            let var = xs.iter().map(|&v| (v - mean).powi(2)).sum::<f64>() / len as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for (i, &v) in xs.iter().enumerate() {
                let ch = (g % groups) * cg + i / (h * w);
                let z = (v - mean) * rstd * gamma[ch] + beta[ch];
                out[g * len + i] = if silu { silu64(z) } else { z };
            }
        }
        out
    }

    /// f64 analytic backward: (dx, dgamma, dbeta).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        dy: &[f64],
        shape: [usize; 4],
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let [n, c, h, w] = shape;
        let cg = c / groups;
        let len = cg * h * w;
        let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
        for g in 0..n * groups {
            let xs = &x[g * len..(g + 1) * len];
            let mean = xs.iter().sum::<f64>() / len as f64;
            let var = xs.iter().map(|&v| (v - mean).powi(2)).sum::<f64>() / len as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            let ch = |i: usize| (g % groups) * cg + i / (h * w);
            let xh: Vec<f64> = xs.iter().map(|&v| (v - mean) * rstd).collect();
            let dz: Vec<f64> = (0..len)
                .map(|i| {
                    let d = dy[g * len + i];
                    if !silu {
                        return d;
                    }
                    let z = gamma[ch(i)] * xh[i] + beta[ch(i)];
                    let s = 1.0 / (1.0 + (-z).exp());
                    d * s * (1.0 + z * (1.0 - s))
                })
                .collect();
            let mut a = 0.0;
            let mut b = 0.0;
            for i in 0..len {
                db[ch(i)] += dz[i];
                dg[ch(i)] += dz[i] * xh[i];
                a += gamma[ch(i)] * dz[i];
                b += gamma[ch(i)] * dz[i] * xh[i];
            }
            let (a, b) = (a / len as f64, b / len as f64);
            for i in 0..len {
                dx[g * len + i] = rstd * (gamma[ch(i)] * dz[i] - a - xh[i] * b);
            }
        }
        (dx, dg, db)
    }

    fn f32s(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    /// [`check_at`] at each of the reduction workgroup sizes.
    fn check(shape: [usize; 4], groups: usize, offset: f32, silu: bool, acc: bool, seed: u64) {
        for wg in crate::gpu::test_util::REDUCTION_WORKGROUPS {
            check_at(wg, shape, groups, offset, silu, acc, seed);
        }
    }

    /// loss = Σ r ⊙ g(GN(f(x0); γ, β)), checked for x0, γ and β against finite differences
    /// and against the analytic f64 gradient, with reductions in `wg`-thread workgroups.
    fn check_at(
        wg: u32,
        shape: [usize; 4],
        groups: usize,
        offset: f32,
        silu: bool,
        acc: bool,
        seed: u64,
    ) {
        let ctx = ctx();
        ctx.set_reduction_workgroup(wg);
        let [n, c, h, w] = shape;
        let eps = 1e-5;
        // The op's input is a = f(x0) = 2·x0, exact in f32.
        let x0: Vec<f64> = random(n * c * h * w, seed)
            .iter()
            .map(|&v| ((v + offset) * 0.5) as f64)
            .collect();
        let a: Vec<f64> = x0.iter().map(|&v| f(v)).collect();
        let gamma: Vec<f64> = to_f64(
            &random(c, seed + 1)
                .iter()
                .map(|v| 1.0 + 0.5 * v)
                .collect::<Vec<_>>(),
        );
        let beta = to_f64(&random(c, seed + 2));
        let y = forward(&a, &gamma, &beta, shape, groups, eps, silu);
        let r = to_f64(&random(y.len(), seed + 3));
        let dy = upstream(&y, &r);

        let tx = ctx.upload(&f32s(&a), &shape).unwrap();
        let tg = ctx.upload(&f32s(&gamma), &[c]).unwrap();
        let tb = ctx.upload(&f32s(&beta), &[c]).unwrap();
        let tdy = ctx.upload(&dy, &shape).unwrap();
        let prefill = random(a.len(), seed + 4);
        let tdx = ctx.upload(&prefill, &shape).unwrap();
        // Garbage in dγ/dβ and scratch: they must be overwritten.
        let tdg = ctx.upload(&vec![7.0; c], &[c]).unwrap();
        let tdb = ctx.upload(&vec![-7.0; c], &[c]).unwrap();
        let scratch_shape = group_norm_backward_scratch_shape(n, c);
        let scratch = ctx.upload(&vec![3.0; 2 * n * c], &scratch_shape).unwrap();
        let mut p = Program::new();
        group_norm_backward(
            &ctx,
            &mut p,
            &tx,
            &tg,
            &tb,
            &tdy,
            &tdx,
            &tdg,
            &tdb,
            groups,
            eps as f32,
            silu,
            acc,
            GroupNormStats::Recompute(&scratch),
        )
        .unwrap();
        ctx.run(&p).unwrap();
        let got_dx = block_on(ctx.read(&tdx)).unwrap();
        let got_dg = block_on(ctx.read(&tdg)).unwrap();
        let got_db = block_on(ctx.read(&tdb)).unwrap();
        let base: Vec<f64> = if acc {
            to_f64(&prefill)
        } else {
            vec![0.0; a.len()]
        };
        let what = format!("gn_bwd {shape:?} g{groups} +{offset} silu={silu} acc={acc} WG={wg}");

        // The training path: the forward saves the statistics, the backward reads them. Same
        // bits as recomputing them (the forward output too), with garbage in the scratch part.
        let saved_len = group_norm_saved_len(n, c, groups);
        let saved = ctx.upload(&vec![3.0; saved_len], &[saved_len]).unwrap();
        let (y_plain, y_saving) = (ctx.zeros(&shape).unwrap(), ctx.zeros(&shape).unwrap());
        let tdx2 = ctx.upload(&prefill, &shape).unwrap();
        let (tdg2, tdb2) = (ctx.zeros(&[c]).unwrap(), ctx.zeros(&[c]).unwrap());
        let mut p = Program::new();
        let ge = eps as f32;
        use crate::ops::group_norm::group_norm;
        group_norm(
            &ctx, &mut p, &tx, &tg, &tb, &y_plain, groups, ge, silu, None,
        )
        .unwrap();
        let s = Some(&saved);
        group_norm(&ctx, &mut p, &tx, &tg, &tb, &y_saving, groups, ge, silu, s).unwrap();
        group_norm_backward(
            &ctx,
            &mut p,
            &tx,
            &tg,
            &tb,
            &tdy,
            &tdx2,
            &tdg2,
            &tdb2,
            groups,
            ge,
            silu,
            acc,
            GroupNormStats::Saved(&saved),
        )
        .unwrap();
        ctx.run(&p).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = block_on(ctx.read(t)).unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(
            bits(&y_plain),
            bits(&y_saving),
            "{what}: forward saving stats"
        );
        assert_eq!(bits(&tdx), bits(&tdx2), "{what}: dx from saved statistics");
        assert_eq!(
            bits(&tdg),
            bits(&tdg2),
            "{what}: dgamma from saved statistics"
        );
        assert_eq!(
            bits(&tdb),
            bits(&tdb2),
            "{what}: dbeta from saved statistics"
        );

        // Analytic f64 gradient at the same f32 point. dx is a difference of O(rstd·|dz|)
        // terms; x − m1 is exact in f32 (Sterbenz), so only the rounding of x̂, rstd and the
        // group sums (a few ulps of O(1) values) remains, also with a large mean offset.
        // Measured: |diff| <= 2e-6 (offset 0) and <= 2e-6 (offset 100, -1000) on llvmpipe.
        let (dx, dg, db) = backward(&a, &gamma, &beta, &to_f64(&dy), shape, groups, eps, silu);
        let want_dx: Vec<f64> = dx.iter().zip(&base).map(|(g, b)| g + b).collect();
        let xtol = if offset.abs() > 10.0 { 3e-5 } else { 1e-5 };
        assert_close(
            &got_dx,
            &want_dx,
            xtol,
            1e-4,
            &format!("{what}: dx vs analytic"),
        );
        // dγ, dβ: sums of up to N·H·W terms of size ~1.
        let m = (n * h * w) as f64;
        assert_close(
            &got_dg,
            &dg,
            xtol * m.sqrt(),
            1e-4,
            &format!("{what}: dgamma vs analytic"),
        );
        assert_close(
            &got_db,
            &db,
            1e-5 * m.sqrt(),
            1e-4,
            &format!("{what}: dbeta vs analytic"),
        );

        // Finite differences of the whole graph in f64 (h = 1e-6; truncation ~1e-12 and
        // cancellation ~1e-10·|L|, far below the f32 tolerances).
        let loss_x = |x0: &[f64]| {
            let a: Vec<f64> = x0.iter().map(|&v| f(v)).collect();
            loss_of(&forward(&a, &gamma, &beta, shape, groups, eps, silu), &r)
        };
        let fd = finite_diff(&loss_x, &x0, 1e-6);
        let got_dx0: Vec<f32> = got_dx
            .iter()
            .zip(&base)
            .map(|(&g, &b)| ((g as f64 - b) * DF) as f32)
            .collect();
        assert_close(
            &got_dx0,
            &fd,
            2.0 * xtol,
            1e-4,
            &format!("{what}: dx vs finite differences"),
        );
        let loss_g = |g: &[f64]| loss_of(&forward(&a, g, &beta, shape, groups, eps, silu), &r);
        let fd = finite_diff(&loss_g, &gamma, 1e-6);
        assert_close(
            &got_dg,
            &fd,
            xtol * m.sqrt(),
            1e-4,
            &format!("{what}: dgamma vs FD"),
        );
        let loss_b = |b: &[f64]| loss_of(&forward(&a, &gamma, b, shape, groups, eps, silu), &r);
        let fd = finite_diff(&loss_b, &beta, 1e-6);
        assert_close(
            &got_db,
            &fd,
            1e-5 * m.sqrt(),
            1e-4,
            &format!("{what}: dbeta vs FD"),
        );
    }

    #[test]
    fn group_norm_backward_small_odd_shapes() {
        for (silu, acc) in [(false, false), (true, false), (false, true), (true, true)] {
            check([2, 6, 5, 3], 3, 0.0, silu, acc, 10);
        }
        check([3, 5, 3, 1], 5, 0.0, true, false, 12);
        check([1, 4, 3, 3], 1, 0.0, true, true, 13);
    }

    /// H·W a multiple of 4: the vec4 kernel (`group_norm_backward_v4.wgsl`).
    #[test]
    fn group_norm_backward_vec4_shapes() {
        assert!(crate::ops::group_norm::use_v4(4 * 3) && crate::ops::group_norm::use_v4(4 * 5));
        for (silu, acc) in [(false, false), (true, false), (false, true), (true, true)] {
            check([2, 6, 4, 3], 3, 0.0, silu, acc, 50);
        }
        check([2, 6, 4, 5], 3, 100.0, true, true, 51);
        check([1, 8, 4, 5], 2, -1000.0, true, false, 52);
        check([3, 4, 4, 1], 4, 0.0, true, false, 53);
    }

    /// More than 8 channels per group: several rounds of `workgroup_slots_reduce`.
    #[test]
    fn group_norm_backward_wide_groups() {
        check([2, 20, 4, 3], 2, 0.0, true, true, 60);
        check([2, 18, 3, 3], 1, 0.0, true, false, 61);
        check([1, 9, 5, 1], 1, 0.0, false, true, 62);
    }

    #[test]
    fn group_norm_backward_large_mean_offset() {
        check([2, 6, 5, 3], 3, 100.0, false, false, 30);
        check([2, 6, 5, 3], 3, 100.0, true, true, 31);
        check([1, 8, 7, 5], 2, -1000.0, true, false, 32);
    }

    #[test]
    fn group_norm_backward_big_group_matches_analytic() {
        // A group of more than 256 values per channel, so every thread loops and the partials
        // of several channels and samples are reduced; checked against the analytic gradient.
        let ctx = ctx();
        let shape = [3, 4, 19, 17];
        let [n, c, h, w] = shape;
        let groups = 2;
        let x = random(n * c * h * w, 40);
        let gamma: Vec<f32> = random(c, 41).iter().map(|v| 1.0 + 0.5 * v).collect();
        let beta = random(c, 42);
        let dy = random(x.len(), 43);
        let tx = ctx.upload(&x, &shape).unwrap();
        let tg = ctx.upload(&gamma, &[c]).unwrap();
        let tb = ctx.upload(&beta, &[c]).unwrap();
        let tdy = ctx.upload(&dy, &shape).unwrap();
        let tdx = ctx.zeros(&shape).unwrap();
        let tdg = ctx.zeros(&[c]).unwrap();
        let tdb = ctx.zeros(&[c]).unwrap();
        let scratch = ctx.zeros(&group_norm_backward_scratch_shape(n, c)).unwrap();
        let mut p = Program::new();
        group_norm_backward(
            &ctx,
            &mut p,
            &tx,
            &tg,
            &tb,
            &tdy,
            &tdx,
            &tdg,
            &tdb,
            groups,
            1e-5,
            true,
            false,
            GroupNormStats::Recompute(&scratch),
        )
        .unwrap();
        ctx.run(&p).unwrap();
        let (dx, dg, db) = backward(
            &to_f64(&x),
            &to_f64(&gamma),
            &to_f64(&beta),
            &to_f64(&dy),
            shape,
            groups,
            1e-5,
            true,
        );
        assert_close(
            &block_on(ctx.read(&tdx)).unwrap(),
            &dx,
            1e-4,
            1e-4,
            "big dx",
        );
        assert_close(
            &block_on(ctx.read(&tdg)).unwrap(),
            &dg,
            3e-4,
            1e-4,
            "big dgamma",
        );
        assert_close(
            &block_on(ctx.read(&tdb)).unwrap(),
            &db,
            3e-4,
            1e-4,
            "big dbeta",
        );
    }

    #[test]
    fn group_norm_backward_bad_shapes_are_errors() {
        let ctx = ctx();
        let x = ctx.zeros(&[2, 6, 4, 4]).unwrap();
        let g = ctx.zeros(&[6]).unwrap();
        let s = ctx.zeros(&[2, 2, 6]).unwrap();
        let s_bad = ctx.zeros(&[2, 1, 6]).unwrap();
        let dx = ctx.zeros(&[2, 6, 4, 4]).unwrap();
        let (dg, db) = (ctx.zeros(&[6]).unwrap(), ctx.zeros(&[6]).unwrap());
        let mut p = Program::new();
        let run = |p: &mut Program, groups, s: &Tensor, dg: &Tensor| {
            group_norm_backward(
                &ctx,
                p,
                &x,
                &g,
                &g,
                &x,
                &dx,
                dg,
                &db,
                groups,
                1e-5,
                false,
                false,
                GroupNormStats::Recompute(s),
            )
        };
        assert!(matches!(run(&mut p, 4, &s, &dg), Err(Error::Shape(_))));
        assert!(matches!(run(&mut p, 3, &s_bad, &dg), Err(Error::Shape(_))));
        assert!(matches!(run(&mut p, 3, &s, &s), Err(Error::Shape(_))));
        assert!(p.is_empty());
        assert!(run(&mut p, 3, &s, &dg).is_ok());
        assert_eq!(p.len(), 2);
    }
}
