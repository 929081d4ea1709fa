//! `kakusan eval`: the project's own quality numbers for class-conditional digit models
//! (class accuracy by the shipped classifier, FID in its feature space against held-out
//! digits with the real-vs-real floor, median pixel), and `kakusan eval --train-classifier`,
//! which trains that classifier with kakusan's kernels. The engine parts live in src/eval.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::{GuidanceArgs, SamplerArgs, SamplerName};
use crate::data::{load_default_mnist, BatchSampler, Dataset};
use crate::diffusion::sampler::{GuidanceOptions, SampleSettings, SamplingRun};
use crate::diffusion::schedule::Sampler;
use crate::error::{Error, Result};
use crate::eval::classifier::{random_shift, Mlp, MlpTrainer, MlpWeights, DIGIT_DIMS};
use crate::eval::{
    class_accuracy, fid, median, pixel_stats, reference_draws, shipped_classifier, split_indices,
};
use crate::gpu::{block_on, GpuContext};
use crate::ops::optim::AdamWConfig;

/// File names inside a classifier folder.
pub const CLASSIFIER_WEIGHTS: &str = "classifier.safetensors";
pub const CLASSIFIER_INFO: &str = "classifier.json";

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Model folder (diffusers layout) of a class-conditional 28×28 greyscale digit model
    /// (10 classes + the null class); with --data, any model.
    #[arg(long, required_unless_present = "train_classifier")]
    pub model: Option<PathBuf>,
    /// Sampler.
    #[arg(long, value_enum, default_value = "ddim")]
    pub sampler: SamplerName,
    #[command(flatten)]
    pub sampling: SamplerArgs,
    #[command(flatten)]
    pub guidance_options: GuidanceArgs,
    /// Number of samples (cycling through the classes 0…9); at most 1000, since the FID
    /// floor needs two disjoint draws of n held-out digits.
    #[arg(short = 'n', long = "num", default_value_t = 100)]
    pub num: usize,
    /// Seed of the samples' noise (batch k uses seed + k) and of the reference draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images sampled at once.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Write the report as JSON here; with --train-classifier: the folder to write the
    /// classifier into.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A classifier folder (classifier.safetensors) instead of the shipped one.
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Compare the samples of any model with the images of this data folder instead (same
    /// formats as `kakusan train --data`; resized to the model's size): the Fréchet distance in
    /// a fixed pixel-statistics feature space next to its real-vs-real floor from two disjoint
    /// draws of the folder, and the median pixel. Needs 2·n images (docs/evaluation.md).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train the digit classifier (on the non-held-out embedded digits) instead of evaluating;
    /// --steps then counts training steps [default: 3000].
    #[arg(long)]
    pub train_classifier: bool,
    /// Also write the samples' grid to this PNG.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Compare only against digits that neither the classifier nor this model trained on:
    /// the classifier's held-out digits that the model folder's data_split.json (written by
    /// `kakusan train --holdout`) also holds out. With `--holdout eval` that is all 2,000.
    #[arg(long)]
    pub heldout: bool,
    /// Keep each finished batch of samples in this folder (`batch_00000.safetensors`, …) and
    /// reuse the batches already there, so a long evaluation (DDPM's 1000 steps at n = 500)
    /// can be stopped and continued. A batch written with other settings is an error.
    #[arg(long)]
    pub save_samples: Option<PathBuf>,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    if a.train_classifier {
        return train_classifier(&a);
    }
    let dir = a
        .model
        .as_deref()
        .ok_or_else(|| Error::config("--model is required"))?;
    let mut model = super::load(dir)?;
    super::override_scheduler(&mut model.scheduler, a.sampling.clip_sample, None, None)?;
    if a.sampling.use_clipped_model_output && !matches!(a.sampler, SamplerName::Ddim) {
        return Err(Error::config(
            "--use-clipped-model-output only applies to --sampler ddim",
        ));
    }
    if a.num < 2 {
        return Err(Error::config(
            "-n must be at least 2 (a covariance needs two samples)",
        ));
    }
    if a.batch == 0 {
        return Err(Error::config("--batch must be at least 1"));
    }
    if let Some(data) = &a.data {
        return eval_against_data(&a, dir, &model, data);
    }
    let c = &model.config;
    if c.in_channels != 1 || c.sample_size != [28, 28] || c.num_class_embeds != Some(11) {
        return Err(Error::config(format!(
            "{}: eval supports class-conditional 28×28 greyscale digit models (in_channels 1, \
             sample_size 28, num_class_embeds 11), this one has in_channels {}, sample_size {:?}, \
             num_class_embeds {:?}; other models are compared with a data folder (--data DIR)",
            dir.display(),
            c.in_channels,
            c.sample_size,
            c.num_class_embeds
        )));
    }
    let digits = load_default_mnist()?;
    let (_, mut held) = split_indices(digits.len());
    let reference = match crate::data::split::read_recorded(dir)? {
        Some(h) if a.heldout => {
            held.retain(|&i| h.is_held_out(i, digits.len()));
            format!(
                "{} digits held out from both the classifier and this model (--holdout {h})",
                held.len()
            )
        }
        None if a.heldout => {
            return Err(Error::config(format!(
                "--heldout: {} has no {}: the model was trained on all the embedded digits \
                 (train with `kakusan train --holdout eval` for a held-out split)",
                dir.display(),
                crate::data::split::SPLIT_FILE
            )))
        }
        Some(h) => format!(
            "{} digits held out from the classifier (this model was trained with --holdout {h}; \
             --heldout keeps only digits it never saw)",
            held.len()
        ),
        None => format!(
            "{} digits held out from the classifier (this model trained on all embedded digits)",
            held.len()
        ),
    };
    let (ref_a, ref_b) = reference_draws(&held, a.num, a.seed)?;
    let weights = load_classifier(a.classifier.as_deref())?;

    let ctx = super::gpu()?;
    let wanted: Vec<u32> = (0..a.num).map(|i| (i % 10) as u32).collect();
    let drawn = draw_samples(&ctx, &model, &a, Some(&wanted))?;
    let samples = &drawn.samples;
    // The classifier sees what a viewer sees: samples clipped to the image range.
    let clipped: Vec<f32> = samples.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
    let net = Mlp::new(&ctx, &weights, 250.min(a.num))?;
    let out_s = block_on(net.classify(&ctx, &clipped))?;
    let real_a = pixels(&digits, &ref_a)?;
    let out_a = block_on(net.classify(&ctx, &real_a))?;
    let out_b = block_on(net.classify(&ctx, &pixels(&digits, &ref_b)?))?;
    let dim = net.feature_dim();
    let (accuracy, per_class) = class_accuracy(&out_s.predictions(), &wanted, 10);
    let fid_samples = fid::fid(&out_s.features, &out_a.features, dim)?;
    let fid_floor = fid::fid(&out_b.features, &out_a.features, dim)?;
    let ref_labels: Vec<u32> = ref_a.iter().map(|&i| digits.labels[i]).collect();
    let (ref_accuracy, _) = class_accuracy(&out_a.predictions(), &ref_labels, 10);

    let report = Report {
        accuracy: Some(accuracy),
        per_class_accuracy: Some(per_class),
        classifier_accuracy_on_reference: Some(ref_accuracy),
        features: format!("the digit classifier's penultimate layer ({dim} SiLU outputs)"),
        data: None,
        ..Report::new(&a, dir, &model, &ctx, &drawn, reference)
    }
    .with_distances(fid_samples, fid_floor, &real_a);
    finish(&a, &report)
}

