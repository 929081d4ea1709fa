//! The native command line: `sample`, `predict`, `info`, `bench`. Everything here may
//! print, read files and block; the engine below does none of that.

pub mod io;
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
    /// Generate images: x_T ~ N(0, I), then DDPM or DDIM steps down to x_0.
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
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SamplerName {
    /// Ancestral sampling, paper Algorithm 2 (stochastic; default steps = all T).
    Ddpm,
    /// DDIM (Song et al. 2021): deterministic at eta = 0, few steps (default 50).
    Ddim,
}

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// Model folder (diffusers layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Sampler.
    #[arg(long, value_enum, default_value = "ddpm")]
    pub sampler: SamplerName,
    /// Denoising steps [default: num_train_timesteps for ddpm, 50 for ddim].
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM's eta: 0 = deterministic, 1 = DDPM-like noise.
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Seed of the noise (x_T and every step's z); the same seed gives the same images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of images.
    #[arg(short = 'n', long = "num", default_value_t = 16)]
    pub num: usize,
    /// Class of every image (class-conditional models) [default: cycle through the classes].
    #[arg(long)]
    pub class_label: Option<u32>,
    /// Classifier-free guidance scale w (class-conditional models): ε = ε_∅ + w(ε_c − ε_∅).
    #[arg(long)]
    pub guidance: Option<f32>,
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
    #[arg(long)]
    pub model: PathBuf,
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

fn load(dir: &Path) -> Result<Model> {
    let files = read_model_dir(dir)?;
    Model::from_files(&files)
}

fn sample(a: SampleArgs) -> Result<()> {
    let model = load(&a.model)?;
    let t = model.scheduler.num_train_timesteps;
    let (sampler, default_steps) = match a.sampler {
        SamplerName::Ddpm => (Sampler::Ddpm, t),
        SamplerName::Ddim => (Sampler::Ddim { eta: a.eta }, 50.min(t)),
    };
    let steps = a.steps.unwrap_or(default_steps);
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
            guidance: a.guidance,
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
    let bar = indicatif::ProgressBar::new(run.timesteps().len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} sampling [{bar:40}] {pos}/{len} steps  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let start = Instant::now();
    while let Some(t) = run.step(&ctx)? {
        // Wait for each step so the bar shows real progress (the browser never waits).
        block_on(ctx.finish())?;
        bar.set_message(format!("t={t}"));
        bar.inc(1);
    }
    bar.finish_and_clear();
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
    let preset = a
        .model
        .to_str()
        .filter(|_| !a.model.exists())
        .and_then(|name| crate::train::presets::preset(name).ok());
    let (config, weights) = if let Some(config) = preset {
        let weights = crate::model::weights::Weights::random(&config, 0);
        (config, weights)
    } else if a.random_weights {
        let config = crate::model::read_config(&a.model)?;
        let weights = crate::model::weights::Weights::random(&config, 0);
        (config, weights)
    } else {
        let m = load(&a.model)?;
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
        "adapter: {} ({}, {})",
        ctx.adapter.name, ctx.adapter.backend, ctx.adapter.device_type
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
