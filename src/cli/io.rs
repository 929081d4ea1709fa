//! Files the CLI reads and writes: safetensors inputs/outputs and PNG grids.
//! Every failure names the file and what was wrong with it.

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};

pub struct InitNoise {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub class_labels: Option<Vec<u32>>,
}

pub struct PredictInput {
    pub shape: Vec<usize>,
    pub sample: Vec<f32>,
    pub timesteps: Vec<f32>,
    pub class_labels: Option<Vec<u32>>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::file(path.display(), format!("cannot read: {e}")))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| Error::file(path.display(), format!("not a valid safetensors file: {e}")))
}

fn tensor<'a>(path: &Path, st: &SafeTensors<'a>, name: &str) -> Result<Option<TensorView<'a>>> {
    match st.tensor(name) {
        Ok(t) => Ok(Some(t)),
        Err(safetensors::SafeTensorError::TensorNotFound(_)) => Ok(None),
        Err(e) => Err(Error::file(path.display(), format!("tensor {name}: {e}"))),
    }
}

fn require<'a>(
    path: &Path,
    st: &SafeTensors<'a>,
    name: &str,
    what: &str,
) -> Result<TensorView<'a>> {
    tensor(path, st, name)?.ok_or_else(|| {
        let names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        Error::file(
            path.display(),
            format!(
                "no tensor `{name}` ({what}); the file has: {}",
                names.join(", ")
            ),
        )
    })
}

