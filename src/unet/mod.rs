//! diffusers' `UNet2DModel` as one recorded [`Program`]: every activation buffer is planned
//! once for (model, batch) and reused by liveness, every bind group is created once, and a
//! forward pass is a single submission with no allocation.
//!
//! The network itself is described once, in [`structure`], for this inference plan and for
//! training's (`train::graph`); this module is its inference [`Builder`]: activations come
//! from an `Arena` and no tape is kept.

pub mod structure;
mod summary;
#[cfg(test)]
mod tests;

pub use summary::{forward_flops, summary};

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::config::UNetConfig;
use crate::model::weights::Weights;
use structure::{Builder, Op, Params, Recording};

/// Activation buffers, handed out by exact byte size and taken back after their last use.
/// Buffers are recycled by size; a released buffer must not be one the caller still reads,
/// which `release` guarantees by checking that the tensor it is given is the last handle.
/// Because a program runs its dispatches in order, a buffer freed at record time may be
/// reused by any later dispatch.
#[derive(Default)]
struct Arena {
    free: HashMap<u64, Vec<Arc<crate::gpu::BufferView>>>,
    allocated_bytes: u64,
}

impl Arena {
    fn alloc(&mut self, ctx: &GpuContext, shape: &[usize]) -> Result<Tensor> {
        let bytes = (shape.iter().product::<usize>().max(1) * 4) as u64;
        if let Some(buffer) = self.free.get_mut(&bytes).and_then(|v| v.pop()) {
            return Ok(Tensor {
                buffer,
                shape: shape.to_vec(),
            });
        }
        self.allocated_bytes += bytes;
        ctx.zeros(shape)
    }

    /// Take a buffer back, unless something else (a pending skip connection, the caller's
    /// input) still holds it: then it is simply not recycled.
    fn release(&mut self, t: Tensor) {
        if Arc::strong_count(&t.buffer) == 1 {
            let bytes = (t.numel().max(1) * 4) as u64;
            self.free.entry(bytes).or_default().push(t.buffer);
        }
    }
}

/// The U-Net for one model and one batch size, ready to run.
pub struct UNet {
    pub config: UNetConfig,
    pub batch: usize,
    /// Input x_t: (N, in_channels, H, W). Written by the caller (or by a sampler kernel).
    pub sample: Tensor,
    /// Input timesteps as f32: (N).
    pub timesteps: Tensor,
    /// Input class labels as u32: (N); present for class-conditional models.
    pub class_labels: Option<Tensor>,
    /// Output: (N, out_channels, H, W), what diffusers returns as `.sample`.
    pub output: Tensor,
    program: Program,
    /// 2 × multiply-adds of one forward pass (convs and matmuls).
    pub flops: u64,
    /// Bytes of weights and of planned activations on the device.
    pub weight_bytes: u64,
    pub activation_bytes: u64,
}

/// The inference builder: activations from the arena, released after their last reader;
/// the recorded ops are not kept (there is no backward pass).
struct Inference<'a> {
    rec: Recording<'a>,
    arena: Arena,
}

impl<'a> Builder<'a> for Inference<'a> {
    fn rec(&mut self) -> &mut Recording<'a> {
        &mut self.rec
    }

    fn alloc(&mut self, shape: &[usize]) -> Result<Tensor> {
        self.arena.alloc(self.rec.ctx, shape)
    }

    /// The output gets its own buffer, never handed out again, so callers can read it.
    fn alloc_output(&mut self, shape: &[usize]) -> Result<Tensor> {
        self.rec.ctx.zeros(shape)
    }

    fn release(&mut self, t: Tensor) {
        self.arena.release(t);
    }

    fn record(&mut self, _op: Op) {}

    fn dropout(&mut self, x: Tensor, _p: f32) -> Result<Tensor> {
        Ok(x)
    }
}

impl UNet {
    /// Upload the weights and plan the forward pass for `batch` samples.
    pub fn new(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        batch: usize,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::shape("the batch size must be at least 1"));
        }
        let [h, w] = config.sample_size;
        let params = Params::upload(ctx, config, weights)?;
        let weight_bytes = params.bytes();
        let sample = ctx.zeros(&[batch, config.in_channels, h, w])?;
        let timesteps = ctx.zeros(&[batch])?;
        let class_labels = match config.num_class_embeds {
            Some(_) => Some(ctx.zeros(&[batch])?),
            None => None,
        };
        let mut rec = Recording::new(ctx, config, params);
        // The weights never change after upload: stage them for the direct convolutions
        // once, here, instead of on every forward.
        rec.setup = Some(Program::new());
        let mut b = Inference {
            rec,
            arena: Arena::default(),
        };
        let output = structure::forward(&mut b, &sample, &timesteps, class_labels.as_ref())?;
        if let Some(setup) = b.rec.setup.take() {
            ctx.run(&setup)?;
        }
        ctx.check()?;
        Ok(UNet {
            config: config.clone(),
            batch,
            sample,
            timesteps,
            class_labels,
            output,
            flops: b.rec.flops,
            weight_bytes,
            activation_bytes: b.arena.allocated_bytes,
            program: b.rec.program,
        })
    }

    /// The recorded forward pass (reads `sample`, `timesteps`, `class_labels`; writes `output`).
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Write the inputs for the next run. Labels are checked against `num_class_embeds`.
    pub fn set_inputs(
        &self,
        ctx: &GpuContext,
        sample: Option<&[f32]>,
        timesteps: &[f32],
        class_labels: Option<&[u32]>,
    ) -> Result<()> {
        if let Some(s) = sample {
            ctx.write(&self.sample, s)?;
        }
        ctx.write(&self.timesteps, timesteps)?;
        self.set_class_labels(ctx, class_labels)
    }

    /// Write the class labels (required for class-conditional models, refused otherwise).
    pub fn set_class_labels(&self, ctx: &GpuContext, class_labels: Option<&[u32]>) -> Result<()> {
        match (
            &self.class_labels,
            class_labels,
            self.config.num_class_embeds,
        ) {
            (Some(t), Some(labels), Some(k)) => {
                if let Some(bad) = labels.iter().find(|&&l| l as usize >= k) {
                    return Err(Error::shape(format!(
                        "class label {bad} is out of range: this model has {k} class embeddings (0..{})",
                        k - 1
                    )));
                }
                ctx.write_u32(t, labels)
            }
            (Some(_), None, _) => Err(Error::shape(
                "this model is class-conditional: class labels are required",
            )),
            (None, Some(_), _) => Err(Error::shape(
                "this model is not class-conditional: it takes no class labels",
            )),
            _ => Ok(()),
        }
    }

    /// One forward pass: write inputs, run, read the output back.
    pub async fn predict(
        &self,
        ctx: &GpuContext,
        sample: &[f32],
        timesteps: &[f32],
        class_labels: Option<&[u32]>,
    ) -> Result<Vec<f32>> {
        self.set_inputs(ctx, Some(sample), timesteps, class_labels)?;
        ctx.run(&self.program)?;
        ctx.read(&self.output).await
    }
}
