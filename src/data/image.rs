//! Pixel plumbing shared by every loader: a decoded image as planes, channel conversion
//! and resize-then-center-crop to the model's size.
//!
//! The geometry follows diffusers' `train_unconditional.py` preprocessing,
//! `Resize(size, BILINEAR)` + `CenterCrop(size)`: the short side is scaled to the target
//! with an antialiased (area-aware) bilinear filter, as PIL/torchvision do when
//! downsampling, then the middle is cut out.

/// A decoded 8-bit image, planar (C, H, W); `c` is 1 (grey) or 3 (RGB).
#[derive(Clone, Debug, PartialEq)]
pub struct Planar {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
}

impl Planar {
    /// From interleaved (H, W, `stride`) pixels whose first `c` samples are used (so RGBA
    /// and grey+alpha drop their alpha, as PIL's `convert("RGB")` does).
    pub fn from_interleaved(src: &[u8], h: usize, w: usize, stride: usize, c: usize) -> Self {
        let mut data = vec![0u8; c * h * w];
        for ch in 0..c {
            let plane = &mut data[ch * h * w..(ch + 1) * h * w];
            for (p, px) in plane.iter_mut().zip(src.chunks_exact(stride)) {
                *p = px[ch];
            }
        }
        Planar { c, h, w, data }
    }

    fn plane(&self, ch: usize) -> &[u8] {
        &self.data[ch * self.h * self.w..(ch + 1) * self.h * self.w]
    }
}

/// ITU-R BT.601 luma, Y = 0.299 R + 0.587 G + 0.114 B (PIL's `convert("L")`), rounded.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    let y = 0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32;
    y.round().clamp(0.0, 255.0) as u8
}

/// `img` converted to `channels` (1 or 3) and resized + center-cropped to `size` = [H, W],
/// appended to `out` as planar (C, H, W) bytes.
pub fn convert_into(img: &Planar, channels: usize, size: [usize; 2], out: &mut Vec<u8>) {
    let [th, tw] = size;
    match (img.c, channels) {
        (1, 1) | (3, 3) => {
            for ch in 0..img.c {
                resize_crop_plane(img.plane(ch), img.h, img.w, th, tw, out);
            }
        }
        (3, 1) => {
            let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
            let y: Vec<u8> = (0..img.h * img.w).map(|i| luma(r[i], g[i], b[i])).collect();
            resize_crop_plane(&y, img.h, img.w, th, tw, out);
        }
        (1, 3) => {
            // Resize once, then replicate: grey -> RGB is R = G = B = Y.
            let start = out.len();
            resize_crop_plane(img.plane(0), img.h, img.w, th, tw, out);
            let plane = out[start..].to_vec();
            out.extend_from_slice(&plane);
            out.extend_from_slice(&plane);
        }
        (c, ch) => unreachable!("convert_into: {c} -> {ch} channels (callers check 1 or 3)"),
    }
}

/// The size an (h, w) image is resized to before the center crop to (th, tw): the
/// smallest uniform scale that covers the target, i.e. the short side (relative to the
/// target's aspect) lands exactly on the target.
pub fn resized_size(h: usize, w: usize, th: usize, tw: usize) -> (usize, usize) {
    let s = (th as f64 / h as f64).max(tw as f64 / w as f64);
    let rh = ((h as f64 * s).round() as usize).max(th);
    let rw = ((w as f64 * s).round() as usize).max(tw);
    (rh, rw)
}

/// Per output index: first source index and the normalized filter weights.
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

