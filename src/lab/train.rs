//! Training the lab MLP on the GPU (Ho et al. 2020, Algorithm 1): per step, `train_fwd_bwd`
//! draws the batch (data index, t, ε and label dropout from a hash of (seed, step, row)) and
//! runs forward + backward for a tile of 16 rows per workgroup; `grad_adamw` forms every
//! parameter's gradient and applies AdamW and the EMA in place; `tick` records the loss and
//! advances the step counter that lives on the GPU. Three dispatches per step and no CPU
//! writes between steps, so any number of steps can be queued in one submission.

use crate::diffusion::schedule::Schedule;
use crate::error::{Error, Result};
use crate::gpu::{DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::MLP_UPDATE;

use super::data::Dataset;
use super::mlp::{
    init_params, num_params, param_grid, record_mlp, tiled_grad_grid, GradKernel, MlpUniforms,
    UpdateUniforms, ACT_STRIDE, DELTA_STRIDE,
};

/// Losses kept on the GPU (a ring); read them at least this often to keep all of them.
pub const LOSS_SLOTS: usize = 4096;
/// The largest batch (the activation buffer must stay well inside one storage binding).
pub const MAX_BATCH: usize = 65_536;

/// Diffusion timesteps T of the default recipe, shared by `kakusan lab train` and the page's
/// Lab tab (docs/lab.md, "Fit of the default preset").
pub const DEFAULT_TIMESTEPS: usize = 100;
/// The default recipe's noise schedule: Nichol & Dhariwal's cosine (true) or the rescaled
/// linear one (false).
pub const DEFAULT_COSINE: bool = true;

/// Hyperparameters of a lab training run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub batch: usize,
    pub lr: f32,
    pub weight_decay: f32,
    /// EMA decay ceiling; the decay at step s is min(ema_decay, (1 + s)/(10 + s)).
    pub ema_decay: f32,
    /// Probability of replacing the class by the null class (classifier-free guidance).
    pub p_uncond: f32,
    pub seed: u64,
    pub grad_kernel: GradKernel,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch: 512,
            // With the cosine schedule, 1.2e-2 brings the default preset within 2x of its fit
            // floor in 200 steps, 8e-3 in 400, 2e-3 in ~1,500 (docs/lab.md, "Fit of
            // the default preset").
            lr: 1.2e-2,
            weight_decay: 0.0,
            ema_decay: 0.995,
            p_uncond: 0.1,
            seed: 0,
            grad_kernel: GradKernel::Tiled,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(Error::config(format!(
                "batch must be 1 to {MAX_BATCH}, got {}",
                self.batch
            )));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(format!(
                "lr must be positive, got {}",
                self.lr
            )));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(Error::config(format!(
                "ema decay must lie in [0, 1), got {}",
                self.ema_decay
            )));
        }
        if !(0.0..=1.0).contains(&self.p_uncond) {
            return Err(Error::config(format!(
                "p_uncond must lie in [0, 1], got {}",
                self.p_uncond
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::config(format!(
                "weight decay must be >= 0, got {}",
                self.weight_decay
            )));
        }
        Ok(())
    }
}

/// (√ᾱ_t, √(1 − ᾱ_t)) per timestep, as the kernels read them.
pub fn schedule_table(schedule: &Schedule) -> Vec<f32> {
    schedule
        .alphas_cumprod
        .iter()
        .flat_map(|&a| [a.sqrt() as f32, (1.0 - a).sqrt() as f32])
        .collect()
}

/// Decode the trainer's state words: (steps taken on the GPU, the losses of the last
/// min(steps, [`LOSS_SLOTS`]) steps, oldest first).
pub fn losses_from_state(s: &[u32]) -> (u64, Vec<f32>) {
    let steps = s[0] as usize;
    let kept = steps.min(LOSS_SLOTS);
    (
        steps as u64,
        (steps - kept..steps)
            .map(|i| f32::from_bits(s[2 + i % LOSS_SLOTS]))
            .collect(),
    )
}

