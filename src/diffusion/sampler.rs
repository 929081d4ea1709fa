//! The reverse process on the GPU: DDPM ancestral sampling (paper Algorithm 2), DDIM
//! (Song et al. 2021, eq. 12) and DPM-Solver++(2M) (Lu et al. 2022), optionally with
//! classifier-free guidance. Every step is one
//! submission of a pre-recorded program; the per-step inputs (timestep, coefficients, noise
//! stream) are small uniform writes, so nothing blocks and nothing is allocated per step.
//! After each step the caller may read (or draw) `x_t` and the predicted `x0`.

use crate::diffusion::schedule::{
    run_step_coefficients, sampler_timesteps, with_clipped_model_output, Sampler, Schedule,
    SchedulerConfig,
};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::config::UNetConfig;
use crate::model::weights::Weights;
use crate::ops::elementwise::concat_channels;
use crate::ops::noise::NoiseOp;
use crate::ops::sampler::{GuidanceOp, GuidanceRescaleOp, SamplerStepOp};
use crate::unet::UNet;

/// What to sample.
#[derive(Clone, Debug)]
pub struct SampleSettings {
    pub sampler: Sampler,
    /// Number of denoising steps (≤ num_train_timesteps).
    pub steps: usize,
    /// Seed of the Philox noise: x_T uses stream 0, step k uses stream k + 1.
    pub seed: u64,
    /// Number of samples.
    pub batch: usize,
    /// Class label of each sample (class-conditional models only).
    pub class_labels: Option<Vec<u32>>,
    /// Classifier-free guidance scale w (class-conditional models only; 1 = no guidance).
    pub guidance: Option<f32>,
}

/// Refinements of classifier-free guidance (issue 10), all off by default as in diffusers.
/// Set with [`SamplingRun::set_guidance_options`]; they only act on guided runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuidanceOptions {
    /// Guidance rescale φ (Lin et al. 2024, eq. 15–16; diffusers `guidance_rescale`):
    /// ε ← φ·ε_cfg·std(ε_c)/std(ε_cfg) + (1 − φ)·ε_cfg. 0 = off.
    pub rescale: f64,
    /// Guide only at timesteps t with lo ≤ t ≤ hi (Kynkäänniemi et al. 2024); elsewhere the
    /// conditional output alone (w = 1). None = every step.
    pub interval: Option<(usize, usize)>,
}

/// A sampling run in progress: the U-Net and the sampler kernels, planned once.
pub struct SamplingRun {
    pub unet: UNet,
    schedule: Schedule,
    scheduler: SchedulerConfig,
    settings: SampleSettings,
    timesteps: Vec<usize>,
    next: usize,
    /// x_t, updated in place each step: (N, C, H, W).
    x: Tensor,
    /// The latest predicted x̂_0: (N, C, H, W).
    x0: Tensor,
    init_noise: NoiseOp,
    init_program: Program,
    step_noise: NoiseOp,
    step_op: SamplerStepOp,
    guidance_op: Option<(GuidanceOp, GuidanceRescaleOp)>,
    guidance_options: GuidanceOptions,
    /// DDIM only: re-derive ε̂ from the clipped x̂_0 (diffusers' `use_clipped_model_output`).
    use_clipped_model_output: bool,
    step_program: Program,
}

/// The largest guidance scale |w| accepted: typical values are 1–10, and far beyond this the
/// guided ε overflows f32 (the samples would be NaN or only the clipping would remain).
pub const MAX_GUIDANCE: f32 = 1000.0;

/// A classifier-free guidance scale must be finite with |w| ≤ [`MAX_GUIDANCE`] (w = 1: no
/// guidance, 0: unconditional, negative: away from the class).
pub fn check_guidance(w: f32) -> Result<()> {
    if !(w.is_finite() && w.abs() <= MAX_GUIDANCE) {
        return Err(Error::config(format!(
            "guidance scale {w}: must be a number between -{MAX_GUIDANCE} and {MAX_GUIDANCE} \
             (typically 1 to 10)"
        )));
    }
    Ok(())
}