/// `kakusan eval --data DIR`: samples of any model against the images of a data folder, in
/// the pixel-statistics feature space (src/eval/pixel_stats.rs), with the real-vs-real floor
/// from two disjoint draws of the folder.
fn eval_against_data(
    a: &EvalArgs,
    dir: &Path,
    model: &crate::model::Model,
    data_path: &Path,
) -> Result<()> {
    if a.heldout || a.classifier.is_some() {
        return Err(Error::config(
            "--heldout and --classifier belong to the digit evaluator; with --data the \
             reference images are drawn from the data folder",
        ));
    }
    let c = &model.config;
    let [h, w] = c.sample_size;
    let data = crate::data::load(data_path, c.in_channels, c.sample_size)?;
    for (path, why) in &data.skipped {
        eprintln!("warning: skipped {}: {why}", path.display());
    }
    if 2 * a.num > data.len() {
        return Err(Error::config(format!(
            "--data {}: the floor needs two disjoint draws of {} images, but it holds {} \
             (use -n ≤ {})",
            data_path.display(),
            a.num,
            data.len(),
            data.len() / 2
        )));
    }
    let all: Vec<usize> = (0..data.len()).collect();
    let (ref_a, ref_b) = reference_draws(&all, a.num, a.seed)?;
    // A class-conditional model samples its classes in turn; the last embedding is the null
    // class, as `kakusan train` uses it.
    let labels: Option<Vec<u32>> = match c.num_class_embeds {
        None => None,
        Some(k) if k >= 2 => Some((0..a.num).map(|i| (i % (k - 1)) as u32).collect()),
        Some(k) => {
            return Err(Error::config(format!(
                "{}: num_class_embeds {k} leaves no class besides the null class",
                dir.display()
            )))
        }
    };
    let ctx = super::gpu()?;
    let drawn = draw_samples(&ctx, model, a, labels.as_deref())?;
    let shape = [a.num, c.in_channels, h, w];
    let dim = pixel_stats::feature_dim(c.in_channels, h, w);
    let real_a = pixels(&data, &ref_a)?;
    let features_a = pixel_stats::pixel_statistics(&real_a, shape)?;
    let features_b = pixel_stats::pixel_statistics(&pixels(&data, &ref_b)?, shape)?;
    let features_s = pixel_stats::pixel_statistics(&drawn.samples, shape)?;
    let fd = fid::fid(&features_s, &features_a, dim)?;
    let floor = fid::fid(&features_b, &features_a, dim)?;
    let g = pixel_stats::grid_for(h, w);
    let reference = format!(
        "2 × {} of the {} images in {}, as {}×{h}×{w}",
        a.num,
        data.len(),
        data_path.display(),
        c.in_channels
    );
    let report = Report {
        features: format!(
            "pixel statistics: per channel, the mean and the gradient energy of each cell of a \
             {g}×{g} grid ({dim} values)"
        ),
        data: Some(data_path.display().to_string()),
        ..Report::new(a, dir, model, &ctx, &drawn, reference)
    }
    .with_distances(fd, floor, &real_a);
    finish(a, &report)
}

