//! `kakusan train` (and `cargo run --release` with no arguments): train a DDPM natively,
//! with a progress bar, a JSONL metrics log, sample grids and a loss curve, and checkpoints
//! in diffusers' layout that survive Ctrl-C, crashes and NaNs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::ValueEnum;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::data::split::Holdout;
use crate::data::{BatchSampler, Dataset};
use crate::diffusion::sampler::{SampleSettings, SamplingRun};
use crate::diffusion::schedule::{Sampler, SchedulerConfig};
use crate::error::{Error, Result};
use crate::gpu::{block_on, GpuContext};
use crate::model::config::UNetConfig;
use crate::model::weights::{save_weights, Weights};
use crate::ops::optim::AdamWConfig;
use crate::rng::SplitMix64;
use crate::train::presets;
use crate::train::schedule::{EmaConfig, LrConfig, LrSchedule};
use crate::train::trainer::{TrainSettings, Trainer};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BetaScheduleName {
    /// β linear from 1e-4 to 0.02 (the DDPM paper).
    Linear,
    /// ᾱ_t = cos²(…) (Nichol & Dhariwal 2021).
    Cosine,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LrScheduleName {
    Constant,
    Cosine,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PredictionName {
    /// Predict the noise ε (the paper's L_simple).
    Epsilon,
    /// Predict v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho 2022).
    VPrediction,
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Output folder: checkpoint (diffusers layout), training state, metrics, sample grids.
    #[arg(long, default_value = "runs/mnist")]
    pub out: PathBuf,
    /// Continue the run saved in this folder (same settings; `--steps` may be raised).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Total optimizer steps [default: 3500]. With --resume the run keeps the total it was
    /// started with unless this is given.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Linear learning-rate warm-up steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Learning rate after warm-up.
    #[arg(long, value_enum, default_value = "cosine")]
    pub lr_schedule: LrScheduleName,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f32,
    /// Largest EMA decay (diffusers' EMAModel warm-up: 1 − (1 + step)^(−2/3), capped here).
    #[arg(long, default_value_t = 0.999)]
    pub ema_decay: f64,
    /// Model preset (see --list-presets) ...
    #[arg(long, default_value = "mnist")]
    pub preset: String,
    /// ... or a diffusers UNet2DModel config.json.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Noise schedule.
    #[arg(long, value_enum, default_value = "linear")]
    pub schedule: BetaScheduleName,
    /// Number of diffusion steps T.
    #[arg(long, default_value_t = 1000)]
    pub timesteps: usize,
    /// What the network predicts: v (Salimans & Ho 2022; measured better than ε on the
    /// default model at equal budget and at the full budget, docs/training.md) or ε (the
    /// paper's).
    #[arg(long, value_enum, default_value = "v-prediction")]
    pub prediction: PredictionName,
    /// Probability of training a label as the null class (for classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    pub label_dropout: f64,
    /// Training data: an image folder (subfolders = classes), MNIST IDX files or CIFAR-10
    /// binary batches [default: the 10,000 MNIST digits shipped in assets/mnist].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Seed for weights, batches, timesteps and noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write a checkpoint every N steps (and at the end, on Ctrl-C).
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: u64,
    /// Write a sample grid (EMA weights, one row per class) every N steps and at the end;
    /// 0 = never.
    #[arg(long, default_value_t = 500)]
    pub sample_every: u64,
    /// DDIM steps for the sample grids.
    #[arg(long, default_value_t = 25)]
    pub sample_steps: usize,
    /// Guidance scale for the sample grids.
    #[arg(long, default_value_t = 2.0)]
    pub sample_guidance: f32,
    /// List the model presets and exit.
    #[arg(long)]
    pub list_presets: bool,
    /// Leave digits of the embedded MNIST set out of training: `eval` = the evaluator's 2,000
    /// held-out digits (index i with (i/10) % 5 == 4, never seen by the evaluator's
    /// classifier either), N = the last N digits, or `none` = train on all 10,000. Recorded in
    /// the run folder's data_split.json for `kakusan eval --heldout` and `kakusan nll
    /// --heldout` [default: eval for the embedded digits; none with --data].
    #[arg(long)]
    pub holdout: Option<String>,
    /// min-SNR-γ loss weighting (Hang et al. 2023): weight each sample's loss by
    /// min(SNR_t, γ)/SNR_t for ε-prediction (min(SNR_t, γ)/(SNR_t + 1) for v-prediction);
    /// the paper uses 5. 0 turns it off (the plain L_simple) [default: 5].
    #[arg(long)]
    pub snr_gamma: Option<f64>,
    /// Stop after this many seconds of training (the step in flight finishes), writing a
    /// checkpoint as at the end; --resume continues it. The learning-rate schedule still
    /// runs over --steps, so choose --steps to fit the time.
    #[arg(long)]
    pub max_seconds: Option<f64>,
}

impl Default for TrainArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: TrainArgs,
        }
        Wrapper::parse_from(["kakusan"]).args
    }
}

