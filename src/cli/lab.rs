//! `kakusan lab train` and `kakusan bench --lab`: the diffusion lab (src/lab) on the command
//! line. Trains the 2-D MLP on a preset, then reports the fit figure (sliced Wasserstein to
//! the data, next to its floor and an untrained model), the variational bound, and writes the
//! weights, a metrics log and a picture of data, samples and the learned vs exact score field.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Subcommand, ValueEnum};

use crate::diffusion::schedule::{BetaSchedule, Schedule, SchedulerConfig};
use crate::error::{Error, Result};
use crate::gpu::{block_on, GpuContext, Tensor};
use crate::lab::data::{generate, parse_points_csv, Dataset, Preset};
use crate::lab::metrics::{
    sliced_wasserstein, sw_floor, variational_bound, FIT_SAMPLES, FLOOR_PAIRS, SW_PROJECTIONS,
    SW_SEED,
};
use crate::lab::mlp::{self, eval_eps, forward_macs, num_params, HIDDEN, TIME_DIM};
use crate::lab::sample::{plan, sample, LabSampler, DEFAULT_SAMPLER, DEFAULT_SAMPLE_STEPS};
use crate::lab::score::ExactScore;
use crate::lab::train::{LabTrainer, TrainConfig, DEFAULT_COSINE, DEFAULT_TIMESTEPS};

