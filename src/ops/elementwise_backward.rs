//! Backward kernels (`shaders/elementwise_backward.wgsl`) for the elementwise ops of
//! [`crate::ops::elementwise`]: SiLU, channel concat, nearest 2x upsample, plus scaled
//! copy/accumulate for summing gradients. Every gradient output takes `accumulate`: a
//! tensor consumed twice in the forward graph (skip connections, the shortcut, the shared
//! time embedding) must receive the sum of its gradients, so `true` adds into the output
//! instead of overwriting it. Outputs may not alias inputs (one buffer cannot be bound
//! read-only and read-write in one dispatch).

use crate::error::{Error, Result};
use crate::gpu::{expect_shape, grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::ops::elementwise::nchw;
use crate::shaders::ELEMENTWISE_BACKWARD;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BackwardParams {
    numel: u32,
    d0: u32,
    d1: u32,
    d2: u32,
    d3: u32,
    accumulate: u32,
    scale: f32,
    _pad: u32,
}

impl BackwardParams {
    fn new(numel: u32, accumulate: bool) -> Self {
        Self {
            numel,
            d0: 0,
            d1: 0,
            d2: 0,
            d3: 0,
            accumulate: accumulate as u32,
            scale: 1.0,
            _pad: 0,
        }
    }
}

const WORKGROUP: u64 = 256;

#[allow(clippy::too_many_arguments)]
fn record(
    ctx: &GpuContext,
    program: &mut Program,
    label: &'static str,
    entry: &'static str,
    params: BackwardParams,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
) -> Result<()> {
    if params.numel == 0 {
        return Ok(());
    }
    ctx.record(
        program,
        DispatchDesc {
            label,
            shader: &ELEMENTWISE_BACKWARD,
            entry,
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[&a.buffer, &b.buffer],
            outputs: &[&out.buffer],
            workgroups: grid_1d((params.numel as u64).div_ceil(WORKGROUP))?,
        },
    )
}

fn as_u32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::shape(format!("{what}: {n} is too large for one kernel")))
}