const STATE_FILE: &str = "training_state.safetensors";
/// `--steps` of a new run when none is given.
const DEFAULT_STEPS: u64 = 3500;
/// `--snr-gamma` of a new run when none is given (the shipped model's recipe).
const DEFAULT_SNR_GAMMA: f64 = 5.0;

/// `--holdout` as given: `None` when absent, `Some(None)` for `none`, else the split.
fn holdout_asked(a: &TrainArgs) -> Result<Option<Option<Holdout>>> {
    match a.holdout.as_deref().map(str::trim) {
        None => Ok(None),
        Some("none") => Ok(Some(None)),
        Some(h) => Holdout::parse(h).map(|h| Some(Some(h))),
    }
}

/// `--snr-gamma` as given: `None` when absent, `Some(None)` for 0 (off), else γ.
fn snr_gamma_asked(a: &TrainArgs) -> Option<Option<f64>> {
    a.snr_gamma.map(|g| (g != 0.0).then_some(g))
}

/// The run's settings and counters, saved as JSON in the state file's metadata.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct RunState {
    step: u64,
    total_steps: u64,
    batch: usize,
    seed: u64,
    lr: f64,
    warmup: u64,
    lr_cosine: bool,
    weight_decay: f64,
    max_grad_norm: f32,
    ema_decay: f64,
    label_dropout: f64,
    rng: u64,
    sampler: Vec<u64>,
    data: Option<String>,
    /// `--holdout` (as `Holdout` prints it); absent in states written before the flag.
    #[serde(default)]
    holdout: Option<String>,
    /// `--snr-gamma`; absent in states written before the flag.
    #[serde(default)]
    snr_gamma: Option<f64>,
}

