//! The same MLP training step built from the crate's generic kernels (src/ops: `linear`,
//! `silu`, strided `matmul`, `silu_backward`, `sum_axes`, fused AdamW and EMA per tensor),
//! for comparison with the fused kernels in `kakusan bench --lab`. One dispatch per op:
//! 7 forward, 2 for the loss gradient, 15 backward, 8 AdamW and 8 EMA = 40 per step.
//!
//! Benchmark-only scope: unconditional (the class embedding's null row is a constant bias
//! and left out) and on a fixed batch of inputs (the fused path draws its batch on the GPU,
//! which here would be one more dispatch); the AdamW step count is set once, so queued steps
//! share one bias correction. Its gradients are checked against the fused kernels' in the
//! tests, so both paths compute the same thing.

use crate::error::Result;
use crate::gpu::{GpuContext, Program, Tensor};
use crate::ops::elementwise::silu;
use crate::ops::elementwise_backward::{accumulate_scaled, copy_scaled, silu_backward};
use crate::ops::matmul::{linear, linear_backward};
use crate::ops::optim::{AdamWConfig, AdamWOp, EmaOp};

use super::mlp::{tensors, HIDDEN, IN};

fn refs(v: &[Tensor]) -> Vec<&Tensor> {
    v.iter().collect()
}

/// Names of the generic path's 8 parameter tensors (no class embedding).
const TENSORS: usize = 8;

pub struct GenericStep {
    pub params: Vec<Tensor>,
    pub grads: Vec<Tensor>,
    /// Forward + backward only (no optimizer): for the gradient check.
    pub grad_program: Program,
    /// Forward, backward, AdamW and EMA.
    pub step: Program,
    _keep: Vec<Tensor>,
    _adamw: AdamWOp,
    _ema: EmaOp,
}

