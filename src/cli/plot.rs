//! A tiny line-plot rasteriser for the loss curve PNG (no plotting dependency).

/// 3x5 glyphs (rows top to bottom, 3 bits each, high bit = left) for the axis labels.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        'b' => [4, 4, 7, 5, 7],
        'i' => [2, 0, 2, 2, 2],
        'e' => [0, 7, 7, 4, 7],
        'l' => [6, 2, 2, 2, 7],
        'o' => [0, 7, 5, 5, 7],
        'p' => [0, 7, 5, 7, 4],
        's' => [0, 7, 6, 3, 7],
        't' => [2, 7, 2, 2, 3],
        ' ' => [0; 5],
        _ => return None,
    })
}

/// Width in pixels of `text` drawn by [`draw_text`] at `scale`.
fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * 4 * scale
}

/// Draw `text` with its top-left corner at (x, y), each glyph pixel a `scale`² block.
fn draw_text(put: &mut impl FnMut(i64, i64, [u8; 3]), text: &str, x: i64, y: i64, scale: usize) {
    for (k, c) in text.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(
                                x + ((k * 4 + col) * scale + dx) as i64,
                                y + (r * scale + dy) as i64,
                                [60, 60, 60],
                            );
                        }
                    }
                }
            }
        }
    }
}

/// A decade's label: 10^d written out (1, 0.1, 0.01, 10, …).
fn decade_label(d: f32) -> String {
    if d >= 0.0 {
        format!("{}", 10f64.powi(d as i32))
    } else {
        format!("{:.*}", (-d) as usize, 10f64.powi(d as i32))
    }
}

/// Draw `ys` (one value per step, raw) and a smoothed curve into an RGB image with a log-10
/// y axis, light grid lines, decade labels, the first and last step on the x axis and the
/// axis names. Returns (width, height, pixels).
pub fn loss_curve(ys: &[f32], width: usize, height: usize) -> (usize, usize, Vec<u8>) {
    curve(ys, width, height, "loss", "step", true)
}

/// [`loss_curve`] with other axis names, and the smoothed curve optional (without it the
/// raw values are drawn in the dark colour).
pub fn curve(
    ys: &[f32],
    width: usize,
    height: usize,
    y_name: &str,
    x_name: &str,
    smooth: bool,
) -> (usize, usize, Vec<u8>) {
    let mut img = vec![255u8; width * height * 3];
    let (left, right, top, bottom) = (56usize, 16usize, 24usize, 34usize);
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
        let label = decade_label(decade);
        let lx = left as i64 - 6 - text_width(&label, 2) as i64;
        draw_text(&mut put, &label, lx, y - 5, 2);
        decade += 1.0;
    }
    draw_text(&mut put, y_name, left as i64, 4, 2);
    let base = top + ph + 6;
    draw_text(&mut put, "1", left as i64 - 2, base as i64, 2);
    let last = ys.len().to_string();
    let lw = text_width(&last, 2) as i64;
    draw_text(&mut put, &last, (left + pw) as i64 - lw, base as i64, 2);
    draw_text(
        &mut put,
        x_name,
        (left + pw / 2) as i64 - text_width(x_name, 2) as i64 / 2,
        base as i64,
        2,
    );
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
    if !smooth {
        line(&raw, [20, 70, 160]);
        return (width, height, img);
    }
    line(&raw, [170, 200, 235]);
    let mut ema = finite[0];
    let smoothed: Vec<(f32, f32)> = ys
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite() && **v > 0.0)
        .map(|(i, &v)| {
            ema = 0.95 * ema + 0.05 * v;
            (x_of(i), y_of(ema))
        })
        .collect();
    line(&smoothed, [20, 70, 160]);
    (width, height, img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decade_labels_and_glyphs() {
        assert_eq!(decade_label(0.0), "1");
        assert_eq!(decade_label(1.0), "10");
        assert_eq!(decade_label(-2.0), "0.01");
        for c in "0123456789.loss step".chars() {
            assert!(glyph(c).is_some(), "no glyph for {c:?}");
        }
    }

    #[test]
    fn loss_curve_draws_curve_and_labels() {
        let ys: Vec<f32> = (0..200).map(|i| 1.0 / (1.0 + i as f32)).collect();
        let (w, h, px) = loss_curve(&ys, 320, 200);
        assert_eq!(px.len(), w * h * 3);
        let count = |c: [u8; 3]| px.chunks_exact(3).filter(|p| *p == c).count();
        assert!(count([20, 70, 160]) > 100, "smoothed curve missing");
        assert!(count([60, 60, 60]) > 50, "labels missing");
    }
}
