//! Softmax cross-entropy with its gradient (`shaders/cross_entropy.wgsl`): the loss of the
//! evaluator's digit classifier (`eval::classifier`), forward and backward in one dispatch.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::CROSS_ENTROPY;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CrossEntropyParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
    scale: f32,
    _pad2: u32,
    _pad3: u32,
    _pad4: u32,
}

/// Threads per workgroup (one row each), as in the shader.
const WG: usize = 64;

/// For each row r of `logits` (rows, cols) with class `labels[r]` (u32, must be < cols):
/// `loss[r] = logsumexp(z_r) − z_r[y]` and `dlogits[r] = scale · (softmax(z_r) − onehot(y))`,
/// the gradient of `scale · Σ_r loss[r]` (scale = 1 / rows for the batch mean).
pub fn softmax_cross_entropy(
    ctx: &GpuContext,
    program: &mut Program,
    logits: &Tensor,
    labels: &Tensor,
    loss: &Tensor,
    dlogits: &Tensor,
    scale: f32,
) -> Result<()> {
    let (rows, cols) = match logits.shape[..] {
        [r, c] if c > 0 => (r, c),
        _ => {
            return Err(Error::shape(format!(
                "softmax_cross_entropy: logits: expected (rows, cols ≥ 1), got {:?}",
                logits.shape
            )))
        }
    };
    crate::gpu::expect_shape(labels, &[rows], "softmax_cross_entropy: labels")?;
    crate::gpu::expect_shape(loss, &[rows], "softmax_cross_entropy: loss")?;
    crate::gpu::expect_shape(dlogits, &[rows, cols], "softmax_cross_entropy: dlogits")?;
    let bufs = [
        (&logits.buffer, "logits"),
        (&labels.buffer, "labels"),
        (&loss.buffer, "loss"),
        (&dlogits.buffer, "dlogits"),
    ];
    for (i, (a, an)) in bufs.iter().enumerate() {
        for (b, bn) in &bufs[i + 1..] {
            if a.as_ref() == b.as_ref() {
                return Err(Error::shape(format!(
                    "softmax_cross_entropy: {an} and {bn} must be different buffers"
                )));
            }
        }
    }
    if logits.numel() > u32::MAX as usize {
        return Err(Error::shape(format!(
            "softmax_cross_entropy: logits has {} elements, too many for one kernel",
            logits.numel()
        )));
    }
    if rows == 0 {
        return Ok(());
    }
    let params = CrossEntropyParams {
        rows: rows as u32,
        cols: cols as u32,
        _pad0: 0,
        _pad1: 0,
        scale,
        _pad2: 0,
        _pad3: 0,
        _pad4: 0,
    };
    ctx.record(
        program,
        DispatchDesc {
            label: "softmax_cross_entropy",
            shader: &CROSS_ENTROPY,
            entry: "softmax_cross_entropy",
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[&logits.buffer, &labels.buffer],
            outputs: &[&loss.buffer, &dlogits.buffer],
            workgroups: grid_1d(rows.div_ceil(WG) as u64)?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};
    use crate::ops::elementwise_backward::grad_check::finite_diff;

    /// f64 per-row losses of `z` (rows, cols).
    fn reference_loss(z: &[f64], labels: &[u32], cols: usize) -> Vec<f64> {
        z.chunks(cols)
            .zip(labels)
            .map(|(row, &y)| {
                let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
                s.ln() + m - row[y as usize]
            })
            .collect()
    }

    /// f64 analytic gradient of scale · Σ loss.
    fn reference_grad(z: &[f64], labels: &[u32], cols: usize, scale: f64) -> Vec<f64> {
        let mut out = Vec::with_capacity(z.len());
        for (row, &y) in z.chunks(cols).zip(labels) {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
            for (c, v) in row.iter().enumerate() {
                let onehot = if c == y as usize { 1.0 } else { 0.0 };
                out.push(scale * ((v - m).exp() / s - onehot));
            }
        }
        out
    }

    fn labels_for(rows: usize, cols: usize, seed: u64) -> Vec<u32> {
        let mut rng = crate::rng::SplitMix64(seed);
        (0..rows).map(|_| rng.below(cols as u64) as u32).collect()
    }

    fn run(
        ctx: &GpuContext,
        z: &[f32],
        labels: &[u32],
        rows: usize,
        cols: usize,
        scale: f32,
    ) -> (Vec<f32>, Vec<f32>) {
        let lt = ctx.upload(z, &[rows, cols]).unwrap();
        let yt = ctx.upload_u32(labels, &[rows]).unwrap();
        let loss = ctx.zeros(&[rows]).unwrap();
        let d = ctx.zeros(&[rows, cols]).unwrap();
        let mut p = Program::new();
        softmax_cross_entropy(ctx, &mut p, &lt, &yt, &loss, &d, scale).unwrap();
        ctx.run(&p).unwrap();
        (
            block_on(ctx.read(&loss)).unwrap(),
            block_on(ctx.read(&d)).unwrap(),
        )
    }

    fn check(ctx: &GpuContext, rows: usize, cols: usize, mag: f32, seed: u64) {
        let z: Vec<f32> = random(rows * cols, seed).iter().map(|v| v * mag).collect();
        let labels = labels_for(rows, cols, seed);
        let scale = 1.0 / rows as f32;
        let (loss, d) = run(ctx, &z, &labels, rows, cols, scale);
        let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        let what = format!("cross entropy {rows}x{cols} magnitude {mag}");
        // log/exp in f32 of arguments up to 2·mag: errors of a few ulps of that size.
        let atol = 1e-6 + 4e-7 * mag as f64;
        assert_close(
            &loss,
            &reference_loss(&z64, &labels, cols),
            atol,
            1e-5,
            &format!("{what}: loss"),
        );
        assert_close(
            &d,
            &reference_grad(&z64, &labels, cols, scale as f64),
            atol * scale as f64,
            1e-5,
            &format!("{what}: dlogits"),
        );
    }

    #[test]
    fn cross_entropy_matches_reference() {
        let ctx = ctx();
        check(&ctx, 1, 1, 1.0, 1);
        check(&ctx, 7, 10, 3.0, 2);
        check(&ctx, 130, 10, 5.0, 3);
        check(&ctx, 5, 300, 1.0, 4);
        // exp(200) overflows f32: only the max-subtracted form survives.
        check(&ctx, 33, 10, 200.0, 5);
    }

    /// The kernel's gradient against central differences of the f64 loss scale · Σ loss.
    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let ctx = ctx();
        let (rows, cols) = (6, 10);
        let z: Vec<f32> = random(rows * cols, 11).iter().map(|v| v * 2.0).collect();
        let labels = labels_for(rows, cols, 12);
        let scale = 0.25f32;
        let (_, d) = run(&ctx, &z, &labels, rows, cols, scale);
        let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        let total = |x: &[f64]| scale as f64 * reference_loss(x, &labels, cols).iter().sum::<f64>();
        let fd = finite_diff(&total, &z64, 1e-5);
        assert_close(
            &d,
            &fd,
            1e-6,
            1e-4,
            "cross entropy gradient vs finite differences",
        );
    }

    #[test]
    fn cross_entropy_bad_shapes_are_errors() {
        let ctx = ctx();
        let z = ctx.zeros(&[4, 10]).unwrap();
        let y = ctx.upload_u32(&[0; 4], &[4]).unwrap();
        let y3 = ctx.upload_u32(&[0; 3], &[3]).unwrap();
        let loss = ctx.zeros(&[4]).unwrap();
        let d = ctx.zeros(&[4, 10]).unwrap();
        let d9 = ctx.zeros(&[4, 9]).unwrap();
        let mut p = Program::new();
        for r in [
            softmax_cross_entropy(&ctx, &mut p, &z, &y3, &loss, &d, 1.0),
            softmax_cross_entropy(&ctx, &mut p, &z, &y, &loss, &d9, 1.0),
            softmax_cross_entropy(&ctx, &mut p, &z, &y, &loss, &z, 1.0),
            softmax_cross_entropy(&ctx, &mut p, &loss, &y, &loss, &d, 1.0),
        ] {
            assert!(matches!(r, Err(Error::Shape(_))), "{r:?}");
        }
    }
}