/// Samples drawn for an evaluation, with what was needed to draw them.
struct Drawn {
    samples: Vec<f32>,
    steps: usize,
    options: GuidanceOptions,
    seconds: f64,
}

/// Samples `a.num` images (class `labels[i]` for image i of a class-conditional model),
/// refuses NaN/Inf and writes `--grid`.
fn draw_samples(
    ctx: &GpuContext,
    model: &crate::model::Model,
    a: &EvalArgs,
    labels: Option<&[u32]>,
) -> Result<Drawn> {
    let (sampler, steps) = a
        .sampling
        .sampler(a.sampler, model.scheduler.num_train_timesteps);
    let options = a.guidance_options.options()?;
    let start = Instant::now();
    let weights_hash = weights_fingerprint(&model.weights);
    let samples = sample_all(
        ctx,
        model,
        a,
        (sampler, steps, &options),
        labels,
        weights_hash,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    if samples.iter().any(|v| !v.is_finite()) {
        return Err(Error::Other(
            "the samples contain NaN or Inf: the model or its weights are broken".into(),
        ));
    }
    if let Some(p) = &a.grid {
        let [h, w] = model.config.sample_size;
        let cols = if labels.is_some() { 10 } else { 8 };
        let shape = [a.num, model.config.in_channels, h, w];
        super::io::write_grid_png_cols(p, &samples, &shape, cols)?;
    }
    Ok(Drawn {
        samples,
        steps,
        options,
        seconds,
    })
}

/// Prints the report and writes it as JSON with `--out`.
fn finish(a: &EvalArgs, report: &Report) -> Result<()> {
    print_report(report);
    if let Some(p) = &a.out {
        let json = serde_json::to_string_pretty(report)
            .map_err(|e| Error::Other(format!("could not encode the report: {e}")))?;
        super::io::write_atomic(p, (json + "\n").as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// What `kakusan eval` prints and writes. The classifier's numbers are absent with `--data`.
#[derive(Debug, Serialize)]
struct Report {
    model: String,
    /// The data folder compared against (`--data`); absent for the digit evaluator.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    sampler: &'static str,
    steps: usize,
    eta: Option<f64>,
    guidance: Option<f32>,
    /// `--guidance-rescale` φ (0 = off).
    guidance_rescale: f64,
    /// `--guidance-interval` (lo, hi); None = guided at every step.
    guidance_interval: Option<(usize, usize)>,
    /// The scheduler's `clip_sample` after `--clip-sample`.
    clip_sample: bool,
    use_clipped_model_output: bool,
    n: usize,
    seed: u64,
    /// Which real images the FID reference and floor are drawn from.
    reference: String,
    /// The feature space of `fid`.
    features: String,
    /// Fraction of samples the classifier labels as the class they were sampled for.
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_class_accuracy: Option<Vec<f64>>,
    /// Fréchet distance (in `features`) of the samples against n real images.
    fid: f64,
    /// The same between n other real images and the same n: the floor at this n.
    fid_floor: f64,
    fid_ratio: f64,
    /// Median over every pixel of every sample (model space; MNIST's background is −1).
    median_pixel: f64,
    /// The same statistic on the n reference images.
    median_pixel_real: f64,
    /// The classifier's accuracy on the n reference digits (a sanity check of the classifier).
    #[serde(skip_serializing_if = "Option::is_none")]
    classifier_accuracy_on_reference: Option<f64>,
    sampling_seconds: f64,
    adapter: String,
}

impl Report {
    /// What every evaluation reports about its run; the distances come with
    /// [`Report::with_distances`], the classifier's numbers from the digit evaluator.
    fn new(
        a: &EvalArgs,
        dir: &Path,
        model: &crate::model::Model,
        ctx: &GpuContext,
        drawn: &Drawn,
        reference: String,
    ) -> Report {
        Report {
            model: dir.display().to_string(),
            data: None,
            sampler: a.sampler.as_str(),
            steps: drawn.steps,
            eta: matches!(a.sampler, SamplerName::Ddim).then_some(a.sampling.eta),
            guidance: a.sampling.guidance,
            guidance_rescale: drawn.options.rescale,
            guidance_interval: drawn.options.interval,
            clip_sample: model.scheduler.clip_sample,
            use_clipped_model_output: a.sampling.use_clipped_model_output,
            n: a.num,
            seed: a.seed,
            reference,
            features: String::new(),
            accuracy: None,
            per_class_accuracy: None,
            fid: f64::NAN,
            fid_floor: f64::NAN,
            fid_ratio: f64::NAN,
            median_pixel: median(&drawn.samples),
            median_pixel_real: f64::NAN,
            classifier_accuracy_on_reference: None,
            sampling_seconds: drawn.seconds,
            adapter: ctx.adapter.name.clone(),
        }
    }

    /// Sets the samples' distance, the real-vs-real floor and the reference images' median.
    fn with_distances(self, fid: f64, fid_floor: f64, reference_pixels: &[f32]) -> Report {
        Report {
            fid,
            fid_floor,
            fid_ratio: fid / fid_floor,
            median_pixel_real: median(reference_pixels),
            ..self
        }
    }
}

fn print_report(r: &Report) {
    let mut g = r.guidance.map_or("none".to_string(), |g| g.to_string());
    if r.guidance_rescale > 0.0 {
        g += &format!(" (rescale {})", r.guidance_rescale);
    }
    if let Some((lo, hi)) = r.guidance_interval {
        g += &format!(" (only at t {lo}..={hi})");
    }
    println!(
        "model {}: {} {} steps, guidance {g}, clip_sample {}{}, n {}, seed {}",
        r.model,
        r.sampler,
        r.steps,
        r.clip_sample,
        if r.use_clipped_model_output {
            ", use_clipped_model_output"
        } else {
            ""
        },
        r.n,
        r.seed
    );
    if let (Some(acc), Some(per), Some(on_real)) = (
        r.accuracy,
        &r.per_class_accuracy,
        r.classifier_accuracy_on_reference,
    ) {
        println!(
            "class accuracy   {:.1}%  (the classifier on {} real held-out digits: {:.1}%)",
            100.0 * acc,
            r.n,
            100.0 * on_real
        );
        let per: Vec<String> = per
            .iter()
            .enumerate()
            .map(|(k, v)| format!("{k}:{:.0}%", 100.0 * v))
            .collect();
        println!("  per class      {}", per.join(" "));
    }
    let what = if r.data.is_some() {
        "FD (pixels)"
    } else {
        "FID"
    };
    println!(
        "{what:<16} {:.3}  (real-vs-real floor at n {}: {:.3}; ratio {:.2})",
        r.fid, r.n, r.fid_floor, r.fid_ratio
    );
    println!(
        "median pixel     {:.3}  (all pixels of all samples; real images: {:.3})",
        r.median_pixel, r.median_pixel_real
    );
    println!("features         {}", r.features);
    println!("reference        {}", r.reference);
    println!("sampling took {:.1} s on {}", r.sampling_seconds, r.adapter);
}

/// The digits `indices` as model-space f32 (n, 784).
fn pixels(d: &Dataset, indices: &[usize]) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; indices.len() * d.image_len()];
    d.batch(indices, &mut out)?;
    Ok(out)
}

/// FNV-1a (64 bit) over the weights' names and values: identifies the model a saved batch
/// came from.
fn weights_fingerprint(w: &crate::model::Weights) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, (_, values)) in &w.tensors {
        eat(name.as_bytes());
        for v in values {
            eat(&v.to_le_bytes());
        }
    }
    h
}