impl SamplingRun {
    pub fn new(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        scheduler: &SchedulerConfig,
        settings: SampleSettings,
    ) -> Result<Self> {
        let n = settings.batch;
        if n == 0 {
            return Err(Error::shape("the number of samples must be at least 1"));
        }
        if settings.steps == 0 {
            return Err(Error::config("the number of steps must be at least 1"));
        }
        if let Sampler::Ddim { eta } = settings.sampler {
            // η > 1 asks for more noise than the step has variance (diffusers returns NaN).
            if !(0.0..=1.0).contains(&eta) {
                return Err(Error::config(format!(
                    "DDIM eta = {eta}: must be between 0 (deterministic) and 1 (DDPM-like noise)"
                )));
            }
        }
        if let Some(w) = settings.guidance {
            check_guidance(w)?;
        }
        let schedule = Schedule::new(scheduler)?;
        let timesteps = sampler_timesteps(scheduler, settings.sampler, settings.steps)?;
        let guided =
            match (settings.guidance, config.num_class_embeds) {
                (Some(w), Some(_)) => w != 1.0,
                (Some(_), None) => return Err(Error::config(
                    "guidance needs a class-conditional model (num_class_embeds in config.json)",
                )),
                _ => false,
            };
        let labels =
            match (&settings.class_labels, config.num_class_embeds) {
                (Some(l), Some(_)) if l.len() != n => {
                    return Err(Error::shape(format!(
                        "{} class labels for {n} samples",
                        l.len()
                    )))
                }
                (Some(l), Some(_)) => Some(l.clone()),
                (None, Some(k)) => Some((0..n).map(|i| (i % (k - 1).max(1)) as u32).collect()),
                (Some(_), None) => return Err(Error::config(
                    "class labels need a class-conditional model (num_class_embeds in config.json)",
                )),
                (None, None) => None,
            };
        let unet_batch = if guided { 2 * n } else { n };
        let unet = UNet::new(ctx, config, weights, unet_batch)?;
        let [_, c, h, w] = crate::ops::elementwise::nchw(&unet.sample, "sample")?;
        let shape = [n, c, h, w];
        let mut step_program = Program::new();
        let x = if guided {
            // The guided U-Net sees [x_t; x_t] with [labels; null class].
            let x = ctx.zeros(&shape)?;
            let flat = [1, n * c * h * w, 1, 1];
            concat_channels(
                ctx,
                &mut step_program,
                &x.reshaped(&flat)?,
                &x.reshaped(&flat)?,
                &unet.sample.reshaped(&[1, 2 * n * c * h * w, 1, 1])?,
            )?;
            x
        } else {
            unet.sample.clone()
        };
        if let (Some(l), Some(k)) = (&labels, config.num_class_embeds) {
            let mut all = l.clone();
            if guided {
                all.extend(std::iter::repeat_n((k - 1) as u32, n));
            }
            unet.set_class_labels(ctx, Some(&all))?;
        }
        step_program.extend(unet.program());
        let x0 = ctx.zeros(&shape)?;
        let noise = ctx.zeros(&shape)?;
        let (model_out, guidance_op) = if guided {
            let guided_out = ctx.zeros(&shape)?;
            let op = GuidanceOp::record(ctx, &mut step_program, &unet.output, &guided_out)?;
            op.set(ctx, settings.guidance.unwrap_or(1.0));
            let rescale =
                GuidanceRescaleOp::record(ctx, &mut step_program, &unet.output, &guided_out)?;
            (guided_out, Some((op, rescale)))
        } else {
            (unet.output.clone(), None)
        };
        let step_noise = NoiseOp::record(ctx, &mut step_program, &noise)?;
        let step_op = SamplerStepOp::record(ctx, &mut step_program, &model_out, &noise, &x, &x0)?;
        let mut init_program = Program::new();
        let init_noise = NoiseOp::record(ctx, &mut init_program, &x)?;
        init_noise.set(ctx, settings.seed, 0);
        ctx.run(&init_program)?;
        Ok(SamplingRun {
            unet,
            schedule,
            scheduler: scheduler.clone(),
            settings,
            timesteps,
            next: 0,
            x,
            x0,
            init_noise,
            init_program,
            step_noise,
            step_op,
            guidance_op,
            guidance_options: GuidanceOptions::default(),
            use_clipped_model_output: false,
            step_program,
        })
    }

