//! `kakusan nll`: the variational bound on −log p(x) in bits/dim (Ho et al. 2020, eq. 5 and
//! 13), computed by [`crate::diffusion::likelihood`]; a JSON report and a plot of the terms.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use crate::diffusion::likelihood::{mean, ImageBatch, LikelihoodRun, TermNoise};
use crate::error::{Error, Result};
use crate::gpu::{block_on, GpuContext};
use crate::model::config::UNetConfig;
use crate::model::Model;

#[derive(clap::Args, Debug)]
pub struct NllArgs {
    /// Model folder (diffusers layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Images: a folder of PNG/JPEG files (resized to the model), or safetensors with
    /// `sample` [N,C,H,W] on the 256-level grid in [-1, 1] and optional `class_labels` [N].
    #[arg(long, required_unless_present = "heldout", conflicts_with = "heldout")]
    pub input: Option<PathBuf>,
    /// Instead of --input: the embedded digits this model never trained on, as recorded in
    /// its folder's data_split.json by `kakusan train --holdout` (in index order; for
    /// `--holdout eval` every ten consecutive ones are one of each class).
    #[arg(long)]
    pub heldout: bool,
    /// Only the first N images (of --input or --heldout): the bound costs T U-Net calls on
    /// all of them at once.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the noise x_t ~ q(x_t | x_0) drawn once per timestep (Philox, stream t).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the report (per-image bits/dim, prior, per-timestep and decoder terms) as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Plot the per-timestep terms (mean over images, bits/dim, log scale) as PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Class of every image (class-conditional models) [default: the file's `class_labels`,
    /// else the null class, i.e. the unconditional model].
    #[arg(long)]
    pub class_label: Option<u32>,
}

/// Images read for a toolbox command: [N, C, H, W] in [-1, 1], with optional labels.
pub(super) struct Images {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub class_labels: Option<Vec<u32>>,
}

/// Read `path` as a PNG/JPEG folder (converted to the model's channels and size) or as a
/// safetensors file holding `name` [N,C,H,W] (+ optional `class_labels`); the shape must be
/// the model's.
pub(super) fn read_images(path: &Path, name: &str, config: &UNetConfig) -> Result<Images> {
    let [h, w] = config.sample_size;
    let c = config.in_channels;
    let images = if path.is_dir() {
        if c != 1 && c != 3 {
            return Err(Error::file(
                path.display(),
                format!("an image folder needs a 1- or 3-channel model; this one has {c}"),
            ));
        }
        let ds = crate::data::load(path, c, [h, w])?;
        if ds.is_empty() {
            return Err(Error::file(path.display(), "no images"));
        }
        let mut data = vec![0.0f32; ds.len() * ds.image_len()];
        ds.batch(&(0..ds.len()).collect::<Vec<_>>(), &mut data)?;
        Images {
            shape: vec![ds.len(), c, h, w],
            data,
            class_labels: None,
        }
    } else {
        let (shape, data) =
            super::io::read_named_tensor(path, name, "images, [N,C,H,W] in [-1, 1]", 4)?;
        let class_labels = super::io::read_class_labels(path, shape[0])?;
        Images {
            shape,
            data,
            class_labels,
        }
    };
    if images.shape[1..] != [c, h, w] || images.shape[0] == 0 {
        return Err(Error::file(
            path.display(),
            format!(
                "{name} has shape {:?} but this model takes [N, {c}, {h}, {w}]",
                images.shape
            ),
        ));
    }
    if let Some(i) = images.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::file(
            path.display(),
            format!("{name} holds a NaN or Inf at index {i}"),
        ));
    }
    Ok(images)
}

/// The class labels to condition on: `--class-label` for every image, else the file's, else
/// the null class (last embedding) for class-conditional models; None for unconditional ones.
pub(super) fn labels_for(
    config: &UNetConfig,
    flag: Option<u32>,
    from_file: Option<Vec<u32>>,
    n: usize,
) -> Result<Option<Vec<u32>>> {
    match config.num_class_embeds {
        None if flag.is_some() || from_file.is_some() => Err(Error::config(
            "class labels need a class-conditional model (num_class_embeds in config.json)",
        )),
        None => Ok(None),
        Some(k) => Ok(Some(match (flag, from_file) {
            (Some(l), _) => vec![l; n],
            (None, Some(v)) => v,
            (None, None) => vec![(k - 1) as u32; n],
        })),
    }
}

/// The variational bound over `images` with noise seeded by `seed` (`nll`, `anomaly --bits`);
/// a shape or grid error in the images names the input file they came from.
pub(super) fn likelihood_run(
    ctx: &GpuContext,
    model: &Model,
    images: &Images,
    labels: Option<&[u32]>,
    seed: u64,
    input: &Path,
) -> Result<LikelihoodRun> {
    LikelihoodRun::new(
        ctx,
        model,
        ImageBatch {
            data: &images.data,
            shape: &images.shape,
            class_labels: labels,
        },
        TermNoise::Seeded(seed),
    )
    .map_err(|e| match e {
        Error::Shape(m) => Error::file(input.display(), m),
        e => e,
    })
}

