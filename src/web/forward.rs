//! The forward-process explorer's data: shipped digits, uploaded images, and
//! x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε for a fixed ε (on the CPU: one small image, no GPU needed,
//! so this part works even without WebGPU).

use wasm_bindgen::{Clamped, JsCast};
use wasm_bindgen_futures::JsFuture;

use crate::diffusion::schedule::{BetaSchedule, Schedule, SchedulerConfig};
use crate::ops::noise::gaussian_noise_cpu;

/// One MNIST digit of each class 0–9 (28×28 bytes each, from assets/mnist/mnist10k.safetensors,
/// the first image of each class). MNIST: Yann LeCun and Corinna Cortes, CC BY-SA 3.0.
static DIGITS: &[u8; 7840] = include_bytes!("../../assets/web/digits.u8");

/// An image in [-1, 1], (C, H, W).
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

pub fn digit(k: usize) -> Image {
    let k = k.min(9);
    Image {
        c: 1,
        h: 28,
        w: 28,
        data: DIGITS[k * 784..(k + 1) * 784]
            .iter()
            .map(|&b| b as f32 / 127.5 - 1.0)
            .collect(),
    }
}

/// DDPM's linear schedule (β from 1e-4 to 0.02, T = 1000) and the cosine schedule of Nichol
/// & Dhariwal (2021), as diffusers computes them.
pub fn schedules() -> (Schedule, Schedule) {
    let lin = SchedulerConfig::default();
    let cos = SchedulerConfig {
        beta_schedule: BetaSchedule::SquaredcosCapV2,
        ..SchedulerConfig::default()
    };
    (
        Schedule::new(&lin).expect("default schedule is valid"),
        Schedule::new(&cos).expect("cosine schedule is valid"),
    )
}

/// ε ~ N(0, I) for an image of `n` values: the same Philox stream the GPU sampler uses.
pub fn noise(seed: u64, n: usize) -> Vec<f32> {
    gaussian_noise_cpu(seed, 0, n)
}

/// x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (Ho et al. 2020, eq. 4).
pub fn q_sample(s: &Schedule, t: usize, x0: &[f32], eps: &[f32]) -> Vec<f32> {
    let (a, b) = s.add_noise_coefficients(t);
    x0.iter()
        .zip(eps)
        .map(|(&x, &e)| (a * x as f64 + b * e as f64) as f32)
        .collect()
}

/// Draw images side by side (1-pixel-per-value, a 4-pixel gap) onto a 2-D canvas whose CSS
/// scales it up with `image-rendering: pixelated`.
pub fn draw(canvas: &web_sys::HtmlCanvasElement, shape: &Image, images: &[&[f32]]) {
    let gap = 4;
    let (c, h, w) = (shape.c, shape.h, shape.w);
    let width = images.len() * w + (images.len().saturating_sub(1)) * gap;
    canvas.set_width(width as u32);
    canvas.set_height(h as u32);
    let Some(ctx) = canvas
        .get_context("2d")
        .ok()
        .flatten()
        .and_then(|c| c.dyn_into::<web_sys::CanvasRenderingContext2d>().ok())
    else {
        return;
    };
    let mut rgba = vec![0u8; width * h * 4];
    for p in rgba.chunks_mut(4) {
        p.copy_from_slice(&[24, 26, 31, 255]);
    }
    let to_u8 = |v: f32| ((v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
    for (k, img) in images.iter().enumerate() {
        let x_off = k * (w + gap);
        for y in 0..h {
            for x in 0..w {
                let o = (y * width + x_off + x) * 4;
                for ch in 0..3 {
                    let src = if c == 3 { ch } else { 0 };
                    rgba[o + ch] = to_u8(img[(src * h + y) * w + x]);
                }
            }
        }
    }
    if let Ok(data) =
        web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), width as u32, h as u32)
    {
        let _ = ctx.put_image_data(&data, 0.0, 0.0);
    }
}

/// Decode an uploaded image, centre-crop it to a square and scale it to 64×64 (gray if all
/// pixels are gray, else RGB), values in [-1, 1].
pub async fn decode_upload(file: &web_sys::File) -> Result<Image, String> {
    const S: usize = 64;
    let url = web_sys::Url::create_object_url_with_blob(file)
        .map_err(|_| format!("{}: could not be opened", file.name()))?;
    let img = web_sys::HtmlImageElement::new().map_err(|_| "no <img> support".to_string())?;
    img.set_src(&url);
    let decoded = JsFuture::from(img.decode()).await;
    let _ = web_sys::Url::revoke_object_url(&url);
    decoded.map_err(|_| {
        format!(
            "{}: not an image this browser can decode (try PNG or JPEG)",
            file.name()
        )
    })?;
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let canvas: web_sys::HtmlCanvasElement = doc
        .create_element("canvas")
        .map_err(|_| "no canvas")?
        .unchecked_into();
    canvas.set_width(S as u32);
    canvas.set_height(S as u32);
    let ctx: web_sys::CanvasRenderingContext2d = canvas
        .get_context("2d")
        .ok()
        .flatten()
        .ok_or("no 2-D canvas")?
        .unchecked_into();
    let (iw, ih) = (img.natural_width() as f64, img.natural_height() as f64);
    if iw < 1.0 || ih < 1.0 {
        return Err(format!("{}: the image is empty", file.name()));
    }
    let side = iw.min(ih);
    ctx.draw_image_with_html_image_element_and_sw_and_sh_and_dx_and_dy_and_dw_and_dh(
        &img,
        (iw - side) / 2.0,
        (ih - side) / 2.0,
        side,
        side,
        0.0,
        0.0,
        S as f64,
        S as f64,
    )
    .map_err(|_| "could not draw the image")?;
    let px = ctx
        .get_image_data(0.0, 0.0, S as f64, S as f64)
        .map_err(|_| "could not read the image's pixels")?
        .data()
        .0;
    let gray = px
        .chunks(4)
        .all(|p| p[0].abs_diff(p[1]) < 3 && p[1].abs_diff(p[2]) < 3);
    let c = if gray { 1 } else { 3 };
    let mut data = vec![0f32; c * S * S];
    for i in 0..S * S {
        for ch in 0..c {
            data[ch * S * S + i] = px[i * 4 + ch] as f32 / 127.5 - 1.0;
        }
    }
    Ok(Image {
        c,
        h: S,
        w: S,
        data,
    })
}