pub fn train(a: TrainArgs) -> Result<()> {
    if a.list_presets {
        for p in presets::PRESETS {
            let cfg = presets::preset(p.name)?;
            println!(
                "{}: {}; {:.2} M parameters, {:.1} MFLOP per image forward",
                p.name,
                p.description,
                cfg.parameter_count() as f64 / 1e6,
                crate::unet::forward_flops(&cfg) as f64 / 1e6
            );
        }
        return Ok(());
    }
    // Ctrl-C (or SIGTERM) from here on means "save and stop", even while the model is planned.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let resume_dir = a.resume.clone();
    let out = resume_dir.clone().unwrap_or_else(|| a.out.clone());
    let (config, scheduler, saved) = match &resume_dir {
        Some(dir) => {
            let files = crate::model::read_model_dir(dir)?;
            let model = crate::model::Model::from_files(&files)?;
            let state = read_state(&dir.join(STATE_FILE))?;
            (model.config, model.scheduler, Some((model.weights, state)))
        }
        None => {
            let config = match &a.config {
                Some(p) => {
                    let text =
                        std::fs::read_to_string(p).map_err(|e| Error::file(p.display(), e))?;
                    UNetConfig::from_json(&text).map_err(|e| Error::file(p.display(), e))?
                }
                None => presets::preset(&a.preset)?,
            };
            let beta = match a.schedule {
                BetaScheduleName::Linear => "linear",
                BetaScheduleName::Cosine => "squaredcos_cap_v2",
            };
            let pred = match a.prediction {
                PredictionName::Epsilon => "epsilon",
                PredictionName::VPrediction => "v_prediction",
            };
            (config, presets::scheduler(beta, a.timesteps, pred)?, None)
        }
    };
    let run = match &saved {
        Some((_, (state, _))) => {
            let mut s = state.clone();
            // Without --steps a resumed run keeps its planned total (and so its learning-rate
            // schedule); an explicit --steps replaces it.
            if let Some(n) = a.steps {
                if n != s.total_steps {
                    eprintln!(
                        "note: --steps {n} changes this run's planned total from {} steps; the \
                         learning-rate schedule follows the new total",
                        s.total_steps
                    );
                }
                s.total_steps = n.max(s.step);
            }
            s
        }
        None => RunState {
            step: 0,
            total_steps: a.steps.unwrap_or(DEFAULT_STEPS),
            batch: a.batch,
            seed: a.seed,
            lr: a.lr,
            warmup: a.warmup,
            lr_cosine: matches!(a.lr_schedule, LrScheduleName::Cosine),
            weight_decay: a.weight_decay,
            max_grad_norm: a.max_grad_norm,
            ema_decay: a.ema_decay,
            label_dropout: a.label_dropout,
            rng: 0,
            sampler: Vec::new(),
            data: a.data.as_ref().map(|p| p.display().to_string()),
            // The defaults hold out the evaluator's digits (embedded data only) and weigh the
            // loss by min-SNR-5: the recipe of the shipped model (docs/training.md).
            holdout: holdout_asked(&a)?
                .unwrap_or(a.data.is_none().then_some(Holdout::Evaluator))
                .map(|h| h.to_string()),
            snr_gamma: snr_gamma_asked(&a).unwrap_or(Some(DEFAULT_SNR_GAMMA)),
        },
    };

    check_settings(&run, &a)?;
    if saved.is_some() {
        // A resumed run keeps its split and loss: a different one would change the run.
        let had = run.holdout.as_deref().map(Holdout::parse).transpose()?;
        if holdout_asked(&a)?.is_some_and(|asked| asked != had) {
            return Err(Error::Other(format!(
                "--holdout {}: this run was started with {}; a resumed run keeps its split",
                a.holdout.as_deref().unwrap_or(""),
                had.map_or("--holdout none".to_string(), |h| format!("--holdout {h}"))
            )));
        }
        if snr_gamma_asked(&a).is_some_and(|asked| asked != run.snr_gamma) {
            return Err(Error::Other(format!(
                "--snr-gamma {}: this run was started with {}; a resumed run keeps its loss",
                a.snr_gamma.unwrap_or(f64::NAN),
                run.snr_gamma
                    .map_or("--snr-gamma 0 (off)".to_string(), |g| format!(
                        "--snr-gamma {g}"
                    ))
            )));
        }
    }
    let holdout = run.holdout.as_deref().map(Holdout::parse).transpose()?;
    // Data first: a bad dataset is an error before any GPU work.
    let (data, split_record) = match (&run.data, holdout) {
        (Some(p), None) => (
            crate::data::load(Path::new(p), config.in_channels, config.sample_size)?,
            None,
        ),
        (Some(p), Some(h)) => {
            return Err(Error::Other(format!(
                "--holdout {h} applies to the embedded MNIST digits, not to --data {p}"
            )))
        }
        (None, h) => {
            let all = crate::data::load_default_mnist()?;
            let (all, record) = match h {
                Some(h) => {
                    let (train, _) = h.split(all.len())?;
                    (
                        all.subset(&train)?,
                        Some(crate::data::split::record_json(h, all.len())?),
                    )
                }
                None => (all, None),
            };
            (
                all.converted(config.in_channels, config.sample_size)?,
                record,
            )
        }
    };
    for (path, why) in &data.skipped {
        eprintln!("warning: skipped {}: {why}", path.display());
    }
    check_data(&data, &config)?;

    let ctx = super::gpu()?;
    let init = match &saved {
        Some((w, _)) => w.clone(),
        None => Weights::random(&config, run.seed),
    };
    let settings = TrainSettings {
        batch: run.batch,
        seed: run.seed,
        lr: LrConfig {
            base: run.lr,
            warmup_steps: run.warmup,
            schedule: if run.lr_cosine {
                LrSchedule::Cosine
            } else {
                LrSchedule::Constant
            },
            total_steps: run.total_steps,
        },
        adamw: AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: run.weight_decay as f32,
        },
        max_grad_norm: run.max_grad_norm,
        ema: EmaConfig {
            decay: run.ema_decay,
            use_ema_warmup: true,
            inv_gamma: 1.0,
            power: 2.0 / 3.0,
            ..EmaConfig::default()
        },
        label_dropout: run.label_dropout,
        external_noise: false,
    };
    let before = ctx.allocated_bytes();
    let mut trainer =
        Trainer::with_snr_gamma(&ctx, &config, &init, &scheduler, settings, run.snr_gamma)?;
    let gpu_bytes = ctx.allocated_bytes() - before;
    let mut sampler = BatchSampler::new(data.len(), run.batch, run.seed)?;
    if let Some((_, (state, tensors))) = &saved {
        trainer.step = state.step;
        trainer.rng = SplitMix64(state.rng);
        let st: [u64; 3] = state.sampler.clone().try_into().map_err(|_| {
            Error::file(
                out.join(STATE_FILE).display(),
                "the batch sampler state is malformed",
            )
        })?;
        sampler = BatchSampler::from_state(data.len(), run.batch, st)?;
        trainer.upload(&ctx, &trainer.graph.params.clone(), &tensors.params)?;
        trainer.upload(&ctx, &trainer.m.clone(), &tensors.m)?;
        trainer.upload(&ctx, &trainer.v.clone(), &tensors.v)?;
        trainer.upload(&ctx, &trainer.ema.clone(), &tensors.ema)?;
        eprintln!(
            "resuming {} at step {} of {}",
            out.display(),
            state.step,
            run.total_steps
        );
    }
    std::fs::create_dir_all(&out).map_err(|e| Error::file(out.display(), e))?;
    // Every command that worked on this run, first to last (the first run, then each
    // --resume), so the run can be reproduced from the folder alone.
    let commands = out.join("train_command.txt");
    let earlier = match &saved {
        Some(_) => std::fs::read_to_string(&commands).unwrap_or_default(),
        None => String::new(),
    };
    write_text_atomic(&commands, &format!("{earlier}{}", command_line()))?;
    // Which digits the run never saw, for `eval --heldout` / `nll --heldout`; a fresh run
    // without --holdout removes a stale record left in the folder by an earlier run.
    let split_path = out.join(crate::data::split::SPLIT_FILE);
    match &split_record {
        Some(text) => write_text_atomic(&split_path, text)?,
        None if saved.is_none() && split_path.exists() => {
            std::fs::remove_file(&split_path).map_err(|e| Error::file(split_path.display(), e))?
        }
        None => {}
    }

    let per_image = 3 * crate::unet::forward_flops(&config);
    eprintln!(
        "training {} ({:.2} M parameters, ~{:.0} MFLOP per image per step) on {} images, batch {}, {} steps → {}",
        if a.config.is_some() { "a custom config" } else { a.preset.as_str() },
        config.parameter_count() as f64 / 1e6,
        per_image as f64 / 1e6,
        data.len(),
        run.batch,
        run.total_steps,
        out.display()
    );
    if let Some(h) = holdout {
        eprintln!(
            "--holdout {h}: training on {} of the embedded digits; the held-out ones are \
             recorded in {}",
            data.len(),
            split_path.display()
        );
    }
    if let Some(g) = run.snr_gamma {
        eprintln!("loss: min-SNR-γ weighting, γ = {g}");
    }
    eprintln!(
        "GPU memory: {:.1} MiB, all allocated before step 1 (weights, gradients, Adam moments, \
         EMA, {:.1} MiB of activations kept for the backward pass)",
        gpu_bytes as f64 / (1u64 << 20) as f64,
        trainer.graph.activation_bytes as f64 / (1u64 << 20) as f64
    );
    let bar = indicatif::ProgressBar::new(run.total_steps);
    bar.set_position(trainer.step);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:30}] step {pos}/{len}  {msg}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    // The log must describe the checkpoint's run: a resume drops the steps logged after the
    // checkpoint by a killed run (they are trained again) and a torn last line; a fresh run
    // starts an empty log.
    let metrics_path = out.join("metrics.jsonl");
    let kept = match &saved {
        Some((_, (state, _))) => metrics_up_to(&metrics_path, state.step),
        None => String::new(),
    };
    write_text_atomic(&metrics_path, &kept)?;
    let mut metrics = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::file(metrics_path.display(), e))?;
    let mut losses = read_losses(&out.join("metrics.jsonl"));
    let mut smoothed: Option<f64> = None;
    let mut x0 =
        vec![0f32; run.batch * config.in_channels * config.sample_size[0] * config.sample_size[1]];
    let mut labels = vec![0u32; run.batch];
    let start = Instant::now();
    let start_step = trainer.step;
    let mut last_good = saved.as_ref().map(|_| trainer.step);
    let mut out_of_time = false;
    while trainer.step < run.total_steps {
        if stop.load(Ordering::SeqCst) {
            bar.suspend(|| eprintln!("interrupted: saving step {} …", trainer.step));
            break;
        }
        if a.max_seconds
            .is_some_and(|s| start.elapsed().as_secs_f64() >= s)
        {
            out_of_time = true;
            bar.suspend(|| {
                eprintln!(
                    "--max-seconds {}: stopping at step {} of {}, saving …",
                    a.max_seconds.unwrap_or(0.0),
                    trainer.step,
                    run.total_steps
                )
            });
            break;
        }
        let idx = sampler.next_batch();
        data.batch(&idx, &mut x0)?;
        if data.labeled {
            labels = data.batch_labels(&idx)?;
        }
        let cond = config.num_class_embeds.is_some();
        trainer.step(&ctx, &x0, cond.then_some(&labels[..]))?;
        let (loss, grad_norm) = block_on(trainer.read_stats(&ctx))?;
        if !loss.is_finite() || !grad_norm.is_finite() {
            bar.finish_and_clear();
            let kept = match last_good {
                Some(step) => format!(
                    "The last good checkpoint (step {step}) is kept in {}",
                    out.display()
                ),
                None => "No checkpoint was written".to_string(),
            };
            return Err(Error::Other(format!(
                "the loss became {loss} at step {} (gradient norm {grad_norm}); stopping. {kept}; \
                 try a lower --lr",
                trainer.step,
            )));
        }
        losses.push(loss);
        let s = smoothed.map_or(loss as f64, |s| 0.98 * s + 0.02 * loss as f64);
        smoothed = Some(s);
        let elapsed = start.elapsed().as_secs_f64();
        let ips = (trainer.step - start_step) as f64 * run.batch as f64 / elapsed.max(1e-9);
        bar.set_position(trainer.step);
        bar.set_message(format!("loss {s:.4}  {ips:.1} img/s"));
        let lr = crate::train::schedule::learning_rate(trainer.step - 1, &trainer.settings.lr);
        // One write per line, so a kill leaves at most one torn line at the end.
        let line = format!(
            "{{\"step\":{},\"loss\":{loss},\"loss_smoothed\":{s:.6},\"grad_norm\":{grad_norm},\"lr\":{lr:e},\"images_per_s\":{ips:.3},\"elapsed_s\":{elapsed:.1}}}\n",
            trainer.step
        );
        let _ = metrics.write_all(line.as_bytes());
        if trainer.step % a.checkpoint_every == 0 {
            save(&ctx, &trainer, &sampler, &run, &scheduler, &out)?;
            plot_losses(&out, &losses)?;
            last_good = Some(trainer.step);
        }
        if a.sample_every > 0 && trainer.step % a.sample_every == 0 {
            bar.suspend(|| eprintln!("writing samples at step {} …", trainer.step));
            sample_grid(
                &ctx,
                &trainer,
                &scheduler,
                &out,
                a.sample_steps,
                a.sample_guidance,
            )?;
        }
    }
    bar.finish_and_clear();
    save(&ctx, &trainer, &sampler, &run, &scheduler, &out)?;
    plot_losses(&out, &losses)?;
    if a.sample_every > 0
        && !stop.load(Ordering::SeqCst)
        && !out_of_time
        && trainer.step % a.sample_every != 0
    {
        sample_grid(
            &ctx,
            &trainer,
            &scheduler,
            &out,
            a.sample_steps,
            a.sample_guidance,
        )?;
    }
    let secs = start.elapsed().as_secs_f64();
    if trainer.step == start_step {
        eprintln!(
            "{} is already at step {} of {}: nothing to train (checkpoint and loss.png rewritten; \
             raise --steps to continue)",
            out.display(),
            trainer.step,
            run.total_steps
        );
        return Ok(());
    }
    eprintln!(
        "step {} of {}: smoothed loss {:.4}, {:.1} images/s over {:.0} s. Checkpoint: {} (resume with --resume {})",
        trainer.step,
        run.total_steps,
        smoothed.unwrap_or(f64::NAN),
        (trainer.step - start_step) as f64 * run.batch as f64 / secs.max(1e-9),
        secs,
        out.display(),
        out.display()
    );
    Ok(())
}