    /// Use these guidance refinements from the next step on (no effect on unguided runs).
    pub fn set_guidance_options(
        &mut self,
        ctx: &GpuContext,
        options: GuidanceOptions,
    ) -> Result<()> {
        if !(0.0..=1.0).contains(&options.rescale) {
            return Err(Error::config(format!(
                "guidance rescale must be between 0 and 1, got {}",
                options.rescale
            )));
        }
        if let Some((lo, hi)) = options.interval {
            if lo > hi {
                return Err(Error::config(format!(
                    "guidance interval {lo}..{hi}: the start is after the end"
                )));
            }
        }
        if let Some((_, rescale)) = &self.guidance_op {
            rescale.set(ctx, options.rescale as f32);
        }
        self.guidance_options = options;
        Ok(())
    }

    /// DDIM's `use_clipped_model_output` (diffusers' `DDIMScheduler.step` argument; off by
    /// default as there): from the next step on, the update uses ε̂ re-derived from the
    /// clipped x̂_0 instead of the model's ε̂ (see [`with_clipped_model_output`]). No effect
    /// when `clip_sample` and thresholding are off. Only DDIM has it.
    pub fn set_use_clipped_model_output(&mut self, on: bool) -> Result<()> {
        if on && !matches!(self.settings.sampler, Sampler::Ddim { .. }) {
            return Err(Error::config(
                "use_clipped_model_output only applies to the DDIM sampler",
            ));
        }
        self.use_clipped_model_output = on;
        Ok(())
    }

    /// Replace x_T (the seed's noise) with the caller's, e.g. a diffusers run's initial latents.
    pub fn set_initial_noise(&self, ctx: &GpuContext, x_t: &[f32]) -> Result<()> {
        if self.next != 0 {
            return Err(Error::Other(
                "x_T can only be set before the first step".into(),
            ));
        }
        ctx.write(&self.x, x_t)
    }

    /// Jump to step `steps_done` with the given x_t (e.g. to replay one step of a reference
    /// trajectory, or to resume a paused run). DPM-Solver's multistep update also reads the
    /// previous step's x̂_0 from [`Self::x0`]: set it with [`Self::set_previous_x0`].
    pub fn set_state(&mut self, ctx: &GpuContext, steps_done: usize, x_t: &[f32]) -> Result<()> {
        if steps_done > self.timesteps.len() {
            return Err(Error::Other(format!(
                "step {steps_done} is past the end of a {}-step run",
                self.timesteps.len()
            )));
        }
        ctx.write(&self.x, x_t)?;
        self.next = steps_done;
        Ok(())
    }

    /// Overwrite the x̂_0 buffer, which DPM-Solver++(2M) reads as the previous step's x̂_0.
    pub fn set_previous_x0(&self, ctx: &GpuContext, x0: &[f32]) -> Result<()> {
        ctx.write(&self.x0, x0)
    }

    /// Start again from x_T with another seed (same model, batch and settings).
    pub fn restart(&mut self, ctx: &GpuContext, seed: u64) -> Result<()> {
        self.settings.seed = seed;
        self.init_noise.set(ctx, seed, 0);
        self.next = 0;
        ctx.run(&self.init_program)
    }

    /// The timesteps this run visits, from noisiest to cleanest.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// How many steps have been taken.
    pub fn steps_done(&self) -> usize {
        self.next
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.timesteps.len()
    }

