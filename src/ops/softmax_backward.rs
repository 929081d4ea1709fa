//! Backward of the row softmax (`shaders/softmax_backward.wgsl`), in place on the gradient:
//! dS = P ⊙ (dP − rowsum(dP ⊙ P)), where P = softmax(S) is the forward output.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::SOFTMAX_BACKWARD;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

/// Given the forward output `probs` (rows of `cols`, rows = numel / cols) and `grad` = dP,
/// rewrite `grad` in place as dS, the gradient of the softmax's input. `probs` and `grad`
/// must be distinct buffers of equal element count.
pub fn softmax_rows_backward(
    ctx: &GpuContext,
    program: &mut Program,
    probs: &Tensor,
    grad: &Tensor,
    cols: usize,
) -> Result<()> {
    let numel = probs.numel();
    if cols == 0 || !numel.is_multiple_of(cols) {
        return Err(Error::shape(format!(
            "softmax_rows_backward: probs of shape {:?} ({numel} elements) is not a whole number of rows of {cols}",
            probs.shape
        )));
    }
    if grad.numel() != numel {
        return Err(Error::shape(format!(
            "softmax_rows_backward: grad is {:?} but probs is {:?}",
            grad.shape, probs.shape
        )));
    }
    if numel > u32::MAX as usize {
        return Err(Error::shape(format!(
            "softmax_rows_backward: {numel} elements, too many for one kernel"
        )));
    }
    let rows = numel / cols;
    if rows == 0 {
        return Ok(());
    }
    let params = SoftmaxParams {
        rows: rows as u32,
        cols: cols as u32,
        _pad0: 0,
        _pad1: 0,
    };
    ctx.record(
        program,
        DispatchDesc {
            label: "softmax_rows_backward",
            shader: &SOFTMAX_BACKWARD,
            entry: "softmax_rows_backward",
            constants: &ctx.reduction_constants(),
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[&probs.buffer],
            outputs: &[&grad.buffer],
            workgroups: grid_1d(rows as u64)?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};
    use crate::ops::elementwise_backward::grad_check::*;

    fn softmax(s: &[f64], cols: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(s.len());
        for row in s.chunks(cols) {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let e: Vec<f64> = row.iter().map(|&v| (v - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            out.extend(e.iter().map(|v| v / sum));
        }
        out
    }

    /// [`check_at`] at each of the reduction workgroup sizes.
    fn check(rows: usize, cols: usize, scale: f32, seed: u64) {
        for wg in crate::gpu::test_util::REDUCTION_WORKGROUPS {
            check_at(wg, rows, cols, scale, seed);
        }
    }

    /// loss = Σ r ⊙ g(softmax(f(x0))) with the GPU given P (as f32) and dP = r ⊙ g'(P), with
    /// reductions in `wg`-thread workgroups.
    fn check_at(wg: u32, rows: usize, cols: usize, scale: f32, seed: u64) {
        let ctx = ctx();
        ctx.set_reduction_workgroup(wg);
        let x0: Vec<f64> = random(rows * cols, seed)
            .iter()
            .map(|&v| (v * scale) as f64)
            .collect();
        let s: Vec<f64> = x0.iter().map(|&v| f(v)).collect();
        let probs = softmax(&s, cols);
        let r = to_f64(&random(probs.len(), seed + 1));
        let dp = upstream(&probs, &r);
        let p32: Vec<f32> = probs.iter().map(|&v| v as f32).collect();
        let tp = ctx.upload(&p32, &[rows, cols]).unwrap();
        let tg = ctx.upload(&dp, &[rows, cols]).unwrap();
        let mut p = Program::new();
        softmax_rows_backward(&ctx, &mut p, &tp, &tg, cols).unwrap();
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&tg)).unwrap();
        let what = format!("softmax_bwd {rows}x{cols} scale {scale} WG={wg}");

        // Analytic, from the same f32 P and dP the GPU saw: |dS| <= P·(|dP| + max|dP|), and the
        // f32 dot product over `cols` terms errs by ~cols·ulp·max|dP|·Σ P.
        let (pf, dpf) = (to_f64(&p32), to_f64(&dp));
        let mut want = Vec::with_capacity(pf.len());
        for (pr, dr) in pf.chunks(cols).zip(dpf.chunks(cols)) {
            let dot: f64 = pr.iter().zip(dr).map(|(a, b)| a * b).sum();
            want.extend(pr.iter().zip(dr).map(|(&p, &d)| p * (d - dot)));
        }
        let atol = 1e-7 * (cols as f64).sqrt() / cols as f64 + 1e-9;
        assert_close(&got, &want, atol, 1e-5, &format!("{what}: vs analytic"));

        let loss = |x0: &[f64]| {
            let s: Vec<f64> = x0.iter().map(|&v| f(v)).collect();
            loss_of(&softmax(&s, cols), &r)
        };
        let fd = finite_diff(&loss, &x0, 1e-6);
        let got_dx0: Vec<f32> = got.iter().map(|&g| (g as f64 * DF) as f32).collect();
        assert_close(
            &got_dx0,
            &fd,
            10.0 * atol,
            1e-4,
            &format!("{what}: vs finite differences"),
        );
    }

    #[test]
    fn softmax_backward_matches_finite_differences() {
        check(7, 1, 1.0, 1);
        check(5, 37, 3.0, 2);
        check(3, 300, 1.0, 3);
        check(33, 257, 2.0, 4);
    }

    #[test]
    fn softmax_backward_bad_shapes_are_errors() {
        let ctx = ctx();
        let a = ctx.zeros(&[4, 5]).unwrap();
        let b = ctx.zeros(&[4, 6]).unwrap();
        let mut p = Program::new();
        assert!(matches!(
            softmax_rows_backward(&ctx, &mut p, &a, &a, 3),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            softmax_rows_backward(&ctx, &mut p, &a, &b, 5),
            Err(Error::Shape(_))
        ));
        assert!(p.is_empty());
    }
}
