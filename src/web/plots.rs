//! Small SVG plots (as strings, set as innerHTML): schedules with a marker at the current t,
//! and a histogram against the N(0, 1) density. No libraries, no network.

use std::fmt::Write;

use crate::diffusion::schedule::Schedule;

const W: f64 = 320.0;
const H: f64 = 170.0;
const LEFT: f64 = 40.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 26.0;

/// One curve: values over t = 0..len, drawn against the left (or right) axis.
pub struct Series<'a> {
    pub values: &'a [f64],
    pub color: &'a str,
    pub label: &'a str,
    pub dashed: bool,
    pub right_axis: bool,
}

pub struct Axis {
    pub min: f64,
    pub max: f64,
    pub ticks: Vec<f64>,
    pub label: &'static str,
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() < 0.01 {
        format!("{v:.0e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;")
}

/// log SNR(t) = ln(ᾱ_t / (1 − ᾱ_t)).
pub fn log_snr(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|&a| (a / (1.0 - a).max(1e-300)).ln())
        .collect()
}

/// A line plot over t with up to two y axes and an optional vertical marker at `marker`.
pub fn line_plot(
    title: &str,
    series: &[Series],
    left: &Axis,
    right: Option<&Axis>,
    marker: Option<usize>,
) -> String {
    line_plot_x(title, series, left, right, marker, "t", None)
}

/// [`line_plot`] with another x label, and x tick values running to `x_max` (instead of the
/// index of the last value) when given.
pub fn line_plot_x(
    title: &str,
    series: &[Series],
    left: &Axis,
    right: Option<&Axis>,
    marker: Option<usize>,
    x_label: &str,
    x_max: Option<f64>,
) -> String {
    let n = series.first().map(|s| s.values.len()).unwrap_or(1).max(2);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / (n - 1) as f64 * pw;
    let y = |v: f64, a: &Axis| {
        let f = ((v - a.min) / (a.max - a.min)).clamp(-0.02, 1.02);
        TOP + (1.0 - f) * ph
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" class="plot-bg"/>"#
    );
    // Axes and ticks.
    for &v in &left.ticks {
        let yy = y(v, left);
        let _ = write!(
            s,
            r#"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" class="grid"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            LEFT + pw,
            LEFT - 4.0,
            yy + 3.5,
            fmt_tick(v)
        );
    }
    if let Some(r) = right {
        for &v in &r.ticks {
            let yy = y(v, r);
            let _ = write!(
                s,
                r#"<text x="{}" y="{:.1}" class="tick">{}</text>"#,
                LEFT + pw + 4.0,
                yy + 3.5,
                fmt_tick(v)
            );
        }
    }
    for frac in [0.0, 0.5, 1.0] {
        let t = frac * (n - 1) as f64;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" class="tick" text-anchor="middle">{}</text>"#,
            x(t),
            H - BOTTOM + 13.0,
            x_max.map_or(t, |m| frac * m).round()
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{}" class="tick" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0 + 30.0,
        H - BOTTOM + 13.0,
        esc(x_label)
    );
    // Curves (subsampled to ≤ 200 points).
    let stride = (n / 200).max(1);
    for se in series {
        let axis = if se.right_axis {
            right.unwrap_or(left)
        } else {
            left
        };
        let mut d = String::new();
        let mut t = 0;
        while t < se.values.len() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if d.is_empty() { "M" } else { "L" },
                x(t as f64),
                y(se.values[t], axis)
            );
            if t + 1 == se.values.len() {
                break;
            }
            t = (t + stride).min(se.values.len() - 1);
        }
        let _ = write!(
            s,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2"{}/>"#,
            se.color,
            if se.dashed {
                r#" stroke-dasharray="5 3""#
            } else {
                ""
            }
        );
    }
    // Legend across the top.
    let mut lx = LEFT;
    for se in series {
        let _ = write!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="10" y2="10" stroke="{}" stroke-width="2"{}/><text x="{}" y="14" class="legend">{}</text>"#,
            lx + 14.0,
            se.color,
            if se.dashed {
                r#" stroke-dasharray="4 2""#
            } else {
                ""
            },
            lx + 18.0,
            esc(se.label)
        );
        lx += 24.0 + 6.2 * se.label.chars().count() as f64;
    }
    if let Some(m) = marker {
        let mx = x(m.min(n - 1) as f64);
        let _ = write!(
            s,
            r#"<line x1="{mx:.1}" x2="{mx:.1}" y1="{TOP}" y2="{}" class="marker"/>"#,
            TOP + ph
        );
        for se in series {
            if let Some(&v) = se.values.get(m) {
                let axis = if se.right_axis {
                    right.unwrap_or(left)
                } else {
                    left
                };
                let _ = write!(
                    s,
                    r#"<circle cx="{mx:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
                    y(v, axis),
                    se.color
                );
            }
        }
    }
    let _ = write!(
        s,
        r#"<text x="8" y="{:.1}" class="axis-label" transform="rotate(-90 8 {:.1})" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(left.label)
    );
    if let Some(r) = right {
        let rx = W - 6.0;
        let _ = write!(
            s,
            r#"<text x="{rx}" y="{:.1}" class="axis-label" transform="rotate(90 {rx} {:.1})" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            esc(r.label)
        );
    }
    s.push_str("</svg>");
    s
}

