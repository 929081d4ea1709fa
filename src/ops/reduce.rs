//! Deterministic reductions (`shaders/reduce.wgsl`): sums over axes for bias gradients and
//! the sum of squares for global gradient norms. Fixed summation order, no atomics: the
//! same inputs give bit-identical results on every run.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::REDUCE;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    a: u32,
    b: u32,
    c: u32,
    flags: u32,
    scale: f32,
    n: u32,
    chunk: u32,
    _pad0: u32,
}

const WORKGROUP: usize = 64;
/// sum_squares: at most this many first-pass partial sums (one per workgroup).
const MAX_GROUPS: usize = 1024;

fn as_u32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::shape(format!("{what}: {n} is too large for one kernel")))
}

fn record(
    ctx: &GpuContext,
    program: &mut Program,
    entry: &'static str,
    params: ReduceParams,
    x: &Tensor,
    out: &Tensor,
    workgroups: usize,
) -> Result<()> {
    ctx.record(
        program,
        DispatchDesc {
            label: entry,
            shader: &REDUCE,
            entry,
            constants: &ctx.reduction_constants(),
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[&x.buffer],
            outputs: &[&out.buffer],
            workgroups: grid_1d(workgroups as u64)?,
        },
    )
}

/// out[b] = scale · Σ_{a, c} x[a, b, c] (+ the old out[b] when `accumulate`), with x viewed
/// as (A, B, C) = `dims` (its element count must match) and out of B elements. Bias
/// gradients: conv (A, B, C) = (N, C, H·W); the time-embedding channel bias (1, N·C, H·W);
/// a linear layer's (N, F, 1).
pub fn sum_axes(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    dims: [usize; 3],
    out: &Tensor,
    scale: f32,
    accumulate: bool,
) -> Result<()> {
    let [a, b, c] = dims;
    let total = a.checked_mul(b).and_then(|v| v.checked_mul(c));
    if total != Some(x.numel()) {
        return Err(Error::shape(format!(
            "sum_axes: x of shape {:?} cannot be viewed as {dims:?}",
            x.shape
        )));
    }
    if out.numel() != b {
        return Err(Error::shape(format!(
            "sum_axes: out has shape {:?}, expected {b} elements",
            out.shape
        )));
    }
    if x.buffer.as_ref() == out.buffer.as_ref() {
        return Err(Error::shape(
            "sum_axes: x must be a different buffer from out",
        ));
    }
    let total = as_u32(x.numel(), "sum_axes: x")?;
    if b == 0 {
        return Ok(());
    }
    let params = ReduceParams {
        a: a as u32,
        b: b as u32,
        c: c as u32,
        flags: accumulate as u32,
        scale,
        n: total,
        chunk: 0,
        _pad0: 0,
    };
    record(ctx, program, "sum_axes", params, x, out, b)
}