fn f32s(path: &Path, name: &str, t: &TensorView) -> Result<Vec<f32>> {
    let b = t.data();
    match t.dtype() {
        Dtype::F32 => Ok(b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        Dtype::F64 => Ok(b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect()),
        Dtype::F16 => Ok(b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        Dtype::BF16 => Ok(b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        Dtype::I64 => Ok(b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect()),
        Dtype::I32 => Ok(b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect()),
        d => Err(Error::file(
            path.display(),
            format!("tensor {name} has dtype {d:?}; expected a float or int type"),
        )),
    }
}

/// NaN or Inf in an input tensor is an error naming the tensor (the network would only
/// pass it through to every output value).
fn finite(path: &Path, name: &str, v: Vec<f32>) -> Result<Vec<f32>> {
    let bad = v.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        return Err(Error::file(
            path.display(),
            format!(
                "tensor {name} holds {bad} NaN or Inf values (of {})",
                v.len()
            ),
        ));
    }
    Ok(v)
}

fn labels(path: &Path, name: &str, t: &TensorView) -> Result<Vec<u32>> {
    let b = t.data();
    let v: Vec<i64> = match t.dtype() {
        Dtype::I64 => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        Dtype::I32 => b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        d => {
            return Err(Error::file(
                path.display(),
                format!("tensor {name} has dtype {d:?}; expected int64"),
            ))
        }
    };
    v.into_iter()
        .map(|l| {
            u32::try_from(l).map_err(|_| {
                Error::file(
                    path.display(),
                    format!("{name}: negative or huge label {l}"),
                )
            })
        })
        .collect()
}

fn expect_rank(path: &Path, name: &str, t: &TensorView, rank: usize) -> Result<()> {
    if t.shape().len() != rank {
        return Err(Error::file(
            path.display(),
            format!(
                "tensor {name} has shape {:?}; expected {rank} dimensions",
                t.shape()
            ),
        ));
    }
    Ok(())
}

fn batch_labels(path: &Path, st: &SafeTensors, n: usize) -> Result<Option<Vec<u32>>> {
    match tensor(path, st, "class_labels")? {
        Some(t) => {
            expect_rank(path, "class_labels", &t, 1)?;
            let l = labels(path, "class_labels", &t)?;
            if l.len() != n {
                return Err(Error::file(
                    path.display(),
                    format!("class_labels has {} entries for {n} samples", l.len()),
                ));
            }
            Ok(Some(l))
        }
        None => Ok(None),
    }
}

pub fn read_init_noise(path: &Path) -> Result<InitNoise> {
    init_noise_from_bytes(path, &read(path)?)
}

/// [`read_init_noise`] on the file's bytes (`path` only names the file in errors).
pub fn init_noise_from_bytes(path: &Path, bytes: &[u8]) -> Result<InitNoise> {
    let st = parse(path, bytes)?;
    let t = require(path, &st, "init_noise", "x_T, [N,C,H,W]")?;
    expect_rank(path, "init_noise", &t, 4)?;
    let shape = t.shape().to_vec();
    let data = finite(path, "init_noise", f32s(path, "init_noise", &t)?)?;
    let class_labels = batch_labels(path, &st, shape[0])?;
    Ok(InitNoise {
        shape,
        data,
        class_labels,
    })
}

pub fn read_predict_input(path: &Path) -> Result<PredictInput> {
    predict_input_from_bytes(path, &read(path)?)
}

/// [`read_predict_input`] on the file's bytes (`path` only names the file in errors).
pub fn predict_input_from_bytes(path: &Path, bytes: &[u8]) -> Result<PredictInput> {
    let st = parse(path, bytes)?;
    let s = require(path, &st, "sample", "the noisy input, [N,C,H,W] f32")?;
    expect_rank(path, "sample", &s, 4)?;
    let shape = s.shape().to_vec();
    let sample = finite(path, "sample", f32s(path, "sample", &s)?)?;
    let t = require(path, &st, "timesteps", "one timestep per sample, [N]")?;
    let timesteps = finite(path, "timesteps", f32s(path, "timesteps", &t)?)?;
    let timesteps = match timesteps.len() {
        1 => vec![timesteps[0]; shape[0]],
        n if n == shape[0] => timesteps,
        n => {
            return Err(Error::file(
                path.display(),
                format!("timesteps has {n} entries for {} samples", shape[0]),
            ))
        }
    };
    let class_labels = batch_labels(path, &st, shape[0])?;
    Ok(PredictInput {
        shape,
        sample,
        timesteps,
        class_labels,
    })
}

/// Write one f32 tensor as safetensors, atomically (temporary file, then rename).
pub fn write_tensor(path: &Path, name: &str, data: &[f32], shape: &[usize]) -> Result<()> {
    write_tensor_with_metadata(path, name, data, shape, None)
}

/// [`write_tensor`] with string metadata in the file's header.
pub fn write_tensor_with_metadata(
    path: &Path,
    name: &str,
    data: &[f32],
    shape: &[usize],
    metadata: Option<Metadata>,
) -> Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, shape.to_vec(), &bytes)
        .map_err(|e| Error::file(path.display(), format!("cannot encode: {e}")))?;
    let out = safetensors::serialize([(name, view)], metadata)
        .map_err(|e| Error::file(path.display(), format!("cannot encode: {e}")))?;
    write_atomic(path, &out)
}

/// Write a file so that a kill at any moment leaves either the old or the new file: write
/// a temporary file beside it, flush it to disk, then rename it over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_all_atomic(&[(path, bytes)])
}

/// The temporary name a file is written under before it is renamed into place.
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// Write several files, each to a temporary name flushed to disk first; only when all are
/// written are they renamed into place, in the given order (so the last file appears
/// last). A failed write (disk full, read-only folder) removes the temporary files and
/// leaves every old file untouched; a kill leaves each file either old or new.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<()> {
    use std::io::Write;
    let temps: Vec<_> = files.iter().map(|(p, _)| temp_path(p)).collect();
    let remove_temps = || {
        for t in &temps {
            let _ = std::fs::remove_file(t);
        }
    };
    for ((path, bytes), tmp) in files.iter().zip(&temps) {
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            remove_temps();
            return Err(Error::file(
                path.display(),
                format!("cannot write: {e} (the previous file, if any, is kept)"),
            ));
        }
    }
    for ((path, _), tmp) in files.iter().zip(&temps) {
        if let Err(e) = std::fs::rename(tmp, path) {
            remove_temps();
            return Err(Error::file(path.display(), format!("cannot write: {e}")));
        }
    }
    Ok(())
}

