//! `kakusan anomaly`: reconstruction-error anomaly scores (noise to t with eq. 4, DDIM η = 0
//! back to x_0), optionally with bits/dim, and AUROC when the input says which images are
//! real; the math is in [`crate::diffusion::anomaly`].

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use crate::diffusion::anomaly::{auroc, ReconstructionRun, ReconstructionSettings};
use crate::diffusion::likelihood::ImageBatch;
use crate::error::{Error, Result};
use crate::gpu::block_on;

use super::nll::{labels_for, likelihood_run, read_images};

#[derive(clap::Args, Debug)]
pub struct AnomalyArgs {
    /// Model folder (diffusers layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Images: a folder of PNG/JPEG files, or safetensors with `sample` [N,C,H,W] in [-1, 1]
    /// (optional `class_labels` [N]; optional `kind` [N]: 0 = real, k > 0 = an anomaly kind,
    /// for which AUROC is reported).
    #[arg(long)]
    pub input: PathBuf,
    /// The timestep the images are noised to before reconstruction.
    #[arg(long, default_value_t = 300)]
    pub t: usize,
    /// Independent noise draws per image; the score is the mean over them.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// DDIM steps from t back to x_0 (5, as the page and the shipped anomaly reference).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Seed of the noise (repeat r uses Philox stream r).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also compute each image's bits/dim by the variational bound (one U-Net call per
    /// training timestep; needs 8-bit images).
    #[arg(long)]
    pub bits: bool,
    /// Class of every image (class-conditional models) [default: the file's `class_labels`,
    /// else the null class].
    #[arg(long)]
    pub class_label: Option<u32>,
    /// Write the scores (and AUROC) as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn anomaly(a: AnomalyArgs) -> Result<()> {
    let model = super::load(&a.model)?;
    let images = read_images(&a.input, "sample", &model.config)?;
    let n = images.shape[0];
    let kind: Option<Vec<u32>> = if !a.input.is_dir() && super::io::has_tensor(&a.input, "kind")? {
        let (shape, v) =
            super::io::read_named_tensor(&a.input, "kind", "0 = real, k > 0 = anomaly kind", 1)?;
        if shape != [n] || v.iter().any(|&k| k < 0.0 || k.fract() != 0.0) {
            return Err(Error::file(
                a.input.display(),
                format!("kind must hold {n} non-negative integers, one per image"),
            ));
        }
        Some(v.iter().map(|&k| k as u32).collect())
    } else {
        None
    };
    let labels = labels_for(&model.config, a.class_label, images.class_labels.clone(), n)?;
    let ctx = super::gpu()?;
    let start = Instant::now();
    let mut run = ReconstructionRun::new(
        &ctx,
        &model,
        ImageBatch {
            data: &images.data,
            shape: &images.shape,
            class_labels: labels.as_deref(),
        },
        ReconstructionSettings {
            t: a.t,
            steps: a.steps,
            repeats: a.repeats,
            seed: a.seed,
        },
    )?;
    while block_on(run.step(&ctx))?.is_some() {}
    let scores = run.scores();
    let steps_done = run.timesteps().len();
    drop(run);
    let bits = if a.bits {
        let mut lk = likelihood_run(&ctx, &model, &images, labels.as_deref(), a.seed, &a.input)?;
        while block_on(lk.step(&ctx))?.is_some() {}
        lk.report().map(|r| r.bits_per_dim)
    } else {
        None
    };
    println!(
        "{n} images, t = {}, {steps_done} DDIM steps × {} repeats in {:.1} s",
        a.t,
        a.repeats,
        start.elapsed().as_secs_f64()
    );
    let mut aurocs = serde_json::Map::new();
    if let Some(kind) = &kind {
        let pick = |f: &dyn Fn(u32) -> bool, s: &[f64]| -> Vec<f64> {
            kind.iter()
                .zip(s)
                .filter(|(k, _)| f(**k))
                .map(|(_, &v)| v)
                .collect()
        };
        let mut kinds: Vec<u32> = kind.iter().copied().filter(|&k| k > 0).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for (name, s) in [
            ("reconstruction", Some(&scores)),
            ("bits_per_dim", bits.as_ref()),
        ] {
            let Some(s) = s else { continue };
            let real = pick(&|k| k == 0, s);
            let mut m = serde_json::Map::new();
            let all = auroc(&real, &pick(&|k| k > 0, s));
            println!("AUROC ({name}) real vs all anomalies: {all:.4}");
            m.insert("all".into(), json!(all));
            for &k in &kinds {
                let v = auroc(&real, &pick(&|j| j == k, s));
                println!("AUROC ({name}) real vs kind {k}: {v:.4}");
                m.insert(format!("kind_{k}"), json!(v));
            }
            aurocs.insert(name.into(), serde_json::Value::Object(m));
        }
    } else {
        let mean = scores.iter().sum::<f64>() / n as f64;
        println!("mean reconstruction error: {mean:.5}");
    }
    if let Some(p) = &a.out {
        let j = json!({
            "model": a.model.display().to_string(),
            "input": a.input.display().to_string(),
            "t": a.t,
            "ddim_steps": steps_done,
            "repeats": a.repeats,
            "seed": a.seed,
            "class_labels": labels,
            "scores": scores,
            "bits_per_dim": bits,
            "kind": kind,
            "auroc": aurocs,
            "note": "score = mean squared error between the DDIM (eta 0) reconstruction from \
                     timestep t and the input, pixels in [-1, 1], averaged over repeats",
        });
        let text = serde_json::to_string_pretty(&j)
            .map_err(|e| Error::Other(format!("cannot encode the report: {e}")))?;
        super::io::write_atomic(p, text.as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