/// Metadata key of saved sample batches: everything that decides a batch's pixels.
const SAVED_SETTINGS_KEY: &str = "kakusan_eval_settings";

/// A saved batch (`--save-samples`) if one with exactly these settings exists; an error if
/// one exists with other settings or is unreadable.
fn load_saved_batch(path: &Path, settings: &str, shape: [usize; 4]) -> Result<Option<Vec<f32>>> {
    if !path.exists() {
        return Ok(None);
    }
    let (found_shape, data, meta) =
        super::io::read_named_tensor_and_metadata(path, "sample", "saved samples", 4)
            .map_err(|e| Error::Other(format!("{e}; delete it to sample this batch again")))?;
    let found = meta
        .and_then(|m| m.get(SAVED_SETTINGS_KEY).cloned())
        .unwrap_or_default();
    if found != settings {
        return Err(Error::config(format!(
            "{}: this batch was sampled with other settings ({found}) than this run's ({settings}); \
             use another --save-samples folder",
            path.display()
        )));
    }
    if found_shape != shape {
        return Err(Error::file(
            path.display(),
            format!("`sample` has shape {found_shape:?}, this batch needs {shape:?}"),
        ));
    }
    Ok(Some(data))
}

fn save_batch(path: &Path, settings: &str, data: &[f32], shape: [usize; 4]) -> Result<()> {
    let meta =
        std::collections::HashMap::from([(SAVED_SETTINGS_KEY.to_string(), settings.to_string())]);
    super::io::write_tensor_with_metadata(path, "sample", data, &shape, Some(meta))
}

