//! The native command line: `train`, `sample`, `predict`, `info`, `bench`, `interpolate`,
//! `nll`, `anomaly`, `inpaint`, `eval`, `lab`. Everything here may
//! print, read files and block; the engine below does none of that.

mod anomaly;
mod eval;
mod inpaint;
mod interpolate;
pub mod io;
mod lab;
mod nll;
mod plot;
mod train;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

use crate::diffusion::sampler::{SampleSettings, SamplingRun};
use crate::diffusion::schedule::Sampler;
use crate::error::{Error, Result};
use crate::gpu::{block_on, GpuContext};
use crate::model::{read_model_dir, Model};
use crate::unet::UNet;

#[derive(Parser, Debug)]
#[command(
    name = "kakusan",
    version,
    about = "DDPM (Ho, Jain & Abbeel 2020) on the GPU with hand-written WGSL",
    long_about = "kakusan runs diffusers UNet2DModel DDPM checkpoints on any GPU wgpu can reach \
                  (Vulkan, Metal, DX12; Mesa's llvmpipe on machines without one).\n\n\
                  A model folder is diffusers' own layout: config.json, \
                  diffusion_pytorch_model.safetensors and scheduler_config.json side by side, \
                  or a pipeline folder with unet/ and scheduler/ inside."
)]
pub struct Cli {
    /// Without a command: `train` with its defaults (the MNIST model, into runs/mnist).
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate images: x_T ~ N(0, I), then DDPM, DDIM or DPM-Solver++ steps down to x_0.
    Sample(SampleArgs),
    /// One U-Net call on given inputs (what diffusers returns as `.sample`).
    Predict(PredictArgs),
    /// Architecture summary, parameter count and FLOPs per forward pass.
    Info(InfoArgs),
    /// Time the U-Net forward pass on this machine's GPU.
    Bench(BenchArgs),
    /// Train a model (default: class-conditional MNIST digits) and write checkpoints in
    /// diffusers' layout that `sample` and the browser app load.
    Train(Box<train::TrainArgs>),
    /// The diffusion lab: train a small MLP on 2-D point sets and compare its score with
    /// the exact score of the noised data (`kakusan lab train --preset moons`).
    Lab(lab::LabArgs),
    /// Quality numbers for class-conditional digit models: class accuracy, FID and median
    /// pixel by the project's own classifier (or train that classifier).
    Eval(Box<eval::EvalArgs>),
    /// Frames between two seeds (slerp of x_T, DDIM η = 0) or two images (noised to t with
    /// the same noise, mixed, denoised: the DDPM paper's Fig. 8), as one strip.
    Interpolate(interpolate::InterpolateArgs),
    /// Bits/dim of images by the variational bound (Ho et al. 2020, eq. 5): prior KL, one KL
    /// per timestep and the discretized decoder (eq. 13).
    Nll(nll::NllArgs),
    /// Anomaly scores: noise each image to t (eq. 4), reconstruct with DDIM (eta 0) and score
    /// the reconstruction error; AUROC when the input marks which images are real.
    Anomaly(anomaly::AnomalyArgs),
    /// Inpainting with RePaint (Lugmayr et al. 2022): fill the masked pixels, keep the rest
    /// exactly.
    Inpaint(Box<inpaint::InpaintArgs>),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SamplerName {
    /// Ancestral sampling, paper Algorithm 2 (stochastic; default steps = all T).
    Ddpm,
    /// DDIM (Song et al. 2021): deterministic at eta = 0, few steps (default 50).
    Ddim,
    /// DPM-Solver++(2M) (Lu et al. 2022), diffusers' DPMSolverMultistepScheduler defaults
    /// (linspace timesteps, second order, first-order final step): deterministic, default 20 steps.
    DpmSolver,
}

/// The sampler settings that `sample` and `eval` share (flattened into both).
#[derive(clap::Args, Debug)]
pub struct SamplerArgs {
    /// Denoising steps [default: num_train_timesteps for ddpm, 50 for ddim, 20 for dpm-solver].
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM's eta: 0 = deterministic, 1 = DDPM-like noise.
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Classifier-free guidance scale w (class-conditional models): ε = ε_∅ + w(ε_c − ε_∅)
    /// [default: none, i.e. the conditional model alone (= w 1)].
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Override scheduler_config.json's `clip_sample` (clamp x̂_0 to ±clip_sample_range in
    /// DDPM/DDIM steps), e.g. `--clip-sample false`. With DDIM, clipping greys the shipped
    /// model's backgrounds (docs/sampling.md).
    #[arg(long)]
    pub clip_sample: Option<bool>,
    /// DDIM only: re-derive ε̂ from the clipped x̂_0 in each step (diffusers'
    /// `use_clipped_model_output`; default off as there). See docs/sampling.md.
    #[arg(long)]
    pub use_clipped_model_output: bool,
}

/// Classifier-free guidance's options beyond the scale (`sample`, `interpolate`).
#[derive(clap::Args, Debug)]
pub struct GuidanceArgs {
    /// Guidance rescale φ in [0, 1] (Lin et al. 2024; diffusers `guidance_rescale`): scale the
    /// guided ε back towards the conditional ε's standard deviation. 0 = off.
    #[arg(long, default_value_t = 0.0)]
    pub guidance_rescale: f64,
    /// Guide only at timesteps LO..=HI, e.g. `100,700` (Kynkäänniemi et al. 2024); elsewhere
    /// the conditional output alone. Default: every step.
    #[arg(long)]
    pub guidance_interval: Option<String>,
}

impl GuidanceArgs {
    /// The engine's guidance options.
    pub(crate) fn options(&self) -> Result<crate::diffusion::sampler::GuidanceOptions> {
        guidance_options(self.guidance_rescale, self.guidance_interval.as_deref())
    }
}

impl SamplerArgs {
    /// The engine's sampler for `name` and the number of steps: `--steps`, else the
    /// sampler's default for a schedule of `t` training timesteps.
    pub(crate) fn sampler(&self, name: SamplerName, t: usize) -> (Sampler, usize) {
        let (sampler, default_steps) = match name {
            SamplerName::Ddpm => (Sampler::Ddpm, t),
            SamplerName::Ddim => (Sampler::Ddim { eta: self.eta }, 50.min(t)),
            SamplerName::DpmSolver => (Sampler::DpmSolver, 20.min(t.saturating_sub(1)).max(1)),
        };
        (sampler, self.steps.unwrap_or(default_steps))
    }
}

impl SamplerName {
    /// The name as written on the command line.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SamplerName::Ddpm => "ddpm",
            SamplerName::Ddim => "ddim",
            SamplerName::DpmSolver => "dpm-solver",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// Model folder (diffusers layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Sampler.
    #[arg(long, value_enum, default_value = "ddpm")]
    pub sampler: SamplerName,
    #[command(flatten)]
    pub sampling: SamplerArgs,
    /// Seed of the noise (x_T and every step's z); the same seed gives the same images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of images.
    #[arg(short = 'n', long = "num", default_value_t = 16)]
    pub num: usize,
    /// Class of every image (class-conditional models) [default: cycle through the classes].
    #[arg(long)]
    pub class_label: Option<u32>,
    /// Where to write the image grid (PNG).
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Also write the final samples as safetensors (tensor `sample`, [N,C,H,W], model space).
    #[arg(long)]
    pub out_tensor: Option<PathBuf>,
    /// Start from this x_T instead of seeded noise: safetensors with `init_noise` [N,C,H,W]
    /// and optionally `class_labels` [N] (int64).
    #[arg(long)]
    pub init_noise: Option<PathBuf>,
    #[command(flatten)]
    pub guidance_options: GuidanceArgs,
    /// Dynamic thresholding of x̂_0 (Saharia et al. 2022) with this quantile of |x̂_0|, e.g.
    /// 0.995, instead of clipping [default: scheduler_config.json's `thresholding`, off].
    #[arg(long)]
    pub dynamic_thresholding: Option<f64>,
    /// Dynamic thresholding's largest threshold s [default: scheduler_config.json's
    /// `sample_max_value`, 1.0, which makes thresholding plain clipping].
    #[arg(long)]
    pub sample_max_value: Option<f64>,
    /// Also write the progressive generation (DDPM paper Fig. 6) as PNG: one row per
    /// image, the predicted x̂_0 after each chosen step from left to right [default: 8
    /// evenly spaced steps, the last one included].
    #[arg(long)]
    pub progress_grid: Option<PathBuf>,
    /// With --progress-grid: every N steps (and the last).
    #[arg(long)]
    pub progress_every: Option<usize>,
    /// With --progress-grid: these steps (1 = after the first step), comma-separated.
    #[arg(long)]
    pub progress_steps: Option<String>,
}

/// Apply `--clip-sample`, `--dynamic-thresholding` and `--sample-max-value` to the model's
/// scheduler settings.
pub(crate) fn override_scheduler(
    cfg: &mut crate::diffusion::schedule::SchedulerConfig,
    clip_sample: Option<bool>,
    dynamic_thresholding: Option<f64>,
    sample_max_value: Option<f64>,
) -> Result<()> {
    if let Some(c) = clip_sample {
        cfg.clip_sample = c;
    }
    if let Some(r) = dynamic_thresholding {
        cfg.thresholding = true;
        cfg.dynamic_thresholding_ratio = r;
    }
    if let Some(m) = sample_max_value {
        cfg.sample_max_value = m;
    }
    cfg.validate()
}

/// `--guidance-rescale` and `--guidance-interval LO,HI` as engine options.
pub(crate) fn guidance_options(
    rescale: f64,
    interval: Option<&str>,
) -> Result<crate::diffusion::sampler::GuidanceOptions> {
    let interval = match interval {
        None => None,
        Some(v) => {
            let parts: Vec<&str> = v.split(',').map(str::trim).collect();
            let num = |x: &str| {
                x.parse::<usize>().map_err(|_| {
                    Error::Other(format!(
                        "--guidance-interval: `{x}` is not a timestep (want LO,HI, e.g. 100,700)"
                    ))
                })
            };
            match parts[..] {
                [lo, hi] => Some((num(lo)?, num(hi)?)),
                _ => {
                    return Err(Error::Other(format!(
                        "--guidance-interval needs LO,HI (got `{v}`)"
                    )))
                }
            }
        }
    };
    Ok(crate::diffusion::sampler::GuidanceOptions { rescale, interval })
}

/// The 1-based step numbers after which `sample --progress-grid` records x̂_0.
pub(crate) fn progress_steps(
    total: usize,
    every: Option<usize>,
    list: Option<&str>,
) -> Result<Vec<usize>> {
    let steps: Vec<usize> = match (every, list) {
        (Some(_), Some(_)) => {
            return Err(Error::Other(
                "give at most one of --progress-every and --progress-steps".into(),
            ))
        }
        (Some(0), None) => return Err(Error::Other("--progress-every must be at least 1".into())),
        (Some(n), None) => (1..=total).filter(|s| s % n == 0 || *s == total).collect(),
        (None, Some(l)) => {
            let mut v = Vec::new();
            for part in l.split(',').map(str::trim) {
                let s: usize = part.parse().map_err(|_| {
                    Error::Other(format!("--progress-steps: `{part}` is not a step number"))
                })?;
                if s == 0 || s > total {
                    return Err(Error::Other(format!(
                        "--progress-steps: step {s} is outside 1..={total} (this run's steps)"
                    )));
                }
                v.push(s);
            }
            v.sort_unstable();
            v.dedup();
            v
        }
        (None, None) => {
            let k = total.min(8);
            let mut v: Vec<usize> = (1..=k).map(|i| (i * total).div_ceil(k)).collect();
            v.dedup();
            v
        }
    };
    Ok(steps)
}

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// Model folder (diffusers layout).
    #[arg(long)]
    pub model: PathBuf,
    /// safetensors with `sample` [N,C,H,W] f32, `timesteps` [N] (int64 or f32) and, for
    /// class-conditional models, `class_labels` [N] int64.
    #[arg(long)]
    pub input: PathBuf,
    /// Output safetensors with tensor `sample` [N,C,H,W].
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Model folder (diffusers layout); weights are optional for `info`.
    #[arg(long)]
    pub model: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model folder (diffusers layout), or the name of a training preset (e.g. `mnist`,
    /// random weights).
    #[arg(long, required_unless_present = "lab")]
    pub model: Option<PathBuf>,
    /// Time the diffusion lab's MLP training step (batch 512) instead of a U-Net.
    #[arg(long)]
    pub lab: bool,
    /// Batch size.
    #[arg(short = 'n', long = "batch", default_value_t = 1)]
    pub batch: usize,
    /// Timed passes (after 2 warm-up passes).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Use random weights (for a folder with only config.json, e.g. assets/configs/ddpm-cifar10-32).
    #[arg(long)]
    pub random_weights: bool,
    /// Time a whole training step (forward, backward, clipping, AdamW, EMA) instead of the
    /// forward pass; reports images/s.
    #[arg(long)]
    pub train: bool,
    /// Also run the pass one dispatch at a time and print where the time goes, by kernel.
    #[arg(long)]
    pub profile: bool,
}

/// Parse arguments, run, and turn errors into a message and exit code 1.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => train::train(train::TrainArgs::default()),
        Some(Command::Train(a)) => train::train(*a),
        Some(Command::Sample(a)) => sample(a),
        Some(Command::Predict(a)) => predict(a),
        Some(Command::Info(a)) => info(a),
        Some(Command::Bench(a)) => bench(a),
        Some(Command::Lab(a)) => lab::run(a),
        Some(Command::Eval(a)) => eval::eval(*a),
        Some(Command::Interpolate(a)) => interpolate::interpolate(a),
        Some(Command::Nll(a)) => nll::nll(a),
        Some(Command::Anomaly(a)) => anomaly::anomaly(a),
        Some(Command::Inpaint(a)) => inpaint::inpaint(*a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub(crate) fn gpu() -> Result<GpuContext> {
    let ctx = block_on(GpuContext::new())?;
    if ctx.adapter.is_software {
        eprintln!(
            "note: no hardware GPU found; using the software adapter {} (correct but slow)",
            ctx.adapter.name
        );
    }
    Ok(ctx)
}

/// A progress bar of `len` units drawn with the indicatif `template`.
pub(crate) fn progress_bar(len: usize, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

pub(crate) fn load(dir: &Path) -> Result<Model> {
    let files = read_model_dir(dir)?;
    Model::from_files(&files)
}

fn sample(a: SampleArgs) -> Result<()> {
    let mut model = load(&a.model)?;
    override_scheduler(
        &mut model.scheduler,
        a.sampling.clip_sample,
        a.dynamic_thresholding,
        a.sample_max_value,
    )?;
    let (sampler, steps) = a
        .sampling
        .sampler(a.sampler, model.scheduler.num_train_timesteps);
    let guidance_options = a.guidance_options.options()?;
    let init = match &a.init_noise {
        Some(p) => Some(io::read_init_noise(p)?),
        None => None,
    };
    let mut n = a.num;
    let mut class_labels = a.class_label.map(|k| vec![k; n]);
    if let Some(init) = &init {
        n = init.shape[0];
        if init.class_labels.is_some() {
            class_labels = init.class_labels.clone();
        } else if let Some(k) = a.class_label {
            class_labels = Some(vec![k; n]);
        }
    }
    let ctx = gpu()?;
    let mut run = SamplingRun::new(
        &ctx,
        &model.config,
        &model.weights,
        &model.scheduler,
        SampleSettings {
            sampler,
            steps,
            seed: a.seed,
            batch: n,
            class_labels,
            guidance: a.sampling.guidance,
        },
    )?;
    if let Some(init) = &init {
        let want = run.x_t().shape.clone();
        if init.shape != want {
            return Err(Error::shape(format!(
                "init_noise has shape {:?} but this model samples {:?}",
                init.shape, want
            )));
        }
        run.set_initial_noise(&ctx, &init.data)?;
    }
    run.set_guidance_options(&ctx, guidance_options)?;
    run.set_use_clipped_model_output(a.sampling.use_clipped_model_output)?;
    let bar = progress_bar(
        run.timesteps().len(),
        "{spinner} sampling [{bar:40}] {pos}/{len} steps  {per_sec}  eta {eta}  {msg}",
    );
    let progress = match &a.progress_grid {
        Some(_) => progress_steps(
            run.timesteps().len(),
            a.progress_every,
            a.progress_steps.as_deref(),
        )?,
        None if a.progress_every.is_some() || a.progress_steps.is_some() => {
            return Err(Error::Other(
                "--progress-every/--progress-steps need --progress-grid FILE".into(),
            ))
        }
        None => Vec::new(),
    };
    let mut snapshots: Vec<Vec<f32>> = Vec::new();
    let start = Instant::now();
    while let Some(t) = run.step(&ctx)? {
        // Wait for each step so the bar shows real progress (the browser never waits).
        block_on(ctx.finish())?;
        if progress.contains(&run.steps_done()) {
            snapshots.push(block_on(ctx.read(run.x0()))?);
        }
        bar.set_message(format!("t={t}"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(path) = &a.progress_grid {
        // Rows = images, columns = the chosen steps.
        let shape = run.x0().shape.clone();
        let per: usize = shape[1..].iter().product();
        let cols = snapshots.len();
        let mut grid = Vec::with_capacity(n * cols * per);
        for i in 0..n {
            for snap in &snapshots {
                grid.extend_from_slice(&snap[i * per..(i + 1) * per]);
            }
        }
        let mut grid_shape = shape.clone();
        grid_shape[0] = n * cols;
        io::write_grid_png_cols(path, &grid, &grid_shape, cols)?;
        eprintln!(
            "progress grid (x̂_0 after steps {progress:?}) → {}",
            path.display()
        );
    }
    let data = block_on(ctx.read(run.x_t()))?;
    if data.iter().any(|v| !v.is_finite()) {
        return Err(Error::Other(
            "the samples contain NaN or Inf: the model or its weights are broken".into(),
        ));
    }
    let shape = run.x_t().shape.clone();
    io::write_grid_png(&a.out, &data, &shape)?;
    if let Some(p) = &a.out_tensor {
        io::write_tensor(p, "sample", &data, &shape)?;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{} images, {} steps in {:.1} s ({:.2} steps/s) on {} → {}",
        n,
        run.timesteps().len(),
        secs,
        run.timesteps().len() as f64 / secs,
        ctx.adapter.name,
        a.out.display()
    );
    Ok(())
}

fn predict(a: PredictArgs) -> Result<()> {
    let model = load(&a.model)?;
    let input = io::read_predict_input(&a.input)?;
    let ctx = gpu()?;
    let n = input.shape[0];
    let unet = UNet::new(&ctx, &model.config, &model.weights, n)?;
    if input.shape != unet.sample.shape {
        return Err(Error::shape(format!(
            "sample has shape {:?} but this model takes {:?}",
            input.shape, unet.sample.shape
        )));
    }
    let out = block_on(unet.predict(
        &ctx,
        &input.sample,
        &input.timesteps,
        input.class_labels.as_deref(),
    ))?;
    io::write_tensor(&a.out, "sample", &out, &unet.output.shape)?;
    eprintln!("wrote {} ({:?})", a.out.display(), unet.output.shape);
    Ok(())
}

fn info(a: InfoArgs) -> Result<()> {
    let config = crate::model::read_config(&a.model)?;
    print!("{}", crate::unet::summary(&config));
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    if a.lab {
        return lab::bench(&gpu()?, a.iters.max(20));
    }
    let model = a
        .model
        .clone()
        .ok_or_else(|| Error::config("bench needs --model (or --lab)"))?;
    let preset = model
        .to_str()
        .filter(|_| !model.exists())
        .and_then(|name| crate::train::presets::preset(name).ok());
    let (config, weights) = if let Some(config) = preset {
        let weights = crate::model::weights::Weights::random(&config, 0);
        (config, weights)
    } else if a.random_weights {
        let config = crate::model::read_config(&model)?;
        let weights = crate::model::weights::Weights::random(&config, 0);
        (config, weights)
    } else {
        let m = load(&model)?;
        (m.config, m.weights)
    };
    let ctx = gpu()?;
    if a.train {
        return bench_train(&a, &ctx, &config, &weights);
    }
    let unet = UNet::new(&ctx, &config, &weights, a.batch)?;
    let n = a.batch;
    let numel = unet.sample.numel();
    let sample: Vec<f32> = (0..numel)
        .map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let labels = config.num_class_embeds.map(|_| vec![0u32; n]);
    unet.set_inputs(&ctx, Some(&sample), &vec![500.0; n], labels.as_deref())?;
    let times = time_runs(&ctx, a.iters, || ctx.run(unet.program()))?;
    let median = times[times.len() / 2];
    println!(
        "model: {} parameters, batch {n}, {:.2} GFLOP per forward",
        config.parameter_count(),
        unet.flops as f64 / 1e9
    );
    println!(
        "forward: median {:.2} ms over {} runs (min {:.2} ms) → {:.2} GFLOP/s",
        median * 1e3,
        times.len(),
        times[0] * 1e3,
        unet.flops as f64 / median / 1e9
    );
    println!(
        "memory: {:.1} MiB weights, {:.1} MiB activations, {} dispatches, {} pipelines",
        unet.weight_bytes as f64 / (1 << 20) as f64,
        unet.activation_bytes as f64 / (1 << 20) as f64,
        unet.program().len(),
        ctx.pipeline_count()
    );
    if a.profile {
        print_profile(&block_on(ctx.profile(unet.program()))?);
    }
    Ok(())
}

/// Print the adapter, run `submit` twice to warm up, then `iters` (≥ 1) timed times, each
/// waiting for the GPU; returns the sorted wall times in seconds.
fn time_runs(
    ctx: &GpuContext,
    iters: usize,
    mut submit: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    println!(
        "adapter: {} ({}, {}); reductions in {}-thread workgroups",
        ctx.adapter.name,
        ctx.adapter.backend,
        ctx.adapter.device_type,
        ctx.reduction_workgroup()
    );
    for _ in 0..2 {
        submit()?;
        block_on(ctx.finish())?;
    }
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t0 = Instant::now();
        submit()?;
        block_on(ctx.finish())?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(|x, y| x.total_cmp(y));
    Ok(times)
}

/// Time training steps of `config` at batch `a.batch` on random data.
fn bench_train(
    a: &BenchArgs,
    ctx: &GpuContext,
    config: &crate::model::config::UNetConfig,
    weights: &crate::model::weights::Weights,
) -> Result<()> {
    use crate::train::trainer::{TrainSettings, Trainer};
    let n = a.batch;
    let scheduler = crate::train::presets::scheduler("linear", 1000, "epsilon")?;
    let settings = TrainSettings {
        batch: n,
        seed: 0,
        lr: crate::train::schedule::LrConfig {
            base: 1e-4,
            warmup_steps: 0,
            schedule: crate::train::schedule::LrSchedule::Constant,
            total_steps: 1000,
        },
        adamw: crate::ops::optim::AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        max_grad_norm: 1.0,
        ema: crate::train::schedule::EmaConfig::default(),
        label_dropout: 0.1,
        external_noise: false,
    };
    let mut trainer = Trainer::new(ctx, config, weights, &scheduler, settings)?;
    let numel = n * config.in_channels * config.sample_size[0] * config.sample_size[1];
    let x0: Vec<f32> = (0..numel)
        .map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let labels = config.num_class_embeds.map(|k| {
        (0..n)
            .map(|i| (i % (k - 1).max(1)) as u32)
            .collect::<Vec<_>>()
    });
    let times = time_runs(ctx, a.iters, || {
        trainer.step(ctx, &x0, labels.as_deref()).map(|_| ())
    })?;
    let median = times[times.len() / 2];
    let flops = 3 * trainer.graph.flops_forward;
    println!(
        "model: {} parameters, batch {n}, ~{:.2} GFLOP per training step (3 × forward)",
        config.parameter_count(),
        flops as f64 / 1e9
    );
    println!(
        "train step: median {:.1} ms over {} steps (min {:.1} ms) → {:.1} images/s, {:.2} GFLOP/s",
        median * 1e3,
        times.len(),
        times[0] * 1e3,
        n as f64 / median,
        flops as f64 / median / 1e9
    );
    println!(
        "memory: {:.1} MiB activations, {} dispatches per step, {} pipelines",
        trainer.graph.activation_bytes as f64 / (1 << 20) as f64,
        trainer.step_program().len(),
        ctx.pipeline_count()
    );
    if a.profile {
        print_profile(&block_on(ctx.profile(trainer.step_program()))?);
    }
    Ok(())
}

/// Sum the per-dispatch times by kernel label and print the largest first.
fn print_profile(times: &[(&'static str, [u32; 3], f64)]) {
    let total: f64 = times.iter().map(|t| t.2).sum();
    let mut by_label: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
    for (label, _, s) in times {
        let e = by_label.entry(label).or_default();
        e.0 += 1;
        e.1 += s;
    }
    let mut rows: Vec<_> = by_label.into_iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    println!(
        "profile ({} dispatches run one at a time, {:.1} ms in all):",
        times.len(),
        total * 1e3
    );
    println!("  {:>9}  {:>6}  {:>6}  kernel", "ms", "share", "calls");
    for (label, (count, s)) in rows {
        println!(
            "  {:>9.2}  {:>5.1}%  {:>6}  {label}",
            s * 1e3,
            100.0 * s / total,
            count
        );
    }
    let mut slowest: Vec<_> = times.iter().enumerate().collect();
    slowest.sort_by(|a, b| b.1 .2.total_cmp(&a.1 .2));
    println!("slowest dispatches (index in the program, workgroup grid):");
    for (i, (label, grid, s)) in slowest.into_iter().take(15) {
        println!("  {:>9.2}  #{i:<5} {label} {grid:?}", s * 1e3);
    }
}
