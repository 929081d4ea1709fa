//! A tiny line-plot rasteriser for the loss curve PNG (no plotting dependency).

/// Draw `ys` (one value per step, raw) and a smoothed curve into an RGB image with a log-10
/// y axis and light grid lines. Returns (width, height, pixels).
pub fn loss_curve(ys: &[f32], width: usize, height: usize) -> (usize, usize, Vec<u8>) {
    let mut img = vec![255u8; width * height * 3];
    let (left, right, top, bottom) = (48usize, 12usize, 12usize, 28usize);
    let pw = width.saturating_sub(left + right).max(1);
    let ph = height.saturating_sub(top + bottom).max(1);
    let finite: Vec<f32> = ys
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    if finite.len() < 2 {
        return (width, height, img);
    }
    let lo = finite
        .iter()
        .fold(f32::MAX, |a, &b| a.min(b))
        .log10()
        .floor();
    let hi = finite
        .iter()
        .fold(f32::MIN, |a, &b| a.max(b))
        .log10()
        .ceil()
        .max(lo + 1.0);
    let y_of = |v: f32| -> f32 { top as f32 + (hi - v.max(1e-12).log10()) / (hi - lo) * ph as f32 };
    let x_of =
        |i: usize| -> f32 { left as f32 + i as f32 / (ys.len() - 1).max(1) as f32 * pw as f32 };
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < height {
            let i = (y as usize * width + x as usize) * 3;
            img[i..i + 3].copy_from_slice(&c);
        }
    };
    // Grid: one line per decade, axes in grey.
    let mut decade = lo;
    while decade <= hi {
        let y = y_of(10f32.powf(decade)).round() as i64;
        for x in left..left + pw {
            put(x as i64, y, [225, 225, 225]);
        }
        decade += 1.0;
    }
    for y in top..top + ph {
        put(left as i64, y as i64, [120, 120, 120]);
    }
    for x in left..left + pw {
        put(x as i64, (top + ph) as i64, [120, 120, 120]);
    }
    let mut line = |pts: &[(f32, f32)], c: [u8; 3]| {
        for w in pts.windows(2) {
            let (x0, y0, x1, y1) = (w[0].0, w[0].1, w[1].0, w[1].1);
            let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
            for s in 0..=n {
                let t = s as f32 / n as f32;
                put(
                    (x0 + t * (x1 - x0)).round() as i64,
                    (y0 + t * (y1 - y0)).round() as i64,
                    c,
                );
            }
        }
    };
    let raw: Vec<(f32, f32)> = ys
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite() && **v > 0.0)
        .map(|(i, &v)| (x_of(i), y_of(v)))
        .collect();
    line(&raw, [170, 200, 235]);
    let mut ema = finite[0];
    let smooth: Vec<(f32, f32)> = ys
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite() && **v > 0.0)
        .map(|(i, &v)| {
            ema = 0.95 * ema + 0.05 * v;
            (x_of(i), y_of(ema))
        })
        .collect();
    line(&smooth, [20, 70, 160]);
    (width, height, img)
}