pub fn alpha_axis() -> Axis {
    Axis {
        min: 0.0,
        max: 1.0,
        ticks: vec![0.0, 0.5, 1.0],
        label: "ᾱ_t",
    }
}

pub fn snr_axis() -> Axis {
    Axis {
        min: -12.0,
        max: 10.0,
        ticks: vec![-10.0, -5.0, 0.0, 5.0, 10.0],
        label: "log SNR",
    }
}

/// ᾱ_t and log SNR of one schedule, with a marker at `t` (the reverse panel's plot).
pub fn schedule_plot(s: &Schedule, t: Option<usize>) -> String {
    let snr = log_snr(&s.alphas_cumprod);
    line_plot(
        "ᾱ_t and log SNR over t",
        &[
            Series {
                values: &s.alphas_cumprod,
                color: "#4aa8ff",
                label: "ᾱ_t",
                dashed: false,
                right_axis: false,
            },
            Series {
                values: &snr,
                color: "#ffb347",
                label: "log SNR (right)",
                dashed: true,
                right_axis: true,
            },
        ],
        &alpha_axis(),
        Some(&snr_axis()),
        t,
    )
}

/// Histogram of `values` (density) for one or two sets, against the N(0, 1) density.
pub fn histogram(sets: &[(&[f32], &str, &str)]) -> String {
    const BINS: usize = 32;
    let (lo, hi) = (-4.0f64, 4.0f64);
    let bw = (hi - lo) / BINS as f64;
    let pw = W - LEFT - 12.0;
    let ph = H - TOP - BOTTOM;
    let ymax = 0.9;
    let x = |v: f64| LEFT + (v - lo) / (hi - lo) * pw;
    let y = |d: f64| TOP + (1.0 - (d / ymax).min(1.0)) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="Histogram of x_t's pixels against N(0,1)" xmlns="http://www.w3.org/2000/svg"><rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" class="plot-bg"/>"#
    );
    for v in [-4.0, -2.0, 0.0, 2.0, 4.0] {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" class="tick" text-anchor="middle">{v}</text>"#,
            x(v),
            H - BOTTOM + 13.0
        );
    }
    for d in [0.0, 0.4, 0.8] {
        let _ = write!(
            s,
            r#"<line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" class="grid"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{d}</text>"#,
            LEFT + pw,
            y(d),
            y(d),
            LEFT - 4.0,
            y(d) + 3.5
        );
    }
    let mut lx = LEFT;
    for (k, (vals, color, label)) in sets.iter().enumerate() {
        let mut counts = [0usize; BINS];
        for &v in vals.iter() {
            let b = ((v as f64 - lo) / bw).floor();
            if b >= 0.0 && (b as usize) < BINS {
                counts[b as usize] += 1;
            }
        }
        let n = vals.len().max(1) as f64;
        // Two sets: draw the first as bars and the second as an outline (a step curve).
        if k == 0 {
            for (b, &c) in counts.iter().enumerate() {
                let d = c as f64 / (n * bw);
                let x0 = x(lo + b as f64 * bw);
                let _ = write!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" opacity="0.7"/>"#,
                    x0 + 0.5,
                    y(d),
                    (pw / BINS as f64 - 1.0).max(0.5),
                    TOP + ph - y(d)
                );
            }
        } else {
            let mut d_path = String::new();
            for (b, &c) in counts.iter().enumerate() {
                let d = c as f64 / (n * bw);
                let (xa, xb) = (x(lo + b as f64 * bw), x(lo + (b + 1) as f64 * bw));
                let _ = write!(
                    d_path,
                    "{}{xa:.1},{:.1}L{xb:.1},{:.1}",
                    if b == 0 { "M" } else { "L" },
                    y(d),
                    y(d)
                );
            }
            let _ = write!(
                s,
                r#"<path d="{d_path}" fill="none" stroke="{color}" stroke-width="2"/>"#
            );
        }
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="5" width="12" height="9" fill="{color}"/><text x="{}" y="14" class="legend">{}</text>"#,
            lx + 16.0,
            esc(label)
        );
        lx += 28.0 + 6.2 * label.chars().count() as f64;
    }
    // N(0, 1) density.
    let mut d = String::new();
    for i in 0..=80 {
        let v = lo + (hi - lo) * i as f64 / 80.0;
        let p = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let _ = write!(
            d,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { "L" },
            x(v),
            y(p)
        );
    }
    let _ = write!(
        s,
        r##"<path d="{d}" fill="none" stroke="#e8e8e8" stroke-width="2" stroke-dasharray="5 3"/><line x1="{lx}" x2="{}" y1="10" y2="10" stroke="#e8e8e8" stroke-width="2" stroke-dasharray="4 2"/><text x="{}" y="14" class="legend">N(0, 1)</text></svg>"##,
        lx + 14.0,
        lx + 18.0
    );
    s
}