/// The lab's noise schedule for T timesteps (25 to 1000): Ho et al.'s linear 1e-4…0.02
/// rescaled to T (β·1000/T, so T = 100 reaches ᾱ_T ≈ 5e-5), or Nichol & Dhariwal's cosine.
pub fn lab_schedule(cosine: bool, t: usize) -> Result<Schedule> {
    use crate::diffusion::schedule::{BetaSchedule, SchedulerConfig};
    if !(25..=1000).contains(&t) {
        return Err(Error::config(format!(
            "timesteps must be 25 to 1000, got {t}"
        )));
    }
    let scale = 1000.0 / t as f64;
    Schedule::new(&SchedulerConfig {
        num_train_timesteps: t,
        beta_start: 1e-4 * scale,
        beta_end: 0.02 * scale,
        beta_schedule: if cosine {
            BetaSchedule::SquaredcosCapV2
        } else {
            BetaSchedule::Linear
        },
        ..Default::default()
    })
}

/// A training run's GPU state and its recorded step.
pub struct LabTrainer {
    pub num_classes: usize,
    pub batch: usize,
    /// The weights being trained, (num_params).
    pub params: Tensor,
    /// Their EMA, which sampling uses.
    pub ema: Tensor,
    m: Tensor,
    v: Tensor,
    /// (2 + LOSS_SLOTS) u32: steps taken, unused, the loss ring.
    state: Tensor,
    _buffers: Vec<Tensor>,
    step: Program,
    /// `step` repeated, cached for the last count asked for.
    queued: std::cell::RefCell<(usize, Program)>,
    steps_taken: u64,
    /// A step's first half (`train_fwd_bwd`) was submitted by [`LabTrainer::run_halves`] and
    /// its update (gradient, AdamW, EMA, tick) not yet.
    update_pending: bool,
}

impl LabTrainer {
    /// Plan every buffer and record one step. The weights start from [`init_params`] with
    /// `cfg.seed`.
    pub fn new(
        ctx: &GpuContext,
        data: &Dataset,
        schedule: &Schedule,
        cfg: &TrainConfig,
    ) -> Result<LabTrainer> {
        let init = init_params(data.num_classes, cfg.seed);
        Self::with_params(ctx, data, schedule, cfg, &init)
    }