#[derive(clap::Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Train the 2-D MLP ε_θ(x_t, t[, y]) on a point-set preset and report how well it fits.
    Train(LabTrainArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LabScheduleName {
    /// β linear, rescaled to T: from 0.1/T to 20/T (Ho et al.'s 1e-4..0.02 at T = 1000).
    Linear,
    /// Nichol & Dhariwal's cosine ᾱ(t).
    Cosine,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LabSamplerName {
    Ddpm,
    Ddim,
    /// The probability-flow ODE (Euler).
    Ode,
}

/// The shared default recipe (`lab::train`, `lab::sample`) as clap defaults.
const DEFAULT_SCHEDULE: &str = if DEFAULT_COSINE { "cosine" } else { "linear" };
const DEFAULT_SAMPLER_NAME: &str = match DEFAULT_SAMPLER {
    LabSampler::Ddpm => "ddpm",
    LabSampler::Ddim { .. } => "ddim",
    LabSampler::ProbabilityFlow => "ode",
};

#[derive(clap::Args, Debug)]
pub struct LabTrainArgs {
    /// Data set: gaussians, moons, spiral, rings, checkerboard, word.
    #[arg(long, default_value = "moons")]
    pub preset: String,
    /// Points in the data set (at most 20000).
    #[arg(long, default_value_t = 8000)]
    pub points: usize,
    /// Train on the points of this CSV file instead of a preset: one `x,y` or `x,y,class`
    /// per line (at most 20000 points, near unit scale; see `lab::data::parse_points_csv`).
    #[arg(long, value_name = "FILE")]
    pub points_file: Option<PathBuf>,
    /// The text of the `word` preset.
    #[arg(long, default_value = "DDPM")]
    pub word: String,
    /// Train class-conditionally on the preset's classes (with label dropout for guidance).
    #[arg(long)]
    pub classes: bool,
    /// Training steps.
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    pub batch: usize,
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub lr: f32,
    /// Diffusion timesteps T.
    #[arg(long, default_value_t = DEFAULT_TIMESTEPS)]
    pub timesteps: usize,
    #[arg(long, value_enum, default_value = DEFAULT_SCHEDULE)]
    pub schedule: LabScheduleName,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/lab")]
    pub out: PathBuf,
    /// Sampler for the samples and the fit figure.
    #[arg(long, value_enum, default_value = DEFAULT_SAMPLER_NAME)]
    pub sampler: LabSamplerName,
    /// Sampling steps [default: 50, at most T].
    #[arg(long)]
    pub sample_steps: Option<usize>,
    /// DDIM's η.
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Classifier-free guidance scale w (with --classes).
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f32,
    /// Samples drawn for the fit figure and the picture.
    #[arg(long, default_value_t = FIT_SAMPLES)]
    pub samples: usize,
    /// Also measure the fit figure every this many steps (0: only at the end) and report
    /// the training time until it first is ≤ 2× its floor.
    #[arg(long, default_value_t = 0)]
    pub fit_every: usize,
    /// (x_0, ε) draws per timestep for the variational bound (0: skip it).
    #[arg(long, default_value_t = 64)]
    pub bound_draws: usize,
}

pub fn run(a: LabArgs) -> Result<()> {
    match a.command {
        LabCommand::Train(t) => train(t),
    }
}

/// The lab's noise schedule for T timesteps.
pub fn lab_schedule(kind: LabScheduleName, t: usize) -> Result<Schedule> {
    if !(25..=1000).contains(&t) {
        return Err(Error::config(format!(
            "--timesteps must be 25 to 1000, got {t}"
        )));
    }
    let scale = 1000.0 / t as f64;
    let cfg = SchedulerConfig {
        num_train_timesteps: t,
        beta_start: 1e-4 * scale,
        beta_end: 0.02 * scale,
        beta_schedule: match kind {
            LabScheduleName::Linear => BetaSchedule::Linear,
            LabScheduleName::Cosine => BetaSchedule::SquaredcosCapV2,
        },
        ..Default::default()
    };
    Schedule::new(&cfg)
}

fn lab_sampler(a: &LabTrainArgs) -> LabSampler {
    match a.sampler {
        LabSamplerName::Ddpm => LabSampler::Ddpm,
        LabSamplerName::Ddim => LabSampler::Ddim { eta: a.eta },
        LabSamplerName::Ode => LabSampler::ProbabilityFlow,
    }
}

/// Classes for `n` particles: drawn like the data's (empty when unlabelled).
fn particle_classes(data: &Dataset, n: usize, seed: u64) -> Vec<u32> {
    let Some(labels) = &data.labels else {
        return Vec::new();
    };
    let mut rng = crate::rng::SplitMix64(seed ^ 0x636c);
    (0..n)
        .map(|_| labels[rng.below(labels.len() as u64) as usize])
        .collect()
}

struct Fit {
    sw: f64,
    floor: f64,
}

#[allow(clippy::too_many_arguments)]
fn fit_figure(
    ctx: &GpuContext,
    weights: &Tensor,
    data: &Dataset,
    schedule: &Schedule,
    a: &LabTrainArgs,
    reference: &[[f32; 2]],
    floor: f64,
) -> Result<(Fit, Vec<[f32; 2]>)> {
    let steps = a
        .sample_steps
        .unwrap_or(DEFAULT_SAMPLE_STEPS.min(schedule.num_train_timesteps()));
    let p = plan(schedule, lab_sampler(a), steps)?;
    let classes = particle_classes(data, a.samples, a.seed ^ 0x11);
    let s = block_on(sample(
        ctx,
        weights,
        data.num_classes,
        &p,
        a.samples,
        &classes,
        a.guidance,
        a.seed ^ 0x22,
    ))?;
    let sw = sliced_wasserstein(&s, reference, SW_PROJECTIONS, SW_SEED)?;
    Ok((Fit { sw, floor }, s))
}

/// A `--points-file`: refused above 64 MiB before reading (20000 points fit in ~1 MiB).
fn read_points_file(path: &Path) -> Result<Dataset> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::file(path.display(), format!("cannot read: {e}")))?
        .len();
    if size > 64 << 20 {
        return Err(Error::file(
            path.display(),
            format!("{size} bytes; a point set of at most 20000 points is far smaller"),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Error::file(path.display(), format!("cannot read: {e}")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| Error::file(path.display(), format!("not UTF-8 text: {e}")))?;
    parse_points_csv(text, &path.display().to_string())
}

pub fn train(a: LabTrainArgs) -> Result<()> {
    let (mut data, source) = match &a.points_file {
        Some(path) => (read_points_file(path)?, path.display().to_string()),
        None => {
            let preset = Preset::from_name(&a.preset)?;
            let data = generate(preset, a.points, a.seed, &a.word)?;
            (data, preset.name().to_string())
        }
    };
    if !a.classes {
        data = data.unlabelled();
    }
    if a.samples < 2 {
        return Err(Error::config("--samples must be at least 2"));
    }
    let schedule = lab_schedule(a.schedule, a.timesteps)?;
    let cfg = TrainConfig {
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        ..Default::default()
    };
    cfg.validate()?;
    std::fs::create_dir_all(&a.out)
        .map_err(|e| Error::file(a.out.display(), format!("cannot create: {e}")))?;
    let ctx = super::gpu()?;
    let mut trainer = LabTrainer::new(&ctx, &data, &schedule, &cfg)?;
    println!(
        "lab: {} ({} points{}), MLP 3x{HIDDEN} SiLU, {} parameters, T = {}, batch {}, {} dispatches per step",
        source,
        data.len(),
        if data.num_classes > 0 {
            format!(", {} classes", data.num_classes)
        } else {
            String::new()
        },
        num_params(data.num_classes),
        a.timesteps,
        a.batch,
        trainer.dispatches_per_step()
    );

    // The fit figure's reference (a draw of the data) and floor (the mean distance between
    // two independent draws of the same size).
    let reference = data.draw(a.samples, a.seed ^ 0xa);
    let floor = sw_floor(&data, a.samples, a.seed)?;
    let (untrained, _) = fit_figure(&ctx, &trainer.ema, &data, &schedule, &a, &reference, floor)?;
    println!(
        "fit figure before training (sliced W2 to the data): {:.4} (floor {:.4})",
        untrained.sw, floor
    );

    let mut losses: Vec<f32> = Vec::with_capacity(a.steps);
    let mut log = String::new();
    let chunk = 50usize;
    let mut train_secs = 0.0f64;
    let mut fitted_at: Option<(usize, f64)> = None;
    let mut fit_log = Vec::new();
    let report_every = (a.steps / 10).max(chunk);
    let mut next_report = report_every;
    while (trainer.steps_taken() as usize) < a.steps {
        let n = chunk.min(a.steps - trainer.steps_taken() as usize);
        let t0 = Instant::now();
        trainer.run(&ctx, n)?;
        let l = block_on(trainer.losses(&ctx))?; // waits for the GPU
        train_secs += t0.elapsed().as_secs_f64();
        losses.extend_from_slice(&l[l.len() - n..]);
        let step = trainer.steps_taken() as usize;
        for (i, v) in l[l.len() - n..].iter().enumerate() {
            log.push_str(&format!(
                "{{\"step\":{},\"loss\":{v},\"train_seconds\":{train_secs:.3}}}\n",
                step - n + i + 1
            ));
        }
        if !l.iter().all(|v| v.is_finite()) {
            return Err(Error::Other(format!(
                "the loss became non-finite by step {step}; try a smaller --lr"
            )));
        }
        if step >= next_report || step == a.steps {
            let recent = &losses[losses.len().saturating_sub(chunk)..];
            println!(
                "step {step:>6}  loss {:.4}  {:.1} steps/s",
                recent.iter().sum::<f32>() / recent.len() as f32,
                step as f64 / train_secs
            );
            next_report += report_every;
        }
        if a.fit_every > 0 && step % a.fit_every < n && fitted_at.is_none() {
            let (f, _) = fit_figure(&ctx, &trainer.ema, &data, &schedule, &a, &reference, floor)?;
            println!(
                "  fit at step {step}: {:.4} ({:.2}x floor) after {train_secs:.1} s of training",
                f.sw,
                f.sw / floor
            );
            fit_log.push((step, train_secs, f.sw));
            if f.sw <= 2.0 * floor {
                fitted_at = Some((step, train_secs));
            }
        }
    }
    let steps_per_s = a.steps as f64 / train_secs.max(1e-9);
    let flops_per_step = 6.0 * forward_macs() as f64 * a.batch as f64;

    let (fit, samples) = fit_figure(&ctx, &trainer.ema, &data, &schedule, &a, &reference, floor)?;
    let head = &losses[..losses.len().min(50)];
    let tail = &losses[losses.len().saturating_sub(50)..];
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    println!(
        "loss (mean of 50 steps): {:.4} at the start, {:.4} at the end",
        mean(head),
        mean(tail)
    );
    println!(
        "speed: {steps_per_s:.1} steps/s, {:.2} GFLOP/s (forward + backward, batch {}) on {}",
        steps_per_s * flops_per_step / 1e9,
        a.batch,
        ctx.adapter.name
    );
    println!(
        "fit figure (sliced W2, {} samples, {}): {:.4}; floor (mean of {FLOOR_PAIRS} pairs of data draws) {:.4}; untrained {:.4}; {:.2}x floor",
        a.samples,
        lab_sampler(&a).name(),
        fit.sw,
        fit.floor,
        untrained.sw,
        fit.sw / fit.floor
    );
    if let Some((s, secs)) = fitted_at {
        println!("fitted (≤ 2x floor) at step {s}, after {secs:.1} s of training");
    }

    // Score field: learned ε_θ (null class) against the exact ε* at a moderate noise level.
    let t_field = schedule
        .alphas_cumprod
        .iter()
        .position(|&ab| ab < 0.7)
        .unwrap_or(0);
    let ab = schedule.alphas_cumprod[t_field];
    let grid = 25usize;
    let extent = 2.5f32;
    let queries: Vec<[f32; 2]> = (0..grid * grid)
        .map(|i| {
            let (gx, gy) = (i % grid, i / grid);
            [
                -extent + 2.0 * extent * gx as f32 / (grid - 1) as f32,
                -extent + 2.0 * extent * gy as f32 / (grid - 1) as f32,
            ]
        })
        .collect();
    let exact = ExactScore::new(&ctx, &data.points)?;
    let exact_v = block_on(exact.eval(&ctx, &queries, ab))?;
    let rows: Vec<[f32; 4]> = queries
        .iter()
        .map(|q| [q[0], q[1], t_field as f32, data.num_classes as f32])
        .collect();
    let learned = block_on(eval_eps(&ctx, &trainer.ema, data.num_classes, &rows))?;
    let field_err = learned
        .iter()
        .zip(&exact_v)
        .map(|(l, (e, _))| ((l[0] - e[0]).powi(2) + (l[1] - e[1]).powi(2)).sqrt() as f64)
        .sum::<f64>()
        / queries.len() as f64;
    println!(
        "score field at t = {t_field} (ᾱ = {ab:.3}): mean ‖ε_θ − ε*‖ = {field_err:.4} on a {grid}x{grid} grid"
    );

    let bound = if a.bound_draws > 0 {
        let b = block_on(variational_bound(
            &ctx,
            &trainer.ema,
            &data,
            &schedule,
            a.bound_draws,
            a.seed ^ 0x33,
        ))?;
        println!(
            "variational bound: {:.3} bits per point (L_T {:.4}, L_0 {:.3}, Σ L_1..L_(T-1) {:.3}; continuous decoder)",
            b.total,
            b.prior,
            b.terms[0],
            b.terms[1..].iter().sum::<f64>()
        );
        Some(b)
    } else {
        None
    };

    // Files.
    let ema = block_on(ctx.read(&trainer.ema))?;
    write_weights(&a.out.join("lab_model.safetensors"), &ema, data.num_classes)?;
    let config = serde_json::json!({
        "model": "kakusan-lab-mlp",
        "hidden": HIDDEN,
        "hidden_layers": 3,
        "time_embedding_dim": TIME_DIM,
        "num_classes": data.num_classes,
        "null_class": data.num_classes,
        "num_train_timesteps": a.timesteps,
        "beta_schedule": match a.schedule { LabScheduleName::Linear => "linear", LabScheduleName::Cosine => "squaredcos_cap_v2" },
        "beta_start": 1e-4 * 1000.0 / a.timesteps as f64,
        "beta_end": 0.02 * 1000.0 / a.timesteps as f64,
        "prediction_type": "epsilon",
        "weights": "EMA",
        "preset": source,
        "points": data.len(),
        "seed": a.seed,
        "steps": a.steps,
        "batch": a.batch,
        "lr": a.lr,
    });
    super::io::write_atomic(
        &a.out.join("lab_config.json"),
        serde_json::to_string_pretty(&config)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    super::io::write_atomic(&a.out.join("metrics.jsonl"), log.as_bytes())?;
    let summary = serde_json::json!({
        "steps": a.steps,
        "steps_per_second": steps_per_s,
        "gflops": steps_per_s * flops_per_step / 1e9,
        "train_seconds": train_secs,
        "loss_start": mean(head),
        "loss_end": mean(tail),
        "fit_sliced_w2": fit.sw,
        "fit_floor": fit.floor,
        "fit_untrained": untrained.sw,
        "fitted_at": fitted_at.map(|(s, secs)| serde_json::json!({"step": s, "train_seconds": secs})),
        "fit_log": fit_log.iter().map(|(s, secs, sw)| serde_json::json!({"step": s, "train_seconds": secs, "sliced_w2": sw})).collect::<Vec<_>>(),
        "score_field_t": t_field,
        "score_field_mean_error": field_err,
        "bound_bits": bound.as_ref().map(|b| b.total),
        "bound_terms_bits": bound.as_ref().map(|b| b.terms.clone()),
        "adapter": ctx.adapter.name,
    });
    super::io::write_atomic(
        &a.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    let classes = particle_classes(&data, a.samples, a.seed ^ 0x11);
    let png = picture(
        &data, &samples, &classes, &queries, &learned, &exact_v, extent,
    );
    super::io::write_png_rgb(&a.out.join("lab.png"), png.0, png.1, &png.2)?;
    println!(
        "wrote {} (lab_model.safetensors, lab_config.json, metrics.jsonl, summary.json, lab.png)",
        a.out.display()
    );
    Ok(())
}

/// The EMA weights as named safetensors (PyTorch `nn.Linear` names, see `mlp::tensors`).
fn write_weights(path: &Path, flat: &[f32], num_classes: usize) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let parts: Vec<(String, Vec<u8>, Vec<usize>)> = mlp::tensors(num_classes)
        .into_iter()
        .map(|(name, off, shape)| {
            let n: usize = shape.iter().product();
            let bytes = flat[off..off + n]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (name.to_string(), bytes, shape)
        })
        .collect();
    let views = parts
        .iter()
        .map(|(name, bytes, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::file(path.display(), format!("cannot encode: {e}")))?;
    let out = safetensors::serialize(views, None)
        .map_err(|e| Error::file(path.display(), format!("cannot encode: {e}")))?;
    super::io::write_atomic(path, &out)
}

const PANEL: usize = 300;
const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    fn line(&mut self, a: (f32, f32), b: (f32, f32), c: [u8; 3]) {
        let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let s = i as f32 / n as f32;
            self.set(
                (a.0 + s * (b.0 - a.0)).round() as i64,
                (a.1 + s * (b.1 - a.1)).round() as i64,
                c,
            );
        }
    }
}

/// Four panels: the data, the samples, the learned ε field over a heat map of ‖ε_θ − ε*‖,
/// and the exact ε* field over the exact density q(x_t). Arrows point along the score,
/// −ε (uphill in density).
fn picture(
    data: &Dataset,
    samples: &[[f32; 2]],
    sample_classes: &[u32],
    queries: &[[f32; 2]],
    learned: &[[f32; 2]],
    exact: &[([f32; 2], f32)],
    extent: f32,
) -> (usize, usize, Vec<u8>) {
    let gap = 4;
    let w = 4 * PANEL + 5 * gap;
    let h = PANEL + 2 * gap;
    let mut c = Canvas {
        w,
        h,
        px: vec![255; w * h * 3],
    };
    let to_px = |panel: usize, p: [f32; 2]| -> (f32, f32) {
        let x0 = (gap + panel * (PANEL + gap)) as f32;
        (
            x0 + (p[0] + extent) / (2.0 * extent) * (PANEL - 1) as f32,
            gap as f32 + (extent - p[1]) / (2.0 * extent) * (PANEL - 1) as f32,
        )
    };
    // Backgrounds: panel 2 error heat (white → red), panel 3 density (white → grey).
    let grid = (queries.len() as f64).sqrt().round() as usize;
    let max_err = learned
        .iter()
        .zip(exact)
        .map(|(l, (e, _))| ((l[0] - e[0]).powi(2) + (l[1] - e[1]).powi(2)).sqrt())
        .fold(1e-6f32, f32::max);
    let max_lq = exact.iter().map(|e| e.1).fold(f32::MIN, f32::max);
    for py in 0..PANEL {
        for px in 0..PANEL {
            let gx = ((px as f32 / (PANEL - 1) as f32) * (grid - 1) as f32).round() as usize;
            let gy = (((PANEL - 1 - py) as f32 / (PANEL - 1) as f32) * (grid - 1) as f32).round()
                as usize;
            let i = gy * grid + gx;
            let (l, (e, lq)) = (learned[i], exact[i]);
            let err = ((l[0] - e[0]).powi(2) + (l[1] - e[1]).powi(2)).sqrt() / max_err;
            let shade = (255.0 * (1.0 - 0.6 * err)) as u8;
            c.set(
                (gap + 2 * (PANEL + gap) + px) as i64,
                (gap + py) as i64,
                [255, shade, shade],
            );
            let d = (lq - max_lq).exp();
            let g = (255.0 * (1.0 - 0.5 * d)) as u8;
            c.set(
                (gap + 3 * (PANEL + gap) + px) as i64,
                (gap + py) as i64,
                [g, g, g],
            );
        }
    }
    for (i, p) in data.points.iter().enumerate() {
        let col = data
            .labels
            .as_ref()
            .map_or(PALETTE[0], |l| PALETTE[l[i] as usize % 8]);
        let (x, y) = to_px(0, *p);
        c.set(x as i64, y as i64, col);
    }
    for (i, p) in samples.iter().enumerate() {
        let col = sample_classes
            .get(i)
            .map_or(PALETTE[1], |&k| PALETTE[k as usize % 8]);
        let (x, y) = to_px(1, *p);
        c.set(x as i64, y as i64, col);
        c.set(x as i64 + 1, y as i64, col);
    }
    let cell = (PANEL - 1) as f32 / (grid - 1) as f32;
    for (panel, field) in [
        (2, learned.to_vec()),
        (3, exact.iter().map(|e| e.0).collect()),
    ] {
        let longest = field
            .iter()
            .map(|e| (e[0] * e[0] + e[1] * e[1]).sqrt())
            .fold(1e-6f32, f32::max);
        for (q, e) in queries.iter().zip(&field) {
            let (x, y) = to_px(panel, *q);
            // −ε, with image y pointing down.
            let s = 0.9 * cell / longest;
            let tip = (x - s * e[0], y + s * e[1]);
            c.line((x, y), tip, [20, 20, 20]);
            c.set(tip.0.round() as i64, tip.1.round() as i64, [200, 0, 0]);
        }
    }
    (w, h, c.px)
}

/// `kakusan bench --lab`: training steps/s and GFLOP/s at batch 512 on moons.
pub fn bench(ctx: &GpuContext, iters: usize) -> Result<()> {
    let data = generate(Preset::Moons, 8000, 0, "")?;
    let schedule = lab_schedule(LabScheduleName::Linear, 100)?;
    let batch = 512;
    let cfg = TrainConfig {
        batch,
        ..Default::default()
    };
    let flops = 6.0 * forward_macs() as f64 * batch as f64;
    let mut tr = LabTrainer::new(ctx, &data, &schedule, &cfg)?;
    tr.run(ctx, 5)?;
    block_on(ctx.finish())?;
    let iters = iters.max(1);
    let t0 = Instant::now();
    tr.run(ctx, iters)?;
    block_on(ctx.finish())?;
    let s = t0.elapsed().as_secs_f64();
    println!(
        "lab MLP training step, batch {batch}, fused kernels ({} dispatches/step): {:.1} steps/s, {:.2} GFLOP/s (forward + backward, {:.1} MFLOP/step) on {}",
        tr.dispatches_per_step(),
        iters as f64 / s,
        iters as f64 * flops / s / 1e9,
        flops / 1e6,
        ctx.adapter.name
    );
    // The same step from the generic kernels (src/ops), on a fixed batch.
    let flat = mlp::init_params(0, 0);
    let mut rng = crate::rng::SplitMix64(1);
    let mut inputs = Vec::with_capacity(batch * mlp::IN);
    let mut eps = Vec::with_capacity(batch * 2);
    for _ in 0..batch {
        let t = rng.below(100) as f64;
        inputs.extend([
            rng.next_f64() as f32 * 2.0 - 1.0,
            rng.next_f64() as f32 * 2.0 - 1.0,
        ]);
        inputs.extend(mlp::time_embedding(t).iter().map(|&e| e as f32));
        eps.extend([rng.next_f64() as f32 - 0.5, rng.next_f64() as f32 - 0.5]);
    }
    let generic = crate::lab::generic::GenericStep::new(ctx, &flat, &inputs, &eps, 2e-3)?;
    let mut queued = crate::gpu::Program::new();
    for _ in 0..iters {
        queued.extend(&generic.step);
    }
    ctx.run(&generic.step)?;
    block_on(ctx.finish())?;
    let t0 = Instant::now();
    ctx.run(&queued)?;
    block_on(ctx.finish())?;
    let s = t0.elapsed().as_secs_f64();
    println!(
        "lab MLP training step, batch {batch}, generic kernels ({} dispatches/step): {:.1} steps/s, {:.2} GFLOP/s",
        generic.step.len(),
        iters as f64 / s,
        iters as f64 * flops / s / 1e9,
    );
    // Where a fused step's time goes, one dispatch at a time (serialised, so slower in total).
    for _ in 0..2 {
        block_on(ctx.profile(tr.step_program()))?;
    }
    for (label, wg, secs) in block_on(ctx.profile(tr.step_program()))? {
        println!(
            "  {label:<20} {:>6} workgroups  {:8.3} ms",
            wg[0] * wg[1] * wg[2],
            secs * 1e3
        );
    }
    Ok(())
}
