//! A feature space for images of any kind, where the digit classifier's features mean nothing
//! (`kakusan eval --data`). Per channel and per cell of a G×G grid over the image (G =
//! [`GRID`], or the image's side if smaller), two numbers:
//! - the mean pixel: the layout (where strokes, shapes and colours are);
//! - the gradient energy: the root mean square of the differences between each pixel and its
//!   right and lower neighbours. Speckle and noise raise it; blur lowers it (a mean absolute
//!   difference would not see blur: a blurred monotone edge keeps its total variation).
//!
//! Both are in pixel units (model space, [−1, 1]) and enter the distance unscaled.
//!
//! The space is fixed (no weights to ship or download, unlike Inception's), defined at every
//! image size and computed in f64 on the CPU. It is coarser than a learned feature space, so
//! its Fréchet distance is read only next to its real-vs-real floor at the same n, as the
//! digit evaluator's FID is. Measured on held-out digits against the floor (n = 200, test
//! below): uniform noise 366×, backgrounds lifted to grey 70×, ±0.3 speckle 5.2×, a 3×3 box
//! blur 11.4× (docs/evaluation.md, "Other datasets").

use crate::error::{Error, Result};

/// Cells per side of the grid. 4 rather than 8: with 8 (3–4 pixel cells on a digit) the
/// distance also grew with where exactly strokes fall, and it told a degraded model from a
/// good one less well (docs/evaluation.md, "Other datasets").
pub const GRID: usize = 4;

/// Cells per side for an image of `h`×`w` pixels.
pub fn grid_for(h: usize, w: usize) -> usize {
    GRID.min(h).min(w)
}

/// Features per image of `c` channels and `h`×`w` pixels: a mean and a gradient energy per
/// channel and cell.
pub fn feature_dim(c: usize, h: usize, w: usize) -> usize {
    let g = grid_for(h, w);
    2 * c * g * g
}

