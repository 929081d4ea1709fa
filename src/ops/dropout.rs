//! Dropout (`shaders/dropout.wgsl`; Srivastava et al. 2014). diffusers' ResnetBlock2D applies
//! it after norm2 + SiLU and before conv2, in training only. The keep mask comes from the same
//! Philox4x32-10 counter stream as [`crate::ops::noise`]: element i uses word i % 4 of block
//! i / 4 with counter (i / 4, stream, 0, 0) and key = seed, and is kept iff the word is at
//! least round(p·2³²). The mask is never stored: [`DropoutOp::record_backward`] regenerates
//! it from the same uniform buffer, so forward and backward agree bit for bit.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::ops::noise::philox_words_cpu;
use crate::shaders::DROPOUT;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DropoutParams {
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    numel: u32,
    threshold: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

/// The Philox word threshold for drop probability p: a word below it drops its element.
fn threshold(p: f32) -> u32 {
    (p as f64 * 4_294_967_296.0).round().min(u32::MAX as f64) as u32
}

/// 1 / (1 − p), rounded once to f32.
fn keep_scale(p: f32) -> f32 {
    (1.0 / (1.0 - p as f64)) as f32
}

/// The keep mask the GPU uses for elements 0..n (tests, and CPU references).
pub fn dropout_mask_cpu(seed: u64, stream: u32, n: usize, p: f32) -> Vec<bool> {
    let t = threshold(p);
    philox_words_cpu(seed, stream, n)
        .into_iter()
        .map(|w| w >= t)
        .collect()
}

/// A recorded dropout dispatch and the uniform buffer holding its seed and stream; the
/// backward dispatch ([`Self::record_backward`]) binds the same buffer, so it regenerates
/// the mask of the most recent [`Self::set`].
pub struct DropoutOp {
    params: wgpu::Buffer,
    numel: u32,
    threshold: u32,
    scale: f32,
}

impl DropoutOp {
    /// Record out = x ⊙ mask / (1 − p) with drop probability p in [0, 1). x and out: equal
    /// element count, distinct buffers. Until [`Self::set`] the seed and stream are 0.
    pub fn record(
        ctx: &GpuContext,
        program: &mut Program,
        x: &Tensor,
        out: &Tensor,
        p: f32,
    ) -> Result<DropoutOp> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::config(format!("dropout: p = {p} must be in [0, 1)")));
        }
        if out.numel() != x.numel() {
            return Err(Error::shape(format!(
                "dropout: out is {:?} but x is {:?}",
                out.shape, x.shape
            )));
        }
        // numel + 3 must not wrap in the kernel.
        let numel = u32::try_from(x.numel())
            .ok()
            .filter(|&n| n <= u32::MAX - 3)
            .ok_or_else(|| Error::shape("dropout: x is too large for one kernel"))?;
        let op = DropoutOp {
            params: ctx.uniform_buffer(std::mem::size_of::<DropoutParams>()),
            numel,
            threshold: threshold(p),
            scale: keep_scale(p),
        };
        op.set(ctx, 0, 0);
        op.record_entry(ctx, program, x, out, "dropout_forward")?;
        Ok(op)
    }

    /// Record dx (+)= dout ⊙ mask / (1 − p) with the forward's mask (same seed and stream
    /// as the forward run, i.e. as long as [`Self::set`] is not called in between).
    /// dout, dx: the forward's element count, distinct buffers.
    pub fn record_backward(
        &self,
        ctx: &GpuContext,
        program: &mut Program,
        dout: &Tensor,
        dx: &Tensor,
        accumulate: bool,
    ) -> Result<()> {
        for (t, what) in [(dout, "dout"), (dx, "dx")] {
            if t.numel() != self.numel as usize {
                return Err(Error::shape(format!(
                    "dropout backward: {what} is {:?}, not {} elements like the forward",
                    t.shape, self.numel
                )));
            }
        }
        let entry = if accumulate {
            "dropout_backward_accumulate"
        } else {
            "dropout_backward"
        };
        self.record_entry(ctx, program, dout, dx, entry)
    }

    fn record_entry(
        &self,
        ctx: &GpuContext,
        program: &mut Program,
        src: &Tensor,
        dst: &Tensor,
        entry: &'static str,
    ) -> Result<()> {
        if self.numel == 0 {
            return Ok(());
        }
        ctx.record(
            program,
            DispatchDesc {
                label: "dropout",
                shader: &DROPOUT,
                entry,
                constants: &[],
                params: Params::Buffer(&self.params),
                inputs: &[&src.buffer],
                outputs: &[&dst.buffer],
                workgroups: grid_1d((self.numel as u64).div_ceil(4).div_ceil(256))?,
            },
        )
    }

    /// Choose the mask for the next forward run and its backward (a `queue.write_buffer`):
    /// e.g. seed = the run's seed, stream = a per-step, per-layer counter.
    pub fn set(&self, ctx: &GpuContext, seed: u64, stream: u32) {
        let params = DropoutParams {
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            stream,
            numel: self.numel,
            threshold: self.threshold,
            scale: self.scale,
            _pad0: 0,
            _pad1: 0,
        };
        ctx.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
    }

    /// 1 / (1 − p) as the kernel applies it.
    pub fn scale(&self) -> f32 {
        self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};

    #[test]
    fn dropout_forward_and_backward_share_the_mask() {
        let ctx = ctx();
        let n = 100_003;
        let (drop_p, seed, stream) = (0.3f32, 0x1234_5678_9abc_def0u64, 17);
        // Values bounded away from 0, so a kept element is never 0 and the mask is readable.
        let x: Vec<f32> = random(n, 1).iter().map(|v| 1.5 + v).collect();
        let dout: Vec<f32> = random(n, 2).iter().map(|v| -1.5 + v).collect();
        let pre = random(n, 3);
        let tx = ctx.upload(&x, &[n]).unwrap();
        let out = ctx.zeros(&[n]).unwrap();
        let tdout = ctx.upload(&dout, &[n]).unwrap();
        let dx = ctx.zeros(&[n]).unwrap();
        let dx_acc = ctx.upload(&pre, &[n]).unwrap();
        let mut p = Program::new();
        let op = DropoutOp::record(&ctx, &mut p, &tx, &out, drop_p).unwrap();
        op.record_backward(&ctx, &mut p, &tdout, &dx, false)
            .unwrap();
        op.record_backward(&ctx, &mut p, &tdout, &dx_acc, true)
            .unwrap();
        op.set(&ctx, seed, stream);
        ctx.run(&p).unwrap();
        let got_out = block_on(ctx.read(&out)).unwrap();
        let got_dx = block_on(ctx.read(&dx)).unwrap();
        let got_acc = block_on(ctx.read(&dx_acc)).unwrap();

        let fwd_mask: Vec<bool> = got_out.iter().map(|&v| v != 0.0).collect();
        let bwd_mask: Vec<bool> = got_dx.iter().map(|&v| v != 0.0).collect();
        let cpu_mask = dropout_mask_cpu(seed, stream, n, drop_p);
        assert!(fwd_mask == bwd_mask, "forward and backward masks differ");
        assert!(
            fwd_mask == cpu_mask,
            "GPU mask differs from the CPU Philox mask"
        );

        // Keep rate within 4σ of 1 − p (binomial).
        let kept = cpu_mask.iter().filter(|&&k| k).count() as f64;
        let q = 1.0 - drop_p as f64;
        let sigma = (n as f64 * q * (1.0 - q)).sqrt();
        assert!(
            (kept - n as f64 * q).abs() < 4.0 * sigma,
            "kept {kept} of {n}, expected {} ± {}",
            n as f64 * q,
            4.0 * sigma
        );

        // Values exact: one f32 multiply by the same f32 scale (and one add when accumulating).
        let s = op.scale();
        assert_eq!(s, (1.0 / 0.7f64) as f32);
        let m = |v: f32, k: bool| if k { v * s } else { 0.0 };
        let want_out: Vec<f64> = x
            .iter()
            .zip(&cpu_mask)
            .map(|(&v, &k)| m(v, k) as f64)
            .collect();
        let want_dx: Vec<f64> = dout
            .iter()
            .zip(&cpu_mask)
            .map(|(&v, &k)| m(v, k) as f64)
            .collect();
        let want_acc: Vec<f64> = dout
            .iter()
            .zip(&cpu_mask)
            .zip(&pre)
            .map(|((&v, &k), &a)| (a + m(v, k)) as f64)
            .collect();
        assert_close(&got_out, &want_out, 0.0, 0.0, "dropout forward");
        assert_close(&got_dx, &want_dx, 0.0, 0.0, "dropout backward");
        assert_close(&got_acc, &want_acc, 0.0, 0.0, "dropout backward accumulate");

        // Another stream gives another mask; p = 0 keeps everything unscaled.
        op.set(&ctx, seed, stream + 1);
        ctx.run(&p).unwrap();
        let other: Vec<bool> = block_on(ctx.read(&out))
            .unwrap()
            .iter()
            .map(|&v| v != 0.0)
            .collect();
        assert!(other != fwd_mask);
        let mut p0 = Program::new();
        let op0 = DropoutOp::record(&ctx, &mut p0, &tx, &out, 0.0).unwrap();
        op0.set(&ctx, seed, stream);
        ctx.run(&p0).unwrap();
        let id: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        assert_close(
            &block_on(ctx.read(&out)).unwrap(),
            &id,
            0.0,
            0.0,
            "dropout p = 0",
        );
    }

    #[test]
    fn dropout_bad_arguments_are_errors() {
        let ctx = ctx();
        let a = ctx.zeros(&[10]).unwrap();
        let b = ctx.zeros(&[11]).unwrap();
        let mut p = Program::new();
        assert!(DropoutOp::record(&ctx, &mut p, &a, &b, 0.1).is_err());
        assert!(DropoutOp::record(&ctx, &mut p, &a, &a, 1.0).is_err());
        assert!(DropoutOp::record(&ctx, &mut p, &a, &a, f32::NAN).is_err());
        assert!(p.is_empty());
        let c = ctx.zeros(&[10]).unwrap();
        let op = DropoutOp::record(&ctx, &mut p, &a, &c, 0.5).unwrap();
        assert!(matches!(
            op.record_backward(&ctx, &mut p, &b, &a, false),
            Err(Error::Shape(_))
        ));
        assert_eq!(p.len(), 1);
    }
}
