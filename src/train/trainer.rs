//! The training loop's engine half (platform-neutral): one step = sample a batch of
//! (x_0, t, ε, label), forward, backward, clip, AdamW, EMA — all recorded once and submitted
//! as a single command buffer. The CLI (native) drives it and does files and progress.

use crate::diffusion::schedule::{PredictionType, Schedule, SchedulerConfig};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::config::UNetConfig;
use crate::model::weights::Weights;
use crate::ops::optim::{AdamWConfig, AdamWOp, GradNormOp, PackedAdamWOp, PackedGradNormOp};
use crate::rng::SplitMix64;
use crate::train::graph::{ParamStorage, TrainGraph};
use crate::train::loss_weight::{check_gamma, min_snr_weight};
use crate::train::schedule::{ema_decay, learning_rate, EmaConfig, LrConfig};

/// Hyper-parameters of a run (saved with the training state).
#[derive(Clone, Debug)]
pub struct TrainSettings {
    pub batch: usize,
    pub seed: u64,
    pub lr: LrConfig,
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm to this (torch's clip_grad_norm_).
    pub max_grad_norm: f32,
    pub ema: EmaConfig,
    /// Probability of replacing a label by the null class (index num_class_embeds − 1), so the
    /// model also learns p(x) for classifier-free guidance.
    pub label_dropout: f64,
    /// The caller writes `graph.noise` before each step instead of the GPU's Philox stream
    /// (for comparing with references).
    pub external_noise: bool,
}

/// Everything on the GPU for training one model, plus the step counter and RNG.
pub struct Trainer {
    pub graph: TrainGraph,
    pub settings: TrainSettings,
    pub scheduler: SchedulerConfig,
    schedule: Schedule,
    /// Adam's moments and the EMA weights, one tensor per parameter (views into packed
    /// buffers laid out as the parameters' when the graph's parameters are packed).
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub ema: Vec<Tensor>,
    optimizer: Optimizer,
    step_program: Program,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// RNG for timesteps and label dropout.
    pub rng: SplitMix64,
    /// min-SNR-γ loss weighting (None: the plain L_simple).
    snr_gamma: Option<f64>,
}

/// Gradient clipping, AdamW and the EMA (fused into AdamW's dispatches), recorded per pack
/// (3 dispatches per step for a model under 128 MiB) or per tensor (2 per tensor + 1).
enum Optimizer {
    Packed {
        grad_norm: PackedGradNormOp,
        adamw: PackedAdamWOp,
    },
    PerTensor {
        grad_norm: GradNormOp,
        adamw: AdamWOp,
    },
}

/// What the CPU chose for one step (for logging and tests).
pub struct StepInputs {
    pub timesteps: Vec<u32>,
    pub labels: Option<Vec<u32>>,
}

impl Trainer {
    /// Plan a run from initial weights (EMA starts equal to them, moments at zero).
    pub fn new(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        scheduler: &SchedulerConfig,
        settings: TrainSettings,
    ) -> Result<Self> {
        Self::with_options(
            ctx,
            config,
            weights,
            scheduler,
            settings,
            None,
            ParamStorage::Packed,
        )
    }

    /// [`Trainer::new`] with the loss weighted per sample by min-SNR-γ
    /// ([`crate::train::loss_weight`]) when `snr_gamma` is given.
    pub fn with_snr_gamma(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        scheduler: &SchedulerConfig,
        settings: TrainSettings,
        snr_gamma: Option<f64>,
    ) -> Result<Self> {
        Self::with_options(
            ctx,
            config,
            weights,
            scheduler,
            settings,
            snr_gamma,
            ParamStorage::Packed,
        )
    }

    /// [`new`](Self::new) with the parameters (and with them the gradients, moments and
    /// EMA) stored as `storage` says; both give bit-identical steps
    /// (`tests/train_run.rs`).
    pub fn with_storage(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        scheduler: &SchedulerConfig,
        settings: TrainSettings,
        storage: ParamStorage,
    ) -> Result<Self> {
        Self::with_options(ctx, config, weights, scheduler, settings, None, storage)
    }

