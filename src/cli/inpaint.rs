//! `kakusan inpaint`: RePaint (Lugmayr et al. 2022) with the engine's
//! [`crate::diffusion::repaint`]; reads PNGs or a safetensors file, writes a PNG grid (masked
//! inputs above, results below) and optionally the result tensor.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::diffusion::repaint::{Move, RepaintRun, RepaintSettings};
use crate::error::{Error, Result};
use crate::gpu::block_on;
use crate::model::config::UNetConfig;

#[derive(clap::Args, Debug)]
pub struct InpaintArgs {
    /// Model folder (diffusers layout).
    #[arg(long)]
    pub model: PathBuf,
    /// The image: a PNG at the model's size, or safetensors with `image` [N,C,H,W] in
    /// [-1, 1] (and optionally `mask` [N,1,H,W], 1 = keep, 0 = fill, and `class_labels` [N]).
    #[arg(long)]
    pub image: PathBuf,
    /// The mask as a PNG at the model's size: white (≥ 128) = keep, black = fill. Required
    /// unless the safetensors image file holds `mask`; applies to every image.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Inference timesteps [default: num_train_timesteps, as RePaint; fewer is faster].
    #[arg(long)]
    pub steps: Option<usize>,
    /// RePaint's jump length j: levels to go back up at each jump.
    #[arg(long, default_value_t = 10)]
    pub jump_length: usize,
    /// RePaint's r: passes through each jump point (1 = no resampling).
    #[arg(long, default_value_t = 10)]
    pub jump_n_sample: usize,
    /// Class of every image (class-conditional models) [default: the file's `class_labels`,
    /// else the null class].
    #[arg(long)]
    pub class_label: Option<u32>,
    /// Classifier-free guidance scale w (class-conditional models).
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the grid (PNG): masked inputs on the first row, results on the second.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the results as safetensors (tensor `sample`, [N,C,H,W]).
    #[arg(long)]
    pub out_tensor: Option<PathBuf>,
}

fn is_png(path: &Path) -> Result<bool> {
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::file(path.display(), format!("cannot read: {e}")))?;
    let n = std::io::Read::read(&mut f, &mut head)
        .map_err(|e| Error::file(path.display(), format!("cannot read: {e}")))?;
    Ok(n == 8 && head == *b"\x89PNG\r\n\x1a\n")
}

/// A PNG as (channels, H, W, interleaved 8-bit pixels); alpha dropped, palettes expanded.
fn read_png(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::file(path.display(), format!("cannot read: {e}")))?;
    let bad = |e: String| Error::file(path.display(), format!("not a readable PNG: {e}"));
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(|e| bad(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    let (h, w) = (info.height as usize, info.width as usize);
    let (stride, c) = match info.color_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        png::ColorType::Indexed => return Err(bad("palette was not expanded".into())),
    };
    let mut px = Vec::with_capacity(h * w * c);
    for y in 0..h {
        let row = &buf[y * info.line_size..y * info.line_size + w * stride];
        for p in row.chunks_exact(stride) {
            px.extend_from_slice(&p[..c]);
        }
    }
    Ok((c, h, w, px))
}

/// A PNG converted to the model's channels, (1, C, H, W) in [-1, 1]; its size must be the
/// model's (a mask must line up pixel for pixel, so nothing is resized).
fn png_image(path: &Path, config: &UNetConfig) -> Result<Vec<f32>> {
    let (c, h, w, px) = read_png(path)?;
    let [mh, mw] = config.sample_size;
    let mc = config.in_channels;
    if (h, w) != (mh, mw) {
        return Err(Error::file(
            path.display(),
            format!("the image is {w}x{h} but this model takes {mw}x{mh} (not resized)"),
        ));
    }
    if mc != 1 && mc != 3 {
        return Err(Error::file(
            path.display(),
            format!("a PNG needs a 1- or 3-channel model; this one has {mc}"),
        ));
    }
    let mut out = vec![0.0f32; mc * h * w];
    for i in 0..h * w {
        let p = &px[i * c..(i + 1) * c];
        for ch in 0..mc {
            let v = match (c, mc) {
                (1, _) => p[0],
                (_, 1) => crate::data::image::luma(p[0], p[1], p[2]),
                _ => p[ch],
            };
            out[ch * h * w + i] = v as f32 / 127.5 - 1.0;
        }
    }
    Ok(out)
}

/// A mask PNG at the model's size: luma ≥ 128 → 1 (keep), else 0 (fill). (1, 1, H, W).
fn png_mask(path: &Path, config: &UNetConfig) -> Result<Vec<f32>> {
    let (c, h, w, px) = read_png(path)?;
    let [mh, mw] = config.sample_size;
    if (h, w) != (mh, mw) {
        return Err(Error::file(
            path.display(),
            format!("the mask is {w}x{h} but the model's images are {mw}x{mh}"),
        ));
    }
    Ok(px
        .chunks_exact(c)
        .map(|p| {
            let l = if c == 1 {
                p[0]
            } else {
                crate::data::image::luma(p[0], p[1], p[2])
            };
            if l >= 128 {
                1.0
            } else {
                0.0
            }
        })
        .collect())
}