/// Settings that cannot train (or would train something else than asked) are errors
/// before any work: NaN, negative or out-of-range values.
fn check_settings(run: &RunState, a: &TrainArgs) -> Result<()> {
    let bad = |flag: &str, value: &dyn std::fmt::Display, want: &str| {
        Err(Error::Other(format!("{flag} {value}: {want}")))
    };
    if a.checkpoint_every == 0 {
        return bad("--checkpoint-every", &0, "must be at least 1");
    }
    if run.batch == 0 {
        return bad("--batch", &0, "must be at least 1");
    }
    if !(run.lr.is_finite() && run.lr > 0.0) {
        return bad("--lr", &run.lr, "must be a positive number");
    }
    if !(run.weight_decay.is_finite() && run.weight_decay >= 0.0) {
        return bad("--weight-decay", &run.weight_decay, "must be 0 or more");
    }
    if !(0.0..1.0).contains(&run.ema_decay) {
        return bad("--ema-decay", &run.ema_decay, "must be in [0, 1)");
    }
    if !(0.0..=1.0).contains(&run.label_dropout) {
        return bad(
            "--label-dropout",
            &run.label_dropout,
            "is a probability (0 to 1)",
        );
    }
    if let Some(Some(g)) = snr_gamma_asked(a) {
        crate::train::loss_weight::check_gamma(g)?;
    }
    if let Some(s) = a.max_seconds {
        if !(s.is_finite() && s > 0.0) {
            return bad("--max-seconds", &s, "must be a positive number of seconds");
        }
    }
    // The sample grids' settings, checked now rather than after the first sample_every steps.
    if a.sample_every > 0 {
        if a.sample_steps == 0 {
            return bad("--sample-steps", &0, "must be at least 1");
        }
        crate::diffusion::sampler::check_guidance(a.sample_guidance)?;
    }
    Ok(())
}