impl GenericStep {
    /// `flat`: parameters in the lab layout (the class embedding is ignored); `inputs`
    /// (B, IN) = [x_t, emb(t)] and `eps` (B, 2) the targets.
    pub fn new(
        ctx: &GpuContext,
        flat: &[f32],
        inputs: &[f32],
        eps: &[f32],
        lr: f32,
    ) -> Result<GenericStep> {
        let b = eps.len() / 2;
        let mut params = Vec::new();
        let mut grads = Vec::new();
        let mut ms = Vec::new();
        let mut vs = Vec::new();
        let mut emas = Vec::new();
        for (_, off, shape) in tensors(0).into_iter().take(TENSORS) {
            let n: usize = shape.iter().product();
            params.push(ctx.upload(&flat[off..off + n], &shape)?);
            emas.push(ctx.upload(&flat[off..off + n], &shape)?);
            grads.push(ctx.zeros(&shape)?);
            ms.push(ctx.zeros(&shape)?);
            vs.push(ctx.zeros(&shape)?);
        }
        let h = HIDDEN;
        let inp = ctx.upload(inputs, &[b, IN])?;
        let target = ctx.upload(eps, &[b, 2])?;
        let z: Vec<Tensor> = (0..3).map(|_| ctx.zeros(&[b, h])).collect::<Result<_>>()?;
        let a: Vec<Tensor> = (0..3).map(|_| ctx.zeros(&[b, h])).collect::<Result<_>>()?;
        let da: Vec<Tensor> = (0..3).map(|_| ctx.zeros(&[b, h])).collect::<Result<_>>()?;
        let dz: Vec<Tensor> = (0..3).map(|_| ctx.zeros(&[b, h])).collect::<Result<_>>()?;
        let out = ctx.zeros(&[b, 2])?;
        let dout = ctx.zeros(&[b, 2])?;
        let mut g = Program::new();
        // Forward.
        let mut prev = &inp;
        for l in 0..3 {
            linear(
                ctx,
                &mut g,
                prev,
                &params[2 * l],
                Some(&params[2 * l + 1]),
                &z[l],
            )?;
            silu(ctx, &mut g, &z[l], &a[l])?;
            prev = &a[l];
        }
        linear(ctx, &mut g, &a[2], &params[6], Some(&params[7]), &out)?;
        // d_out = (out − ε)/B (eq. 14's mean over rows and both coordinates, times ½·2).
        copy_scaled(ctx, &mut g, &out, &dout, 1.0 / b as f32)?;
        accumulate_scaled(ctx, &mut g, &target, &dout, -1.0 / b as f32)?;
        // Backward.
        let (w4, b4) = (&grads[6], Some(&grads[7]));
        linear_backward(ctx, &mut g, &a[2], &params[6], &dout, w4, b4, Some(&da[2]))?;
        for l in (0..3).rev() {
            silu_backward(ctx, &mut g, &z[l], &da[l], &dz[l], false)?;
            let a_prev = if l == 0 { &inp } else { &a[l - 1] };
            let (dw, db) = (&grads[2 * l], Some(&grads[2 * l + 1]));
            let da_prev = l.checked_sub(1).map(|k| &da[k]);
            linear_backward(ctx, &mut g, a_prev, &params[2 * l], &dz[l], dw, db, da_prev)?;
        }
        let mut step = g.clone();
        let adamw = AdamWOp::record(
            ctx,
            &mut step,
            &refs(&params),
            &refs(&grads),
            &refs(&ms),
            &refs(&vs),
            None,
            &[],
            AdamWConfig {
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        adamw.set_step(ctx, 1, lr)?;
        let ema = EmaOp::record(ctx, &mut step, &refs(&emas), &refs(&params))?;
        ema.set_decay(ctx, 0.995);
        let mut keep = vec![inp, target, out, dout];
        keep.extend(z);
        keep.extend(a);
        keep.extend(da);
        keep.extend(dz);
        keep.extend(ms);
        keep.extend(vs);
        keep.extend(emas);
        Ok(GenericStep {
            params,
            grads,
            grad_program: g,
            step,
            _keep: keep,
            _adamw: adamw,
            _ema: ema,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx};
    use crate::lab::mlp::{
        init_params, loss_and_grad_gpu, num_params, time_embedding, GradKernel, Row,
    };

    /// The generic-kernel gradient equals the fused kernels' on the same batch.
    #[test]
    fn generic_gradient_matches_fused() {
        let ctx = ctx();
        let flat = init_params(0, 7);
        let rows: Vec<Row> = (0..21)
            .map(|i| {
                let f = i as f64;
                Row {
                    x: [(f * 0.37).sin() * 1.5, (f * 0.91).cos()],
                    t: (i * 4) as f64,
                    y: 0,
                    eps: [(f * 1.3).sin(), (f * 0.2).cos()],
                }
            })
            .collect();
        let inputs: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                let mut v = vec![r.x[0] as f32, r.x[1] as f32];
                v.extend(time_embedding(r.t).iter().map(|&e| e as f32));
                v
            })
            .collect();
        let eps: Vec<f32> = rows
            .iter()
            .flat_map(|r| [r.eps[0] as f32, r.eps[1] as f32])
            .collect();
        // The fused model's null-class row is an extra bias; zero it so both compute the same.
        let mut fused_params = flat.clone();
        for v in &mut fused_params[crate::lab::mlp::OFF_EMB..] {
            *v = 0.0;
        }
        let gs = GenericStep::new(&ctx, &flat, &inputs, &eps, 1e-3).unwrap();
        ctx.run(&gs.grad_program).unwrap();
        let p = ctx.upload(&fused_params, &[num_params(0)]).unwrap();
        let (_, fused) =
            block_on(loss_and_grad_gpu(&ctx, &p, 0, &rows, GradKernel::Tiled)).unwrap();
        for (i, (name, off, shape)) in tensors(0).into_iter().take(TENSORS).enumerate() {
            let n: usize = shape.iter().product();
            let got = block_on(ctx.read(&gs.grads[i])).unwrap();
            let want: Vec<f64> = fused[off..off + n].iter().map(|&v| v as f64).collect();
            let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
            assert_close(&got, &want, 1e-4 * scale, 1e-3, name);
        }
        ctx.run(&gs.step).unwrap();
        block_on(ctx.finish()).unwrap();
    }
}