    pub fn with_params(
        ctx: &GpuContext,
        data: &Dataset,
        schedule: &Schedule,
        cfg: &TrainConfig,
        init: &[f32],
    ) -> Result<LabTrainer> {
        cfg.validate()?;
        let nc = data.num_classes;
        let n = num_params(nc);
        if init.len() != n {
            return Err(Error::shape(format!(
                "lab trainer: {} initial parameters for a model with {n}",
                init.len()
            )));
        }
        let b = cfg.batch;
        let flat: Vec<f32> = data
            .points
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                let c = data.labels.as_ref().map_or(0, |l| l[i]);
                [p[0], p[1], c as f32]
            })
            .collect();
        let data_t = ctx.upload(&flat, &[data.len(), 3])?;
        let table = schedule_table(schedule);
        let sched = ctx.upload(&table, &[schedule.num_train_timesteps(), 2])?;
        let params = ctx.upload(init, &[n])?;
        let ema = ctx.upload(init, &[n])?;
        let m = ctx.zeros(&[n])?;
        let v = ctx.zeros(&[n])?;
        let state = ctx.zeros(&[2 + LOSS_SLOTS])?;
        let acts = ctx.zeros(&[b, ACT_STRIDE])?;
        let deltas = ctx.zeros(&[b, DELTA_STRIDE])?;
        let info = ctx.zeros(&[b, 2])?;
        let seed = (cfg.seed ^ (cfg.seed >> 32)) as u32;
        let uni = MlpUniforms {
            batch: b as u32,
            n_data: data.len() as u32,
            num_t: schedule.num_train_timesteps() as u32,
            null_class: nc as u32,
            seed,
            p_uncond: if nc > 0 { cfg.p_uncond } else { 1.0 },
            ..Default::default()
        };
        let upd = UpdateUniforms {
            batch: b as u32,
            n_params: n as u32,
            loss_slots: LOSS_SLOTS as u32,
            lr: cfg.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: cfg.weight_decay,
            ema_decay: cfg.ema_decay,
            ..Default::default()
        };
        let mut step = Program::new();
        record_mlp(
            ctx,
            &mut step,
            ("lab train_fwd_bwd", "train_fwd_bwd"),
            &uni,
            [&params.buffer, &data_t.buffer, &sched.buffer, &state.buffer],
            [&acts.buffer, &deltas.buffer, &info.buffer],
            b,
        )?;
        let update_outputs: [&crate::gpu::BufferView; 5] = [
            &params.buffer,
            &m.buffer,
            &v.buffer,
            &ema.buffer,
            &state.buffer,
        ];
        let update_inputs: [&crate::gpu::BufferView; 3] =
            [&acts.buffer, &deltas.buffer, &info.buffer];
        ctx.record(
            &mut step,
            DispatchDesc {
                label: "lab grad_adamw",
                shader: &MLP_UPDATE,
                entry: match cfg.grad_kernel {
                    GradKernel::PerParameter => "grad_adamw",
                    GradKernel::Tiled => "grad_adamw_tiled",
                },
                constants: &[],
                params: Params::Static(bytemuck::bytes_of(&upd)),
                inputs: &update_inputs,
                outputs: &update_outputs,
                workgroups: match cfg.grad_kernel {
                    GradKernel::PerParameter => param_grid(n)?,
                    GradKernel::Tiled => tiled_grad_grid(nc),
                },
            },
        )?;
        ctx.record(
            &mut step,
            DispatchDesc {
                label: "lab tick",
                shader: &MLP_UPDATE,
                entry: "tick",
                constants: &[],
                params: Params::Static(bytemuck::bytes_of(&upd)),
                inputs: &update_inputs,
                outputs: &update_outputs,
                workgroups: [1, 1, 1],
            },
        )?;
        Ok(LabTrainer {
            num_classes: nc,
            batch: b,
            params,
            ema,
            m,
            v,
            state,
            _buffers: vec![data_t, sched, acts, deltas, info],
            step,
            queued: std::cell::RefCell::new((0, Program::new())),
            steps_taken: 0,
            update_pending: false,
        })
    }

    /// One training step's dispatches (for profiling).
    pub fn step_program(&self) -> &Program {
        &self.step
    }

    /// Dispatches per training step.
    pub fn dispatches_per_step(&self) -> usize {
        self.step.len()
    }

    /// Steps submitted so far.
    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// Submit `n` training steps in one command buffer (returns without waiting).
    pub fn run(&mut self, ctx: &GpuContext, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        if self.update_pending {
            // Finish the half step first, so every step is forward+backward then update.
            self.run_halves(ctx, 1)?;
        }
        let mut q = self.queued.borrow_mut();
        if q.0 != n {
            let mut p = Program::new();
            for _ in 0..n {
                p.extend(&self.step);
            }
            *q = (n, p);
        }
        ctx.run(&q.1)?;
        self.steps_taken += n as u64;
        Ok(())
    }

    /// Submit `halves` half steps in one command buffer, continuing where the last call
    /// stopped: a step's first half is `train_fwd_bwd` (the batch, forward and backward), its
    /// second the update (`grad_adamw*` and `tick`). For a frame loop on a slow adapter, where
    /// a whole step takes longer than a frame should: the halves can go in different frames,
    /// since everything between them stays on the GPU. Returns the steps completed.
    pub fn run_halves(&mut self, ctx: &GpuContext, halves: usize) -> Result<u64> {
        let (first, update) = self.step.steps.split_at(1);
        let mut p = Program::new();
        let mut left = halves;
        let mut done = 0u64;
        while left > 0 {
            if self.update_pending {
                p.steps.extend(update.iter().cloned());
                self.update_pending = false;
                done += 1;
            } else {
                p.steps.extend(first.iter().cloned());
                self.update_pending = true;
            }
            left -= 1;
        }
        if !p.is_empty() {
            ctx.run(&p)?;
        }
        self.steps_taken += done;
        Ok(done)
    }

    /// The losses of the last min(steps, [`LOSS_SLOTS`]) steps, oldest first.
    pub async fn losses(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        let s = ctx.read_u32(&self.state).await?;
        Ok(losses_from_state(&s).1)
    }

    /// The GPU buffer holding the step counter and the loss ring (for a caller that reads it
    /// without borrowing the trainer across the wait, e.g. the page; decode it with
    /// [`losses_from_state`]).
    pub fn loss_state(&self) -> &Tensor {
        &self.state
    }

    /// Zero the optimizer state, the step counter and restore `init` weights (a "Reset").
    pub fn reset(&mut self, ctx: &GpuContext, init: &[f32]) -> Result<()> {
        ctx.write(&self.params, init)?;
        ctx.write(&self.ema, init)?;
        ctx.write(&self.m, &vec![0.0; init.len()])?;
        ctx.write(&self.v, &vec![0.0; init.len()])?;
        ctx.write_u32(&self.state, &vec![0; 2 + LOSS_SLOTS])?;
        self.steps_taken = 0;
        self.update_pending = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::ctx;
    use crate::lab::data::{generate, Preset};
    use crate::lab::sample::tests::schedule;

    /// AdamW's first step moves every parameter with a non-negligible gradient by lr·sign(g)
    /// (m̂ = g, v̂ = g²), and the EMA with decay min(d, 2/11) follows it.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn first_step_is_adamw_and_ema() {
        let ctx = ctx();
        let data = generate(Preset::Moons, 500, 1, "").unwrap();
        for grad_kernel in [GradKernel::PerParameter, GradKernel::Tiled] {
            let cfg = TrainConfig {
                batch: 37,
                lr: 1e-3,
                grad_kernel,
                ..Default::default()
            };
            let mut tr = LabTrainer::new(&ctx, &data, &schedule(), &cfg).unwrap();
            assert_eq!(tr.dispatches_per_step(), 3);
            let p0 = block_on(ctx.read(&tr.params)).unwrap();
            tr.run(&ctx, 1).unwrap();
            let p1 = block_on(ctx.read(&tr.params)).unwrap();
            let e1 = block_on(ctx.read(&tr.ema)).unwrap();
            let mut moved = 0;
            for i in 0..p0.len() {
                let d = (p1[i] - p0[i]).abs();
                assert!(d <= 1e-3 * 1.001, "param {i} moved by {d}");
                if (d - 1e-3).abs() < 1e-5 {
                    moved += 1;
                }
                let want = p0[i] + (1.0 - 2.0 / 11.0) * (p1[i] - p0[i]);
                assert!((e1[i] - want).abs() < 1e-6, "ema {i}: {} vs {want}", e1[i]);
            }
            assert!(
                moved > p0.len() * 9 / 10,
                "{moved} of {} moved by lr",
                p0.len()
            );
            let losses = block_on(tr.losses(&ctx)).unwrap();
            assert_eq!(losses.len(), 1);
            assert!(losses[0] > 0.1 && losses[0] < 10.0, "{losses:?}");
        }
    }

    /// Half steps in separate submissions (as the page's frame loop runs them on a slow
    /// adapter), mixed with whole steps, give the same weights, EMA and losses as whole steps.
    #[test]
    fn half_steps_match_whole_steps() {
        let ctx = ctx();
        let data = generate(Preset::Moons, 300, 3, "").unwrap();
        let cfg = TrainConfig {
            batch: 20,
            ..Default::default()
        };
        let mut whole = LabTrainer::new(&ctx, &data, &schedule(), &cfg).unwrap();
        whole.run(&ctx, 4).unwrap();
        let mut halves = LabTrainer::new(&ctx, &data, &schedule(), &cfg).unwrap();
        assert_eq!(halves.run_halves(&ctx, 1).unwrap(), 0);
        assert_eq!(halves.run_halves(&ctx, 2).unwrap(), 1);
        assert_eq!(halves.steps_taken(), 1);
        halves.run(&ctx, 2).unwrap(); // finishes the pending half, then two whole steps
        assert_eq!(halves.steps_taken(), 4);
        for (a, b) in [(&whole.params, &halves.params), (&whole.ema, &halves.ema)] {
            assert_eq!(
                block_on(ctx.read(a)).unwrap(),
                block_on(ctx.read(b)).unwrap()
            );
        }
        assert_eq!(
            block_on(whole.losses(&ctx)).unwrap(),
            block_on(halves.losses(&ctx)).unwrap()
        );
    }

    /// A short run lowers L_simple (a broken gradient or optimizer would not).
    #[test]
    fn training_lowers_the_loss() {
        let ctx = ctx();
        let data = generate(Preset::Gaussians, 2000, 2, "").unwrap();
        let cfg = TrainConfig {
            batch: 128,
            ..Default::default()
        };
        let mut tr = LabTrainer::new(&ctx, &data, &schedule(), &cfg).unwrap();
        tr.run(&ctx, 150).unwrap();
        let l = block_on(tr.losses(&ctx)).unwrap();
        assert_eq!(l.len(), 150);
        let first: f32 = l[..20].iter().sum::<f32>() / 20.0;
        let last: f32 = l[130..].iter().sum::<f32>() / 20.0;
        assert!(last < 0.8 * first, "loss {first} → {last}");
        assert!(TrainConfig {
            batch: 0,
            ..cfg.clone()
        }
        .validate()
        .is_err());
        assert!(TrainConfig { lr: -1.0, ..cfg }.validate().is_err());
    }
}