fn check_data(data: &Dataset, config: &UNetConfig) -> Result<()> {
    if data.is_empty() {
        return Err(Error::Other("the dataset has no images".into()));
    }
    if data.channels != config.in_channels || [data.height, data.width] != config.sample_size {
        return Err(Error::Other(format!(
            "the dataset is {}x{}x{} but the model takes {}x{}x{}",
            data.channels,
            data.height,
            data.width,
            config.in_channels,
            config.sample_size[0],
            config.sample_size[1]
        )));
    }
    if let Some(k) = config.num_class_embeds {
        if data.num_classes + 1 > k {
            return Err(Error::Other(format!(
                "the dataset has {} classes but the model has {k} class embeddings (it needs classes + 1 for the null class)",
                data.num_classes
            )));
        }
    }
    Ok(())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    format!("{}\n", args.join(" "))
}

struct SavedTensors {
    params: Weights,
    m: Weights,
    v: Weights,
    ema: Weights,
}

/// Checkpoint: EMA weights in diffusers layout (what the CLI and the browser load), and the
/// training state (raw weights, Adam moments, EMA, step, RNGs). Every file is written to a
/// temporary name and renamed, so a kill at any moment leaves complete files behind.
fn save(
    ctx: &GpuContext,
    trainer: &Trainer,
    sampler: &BatchSampler,
    run: &RunState,
    scheduler: &SchedulerConfig,
    out: &Path,
) -> Result<()> {
    let ema = block_on(trainer.download(ctx, &trainer.ema))?;
    let params = block_on(trainer.download(ctx, &trainer.graph.params))?;
    let m = block_on(trainer.download(ctx, &trainer.m))?;
    let v = block_on(trainer.download(ctx, &trainer.v))?;
    let mut state = run.clone();
    state.step = trainer.step;
    state.rng = trainer.rng.0;
    state.sampler = sampler.state().to_vec();
    let meta = serde_json::to_string(&state).map_err(|e| Error::Other(e.to_string()))?;
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (prefix, w) in [("param", &params), ("m", &m), ("v", &v), ("ema", &ema)] {
        for (name, (shape, data)) in &w.tensors {
            named.push((
                format!("{prefix}.{name}"),
                shape.clone(),
                data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
        }
    }
    let views: Vec<(String, TensorView)> = named
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Other(format!("cannot encode the training state: {e}")))?;
    let mut md = std::collections::HashMap::new();
    md.insert("kakusan_run".to_string(), meta);
    let bytes = safetensors::serialize(views, Some(md)).map_err(|e| Error::Other(e.to_string()))?;
    // All four files are written before any replaces its old version, so a failed write
    // (disk full, read-only folder) leaves the previous checkpoint whole; the state is
    // renamed last: once it exists, the diffusers files beside it do too.
    let (config_json, scheduler_json) = (trainer.graph.config.to_json(), scheduler.to_json());
    let weights = save_weights(&ema)?;
    let (config_path, scheduler_path, weights_path, state_path) = (
        out.join("config.json"),
        out.join("scheduler_config.json"),
        out.join("diffusion_pytorch_model.safetensors"),
        out.join(STATE_FILE),
    );
    super::io::write_all_atomic(&[
        (&config_path, config_json.as_bytes()),
        (&scheduler_path, scheduler_json.as_bytes()),
        (&weights_path, &weights),
        (&state_path, &bytes),
    ])
    .map_err(|e| {
        Error::Other(format!(
            "cannot save the checkpoint of step {}: {e}; the previous checkpoint in {} (if any) \
             is unchanged",
            trainer.step,
            out.display()
        ))
    })
}

fn read_state(path: &Path) -> Result<(RunState, SavedTensors)> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::file(
            path.display(),
            format!("cannot read the training state: {e}"),
        )
    })?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| Error::file(path.display(), e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::file(path.display(), e))?;
    let run: RunState = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("kakusan_run"))
        .ok_or_else(|| Error::file(path.display(), "no kakusan_run metadata"))
        .and_then(|s| serde_json::from_str(s).map_err(|e| Error::file(path.display(), e)))?;
    let mut t = SavedTensors {
        params: Weights::new(),
        m: Weights::new(),
        v: Weights::new(),
        ema: Weights::new(),
    };
    for (name, view) in st.tensors() {
        let (prefix, rest) = name.split_once('.').unwrap_or(("", &name));
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let target = match prefix {
            "param" => &mut t.params,
            "m" => &mut t.m,
            "v" => &mut t.v,
            "ema" => &mut t.ema,
            _ => continue,
        };
        target.insert(rest.to_string(), view.shape().to_vec(), data)?;
    }
    Ok((run, t))
}