/// dx (+)= dout ⊙ silu'(x), silu'(x) = σ(x)(1 + x(1 − σ(x))). x is the forward input.
pub fn silu_backward(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    dout: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Result<()> {
    expect_shape(dout, &x.shape, "silu_backward: dout")?;
    expect_shape(dx, &x.shape, "silu_backward: dx")?;
    let params = BackwardParams::new(as_u32(x.numel(), "silu_backward")?, accumulate);
    record(
        ctx,
        program,
        "silu_backward",
        "silu_backward",
        params,
        x,
        dout,
        dx,
    )
}

/// Split the gradient of `cat([a, b], dim=1)`: da (+)= dcat[:, :Ca], db (+)= dcat[:, Ca:].
/// dcat: (N, Ca + Cb, H, W); da: (N, Ca, H, W); db: (N, Cb, H, W). Two dispatches.
pub fn concat_channels_backward(
    ctx: &GpuContext,
    program: &mut Program,
    dcat: &Tensor,
    da: &Tensor,
    db: &Tensor,
    accumulate_a: bool,
    accumulate_b: bool,
) -> Result<()> {
    let [n, ca, h, w] = nchw(da, "concat_backward: da")?;
    let [nb, cb, hb, wb] = nchw(db, "concat_backward: db")?;
    if (nb, hb, wb) != (n, h, w) {
        return Err(Error::shape(format!(
            "concat_backward: da is {:?} but db is {:?}",
            da.shape, db.shape
        )));
    }
    expect_shape(dcat, &[n, ca + cb, h, w], "concat_backward: dcat")?;
    as_u32(dcat.numel(), "concat_backward: dcat")?;
    for (out, c, first, acc) in [(da, ca, 0, accumulate_a), (db, cb, ca, accumulate_b)] {
        let mut params = BackwardParams::new(out.numel() as u32, acc);
        params.d0 = c as u32;
        params.d1 = (ca + cb) as u32;
        params.d2 = (h * w) as u32;
        params.d3 = first as u32;
        record(
            ctx,
            program,
            "concat_backward",
            "concat_backward",
            params,
            dcat,
            dcat,
            out,
        )?;
    }
    Ok(())
}

/// dx (+)= the sum of each 2x2 block of dout: the gradient of nearest 2x upsampling.
/// dout: (N, C, 2H, 2W); dx: (N, C, H, W).
pub fn upsample_nearest2x_backward(
    ctx: &GpuContext,
    program: &mut Program,
    dout: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let [n, c, h, w] = nchw(dx, "upsample_backward: dx")?;
    expect_shape(dout, &[n, c, 2 * h, 2 * w], "upsample_backward: dout")?;
    as_u32(dout.numel(), "upsample_backward: dout")?;
    let mut params = BackwardParams::new(dx.numel() as u32, accumulate);
    params.d0 = (n * c) as u32;
    params.d1 = h as u32;
    params.d2 = w as u32;
    record(
        ctx,
        program,
        "upsample_nearest2x_backward",
        "upsample_nearest2x_backward",
        params,
        dout,
        dout,
        dx,
    )
}

fn scaled(
    ctx: &GpuContext,
    program: &mut Program,
    src: &Tensor,
    dst: &Tensor,
    scale: f32,
    accumulate: bool,
    label: &'static str,
) -> Result<()> {
    if src.numel() != dst.numel() {
        return Err(Error::shape(format!(
            "{label}: src is {:?} but dst is {:?}",
            src.shape, dst.shape
        )));
    }
    let mut params = BackwardParams::new(as_u32(src.numel(), label)?, accumulate);
    params.scale = scale;
    record(ctx, program, label, "scaled", params, src, src, dst)
}

/// dst += scale · src (same element count; shapes may differ, e.g. a reshaped view).
pub fn accumulate_scaled(
    ctx: &GpuContext,
    program: &mut Program,
    src: &Tensor,
    dst: &Tensor,
    scale: f32,
) -> Result<()> {
    scaled(ctx, program, src, dst, scale, true, "accumulate_scaled")
}

/// dst = scale · src (same element count).
pub fn copy_scaled(
    ctx: &GpuContext,
    program: &mut Program,
    src: &Tensor,
    dst: &Tensor,
    scale: f32,
) -> Result<()> {
    scaled(ctx, program, src, dst, scale, false, "copy_scaled")
}

/// Shared helpers for the backward kernels' tests: central finite differences in f64 and
/// the small graph loss = Σ r ⊙ g(op(f(x))) that every op is placed in.
#[cfg(test)]
pub(crate) mod grad_check {
    /// Central differences of `loss` at `x`, step h (f64 throughout).
    pub fn finite_diff(loss: &dyn Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
        let mut xp = x.to_vec();
        (0..x.len())
            .map(|i| {
                let v = x[i];
                xp[i] = v + h;
                let lp = loss(&xp);
                xp[i] = v - h;
                let lm = loss(&xp);
                xp[i] = v;
                (lp - lm) / (2.0 * h)
            })
            .collect()
    }

    /// f: the elementwise op before the tested one. 2x is exact in f32, so the op's f32
    /// input is exactly f(x) and the reference sees the same point the GPU does.
    pub fn f(x: f64) -> f64 {
        2.0 * x
    }
    pub const DF: f64 = 2.0;

    /// g: the elementwise op after the tested one (nonlinear, so the upstream gradient
    /// varies along the tensor): g(y) = sin(y) + y²/2.
    pub fn g(y: f64) -> f64 {
        y.sin() + 0.5 * y * y
    }
    pub fn dg(y: f64) -> f64 {
        y.cos() + y
    }

    /// loss = Σ r ⊙ g(y).
    pub fn loss_of(y: &[f64], r: &[f64]) -> f64 {
        y.iter().zip(r).map(|(&y, &r)| r * g(y)).sum()
    }

    /// dL/dy = r ⊙ g'(y): the upstream gradient the tested op's backward receives.
    pub fn upstream(y: &[f64], r: &[f64]) -> Vec<f32> {
        y.iter().zip(r).map(|(&y, &r)| (r * dg(y)) as f32).collect()
    }

    pub fn to_f64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::grad_check::*;
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};

    /// Records a backward: (program, op input, upstream gradient, dx, accumulate).
    /// The analytic gradient w.r.t. the op's input: (op input, upstream gradient) -> da.
    type Analytic<'a> = &'a dyn Fn(&[f64], &[f64]) -> Vec<f64>;
    type RecordBackward<'a> = &'a dyn Fn(&mut Program, &Tensor, &Tensor, &Tensor, bool);

    fn silu64(x: f64) -> f64 {
        x / (1.0 + (-x).exp())
    }

    /// Runs `record_bwd` (which writes the gradient w.r.t. the op's input into `dx`,
    /// pre-filled with `prefill` when accumulating) and checks it against finite differences
    /// of loss(x) = Σ r ⊙ g(op(f(x))) and against the analytic gradient `analytic_da`.
    #[allow(clippy::too_many_arguments)]
    fn check_graph(
        ctx: &GpuContext,
        what: &str,
        x0: &[f64],
        in_shape: &[usize],
        op: &dyn Fn(&[f64]) -> Vec<f64>,
        analytic_da: Analytic,
        out_shape: &[usize],
        record_bwd: RecordBackward,
        accumulate: bool,
        atol: f64,
    ) {
        let a: Vec<f64> = x0.iter().map(|&v| f(v)).collect();
        let y = op(&a);
        let r = to_f64(&random(y.len(), 77));
        let dy = upstream(&y, &r);
        let ta = ctx
            .upload(&a.iter().map(|&v| v as f32).collect::<Vec<_>>(), in_shape)
            .unwrap();
        let tdy = ctx.upload(&dy, out_shape).unwrap();
        let prefill = random(a.len(), 78);
        let tdx = ctx.upload(&prefill, in_shape).unwrap();
        let mut p = Program::new();
        record_bwd(&mut p, &ta, &tdy, &tdx, accumulate);
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&tdx)).unwrap();
        let base: Vec<f64> = if accumulate {
            to_f64(&prefill)
        } else {
            vec![0.0; a.len()]
        };
        // Chain through f: dL/dx0 = dL/da · f'.
        let got_dx0: Vec<f32> = got
            .iter()
            .zip(&base)
            .map(|(&g, &b)| ((g as f64 - b) * DF) as f32)
            .collect();
        let loss = |x: &[f64]| loss_of(&op(&x.iter().map(|&v| f(v)).collect::<Vec<_>>()), &r);
        let fd = finite_diff(&loss, x0, 1e-6);
        assert_close(
            &got_dx0,
            &fd,
            atol,
            1e-4,
            &format!("{what}: GPU vs finite differences"),
        );
        let dyf = to_f64(&dy);
        let want: Vec<f64> = analytic_da(&a, &dyf)
            .iter()
            .zip(&base)
            .map(|(g, b)| g + b)
            .collect();
        assert_close(&got, &want, 1e-6, 1e-5, &format!("{what}: GPU vs analytic"));
    }

    #[test]
    fn silu_backward_matches_finite_differences() {
        let ctx = ctx();
        let shape = [2, 3, 5, 7];
        let x0: Vec<f64> = random(210, 1).iter().map(|&v| 2.0 * v as f64).collect();
        let op = |a: &[f64]| a.iter().map(|&v| silu64(v)).collect::<Vec<_>>();
        let analytic = |a: &[f64], dy: &[f64]| {
            a.iter()
                .zip(dy)
                .map(|(&x, &d)| {
                    let s = 1.0 / (1.0 + (-x).exp());
                    d * s * (1.0 + x * (1.0 - s))
                })
                .collect::<Vec<_>>()
        };
        for acc in [false, true] {
            check_graph(
                &ctx,
                &format!("silu acc={acc}"),
                &x0,
                &shape,
                &op,
                &analytic,
                &shape,
                &|p, a, dy, dx, acc| silu_backward(&ctx, p, a, dy, dx, acc).unwrap(),
                acc,
                1e-5,
            );
        }
    }

    #[test]
    fn upsample_backward_matches_finite_differences() {
        let ctx = ctx();
        let (n, c, h, w) = (2, 3, 5, 7);
        let x0 = to_f64(&random(n * c * h * w, 2));
        let op = move |a: &[f64]| {
            let mut out = vec![0.0; a.len() * 4];
            for plane in 0..n * c {
                for y in 0..2 * h {
                    for x in 0..2 * w {
                        out[(plane * 2 * h + y) * 2 * w + x] = a[(plane * h + y / 2) * w + x / 2];
                    }
                }
            }
            out
        };
        let analytic = move |_a: &[f64], dy: &[f64]| {
            let mut dx = vec![0.0; dy.len() / 4];
            for plane in 0..n * c {
                for y in 0..2 * h {
                    for x in 0..2 * w {
                        dx[(plane * h + y / 2) * w + x / 2] += dy[(plane * 2 * h + y) * 2 * w + x];
                    }
                }
            }
            dx
        };
        for acc in [false, true] {
            check_graph(
                &ctx,
                &format!("upsample acc={acc}"),
                &x0,
                &[n, c, h, w],
                &op,
                &analytic,
                &[n, c, 2 * h, 2 * w],
                &|p, _a, dy, dx, acc| upsample_nearest2x_backward(&ctx, p, dy, dx, acc).unwrap(),
                acc,
                1e-5,
            );
        }
    }

    #[test]
    fn concat_backward_splits_exactly() {
        let ctx = ctx();
        let (n, ca, cb, h, w) = (2, 3, 5, 7, 3);
        let hw = h * w;
        let dcat = random(n * (ca + cb) * hw, 3);
        let tcat = ctx.upload(&dcat, &[n, ca + cb, h, w]).unwrap();
        for (acc_a, acc_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let pa = random(n * ca * hw, 4);
            let pb = random(n * cb * hw, 5);
            let da = ctx.upload(&pa, &[n, ca, h, w]).unwrap();
            let db = ctx.upload(&pb, &[n, cb, h, w]).unwrap();
            let mut p = Program::new();
            concat_channels_backward(&ctx, &mut p, &tcat, &da, &db, acc_a, acc_b).unwrap();
            ctx.run(&p).unwrap();
            let mut want_a = Vec::new();
            let mut want_b = Vec::new();
            for i in 0..n {
                let row = &dcat[i * (ca + cb) * hw..(i + 1) * (ca + cb) * hw];
                want_a.extend(row[..ca * hw].iter().map(|&v| v as f64));
                want_b.extend(row[ca * hw..].iter().map(|&v| v as f64));
            }
            // f32 sums of two values are correctly rounded: compare with the f32 sum exactly.
            let add = |want: &mut Vec<f64>, pre: &[f32], acc: bool| {
                if acc {
                    for (w, &q) in want.iter_mut().zip(pre) {
                        *w = (*w as f32 + q) as f64;
                    }
                }
            };
            add(&mut want_a, &pa, acc_a);
            add(&mut want_b, &pb, acc_b);
            let what = format!("concat_backward acc=({acc_a}, {acc_b})");
            assert_close(&block_on(ctx.read(&da)).unwrap(), &want_a, 0.0, 0.0, &what);
            assert_close(&block_on(ctx.read(&db)).unwrap(), &want_b, 0.0, 0.0, &what);
        }
    }

    #[test]
    fn scaled_copy_and_accumulate() {
        let ctx = ctx();
        let n = 1003;
        let src = random(n, 6);
        let pre = random(n, 7);
        let ts = ctx.upload(&src, &[n]).unwrap();
        let td = ctx.upload(&pre, &[17, 59]).unwrap();
        let mut p = Program::new();
        accumulate_scaled(&ctx, &mut p, &ts, &td, -0.75).unwrap();
        ctx.run(&p).unwrap();
        let want: Vec<f64> = src
            .iter()
            .zip(&pre)
            .map(|(&s, &d)| d as f64 - 0.75 * s as f64)
            .collect();
        assert_close(
            &block_on(ctx.read(&td)).unwrap(),
            &want,
            1e-7,
            1e-6,
            "accumulate_scaled",
        );
        let mut p = Program::new();
        copy_scaled(&ctx, &mut p, &ts, &td, 3.0).unwrap();
        ctx.run(&p).unwrap();
        let want: Vec<f64> = src.iter().map(|&s| 3.0 * s as f64).collect();
        assert_close(
            &block_on(ctx.read(&td)).unwrap(),
            &want,
            1e-7,
            1e-6,
            "copy_scaled",
        );
    }

    #[test]
    fn backward_shape_mismatch_is_an_error() {
        let ctx = ctx();
        let a = ctx.zeros(&[2, 3, 4, 4]).unwrap();
        let b = ctx.zeros(&[2, 3, 4, 5]).unwrap();
        let cat = ctx.zeros(&[2, 6, 4, 4]).unwrap();
        let up = ctx.zeros(&[2, 3, 8, 9]).unwrap();
        let mut p = Program::new();
        assert!(matches!(
            concat_channels_backward(&ctx, &mut p, &cat, &a, &b, false, false),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            upsample_nearest2x_backward(&ctx, &mut p, &up, &a, false),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            silu_backward(&ctx, &mut p, &a, &b, &a, false),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            copy_scaled(&ctx, &mut p, &a, &b, 1.0),
            Err(Error::Shape(_))
        ));
        assert!(p.is_empty());
    }
}