/// out[0] = Σ x² (+ the old out[0] when `accumulate`), for global gradient norms: call it
/// once per gradient tensor with `accumulate` after the first. Two passes: per-workgroup
/// partial sums into a scratch buffer (allocated now, at record time), then one sum.
pub fn sum_squares(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    out: &Tensor,
    accumulate: bool,
) -> Result<()> {
    if out.numel() != 1 {
        return Err(Error::shape(format!(
            "sum_squares: out has shape {:?}, expected one element",
            out.shape
        )));
    }
    if x.buffer.as_ref() == out.buffer.as_ref() {
        return Err(Error::shape(
            "sum_squares: x must be a different buffer from out",
        ));
    }
    let n = x.numel();
    let n32 = as_u32(n, "sum_squares: x")?;
    // Chunks are whole multiples of the workgroup so that every thread strides evenly.
    let chunk = n
        .div_ceil(MAX_GROUPS)
        .div_ceil(WORKGROUP)
        .max(1)
        .saturating_mul(WORKGROUP);
    let groups = n.div_ceil(chunk).max(1);
    let partials = ctx.zeros(&[groups])?;
    let params = ReduceParams {
        a: 1,
        b: 1,
        c: groups as u32,
        flags: accumulate as u32,
        scale: 1.0,
        n: n32,
        chunk: as_u32(chunk, "sum_squares: chunk")?,
        _pad0: 0,
    };
    // With n = 0 no partial is written and the zero-filled scratch sums to 0.
    record(
        ctx,
        program,
        "sum_squares_partial",
        params,
        x,
        &partials,
        groups,
    )?;
    record(ctx, program, "sum_axes", params, &partials, out, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random, REDUCTION_WORKGROUPS};

    /// sum_axes against f64 at each reduction workgroup size.
    fn check_sum_axes(ctx: &GpuContext, dims: [usize; 3], scale: f32, accumulate: bool, seed: u64) {
        for wg in REDUCTION_WORKGROUPS {
            ctx.set_reduction_workgroup(wg);
            check_sum_axes_at(ctx, dims, scale, accumulate, seed);
        }
    }

    fn check_sum_axes_at(
        ctx: &GpuContext,
        dims: [usize; 3],
        scale: f32,
        accumulate: bool,
        seed: u64,
    ) {
        let [a, b, c] = dims;
        let x = random(a * b * c, seed);
        let init = random(b, seed + 1);
        let tx = ctx.upload(&x, &[a * b * c]).unwrap();
        let tout = ctx.upload(&init, &[b]).unwrap();
        let mut p = Program::new();
        sum_axes(ctx, &mut p, &tx, dims, &tout, scale, accumulate).unwrap();
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&tout)).unwrap();
        let want: Vec<f64> = (0..b)
            .map(|bi| {
                let mut s = 0.0f64;
                for ai in 0..a {
                    for ci in 0..c {
                        s += x[(ai * b + bi) * c + ci] as f64;
                    }
                }
                s * scale as f64 + if accumulate { init[bi] as f64 } else { 0.0 }
            })
            .collect();
        // f32 sums of A·C terms in [-1, 1): error ~1e-7·sqrt(A·C) typically, bounded by
        // 1e-7·log2(A·C)·A·C for the tree; 1e-6·sqrt(A·C) is generous but still catches a
        // missing or doubled element (error ≥ 1e-3 or so for random data).
        let atol = 1e-6 * ((a * c) as f64).sqrt().max(1.0) * scale.abs() as f64 + 1e-6;
        let wg = ctx.reduction_workgroup();
        assert_close(
            &got,
            &want,
            atol,
            1e-6,
            &format!("sum_axes {dims:?} WG={wg}"),
        );
    }

    #[test]
    fn sum_axes_bias_gradient_shapes() {
        let ctx = ctx();
        // Conv bias grad (N, C, H·W), short and long rows.
        check_sum_axes(&ctx, [3, 33, 49], 1.0, false, 1);
        check_sum_axes(&ctx, [5, 7, 784], 0.5, true, 2);
        // Time-embedding channel bias: (1, N·C, H·W).
        check_sum_axes(&ctx, [1, 130, 300], -2.0, false, 3);
        // Linear bias: (N, F, 1).
        check_sum_axes(&ctx, [67, 45, 1], 1.0, true, 4);
        // Long reduction (A·C = 300k) over few outputs.
        check_sum_axes(&ctx, [600, 3, 500], 1.0, false, 5);
    }

    #[test]
    fn sum_squares_matches_f64_and_accumulates() {
        let ctx = ctx();
        for wg in REDUCTION_WORKGROUPS {
            ctx.set_reduction_workgroup(wg);
            for (i, &n) in [1usize, 255, 1000, 300_001].iter().enumerate() {
                let x = random(n, 10 + i as u64);
                let tx = ctx.upload(&x, &[n]).unwrap();
                let out = ctx.upload(&[0.75], &[1]).unwrap();
                let mut p = Program::new();
                sum_squares(&ctx, &mut p, &tx, &out, i % 2 == 1).unwrap();
                ctx.run(&p).unwrap();
                let got = block_on(ctx.read(&out)).unwrap();
                let want = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()
                    + if i % 2 == 1 { 0.75 } else { 0.0 };
                // Relative 1e-5: f32 sums of positive terms.
                let what = format!("sum_squares n={n} WG={wg}");
                assert_close(&got, &[want], 1e-6, 1e-5, &what);
                // Deterministic: the same result to the bit when run again.
                ctx.write(&out, &[0.75]).unwrap();
                ctx.run(&p).unwrap();
                assert_eq!(
                    block_on(ctx.read(&out)).unwrap()[0].to_bits(),
                    got[0].to_bits()
                );
            }
        }
    }

    #[test]
    fn reduce_bad_shapes_are_errors() {
        let ctx = ctx();
        let x = ctx.zeros(&[2, 3, 4]).unwrap();
        let out = ctx.zeros(&[3]).unwrap();
        let mut p = Program::new();
        assert!(sum_axes(&ctx, &mut p, &x, [2, 3, 4], &out, 1.0, false).is_ok());
        for r in [
            sum_axes(&ctx, &mut p, &x, [2, 3, 5], &out, 1.0, false),
            sum_axes(&ctx, &mut p, &x, [3, 2, 4], &out, 1.0, false),
            sum_axes(&ctx, &mut p, &x, [2, 3, 4], &x, 1.0, false),
            sum_squares(&ctx, &mut p, &x, &out, false),
        ] {
            assert!(matches!(r, Err(Error::Shape(_))));
        }
    }
}