/// Antialiased bilinear (triangle) filter from `in_len` samples to a resized axis of
/// `out_len`, evaluated only at resized indices `offset..offset + count` (the crop window).
/// Pixel centers at i + 0.5; when downsampling the triangle is widened by the scale so
/// every source pixel contributes (area-aware), as PIL's BILINEAR resampling does.
fn taps(in_len: usize, out_len: usize, offset: usize, count: usize) -> Taps {
    let scale = in_len as f64 / out_len as f64;
    let fscale = scale.max(1.0);
    let support = fscale; // triangle support 1, stretched by the downscale factor
    let mut start = Vec::with_capacity(count);
    let mut weights = Vec::with_capacity(count);
    for i in offset..offset + count {
        let center = (i as f64 + 0.5) * scale;
        let lo = ((center - support).floor().max(0.0)) as usize;
        let hi = ((center + support).ceil() as usize).min(in_len);
        let mut w: Vec<f64> = (lo..hi)
            .map(|j| (1.0 - ((j as f64 + 0.5 - center) / fscale).abs()).max(0.0))
            .collect();
        let sum: f64 = w.iter().sum();
        if sum > 0.0 {
            w.iter_mut().for_each(|x| *x /= sum);
        } else {
            // Cannot happen for lo < hi with the ranges above; keep a sane fallback.
            w = vec![1.0];
        }
        start.push(lo.min(in_len - 1));
        weights.push(w.into_iter().map(|x| x as f32).collect());
    }
    Taps { start, weights }
}

