//! Image folders: PNG and JPEG files. Subfolders of PATH are the classes (sorted by name;
//! each searched recursively); with no subfolders, the files in PATH are one unlabeled
//! class. Files without an image extension (.png, .jpg, .jpeg; any case) are ignored; an
//! image that fails to decode is skipped and reported, never fatal.

use super::{image::Planar, Builder};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .is_some_and(|e| e == "png" || e == "jpg" || e == "jpeg")
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Sorted (subdirectories, image files) directly in `dir`, hidden entries left out.
fn list(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::file(dir.display(), e))?;
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    for e in rd {
        let p = e.map_err(|e| Error::file(dir.display(), e))?.path();
        if is_hidden(&p) {
            continue;
        }
        if p.is_dir() {
            dirs.push(p);
        } else if is_image_name(&p) {
            files.push(p);
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

/// Every image file under `dir`, recursively, in sorted order.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let (dirs, files) = list(dir)?;
    out.extend(files);
    for d in dirs {
        walk(&d, out)?;
    }
    Ok(())
}

/// The largest decoded image accepted (256 MiB, e.g. 8192×8192 RGBA): a corrupt or hostile
/// header can claim up to 2³¹×2³¹ pixels, and a training image is resized to the model's
/// few dozen pixels anyway.
const MAX_DECODED_BYTES: usize = 1 << 28;

/// Decodes a PNG or JPEG (chosen by content, not extension) to grey or RGB planes.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Planar, String> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes)
    } else if bytes.starts_with(&[0xff, 0xd8]) {
        decode_jpeg(bytes)
    } else {
        Err("neither a PNG nor a JPEG file".into())
    }
}

fn decode_png(bytes: &[u8]) -> std::result::Result<Planar, String> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    // Palette -> RGB(A), low bit depths -> 8 bits, 16 bits -> 8 bits.
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(|e| format!("PNG: {e}"))?;
    let size = reader.output_buffer_size().ok_or("PNG: image too large")?;
    if size > MAX_DECODED_BYTES {
        let i = reader.info();
        return Err(format!(
            "PNG: {}x{} is too large to decode ({size} bytes; at most {MAX_DECODED_BYTES})",
            i.width, i.height
        ));
    }
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("PNG: {e}"))?;
    let (h, w) = (info.height as usize, info.width as usize);
    let (stride, c) = match info.color_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        png::ColorType::Indexed => return Err("PNG: palette was not expanded".into()),
    };
    if h == 0 || w == 0 {
        return Err("PNG: empty image".into());
    }
    // Rows may be padded to line_size; repack to tight rows.
    let mut tight = Vec::with_capacity(h * w * stride);
    for y in 0..h {
        let row = &buf[y * info.line_size..y * info.line_size + w * stride];
        tight.extend_from_slice(row);
    }
    Ok(Planar::from_interleaved(&tight, h, w, stride, c))
}

fn decode_jpeg(bytes: &[u8]) -> std::result::Result<Planar, String> {
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.set_max_decoding_buffer_size(MAX_DECODED_BYTES);
    // The decoder sizes its per-component buffers from the header before that limit is
    // checked (a 65535x65535 header aborted on a 4 GB allocation), so check the header.
    dec.read_info().map_err(|e| format!("JPEG: {e}"))?;
    if let Some(i) = dec.info() {
        if i.width as usize * i.height as usize * 4 > MAX_DECODED_BYTES {
            return Err(format!(
                "JPEG: {}x{} is too large to decode (at most {} pixels)",
                i.width,
                i.height,
                MAX_DECODED_BYTES / 4
            ));
        }
        // Entropy-coded data takes at least one bit per 8x8 block of the first component,
        // i.e. a byte per 512 pixels (lossless JPEG: a bit per pixel); a file far shorter
        // than that is truncated, and the decoder would fill the missing data in (a 192-byte
        // lossless JPEG claiming 15624x2048 took 6 s of CPU to decode, found by fuzzing).
        // Half of that floor, so no real file is refused.
        let pixels = i.width as usize * i.height as usize;
        if bytes.len() < pixels / 1024 {
            return Err(format!(
                "JPEG: {}x{} cannot be coded in {} bytes: the file is truncated or corrupt",
                i.width,
                i.height,
                bytes.len()
            ));
        }
    }
    let pixels = dec.decode().map_err(|e| format!("JPEG: {e}"))?;
    let info = dec.info().ok_or("JPEG: no image information")?;
    let (h, w) = (info.height as usize, info.width as usize);
    let (stride, c) = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => (1, 1),
        jpeg_decoder::PixelFormat::RGB24 => (3, 3),
        other => return Err(format!("JPEG: pixel format {other:?} is not supported")),
    };
    if h == 0 || w == 0 || pixels.len() != h * w * stride {
        return Err("JPEG: decoded size does not match the header".into());
    }
    Ok(Planar::from_interleaved(&pixels, h, w, stride, c))
}

/// Loads the folder `dir` into `b`; returns the class names (`None`: unlabeled).
pub(crate) fn load(dir: &Path, b: &mut Builder) -> Result<Option<Vec<String>>> {
    let (dirs, loose) = list(dir)?;
    let mut classes: Vec<(String, Vec<PathBuf>)> = Vec::new();
    let labeled = !dirs.is_empty();
    if labeled {
        for d in &dirs {
            let mut files = Vec::new();
            walk(d, &mut files)?;
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            classes.push((name, files));
        }
        for f in loose {
            b.skip(
                f,
                "image directly in the dataset folder while class subfolders exist",
            );
        }
    } else {
        classes.push((String::new(), loose));
    }
    for (label, (_, files)) in classes.iter().enumerate() {
        for f in files {
            let decoded = std::fs::read(f)
                .map_err(|e| e.to_string())
                .and_then(|bytes| decode(&bytes));
            match decoded {
                Ok(img) => b.push(&img, label as u32),
                Err(msg) => b.skip(f.clone(), msg),
            }
        }
    }
    Ok(labeled.then(|| classes.into_iter().map(|(n, _)| n).collect()))
}