    /// x_t after the last step (x_T before the first): (N, C, H, W).
    pub fn x_t(&self) -> &Tensor {
        &self.x
    }

    /// The model's prediction of x_0 at the last step: (N, C, H, W).
    pub fn x0(&self) -> &Tensor {
        &self.x0
    }

    /// Submit one denoising step t → prev(t). Returns the timestep just processed, or None
    /// when the run is finished. Does not wait for the GPU.
    pub fn step(&mut self, ctx: &GpuContext) -> Result<Option<usize>> {
        let Some(&t) = self.timesteps.get(self.next) else {
            return Ok(None);
        };
        let coefficients = run_step_coefficients(
            &self.schedule,
            &self.scheduler,
            self.settings.sampler,
            &self.timesteps,
            self.next,
        );
        let coefficients = if self.use_clipped_model_output {
            let last = self.schedule.alphas_cumprod.len() - 1;
            with_clipped_model_output(coefficients, self.schedule.alphas_cumprod[t.min(last)])
        } else {
            coefficients
        };
        if let Some((op, _)) = &self.guidance_op {
            let inside = match self.guidance_options.interval {
                Some((lo, hi)) => (lo..=hi).contains(&t),
                None => true,
            };
            let w = self.settings.guidance.unwrap_or(1.0);
            op.set(ctx, if inside { w } else { 1.0 });
        }
        let ts = vec![t as f32; self.unet.batch];
        ctx.write(&self.unet.timesteps, &ts)?;
        self.step_noise
            .set(ctx, self.settings.seed, self.next as u32 + 1);
        self.step_op.set(ctx, &coefficients);
        ctx.run(&self.step_program)?;
        self.next += 1;
        Ok(Some(t))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::ctx;
    use crate::model::{read_model_dir, Model};

    /// A 2-step run of the tiny class-conditional fixture (clip_sample: true).
    fn run(
        ctx: &GpuContext,
        model: &Model,
        scheduler: &SchedulerConfig,
        sampler: Sampler,
        use_clipped: bool,
    ) -> Result<Vec<f32>> {
        let mut run = SamplingRun::new(
            ctx,
            &model.config,
            &model.weights,
            scheduler,
            SampleSettings {
                sampler,
                steps: 2,
                seed: 5,
                batch: 2,
                class_labels: Some(vec![1, 7]),
                guidance: None,
            },
        )?;
        run.set_use_clipped_model_output(use_clipped)?;
        while run.step(ctx)?.is_some() {}
        block_on(ctx.read(run.x_t()))
    }

    /// `use_clipped_model_output` changes a clipped DDIM run, leaves an unclipped one
    /// bit-identical, and is refused for the other samplers.
    #[test]
    fn clipped_model_output_in_a_run() {
        let ctx = ctx();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/class_cond");
        let model = Model::from_files(&read_model_dir(std::path::Path::new(dir)).unwrap()).unwrap();
        let ddim = Sampler::Ddim { eta: 0.0 };
        let clip = model.scheduler.clone();
        assert!(clip.clip_sample);
        let max_diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        let plain = run(&ctx, &model, &clip, ddim, false).unwrap();
        let rederived = run(&ctx, &model, &clip, ddim, true).unwrap();
        let d = max_diff(&plain, &rederived);
        assert!(
            d > 1e-3,
            "the fixture clips x̂_0, so ε̂ re-derivation must matter ({d})"
        );
        let off = SchedulerConfig {
            clip_sample: false,
            ..clip.clone()
        };
        assert_eq!(
            run(&ctx, &model, &off, ddim, false).unwrap(),
            run(&ctx, &model, &off, ddim, true).unwrap()
        );
        for sampler in [Sampler::Ddpm, Sampler::DpmSolver] {
            let e = run(&ctx, &model, &clip, sampler, true).unwrap_err();
            assert!(e.to_string().contains("only applies to the DDIM"), "{e}");
        }
    }
}