/// The unscaled features of `images` (N, C, H, W) in model space, each pixel clipped to
/// [−1, 1] first (what a viewer sees): (N, [`feature_dim`]) row-major, per image the C·G·G
/// cell means (channel-major, then row, then column of the grid) followed by the cell
/// gradient energies in the same order. Cell i of a side of s pixels covers pixels
/// ⌊i·s/G⌋ .. ⌊(i+1)·s/G⌋; a pixel's differences to its right and lower neighbours count in
/// its cell (none past the image's edge).
pub fn pixel_statistics(images: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
    let [n, c, h, w] = shape;
    if n == 0 || c == 0 || h == 0 || w == 0 || images.len() != n * c * h * w {
        return Err(Error::shape(format!(
            "pixel statistics: {} values are not images of shape {shape:?}",
            images.len()
        )));
    }
    let g = grid_for(h, w);
    let cells = c * g * g;
    let mut out = Vec::with_capacity(n * 2 * cells);
    let mut means = vec![0.0f64; cells];
    let mut energies = vec![0.0f64; cells];
    let px = |plane: &[f32], y: usize, x: usize| plane[y * w + x].clamp(-1.0, 1.0) as f64;
    for image in images.chunks_exact(c * h * w) {
        for (ch, plane) in image.chunks_exact(h * w).enumerate() {
            for gy in 0..g {
                let (y0, y1) = (gy * h / g, (gy + 1) * h / g);
                for gx in 0..g {
                    let (x0, x1) = (gx * w / g, (gx + 1) * w / g);
                    let (mut sum, mut sq_diff, mut diffs) = (0.0f64, 0.0f64, 0usize);
                    for y in y0..y1 {
                        for x in x0..x1 {
                            let v = px(plane, y, x);
                            sum += v;
                            if x + 1 < w {
                                sq_diff += (px(plane, y, x + 1) - v).powi(2);
                                diffs += 1;
                            }
                            if y + 1 < h {
                                sq_diff += (px(plane, y + 1, x) - v).powi(2);
                                diffs += 1;
                            }
                        }
                    }
                    let cell = (ch * g + gy) * g + gx;
                    means[cell] = sum / ((y1 - y0) * (x1 - x0)) as f64;
                    energies[cell] = if diffs == 0 {
                        0.0
                    } else {
                        (sq_diff / diffs as f64).sqrt()
                    };
                }
            }
        }
        out.extend(means.iter().chain(&energies).map(|&v| v as f32));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load_default_mnist;
    use crate::eval::fid::fid;
    use crate::eval::{reference_draws, split_indices};

    #[test]
    fn cells_hold_their_pixels_mean_and_gradient_energy() {
        // One 2-channel 4×4 image: channel 0 counts 0..16 (scaled), channel 1 is constant.
        let mut img: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
        img.extend([0.25f32; 16]);
        let f = pixel_statistics(&img, [1, 2, 4, 4]).unwrap();
        assert_eq!(grid_for(4, 4), 4);
        assert_eq!(f.len(), feature_dim(2, 4, 4));
        assert_eq!(f.len(), 2 * 2 * 16);
        // 1×1 cells: the means are the pixels. Channel 0's pixel (0, 0) differs by 1/16 from
        // its right and 4/16 from its lower neighbour; pixel (3, 3) has neither; channel 1
        // is flat.
        assert_eq!(&f[..32], &img[..]);
        let e00 = ((1.0f64 / 256.0 + 16.0 / 256.0) / 2.0).sqrt();
        assert!((f[32] as f64 - e00).abs() < 1e-7, "{} vs {e00}", f[32]);
        assert_eq!(f[32 + 15], 0.0);
        assert!(f[48..].iter().all(|&v| v == 0.0));

        // An 8×8 grey image in a 4×4 grid: 2×2 cells. Cell (0, 0) holds −1, 1 / −1, 1 after
        // clipping (−3 and 7 are clipped) beside 0.5 everywhere else: mean 0; differences
        // 2, 0 | −0.5, 0 | 2, 1.5 | −0.5, −0.5 → energy √(11/8). Cell (0, 1) is flat.
        let mut img = vec![0.5f32; 64];
        img[0] = -3.0;
        img[1] = 1.0;
        img[8] = -1.0;
        img[9] = 7.0;
        let f = pixel_statistics(&img, [1, 1, 8, 8]).unwrap();
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 0.0);
        assert!(
            (f[16] as f64 - (11.0f64 / 8.0).sqrt()).abs() < 1e-6,
            "{}",
            f[16]
        );
        assert!((f[1] - 0.5).abs() < 1e-7 && f[17] == 0.0);
    }

    #[test]
    fn cells_of_uneven_sides_cover_every_pixel_once() {
        // 30 = 7+8+7+8 pixels: the means, weighted by cell size, give the image's sum.
        let mut rng = crate::rng::SplitMix64(3);
        let img: Vec<f32> = (0..30 * 30)
            .map(|_| (2.0 * rng.next_f64() - 1.0) as f32)
            .collect();
        let f = pixel_statistics(&img, [1, 1, 30, 30]).unwrap();
        let g = grid_for(30, 30);
        let side = |i: usize| (i + 1) * 30 / g - i * 30 / g;
        assert_eq!((0..g).map(side).collect::<Vec<_>>(), [7, 8, 7, 8]);
        let mut total = 0.0f64;
        for gy in 0..g {
            for gx in 0..g {
                total += f[gy * g + gx] as f64 * (side(gy) * side(gx)) as f64;
            }
        }
        let mean: f64 = img.iter().map(|&v| v as f64).sum::<f64>();
        assert!((total - mean).abs() < 1e-3, "{total} vs {mean}");
    }

    #[test]
    fn wrong_shapes_are_errors() {
        assert!(pixel_statistics(&[0.0; 10], [1, 1, 3, 3]).is_err());
        assert!(pixel_statistics(&[], [0, 1, 3, 3]).is_err());
    }

    /// The distance separates real digits from noise, grey backgrounds, speckle and blur, each
    /// well above the real-vs-real floor: the failures a weak model shows.
    #[test]
    fn distance_separates_real_digits_from_noise_grey_speckle_and_blur() {
        let digits = load_default_mnist().unwrap();
        let (_, held) = split_indices(digits.len());
        let n = 200;
        let (a, b) = reference_draws(&held, n, 0).unwrap();
        let pixels = |idx: &[usize]| {
            let mut x = vec![0.0f32; idx.len() * 784];
            digits.batch(idx, &mut x).unwrap();
            x
        };
        let shape = [n, 1, 28, 28];
        let dim = feature_dim(1, 28, 28);
        let (xa, xb) = (pixels(&a), pixels(&b));
        let features = |x: &[f32]| pixel_statistics(x, shape).unwrap();
        let fa = features(&xa);
        let floor = fid(&features(&xb), &fa, dim).unwrap();
        let mut rng = crate::rng::SplitMix64(1);
        let noise: Vec<f32> = (0..n * 784)
            .map(|_| (2.0 * rng.next_f64() - 1.0) as f32)
            .collect();
        let grey: Vec<f32> = xb.iter().map(|v| v.max(-0.5)).collect();
        // Real digits with speckle: every pixel moved by up to ±0.3.
        let speckle: Vec<f32> = xb
            .iter()
            .map(|&v| v + (0.6 * rng.next_f64() - 0.3) as f32)
            .collect();
        // A 3×3 box blur of each digit.
        let mut blur = xb.clone();
        for (src, dst) in xb.chunks_exact(784).zip(blur.chunks_exact_mut(784)) {
            for y in 0..28usize {
                for x in 0..28usize {
                    let (mut s, mut k) = (0.0f32, 0.0f32);
                    for yy in y.saturating_sub(1)..(y + 2).min(28) {
                        for xx in x.saturating_sub(1)..(x + 2).min(28) {
                            s += src[yy * 28 + xx];
                            k += 1.0;
                        }
                    }
                    dst[y * 28 + x] = s / k;
                }
            }
        }
        let d = |x: &[f32]| fid(&features(x), &fa, dim).unwrap();
        let (to_noise, to_grey, to_speckle, to_blur) = (d(&noise), d(&grey), d(&speckle), d(&blur));
        eprintln!(
            "pixel-statistics FD: floor {floor:.3}, noise {to_noise:.3}, grey {to_grey:.3}, \
             speckle {to_speckle:.3}, blur {to_blur:.3}"
        );
        assert!(floor > 0.0 && floor.is_finite());
        // Measured: noise 366×, grey 70×, speckle 5.2×, blur 11.4× the floor.
        assert!(
            to_noise > 100.0 * floor,
            "noise {to_noise} vs floor {floor}"
        );
        assert!(to_grey > 20.0 * floor, "grey {to_grey} vs floor {floor}");
        assert!(
            to_speckle > 3.0 * floor,
            "speckle {to_speckle} vs floor {floor}"
        );
        assert!(to_blur > 3.0 * floor, "blur {to_blur} vs floor {floor}");
    }
}