/// Sample `a.num` images (image i of class `labels[i]`) in batches of `a.batch` (batch k seeded `seed + k`); with
/// `--save-samples`, batches already saved with the same settings are read instead.
fn sample_all(
    ctx: &GpuContext,
    model: &crate::model::Model,
    a: &EvalArgs,
    (sampler, steps, options): (Sampler, usize, &GuidanceOptions),
    labels: Option<&[u32]>,
    weights_hash: u64,
) -> Result<Vec<f32>> {
    let n = a.num;
    let [h, w] = model.config.sample_size;
    let image = [model.config.in_channels, h, w];
    let bar = super::progress_bar(
        n.div_ceil(a.batch) * steps,
        "{spinner} sampling [{bar:40}] {pos}/{len} steps  eta {eta}  {msg}",
    );
    if let Some(d) = &a.save_samples {
        std::fs::create_dir_all(d).map_err(|e| Error::file(d.display(), e))?;
    }
    let mut out = Vec::with_capacity(n * image.iter().product::<usize>());
    for (k, start) in (0..n).step_by(a.batch).enumerate() {
        let rows = (n - start).min(a.batch);
        let mut settings = format!(
            "weights fnv1a {weights_hash:016x}, {} {steps} steps, eta {}, guidance {:?}, \
             clip_sample {}, use_clipped_model_output {}, seed {}, labels {}",
            a.sampler.as_str(),
            a.sampling.eta,
            a.sampling.guidance,
            model.scheduler.clip_sample,
            a.sampling.use_clipped_model_output,
            a.seed + k as u64,
            // As written before models without labels were evaluated: "[0, 1, …]".
            labels.map_or("none".to_string(), |l| format!(
                "{:?}",
                &l[start..start + rows]
            )),
        );
        // Only when set, so batches saved before these options existed still match.
        if *options != GuidanceOptions::default() {
            settings += &format!(", guidance options {options:?}");
        }
        let saved = a
            .save_samples
            .as_ref()
            .map(|d| d.join(format!("batch_{k:05}.safetensors")));
        if let Some(p) = &saved {
            if let Some(data) =
                load_saved_batch(p, &settings, [rows, image[0], image[1], image[2]])?
            {
                out.extend(data);
                bar.inc(steps as u64);
                bar.set_message(format!("{} images (batch {k} read back)", start + rows));
                continue;
            }
        }
        let mut run = SamplingRun::new(
            ctx,
            &model.config,
            &model.weights,
            &model.scheduler,
            SampleSettings {
                sampler,
                steps,
                seed: a.seed + k as u64,
                batch: rows,
                class_labels: labels.map(|l| l[start..start + rows].to_vec()),
                // w = 1 is ε_∅ + (ε_c − ε_∅) = ε_c: the conditional model alone, at half the
                // cost of the guided batch.
                guidance: a.sampling.guidance.filter(|&w| w != 1.0),
            },
        )?;
        run.set_guidance_options(ctx, options.clone())?;
        run.set_use_clipped_model_output(a.sampling.use_clipped_model_output)?;
        while run.step(ctx)?.is_some() {
            block_on(ctx.finish())?;
            bar.inc(1);
        }
        let batch = block_on(ctx.read(run.x_t()))?;
        if let Some(p) = &saved {
            save_batch(p, &settings, &batch, [rows, image[0], image[1], image[2]])?;
        }
        out.extend(batch);
        bar.set_message(format!("{} images", start + rows));
    }
    bar.finish_and_clear();
    Ok(out)
}