/// One (h, w) plane resized to cover (th, tw) and center-cropped, appended to `out`.
pub fn resize_crop_plane(src: &[u8], h: usize, w: usize, th: usize, tw: usize, out: &mut Vec<u8>) {
    let (rh, rw) = resized_size(h, w, th, tw);
    let (top, left) = ((rh - th) / 2, (rw - tw) / 2);
    if rh == h && rw == w {
        // No resampling needed: a pure crop (exact, also keeps identity bit-exact).
        for y in top..top + th {
            out.extend_from_slice(&src[y * w + left..y * w + left + tw]);
        }
        return;
    }
    let tx = taps(w, rw, left, tw);
    let ty = taps(h, rh, top, th);
    // Horizontal pass over every source row: (h, w) -> (h, tw).
    let mut tmp = vec![0f32; h * tw];
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        for x in 0..tw {
            let s = tx.start[x];
            tmp[y * tw + x] = tx.weights[x]
                .iter()
                .zip(&row[s..])
                .map(|(k, &p)| k * p as f32)
                .sum();
        }
    }
    // Vertical pass: (h, tw) -> (th, tw).
    for y in 0..th {
        let s = ty.start[y];
        for x in 0..tw {
            let v: f32 = ty.weights[y]
                .iter()
                .enumerate()
                .map(|(k, wk)| wk * tmp[(s + k) * tw + x])
                .sum();
            out.push(v.round().clamp(0.0, 255.0) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &[u8], h: usize, w: usize, th: usize, tw: usize) -> Vec<u8> {
        let mut out = Vec::new();
        resize_crop_plane(src, h, w, th, tw, &mut out);
        assert_eq!(out.len(), th * tw);
        out
    }

    #[test]
    fn resized_size_covers_target() {
        assert_eq!(resized_size(28, 28, 32, 32), (32, 32));
        assert_eq!(resized_size(100, 200, 32, 32), (32, 64)); // short side -> 32
        assert_eq!(resized_size(300, 100, 64, 64), (192, 64));
        assert_eq!(resized_size(10, 10, 4, 8), (8, 8)); // non-square target: cover
    }

    #[test]
    fn identity_and_pure_crop_are_exact() {
        let src: Vec<u8> = (0..35).map(|i| (i * 7) as u8).collect();
        assert_eq!(run(&src, 5, 7, 5, 7), src);
        // 4 x 8 -> 4 x 4: no resampling (short side already 4), columns 2..6.
        let src: Vec<u8> = (0..32).map(|i| (i % 8 * 30 + i / 8) as u8).collect();
        let out = run(&src, 4, 8, 4, 4);
        for y in 0..4 {
            for x in 0..4 {
                assert_eq!(out[y * 4 + x], src[y * 8 + x + 2], "at ({y}, {x})");
            }
        }
    }

    #[test]
    fn constant_stays_constant() {
        for &(h, w, th, tw) in &[(13, 29, 8, 8), (5, 5, 17, 17), (64, 48, 7, 7)] {
            let src = vec![173u8; h * w];
            assert!(run(&src, h, w, th, tw).iter().all(|&v| v == 173));
        }
    }

    #[test]
    fn linear_ramp_is_resampled_at_pixel_centers() {
        // A horizontal ramp v(x) = 2 x + 10 (x = pixel center - 0.5). The triangle filter is
        // symmetric, so away from the borders the output is the ramp evaluated at the
        // output pixel center mapped to the source: x_src = (i + 0.5) * scale - 0.5.
        // Tolerance: 0.5 (u8 rounding) + 1e-3.
        for &(w, tw) in &[(60usize, 20usize), (20, 50), (33, 10)] {
            let h = w; // square, so no crop
            let src: Vec<u8> = (0..h * w).map(|i| (2 * (i % w) + 10) as u8).collect();
            let out = run(&src, h, w, tw, tw);
            let scale = w as f64 / tw as f64;
            let margin = (2.0 * scale.max(1.0)).ceil() as usize;
            for i in margin..tw - margin {
                let want = 2.0 * ((i as f64 + 0.5) * scale - 0.5) + 10.0;
                let got = out[5 * tw + i] as f64;
                assert!(
                    (got - want).abs() <= 0.501,
                    "w {w} -> {tw}, i {i}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn downscale_by_two_of_checkerboard_blocks_averages() {
        // 2x2 blocks of 0/200 in a 4x4 checkerboard of blocks (8x8 px) -> 4x4: each output
        // pixel sees its block with weight 3/4 and neighbours with 1/4 per axis (PIL bilinear
        // at scale 2: taps .125 .375 .375 .125). Interior pixel (1, 1) is a 200 block whose
        // 4-neighbour blocks are 0: per axis 0.75 * own + 0.25 * other.
        let mut src = vec![0u8; 64];
        for y in 0..8 {
            for x in 0..8 {
                src[y * 8 + x] = if (y / 2 + x / 2) % 2 == 0 { 200 } else { 0 };
            }
        }
        let out = run(&src, 8, 8, 4, 4);
        // Separable: v = 200 * (0.75 * 0.75 + 0.25 * 0.25) = 125.
        assert_eq!(out[4 + 1], 125);
        assert_eq!(out[4 + 2], 75); // 0-block: 200 * (2 * 0.75 * 0.25)
    }

    #[test]
    fn center_crop_after_resize() {
        // 8 x 16 -> 4 x 4: resize to 4 x 8 (both axes / 2), then crop columns 2..6.
        // Columns are constant within pairs, so each resized column is a blend of pairs;
        // compare with resizing without crop (4 x 8 target) and cropping by hand.
        let src: Vec<u8> = (0..128)
            .map(|i| ((i % 16) * 15 + (i / 16) * 2) as u8)
            .collect();
        let full = run(&src, 8, 16, 4, 8);
        let crop = run(&src, 8, 16, 4, 4);
        for y in 0..4 {
            for x in 0..4 {
                assert_eq!(crop[y * 4 + x], full[y * 8 + x + 2]);
            }
        }
    }

    #[test]
    fn channel_conversion() {
        // 1 x 2 RGB image: pure red and white.
        let img = Planar {
            c: 3,
            h: 1,
            w: 2,
            data: vec![255, 255, 0, 255, 0, 255],
        };
        let mut out = Vec::new();
        convert_into(&img, 1, [1, 2], &mut out);
        assert_eq!(out, vec![76, 255]); // 0.299 * 255 = 76.2
        let grey = Planar {
            c: 1,
            h: 1,
            w: 2,
            data: vec![10, 20],
        };
        let mut out = Vec::new();
        convert_into(&grey, 3, [1, 2], &mut out);
        assert_eq!(out, vec![10, 20, 10, 20, 10, 20]);
        // Interleaved RGBA drops alpha.
        let p = Planar::from_interleaved(&[1, 2, 3, 9, 4, 5, 6, 9], 1, 2, 4, 3);
        assert_eq!(p.data, vec![1, 4, 2, 5, 3, 6]);
    }
}