    /// The general constructor: min-SNR-γ or not, parameter storage.
    pub fn with_options(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        scheduler: &SchedulerConfig,
        settings: TrainSettings,
        snr_gamma: Option<f64>,
        storage: ParamStorage,
    ) -> Result<Self> {
        if let Some(g) = snr_gamma {
            check_gamma(g)?;
        }
        if config.out_channels != config.in_channels {
            return Err(Error::config(format!(
                "training needs out_channels == in_channels (got {} and {})",
                config.out_channels, config.in_channels
            )));
        }
        let schedule = Schedule::new(scheduler)?;
        let graph = TrainGraph::with_options(
            ctx,
            config,
            weights,
            settings.batch,
            scheduler.prediction_type,
            !settings.external_noise,
            snr_gamma.is_some(),
            storage,
        )?;
        let mut step_program = Program::new();
        step_program.extend(graph.forward_program());
        step_program.extend(graph.backward_program());
        let (m, v, ema, optimizer) = match &graph.packed {
            Some(packed) => {
                let layout = &packed.layout;
                let m = ctx.packed(layout)?;
                let v = ctx.packed(layout)?;
                let ema = ctx.packed(layout)?;
                for (name, t) in graph.names.iter().zip(&ema.views) {
                    ctx.write(t, weights.get(name)?.1)?;
                }
                let grad_norm = PackedGradNormOp::record(
                    ctx,
                    &mut step_program,
                    layout,
                    &packed.grads.packs,
                    settings.max_grad_norm,
                )?;
                let adamw = PackedAdamWOp::record(
                    ctx,
                    &mut step_program,
                    layout,
                    &packed.params.packs,
                    &packed.grads.packs,
                    &m.packs,
                    &v.packs,
                    Some(&ema.packs),
                    Some(grad_norm.stats()),
                    &[],
                    settings.adamw,
                )?;
                (
                    m.views,
                    v.views,
                    ema.views,
                    Optimizer::Packed { grad_norm, adamw },
                )
            }
            None => {
                let zeros_like = |ts: &[Tensor]| -> Result<Vec<Tensor>> {
                    ts.iter().map(|t| ctx.zeros(&t.shape)).collect()
                };
                let m = zeros_like(&graph.params)?;
                let v = zeros_like(&graph.params)?;
                let ema = graph
                    .names
                    .iter()
                    .map(|name| {
                        let (shape, data) = weights.get(name)?;
                        ctx.upload(data, shape)
                    })
                    .collect::<Result<Vec<_>>>()?;
                fn r(ts: &[Tensor]) -> Vec<&Tensor> {
                    ts.iter().collect()
                }
                let grad_norm = GradNormOp::record(
                    ctx,
                    &mut step_program,
                    &r(&graph.grads),
                    settings.max_grad_norm,
                )?;
                let adamw = AdamWOp::record_with_ema(
                    ctx,
                    &mut step_program,
                    &r(&graph.params),
                    &r(&graph.grads),
                    &r(&m),
                    &r(&v),
                    Some(&r(&ema)),
                    Some(grad_norm.stats()),
                    &[],
                    settings.adamw,
                )?;
                (m, v, ema, Optimizer::PerTensor { grad_norm, adamw })
            }
        };
        Ok(Trainer {
            graph,
            rng: SplitMix64(settings.seed ^ 0x005E_ED0F_7EA1),
            settings,
            scheduler: scheduler.clone(),
            schedule,
            m,
            v,
            ema,
            optimizer,
            step_program,
            step: 0,
            snr_gamma,
        })
    }

    /// Submit one optimizer step for the batch `x0` (N·C·H·W values in [-1, 1]) with class
    /// labels `labels` (class-conditional models): t ~ U{0, …, T−1} per sample (Algorithm 1),
    /// labels dropped to the null class with probability `label_dropout`. Does not wait.
    pub fn step(
        &mut self,
        ctx: &GpuContext,
        x0: &[f32],
        labels: Option<&[u32]>,
    ) -> Result<StepInputs> {
        let n = self.graph.batch;
        let t_max = self.schedule.num_train_timesteps() as u64;
        let timesteps: Vec<u32> = (0..n).map(|_| self.rng.below(t_max) as u32).collect();
        let labels = match (labels, self.graph.config.num_class_embeds) {
            (Some(l), Some(k)) => {
                let null = (k - 1) as u32;
                Some(
                    l.iter()
                        .map(|&c| {
                            if self.rng.next_f64() < self.settings.label_dropout {
                                null
                            } else {
                                c
                            }
                        })
                        .collect::<Vec<u32>>(),
                )
            }
            (l, _) => l.map(|l| l.to_vec()),
        };
        self.step_with(ctx, x0, labels.as_deref(), &timesteps)?;
        Ok(StepInputs { timesteps, labels })
    }