/// Encode 8-bit pixels (1 or 3 channels, interleaved) as PNG and write them atomically.
fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    channels: usize,
    pixels: &[u8],
) -> Result<()> {
    let color = if channels == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    };
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .map_err(|e| Error::file(path.display(), format!("cannot encode PNG: {e}")))?;
        writer
            .write_image_data(pixels)
            .map_err(|e| Error::file(path.display(), format!("cannot encode PNG: {e}")))?;
    }
    write_atomic(path, &bytes)
}

/// An RGB image (interleaved) as PNG.
pub fn write_png_rgb(path: &Path, width: usize, height: usize, pixels: &[u8]) -> Result<()> {
    write_png(path, width, height, 3, pixels)
}

/// Map model space [-1, 1] to 8-bit pixels like diffusers' pipelines: (x/2 + 0.5) clamped.
fn to_u8(v: f32) -> u8 {
    ((v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Lay N images out in a near-square grid with a 2-pixel gap, and write it as PNG.
pub fn write_grid_png(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    let n = shape.first().copied().unwrap_or(1);
    write_grid_png_cols(
        path,
        data,
        shape,
        (n as f64).sqrt().ceil().max(1.0) as usize,
    )
}

/// Lay N images out in rows of `cols` with a 2-pixel gap, and write it as PNG.
pub fn write_grid_png_cols(path: &Path, data: &[f32], shape: &[usize], cols: usize) -> Result<()> {
    let [n, c, h, w] = match shape {
        [a, b, c, d] => [*a, *b, *c, *d],
        _ => {
            return Err(Error::shape(format!(
                "image grid: expected [N,C,H,W], got {shape:?}"
            )))
        }
    };
    match c {
        1 | 3 => {}
        _ => {
            return Err(Error::Other(format!(
                "cannot draw {c}-channel samples as an image (1 or 3 channels); use --out-tensor"
            )))
        }
    };
    let cols = cols.max(1);
    let rows = n.div_ceil(cols);
    let gap = 2;
    let gw = cols * w + (cols + 1) * gap;
    let gh = rows * h + (rows + 1) * gap;
    let mut pixels = vec![0u8; gw * gh * c];
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        let (y0, x0) = (gap + r * (h + gap), gap + col * (w + gap));
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let v = data[((i * c + ch) * h + y) * w + x];
                    pixels[((y0 + y) * gw + x0 + x) * c + ch] = to_u8(v);
                }
            }
        }
    }
    write_png(path, gw, gh, c, &pixels)
}

/// A named f32 tensor of `rank` dimensions (float or int dtypes converted), for the toolbox
/// commands (`nll`, `anomaly`, `inpaint`): (shape, values).
pub fn read_named_tensor(
    path: &Path,
    name: &str,
    what: &str,
    rank: usize,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let (shape, values, _) = read_named_tensor_and_metadata(path, name, what, rank)?;
    Ok((shape, values))
}

/// A safetensors header's string metadata.
pub type Metadata = std::collections::HashMap<String, String>;

/// [`read_named_tensor`] plus the file header's string metadata, from one read of the file.
pub fn read_named_tensor_and_metadata(
    path: &Path,
    name: &str,
    what: &str,
    rank: usize,
) -> Result<(Vec<usize>, Vec<f32>, Option<Metadata>)> {
    let bytes = read(path)?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(path.display(), format!("not a valid safetensors file: {e}")))?;
    let st = parse(path, &bytes)?;
    let t = require(path, &st, name, what)?;
    expect_rank(path, name, &t, rank)?;
    Ok((
        t.shape().to_vec(),
        f32s(path, name, &t)?,
        header.metadata().clone(),
    ))
}

/// The optional `class_labels` [N] (int64) of a safetensors file.
pub fn read_class_labels(path: &Path, n: usize) -> Result<Option<Vec<u32>>> {
    let bytes = read(path)?;
    let st = parse(path, &bytes)?;
    batch_labels(path, &st, n)
}

/// Whether a safetensors file holds a tensor called `name`.
pub fn has_tensor(path: &Path, name: &str) -> Result<bool> {
    let bytes = read(path)?;
    let st = parse(path, &bytes)?;
    Ok(tensor(path, &st, name)?.is_some())
}