fn load_classifier(dir: Option<&Path>) -> Result<MlpWeights> {
    match dir {
        None => shipped_classifier(),
        Some(d) => {
            let p = d.join(CLASSIFIER_WEIGHTS);
            let bytes = std::fs::read(&p).map_err(|e| Error::file(p.display(), e))?;
            MlpWeights::from_safetensors(&bytes, &DIGIT_DIMS, &p.display().to_string())
        }
    }
}

/// Training settings of the shipped classifier (recorded in classifier.json).
#[derive(Debug, Serialize)]
struct ClassifierInfo {
    dims: Vec<usize>,
    activation: &'static str,
    parameters: usize,
    steps: usize,
    batch: usize,
    lr: f64,
    lr_schedule: &'static str,
    adamw_weight_decay: f32,
    augmentation: String,
    seed: u64,
    train_split: &'static str,
    train_digits: usize,
    held_out_digits: usize,
    train_accuracy: f64,
    held_out_accuracy: f64,
    final_loss: f64,
    seconds: f64,
    adapter: String,
    command: String,
}

const CLASSIFIER_BATCH: usize = 128;
const CLASSIFIER_LR: f64 = 1e-3;
const CLASSIFIER_SEED: u64 = 0;
/// Training digits are shifted by up to this many pixels each way (`random_shift`).
const CLASSIFIER_MAX_SHIFT: usize = 2;