/// The embedded digits that `dir`'s recorded split holds out, at the model's channels and
/// size, and a description of them for the report.
fn held_out_images(dir: &Path, config: &UNetConfig) -> Result<(Images, String)> {
    use crate::data::split::{read_recorded, SPLIT_FILE};
    let h = read_recorded(dir)?.ok_or_else(|| {
        Error::config(format!(
            "--heldout: {} has no {SPLIT_FILE}: the model was trained on all the embedded \
             digits (train with `kakusan train --holdout eval` for a held-out split)",
            dir.display()
        ))
    })?;
    let all = crate::data::load_default_mnist()?;
    let (_, held) = h.split(all.len())?;
    let ds = all
        .subset(&held)?
        .converted(config.in_channels, config.sample_size)?;
    let [height, width] = config.sample_size;
    let mut data = vec![0.0f32; ds.len() * ds.image_len()];
    ds.batch(&(0..ds.len()).collect::<Vec<_>>(), &mut data)?;
    let images = Images {
        shape: vec![ds.len(), config.in_channels, height, width],
        data,
        class_labels: None,
    };
    let what = format!(
        "embedded MNIST digits held out from training ({SPLIT_FILE}: --holdout {h}, {} digits)",
        ds.len()
    );
    Ok((images, what))
}

/// Keep the first `limit` images (and labels).
fn first(mut images: Images, limit: Option<usize>) -> Result<Images> {
    let Some(k) = limit else {
        return Ok(images);
    };
    if k == 0 {
        return Err(Error::config("--limit must be at least 1"));
    }
    let k = k.min(images.shape[0]);
    let per: usize = images.shape[1..].iter().product();
    images.data.truncate(k * per);
    images.shape[0] = k;
    if let Some(l) = &mut images.class_labels {
        l.truncate(k);
    }
    Ok(images)
}

pub fn nll(a: NllArgs) -> Result<()> {
    let model = super::load(&a.model)?;
    let (images, input_path, input_what) = match &a.input {
        Some(p) => (
            read_images(p, "sample", &model.config)?,
            p.clone(),
            p.display().to_string(),
        ),
        None => {
            let (images, what) = held_out_images(&a.model, &model.config)?;
            (images, a.model.join(crate::data::split::SPLIT_FILE), what)
        }
    };
    let images = first(images, a.limit)?;
    let n = images.shape[0];
    let labels = labels_for(&model.config, a.class_label, images.class_labels.clone(), n)?;
    let ctx = super::gpu()?;
    let mut run = likelihood_run(
        &ctx,
        &model,
        &images,
        labels.as_deref(),
        a.seed,
        &input_path,
    )?;
    let bar = super::progress_bar(
        run.num_timesteps(),
        "{spinner} bound [{bar:40}] {pos}/{len} timesteps  {per_sec}  eta {eta}",
    );
    let start = Instant::now();
    while block_on(run.step(&ctx))?.is_some() {
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = run
        .report()
        .ok_or_else(|| Error::Other("the bound is incomplete".into()))?;
    let bpd = mean(&report.bits_per_dim);
    let se = if n > 1 {
        let var = report
            .bits_per_dim
            .iter()
            .map(|v| (v - bpd) * (v - bpd))
            .sum::<f64>()
            / (n - 1) as f64;
        (var / n as f64).sqrt()
    } else {
        f64::NAN
    };
    let terms = report.mean_terms();
    let decoder = terms[0];
    let prior = mean(&report.prior);
    let kl_sum: f64 = terms[1..].iter().sum();
    println!(
        "bits/dim: {bpd:.4} ± {se:.4} (standard error over {n} images) = prior {prior:.4} + \
         Σ KL {kl_sum:.4} + decoder {decoder:.4}  [{} timesteps, {:.1} s]",
        terms.len(),
        start.elapsed().as_secs_f64()
    );
    if let Some(p) = &a.out {
        let j = json!({
            "model": a.model.display().to_string(),
            "input": input_what,
            "seed": a.seed,
            "num_images": n,
            "num_train_timesteps": terms.len(),
            "variance_type": model.scheduler.variance_type.name(),
            "clip_sample": model.scheduler.clip_sample,
            "class_labels": labels,
            "mean_bits_per_dim": bpd,
            "standard_error": if se.is_finite() { json!(se) } else { json!(null) },
            "bits_per_dim": report.bits_per_dim,
            "prior_mean": prior,
            "prior": report.prior,
            "decoder_mean": decoder,
            "decoder": report.terms[0],
            "terms_mean": terms,
            "note": "bits/dim terms; terms_mean[t] is the mean over images of the term at \
                     timestep index t (index 0 = the decoder L_0, index t ≥ 1 = KL L_t); \
                     bits_per_dim = prior + Σ_t terms",
        });
        let text = serde_json::to_string_pretty(&j)
            .map_err(|e| Error::Other(format!("cannot encode the report: {e}")))?;
        super::io::write_atomic(p, text.as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = &a.plot {
        let ys: Vec<f32> = terms.iter().map(|&v| v as f32).collect();
        let (w, h, px) = super::plot::curve(&ys, 640, 360, "bits", "t", false);
        super::io::write_png_rgb(p, w, h, &px)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
