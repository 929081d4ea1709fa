//! `kakusan interpolate`: between two seeds (spherical interpolation of x_T, then DDIM
//! η = 0, Song et al. 2021 §5.3) or between two images as in the DDPM paper's Fig. 8:
//! both images are diffused to step t with the same noise (eq. 4), mixed linearly in x_t
//! space, and the mix is denoised from t.

use std::path::{Path, PathBuf};

use crate::diffusion::interpolate as interp;
use crate::diffusion::sampler::{SampleSettings, SamplingRun};
use crate::diffusion::schedule::Sampler;
use crate::error::{Error, Result};
use crate::gpu::{block_on, GpuContext};
use crate::model::Model;

use super::{io, GuidanceArgs, SamplerArgs, SamplerName};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum InterpolationSampler {
    /// DDIM, η = 0 (deterministic).
    Ddim,
    /// Ancestral DDPM steps (the paper's Fig. 8; stochastic, seeded by --seed).
    Ddpm,
}

#[derive(clap::Args, Debug)]
pub struct InterpolateArgs {
    /// Model folder (diffusers layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Two seeds A,B: slerp between their x_T (the noise `sample --seed` starts from, one
    /// image), then DDIM η = 0 for every frame.
    #[arg(long)]
    pub seeds: Option<String>,
    /// Two images A.png,B.png of the model's size: both are noised to --t with the same noise,
    /// mixed (1 − λ)·x_t^A + λ·x_t^B and denoised (DDPM paper, Fig. 8).
    #[arg(long)]
    pub images: Option<String>,
    /// With --images: the timestep to noise to (the nearest step of the sampler's grid at or
    /// below it is used).
    #[arg(long, default_value_t = 500)]
    pub t: usize,
    /// With --images: how to denoise (--seeds always uses DDIM η = 0).
    #[arg(long, value_enum, default_value = "ddim")]
    pub sampler: InterpolationSampler,
    /// Number of frames, both ends included (λ = 0, 1/(K−1), …, 1).
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// Denoising steps, DDIM's η (with --images; --seeds needs η = 0), guidance and the
    /// scheduler overrides, as for `sample`.
    #[command(flatten)]
    pub sampling: SamplerArgs,
    /// With --images: seed of the shared noise (and of DDPM's or DDIM η > 0's step noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Class of every frame (class-conditional models) [default: 0, as `sample -n 1`].
    #[arg(long)]
    pub class_label: Option<u32>,
    #[command(flatten)]
    pub guidance_options: GuidanceArgs,
    /// Where to write the strip of frames (PNG, one row).
    #[arg(long, default_value = "interpolation.png")]
    pub out: PathBuf,
    /// Also write the frames as safetensors (tensor `sample`, [K,C,H,W], model space).
    #[arg(long)]
    pub out_tensor: Option<PathBuf>,
}

fn pair<'a>(flag: &str, v: &'a str) -> Result<(&'a str, &'a str)> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    match parts[..] {
        [a, b] if !a.is_empty() && !b.is_empty() => Ok((a, b)),
        _ => Err(Error::Other(format!(
            "--{flag} needs exactly two values separated by a comma (got `{v}`)"
        ))),
    }
}

/// Reads a PNG as model-space [-1, 1] values, [C, H, W] with the model's channels (grey
/// from RGB by luma, RGB from grey by repetition; alpha dropped). The size must match.
fn read_image(path: &Path, c: usize, h: usize, w: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::file(path.display(), format!("cannot read: {e}")))?;
    let bad = |m: String| Error::file(path.display(), m);
    let mut dec = png::Decoder::new(std::io::Cursor::new(&bytes[..]));
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec
        .read_info()
        .map_err(|e| bad(format!("not a readable PNG: {e}")))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("PNG too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("not a readable PNG: {e}")))?;
    let (ih, iw) = (info.height as usize, info.width as usize);
    if (ih, iw) != (h, w) {
        return Err(bad(format!(
            "the image is {iw}×{ih} pixels but the model samples {w}×{h}"
        )));
    }
    let (stride, ic) = match info.color_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        png::ColorType::Indexed => return Err(bad("palette PNG was not expanded".into())),
    };
    let mut out = vec![0f32; c * h * w];
    for y in 0..h {
        let row = &buf[y * info.line_size..];
        for x in 0..w {
            let px = &row[x * stride..x * stride + ic];
            for ch in 0..c {
                let v = match (ic, c) {
                    (1, _) => px[0],
                    (3, 1) => crate::data::image::luma(px[0], px[1], px[2]),
                    (3, _) => px[ch.min(2)],
                    _ => px[0],
                };
                out[(ch * h + y) * w + x] = v as f32 / 127.5 - 1.0;
            }
        }
    }
    Ok(out)
}

fn settings(
    a: &InterpolateArgs,
    sampler: Sampler,
    steps: usize,
    batch: usize,
    seed: u64,
) -> SampleSettings {
    SampleSettings {
        sampler,
        steps,
        seed,
        batch,
        class_labels: None,
        guidance: a.sampling.guidance,
    }
}