/// Train the digit classifier on the non-held-out embedded digits and write it to `--out`.
fn train_classifier(a: &EvalArgs) -> Result<()> {
    let out = a.out.as_deref().ok_or_else(|| {
        Error::config("--train-classifier needs --out DIR (e.g. assets/classifier)")
    })?;
    let steps = a.sampling.steps.unwrap_or(3000);
    if steps == 0 {
        return Err(Error::config("--steps must be at least 1"));
    }
    let digits = load_default_mnist()?;
    let (train, held) = split_indices(digits.len());
    let ctx = super::gpu()?;
    let weights = MlpWeights::random(&DIGIT_DIMS, CLASSIFIER_SEED)?;
    let cfg = AdamWConfig::default();
    let mut trainer = MlpTrainer::new(&ctx, &weights, CLASSIFIER_BATCH, cfg)?;
    let mut order = BatchSampler::new(train.len(), CLASSIFIER_BATCH, CLASSIFIER_SEED)?;
    let mut images = vec![0.0f32; CLASSIFIER_BATCH * 784];
    let mut shifts = crate::rng::SplitMix64(CLASSIFIER_SEED ^ 0x0053_4849_4654);
    let start = Instant::now();
    let mut loss = f64::NAN;
    for step in 0..steps {
        let idx: Vec<usize> = order.next_batch().iter().map(|&i| train[i]).collect();
        digits.batch(&idx, &mut images)?;
        random_shift(&mut images, 28, 28, CLASSIFIER_MAX_SHIFT, -1.0, &mut shifts);
        let labels = digits.batch_labels(&idx)?;
        // Cosine decay from CLASSIFIER_LR to 0.
        let lr =
            0.5 * CLASSIFIER_LR * (1.0 + (std::f64::consts::PI * step as f64 / steps as f64).cos());
        trainer.step(&ctx, &images, &labels, lr as f32)?;
        if step % 200 == 0 || step + 1 == steps {
            loss = block_on(trainer.last_loss(&ctx))?;
            eprintln!(
                "step {:>5}/{steps}  loss {loss:.4}  lr {lr:.2e}  {:.1} s",
                step + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let trained = block_on(trainer.net.weights(&ctx))?;
    let net = Mlp::new(&ctx, &trained, 250)?;
    let accuracy = |idx: &[usize]| -> Result<f64> {
        let o = block_on(net.classify(&ctx, &pixels(&digits, idx)?))?;
        Ok(class_accuracy(&o.predictions(), &digits.batch_labels(idx)?, 10).0)
    };
    let train_accuracy = accuracy(&train)?;
    let held_out_accuracy = accuracy(&held)?;
    std::fs::create_dir_all(out).map_err(|e| Error::file(out.display(), e))?;
    super::io::write_atomic(&out.join(CLASSIFIER_WEIGHTS), &trained.to_safetensors()?)?;
    let info = ClassifierInfo {
        dims: DIGIT_DIMS.to_vec(),
        activation: "silu",
        parameters: trained.parameter_count(),
        steps,
        batch: CLASSIFIER_BATCH,
        lr: CLASSIFIER_LR,
        lr_schedule: "cosine to 0",
        adamw_weight_decay: cfg.weight_decay,
        augmentation: format!(
            "every training digit shifted by a random (dx, dy), |dx|, |dy| <= {CLASSIFIER_MAX_SHIFT} px, border filled with the background"
        ),
        seed: CLASSIFIER_SEED,
        train_split: "embedded MNIST index i with (i / 10) % 5 != 4; the rest is held out",
        train_digits: train.len(),
        held_out_digits: held.len(),
        train_accuracy,
        held_out_accuracy,
        final_loss: loss,
        seconds,
        adapter: ctx.adapter.name.clone(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let json = serde_json::to_string_pretty(&info)
        .map_err(|e| Error::Other(format!("could not encode classifier.json: {e}")))?;
    super::io::write_atomic(&out.join(CLASSIFIER_INFO), (json + "\n").as_bytes())?;
    println!(
        "classifier: {steps} steps in {seconds:.1} s; accuracy {:.2}% on {} training digits, {:.2}% on {} held-out digits → {}",
        100.0 * train_accuracy,
        train.len(),
        100.0 * held_out_accuracy,
        held.len(),
        out.display()
    );
    Ok(())
}
