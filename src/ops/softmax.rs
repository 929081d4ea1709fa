//! Row softmax (`shaders/softmax.wgsl`), in place: the attention probabilities
//! softmax(Q·Kᵀ / √d) along the key axis.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::SOFTMAX;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

/// Softmax over each contiguous row of `cols` elements of `x` (rows = numel / cols), in
/// place, with the row max subtracted first (numerically stable).
pub fn softmax_rows(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    cols: usize,
) -> Result<()> {
    let numel = x.numel();
    if cols == 0 || !numel.is_multiple_of(cols) {
        return Err(Error::shape(format!(
            "softmax_rows: x of shape {:?} ({numel} elements) is not a whole number of rows of {cols}",
            x.shape
        )));
    }
    if numel > u32::MAX as usize {
        return Err(Error::shape(format!(
            "softmax_rows: x has {numel} elements, too many for one kernel"
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
            label: "softmax_rows",
            shader: &SOFTMAX,
            entry: "softmax_rows",
            constants: &ctx.reduction_constants(),
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[],
            outputs: &[&x.buffer],
            workgroups: grid_1d(rows as u64)?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random, REDUCTION_WORKGROUPS};

    fn reference(x: &[f32], cols: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(cols) {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            out.extend(e.iter().map(|v| v / s));
        }
        out
    }

    fn check(ctx: &GpuContext, rows: usize, cols: usize, scale: f32, seed: u64) {
        let x: Vec<f32> = random(rows * cols, seed)
            .iter()
            .map(|v| v * scale)
            .collect();
        for wg in REDUCTION_WORKGROUPS {
            ctx.set_reduction_workgroup(wg);
            let t = ctx.upload(&x, &[rows, cols]).unwrap();
            let mut p = Program::new();
            softmax_rows(ctx, &mut p, &t, cols).unwrap();
            ctx.run(&p).unwrap();
            let got = block_on(ctx.read(&t)).unwrap();
            // exp is evaluated in f32 on arguments up to |2·scale|: relative error a few ulps
            // of the argument's size, so the tolerance grows with the logits' magnitude.
            let rtol = 1e-5 + 2e-7 * scale as f64;
            assert_close(
                &got,
                &reference(&x, cols),
                1e-7,
                rtol,
                &format!("softmax {rows}x{cols} scale {scale} WG={wg}"),
            );
        }
    }

    #[test]
    fn softmax_matches_reference() {
        let ctx = ctx();
        check(&ctx, 7, 1, 1.0, 1);
        check(&ctx, 5, 37, 3.0, 2);
        check(&ctx, 3, 1000, 1.0, 3);
        check(&ctx, 64, 257, 5.0, 4);
        // Large-magnitude logits: naive exp would overflow to inf (exp(88) is past f32).
        check(&ctx, 9, 300, 1000.0, 5);
    }

    #[test]
    fn softmax_bad_cols_is_an_error() {
        let ctx = ctx();
        let t = ctx.zeros(&[4, 5]).unwrap();
        let mut p = Program::new();
        assert!(matches!(
            softmax_rows(&ctx, &mut p, &t, 3),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            softmax_rows(&ctx, &mut p, &t, 0),
            Err(Error::Shape(_))
        ));
    }
}