    /// One optimizer step with the timesteps and labels given (no randomness but ε's).
    pub fn step_with(
        &mut self,
        ctx: &GpuContext,
        x0: &[f32],
        labels: Option<&[u32]>,
        timesteps: &[u32],
    ) -> Result<()> {
        let n = self.graph.batch;
        if timesteps.len() != n {
            return Err(Error::shape(format!(
                "{} timesteps for a batch of {n}",
                timesteps.len()
            )));
        }
        let t_max = self.schedule.num_train_timesteps();
        let mut coef = Vec::with_capacity(2 * n);
        for &t in timesteps {
            if t as usize >= t_max {
                return Err(Error::shape(format!(
                    "timestep {t} is not below T = {t_max}"
                )));
            }
            let (a, b) = self.schedule.add_noise_coefficients(t as usize);
            coef.push(a as f32);
            coef.push(b as f32);
        }
        ctx.write(&self.graph.x0, x0)?;
        ctx.write(&self.graph.coef, &coef)?;
        if let (Some(w), Some(gamma)) = (&self.graph.loss_weights, self.snr_gamma) {
            ctx.write(w, &self.loss_weights(timesteps, gamma))?;
        }
        ctx.write(
            &self.graph.timesteps,
            &timesteps.iter().map(|&t| t as f32).collect::<Vec<_>>(),
        )?;
        match (
            &self.graph.class_labels,
            labels,
            self.graph.config.num_class_embeds,
        ) {
            (Some(t), Some(l), Some(k)) => {
                if l.len() != n {
                    return Err(Error::shape(format!(
                        "{} labels for a batch of {n}",
                        l.len()
                    )));
                }
                if let Some(bad) = l.iter().find(|&&c| c as usize >= k) {
                    return Err(Error::shape(format!(
                        "label {bad} is out of range for {k} class embeddings"
                    )));
                }
                ctx.write_u32(t, l)?;
            }
            (Some(_), None, _) => {
                return Err(Error::shape(
                    "this model is class-conditional: labels are required",
                ))
            }
            (None, Some(_), _) => {
                return Err(Error::shape(
                    "this model is not class-conditional: it takes no labels",
                ))
            }
            _ => {}
        }
        self.step += 1;
        self.graph.set_noise(ctx, self.settings.seed, self.step);
        // learning_rate counts steps already taken (LambdaLR), ema_decay this step (EMAModel).
        let lr = learning_rate(self.step - 1, &self.settings.lr) as f32;
        let decay = ema_decay(self.step, &self.settings.ema);
        match &self.optimizer {
            Optimizer::Packed { adamw, .. } => adamw.set_step_and_ema(ctx, self.step, lr, decay)?,
            Optimizer::PerTensor { adamw, .. } => {
                adamw.set_step_and_ema(ctx, self.step, lr, decay)?
            }
        }
        ctx.run(&self.step_program)
    }

    /// The min-SNR-γ weight of each sample's timestep (f64, rounded to f32).
    pub fn loss_weights(&self, timesteps: &[u32], gamma: f64) -> Vec<f32> {
        timesteps
            .iter()
            .map(|&t| {
                let ab = self.schedule.alphas_cumprod[t as usize];
                min_snr_weight(ab, gamma, self.scheduler.prediction_type) as f32
            })
            .collect()
    }

    /// The last step's loss and [gradient norm before clipping, clip factor] (waits for the GPU).
    pub async fn read_stats(&self, ctx: &GpuContext) -> Result<(f32, f32)> {
        let loss = ctx.read(&self.graph.loss).await?;
        let stats = match &self.optimizer {
            Optimizer::Packed { grad_norm, .. } => grad_norm.stats(),
            Optimizer::PerTensor { grad_norm, .. } => grad_norm.stats(),
        };
        let stats = ctx.read(stats).await?;
        Ok((loss[0], stats[0]))
    }

    /// Copy a list of device tensors into `Weights` under the parameter names.
    pub async fn download(&self, ctx: &GpuContext, tensors: &[Tensor]) -> Result<Weights> {
        let mut w = Weights::new();
        for (name, t) in self.graph.names.iter().zip(tensors) {
            w.insert(name.clone(), t.shape.clone(), ctx.read(t).await?)?;
        }
        Ok(w)
    }

    /// Overwrite a list of device tensors from `Weights` (resuming).
    pub fn upload(&self, ctx: &GpuContext, tensors: &[Tensor], from: &Weights) -> Result<()> {
        for (name, t) in self.graph.names.iter().zip(tensors) {
            let (shape, data) = from.get(name)?;
            if shape != &t.shape[..] {
                return Err(Error::weights(format!(
                    "{name}: shape {shape:?}, expected {:?}",
                    t.shape
                )));
            }
            ctx.write(t, data)?;
        }
        Ok(())
    }

    /// The whole recorded step (forward, backward, clipping, AdamW, EMA), for profiling.
    pub fn step_program(&self) -> &Program {
        &self.step_program
    }

    pub fn prediction_type(&self) -> PredictionType {
        self.scheduler.prediction_type
    }
}