/// x_T of `sample --seed s -n 1` for each seed (shared with the page).
fn seed_noise(ctx: &GpuContext, model: &Model, seeds: &[u64]) -> Result<Vec<Vec<f32>>> {
    block_on(interp::seed_noise(
        ctx,
        &model.config,
        &model.weights,
        &model.scheduler,
        seeds,
    ))
}

pub fn interpolate(a: InterpolateArgs) -> Result<()> {
    if a.frames < 2 {
        return Err(Error::Other(format!(
            "--frames must be at least 2 (the two ends), got {}",
            a.frames
        )));
    }
    enum Ends {
        Seeds(u64, u64),
        Images(PathBuf, PathBuf),
    }
    let ends = match (&a.seeds, &a.images) {
        (Some(s), None) => {
            let (x, y) = pair("seeds", s)?;
            let parse = |v: &str| {
                v.parse::<u64>().map_err(|_| {
                    Error::Other(format!("--seeds: `{v}` is not a non-negative integer"))
                })
            };
            Ends::Seeds(parse(x)?, parse(y)?)
        }
        (None, Some(i)) => {
            let (x, y) = pair("images", i)?;
            Ends::Images(PathBuf::from(x), PathBuf::from(y))
        }
        _ => {
            return Err(Error::Other(
                "give exactly one of --seeds A,B or --images A.png,B.png".into(),
            ))
        }
    };
    let options = a.guidance_options.options()?;
    if matches!(ends, Ends::Seeds(..)) && a.sampling.eta != 0.0 {
        return Err(Error::Other(format!(
            "--seeds interpolates deterministic DDIM paths: --eta must be 0 (got {})",
            a.sampling.eta
        )));
    }
    let mut model = super::load(&a.model)?;
    super::override_scheduler(&mut model.scheduler, a.sampling.clip_sample, None, None)?;
    let t_train = model.scheduler.num_train_timesteps;
    let k = a.frames;
    let name = match (&ends, a.sampler) {
        (Ends::Seeds(..), _) | (_, InterpolationSampler::Ddim) => SamplerName::Ddim,
        (_, InterpolationSampler::Ddpm) => SamplerName::Ddpm,
    };
    let (sampler, steps) = a.sampling.sampler(name, t_train);
    if let Ends::Images(..) = ends {
        if a.t >= t_train {
            return Err(Error::Other(format!(
                "--t {} must be below num_train_timesteps = {t_train}",
                a.t
            )));
        }
    }
    let ctx = super::gpu()?;
    let labels = model
        .config
        .num_class_embeds
        .map(|_| vec![a.class_label.unwrap_or(0); k]);
    if a.class_label.is_some() && labels.is_none() {
        return Err(Error::config(
            "--class-label needs a class-conditional model (num_class_embeds in config.json)",
        ));
    }
    let (x_start, start_index, mut run) = match &ends {
        Ends::Seeds(sa, sb) => {
            let noise = seed_noise(&ctx, &model, &[*sa, *sb])?;
            let frames = interp::seed_frames(&noise[0], &noise[1], k);
            let mut s = settings(&a, sampler, steps, k, 0);
            s.class_labels = labels;
            let run = SamplingRun::new(&ctx, &model.config, &model.weights, &model.scheduler, s)?;
            (frames, 0, run)
        }
        Ends::Images(pa, pb) => {
            let mut s = settings(&a, sampler, steps, k, a.seed);
            s.class_labels = labels;
            let run = SamplingRun::new(&ctx, &model.config, &model.weights, &model.scheduler, s)?;
            let [_, c, h, w] = crate::ops::elementwise::nchw(run.x_t(), "sample")?;
            let xa = read_image(pa, c, h, w)?;
            let xb = read_image(pb, c, h, w)?;
            // Start at the first step of the grid at or below --t.
            let index = interp::start_index(run.timesteps(), a.t).map_err(|_| {
                Error::Other(format!(
                    "no step of this {steps}-step schedule is at or below --t {}",
                    a.t
                ))
            })?;
            let z = &seed_noise(&ctx, &model, &[a.seed])?[0];
            // The same z for both images (eq. 4), mixed in x_t space (Fig. 8).
            let (frames, _, t) =
                interp::image_start(&model.scheduler, run.timesteps(), a.t, &xa, &xb, z, k)?;
            eprintln!("noised both images to t = {t}; denoising from step {index}");
            (frames, index, run)
        }
    };
    run.set_guidance_options(&ctx, options)?;
    run.set_use_clipped_model_output(a.sampling.use_clipped_model_output)?;
    run.set_state(&ctx, start_index, &x_start)?;
    while run.step(&ctx)?.is_some() {}
    let data = block_on(ctx.read(run.x_t()))?;
    if data.iter().any(|v| !v.is_finite()) {
        return Err(Error::Other(
            "the frames contain NaN or Inf: the model or its weights are broken".into(),
        ));
    }
    let shape = run.x_t().shape.clone();
    io::write_grid_png_cols(&a.out, &data, &shape, k)?;
    if let Some(p) = &a.out_tensor {
        io::write_tensor(p, "sample", &data, &shape)?;
    }
    eprintln!("{k} frames → {}", a.out.display());
    Ok(())
}