pub fn inpaint(a: InpaintArgs) -> Result<()> {
    let model = super::load(&a.model)?;
    let cfg = &model.config;
    let [h, w] = cfg.sample_size;
    let c = cfg.in_channels;
    let (shape, image, file_mask, file_labels) = if is_png(&a.image)? {
        (vec![1, c, h, w], png_image(&a.image, cfg)?, None, None)
    } else {
        let (shape, image) = super::io::read_named_tensor(
            &a.image,
            "image",
            "the image to inpaint, [N,C,H,W] in [-1, 1]",
            4,
        )?;
        if shape[1..] != [c, h, w] || shape[0] == 0 {
            return Err(Error::file(
                a.image.display(),
                format!("image has shape {shape:?} but this model takes [N, {c}, {h}, {w}]"),
            ));
        }
        let n = shape[0];
        let mask = if super::io::has_tensor(&a.image, "mask")? {
            let (ms, m) = super::io::read_named_tensor(&a.image, "mask", "[N,1,H,W]", 4)?;
            if ms != [n, 1, h, w] {
                return Err(Error::file(
                    a.image.display(),
                    format!("mask has shape {ms:?}; the image needs [{n}, 1, {h}, {w}]"),
                ));
            }
            Some(m)
        } else {
            None
        };
        let labels = super::io::read_class_labels(&a.image, n)?;
        (shape, image, mask, labels)
    };
    let n = shape[0];
    if let Some(i) = image.iter().position(|v| !v.is_finite()) {
        return Err(Error::file(
            a.image.display(),
            format!("the image holds a NaN or Inf at index {i}"),
        ));
    }
    let mask = match (&a.mask, file_mask) {
        (Some(p), None) => {
            let m = png_mask(p, cfg)?;
            (0..n).flat_map(|_| m.iter().copied()).collect()
        }
        (None, Some(m)) => m,
        (Some(_), Some(_)) => {
            return Err(Error::file(
                a.image.display(),
                "holds a `mask` tensor and --mask was given too; use one",
            ))
        }
        (None, None) => {
            return Err(Error::Other(format!(
                "missing mask: give --mask MASK.png, or a `mask` [N,1,H,W] tensor in {}",
                a.image.display()
            )))
        }
    };
    let labels = match cfg.num_class_embeds {
        Some(_) => a.class_label.map(|k| vec![k; n]).or(file_labels),
        None if a.class_label.is_some() => {
            return Err(Error::config(
                "class labels need a class-conditional model (num_class_embeds in config.json)",
            ))
        }
        None => None,
    };
    let steps = a.steps.unwrap_or(model.scheduler.num_train_timesteps);
    let ctx = super::gpu()?;
    let mut run = RepaintRun::new(
        &ctx,
        cfg,
        &model.weights,
        &model.scheduler,
        &image,
        &mask,
        &shape,
        RepaintSettings {
            steps,
            jump_length: a.jump_length,
            jump_n_sample: a.jump_n_sample,
            class_labels: labels,
            guidance: a.guidance,
            seed: a.seed,
        },
    )
    .map_err(|e| match e {
        Error::Shape(m) => Error::file(a.image.display(), m),
        e => e,
    })?;
    let calls = run
        .moves()
        .iter()
        .filter(|m| matches!(m, Move::Down(_)))
        .count();
    let bar = indicatif::ProgressBar::new(run.moves().len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} repaint [{bar:40}] {pos}/{len} moves  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let start = Instant::now();
    while block_on(run.step(&ctx))?.is_some() {
        bar.inc(1);
    }
    bar.finish_and_clear();
    let result = run.result();
    if result.iter().any(|v| !v.is_finite()) {
        return Err(Error::Other(
            "the result contains NaN or Inf: the model or its weights are broken".into(),
        ));
    }
    // Grid: the masked inputs (filled pixels shown as 0, mid grey), then the results.
    let hw = h * w;
    let shown: Vec<f32> = image
        .iter()
        .enumerate()
        .map(|(i, &v)| v * mask[(i / (c * hw)) * hw + i % hw])
        .collect();
    let grid = [shown, result.clone()].concat();
    super::io::write_grid_png_cols(&a.out, &grid, &[2 * n, c, h, w], n)?;
    if let Some(p) = &a.out_tensor {
        super::io::write_tensor(p, "sample", &result, &shape)?;
    }
    eprintln!(
        "{n} images, {steps} steps, {calls} U-Net calls in {:.1} s → {}",
        start.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