/// The complete lines of a metrics log whose step is at most `step`.
fn metrics_up_to(path: &Path, step: u64) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let mut kept = String::new();
    for line in text.split_inclusive('\n') {
        let logged = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
        if line.ends_with('\n') && logged.is_some_and(|s| s <= step) {
            kept.push_str(line);
        }
    }
    kept
}

fn read_losses(path: &Path) -> Vec<f32> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()).map(|x| x as f32))
        .collect()
}

fn plot_losses(out: &Path, losses: &[f32]) -> Result<()> {
    let (w, h, px) = super::plot::loss_curve(losses, 640, 360);
    super::io::write_png_rgb(&out.join("loss.png"), w, h, &px)
}

/// A grid of EMA-weight samples: one row per class (guided), or 8x8 unconditional.
fn sample_grid(
    ctx: &GpuContext,
    trainer: &Trainer,
    scheduler: &SchedulerConfig,
    out: &Path,
    steps: usize,
    guidance: f32,
) -> Result<()> {
    let ema = block_on(trainer.download(ctx, &trainer.ema))?;
    let cfg = &trainer.graph.config;
    let (n, labels, guidance) = match cfg.num_class_embeds {
        Some(k) => {
            let classes = (k - 1).min(10);
            let per = 8;
            let labels: Vec<u32> = (0..classes * per).map(|i| (i / per) as u32).collect();
            (classes * per, Some(labels), Some(guidance))
        }
        None => (64, None, None),
    };
    let mut run = SamplingRun::new(
        ctx,
        cfg,
        &ema,
        scheduler,
        SampleSettings {
            sampler: Sampler::Ddim { eta: 0.0 },
            steps: steps.min(scheduler.num_train_timesteps),
            seed: 1234,
            batch: n,
            class_labels: labels,
            guidance,
        },
    )?;
    while run.step(ctx)?.is_some() {}
    let data = block_on(ctx.read(run.x_t()))?;
    let shape = run.x_t().shape.clone();
    super::io::write_grid_png_cols(
        &out.join(format!("samples_{:06}.png", trainer.step)),
        &data,
        &shape,
        8,
    )?;
    super::io::write_grid_png_cols(&out.join("samples.png"), &data, &shape, 8)
}

fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    super::io::write_atomic(path, text.as_bytes())
}
