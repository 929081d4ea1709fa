//! The likelihood and anomaly panel (CPU side): the current image (an embedded digit, an
//! upload or a drawing, optionally made out-of-distribution by inverting, shuffling or
//! rotating it), its conversion to the model's input, the plot of the bound's per-t terms
//! and the anomaly score placed among real digits' scores. The GPU work — the bound
//! (`diffusion::likelihood`) and the reconstruction (`diffusion::anomaly`) — is in
//! [`engine::likelihood`](crate::web::engine); see docs/toolbox.md, "In the page".

use std::fmt::Write;

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::web::controls::{
    class_of, class_select, digit_options, run_stop, upload_input, NumberField,
};
use crate::web::engine::{self, AnomalyView, NllMode, NllView, ToolImage, ToolState, Ui};
use crate::web::forward::{self, Image};

/// Side of the drawing canvas (pixels of the drawn image).
const DRAW_SIZE: usize = 28;

/// `img` resampled to (c, h, w) by box averaging (nearest pixel when enlarging), gray ↔ RGB
/// by luma / replication, and put on the 256-level grid k/127.5 − 1 (the bound is for 8-bit
/// images).
pub fn to_model_input(img: &Image, c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * h * w];
    let channel = |ch: usize, y: usize, x: usize| -> f64 {
        let at = |k: usize| img.data[(k * img.h + y) * img.w + x] as f64;
        match (img.c, c) {
            (3, 1) => 0.299 * at(0) + 0.587 * at(1) + 0.114 * at(2),
            (1, _) => at(0),
            _ => at(ch.min(img.c - 1)),
        }
    };
    for ch in 0..c {
        for oy in 0..h {
            let (y0, y1) = span(oy, h, img.h);
            for ox in 0..w {
                let (x0, x1) = span(ox, w, img.w);
                let mut sum = 0.0;
                for y in y0..y1 {
                    for x in x0..x1 {
                        sum += channel(ch, y, x);
                    }
                }
                let v = sum / ((y1 - y0) * (x1 - x0)) as f64;
                out[(ch * h + oy) * w + ox] =
                    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as f32 / 127.5 - 1.0;
            }
        }
    }
    out
}

/// The source rows (or columns) [a, b) that output row `o` of `n` covers in a source of `m`.
fn span(o: usize, n: usize, m: usize) -> (usize, usize) {
    let a = o * m / n;
    let b = ((o + 1) * m).div_ceil(n).max(a + 1).min(m);
    (a.min(m - 1), b)
}

/// 255 − x: a negative of the image.
pub fn invert(img: &Image) -> Image {
    Image {
        data: img.data.iter().map(|v| -v).collect(),
        ..img.clone()
    }
}

/// The pixel positions permuted (the same permutation for every channel), by `seed`.
pub fn shuffle(img: &Image, seed: u64) -> Image {
    let hw = img.h * img.w;
    let mut perm: Vec<usize> = (0..hw).collect();
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in (1..hw).rev() {
        // xorshift64*
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let j = (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % (i + 1);
        perm.swap(i, j);
    }
    let mut data = img.data.clone();
    for ch in 0..img.c {
        for (i, &p) in perm.iter().enumerate() {
            data[ch * hw + i] = img.data[ch * hw + p];
        }
    }
    Image {
        data,
        ..img.clone()
    }
}

/// Rotated by 90° counter-clockwise.
pub fn rotate(img: &Image) -> Image {
    let (h, w) = (img.h, img.w);
    let mut data = vec![0f32; img.data.len()];
    for ch in 0..img.c {
        for y in 0..w {
            for x in 0..h {
                // out(y, x) = in(x, w − 1 − y)
                data[(ch * w + y) * h + x] = img.data[(ch * h + x) * w + (w - 1 - y)];
            }
        }
    }
    Image {
        c: img.c,
        h: w,
        w: h,
        data,
    }
}

/// The per-t terms of the bound as an SVG plot: bits/dim on a log axis against the paper's
/// t = index + 1; a strided estimate's points are drawn as dots.
pub fn nll_plot(terms: &[(usize, f64)], t_max: usize, dots: bool) -> String {
    const W: f64 = 360.0;
    const H: f64 = 200.0;
    const L: f64 = 46.0;
    const R: f64 = 10.0;
    const T: f64 = 14.0;
    const B: f64 = 28.0;
    let (pw, ph) = (W - L - R, H - T - B);
    let pos: Vec<f64> = terms
        .iter()
        .map(|&(_, v)| v)
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let hi = pos.iter().cloned().fold(1e-3f64, f64::max).log10().ceil();
    let lo = pos
        .iter()
        .cloned()
        .fold(1.0f64, f64::min)
        .log10()
        .floor()
        .max(hi - 9.0)
        .min(hi - 1.0);
    let x = |t: usize| L + (t as f64) / (t_max.max(2) - 1) as f64 * pw;
    let y = |v: f64| T + (1.0 - ((v.max(1e-30).log10() - lo) / (hi - lo)).clamp(0.0, 1.0)) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="Terms of the variational bound per timestep, bits per dimension, log scale" xmlns="http://www.w3.org/2000/svg"><rect x="{L}" y="{T}" width="{pw}" height="{ph}" class="plot-bg"/>"#
    );
    let step = ((hi - lo) / 5.0).ceil().max(1.0);
    let mut e = hi;
    while e >= lo {
        let yy = T + (1.0 - (e - lo) / (hi - lo)) * ph;
        let _ = write!(
            s,
            r#"<line x1="{L}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" class="grid"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">1e{e}</text>"#,
            L + pw,
            L - 4.0,
            yy + 3.5
        );
        e -= step;
    }
    for t in [1, t_max / 2, t_max] {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" class="tick" text-anchor="middle">{t}</text>"#,
            x(t.saturating_sub(1)),
            H - B + 13.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{}" class="tick" text-anchor="middle">t</text>"#,
        L + pw / 2.0 + 30.0,
        H - B + 13.0
    );
    let mut sorted: Vec<(usize, f64)> = terms.to_vec();
    sorted.sort_by_key(|&(t, _)| t);
    if dots {
        for &(t, v) in &sorted {
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="#4aa8ff"/>"##,
                x(t),
                y(v)
            );
        }
    } else {
        let mut d = String::new();
        for &(t, v) in &sorted {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if d.is_empty() { "M" } else { "L" },
                x(t),
                y(v)
            );
        }
        let _ = write!(
            s,
            r##"<path d="{d}" fill="none" stroke="#4aa8ff" stroke-width="1.5"/>"##
        );
    }
    // The decoder term L_0 (t = 1) stands out: mark it.
    if let Some(&(_, v)) = sorted.iter().find(|&&(t, _)| t == 0) {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#ffb347"/><text x="{:.1}" y="{:.1}" class="legend">L₀</text>"##,
            x(0),
            y(v),
            x(0) + 6.0,
            y(v) + 4.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="10" y="{:.1}" class="axis-label" transform="rotate(-90 10 {:.1})" text-anchor="middle">bits/dim</text></svg>"#,
        T + ph / 2.0,
        T + ph / 2.0
    );
    s
}

fn fmt_bits(v: f64) -> String {
    if v.abs() >= 0.01 || v == 0.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// Draw on the drawing canvas: a round white stroke from `from` to `to` (canvas pixels).
fn stroke(canvas: &web_sys::HtmlCanvasElement, from: (f64, f64), to: (f64, f64)) {
    let Some(ctx) = canvas_2d(canvas) else { return };
    ctx.set_stroke_style_str("#ffffff");
    ctx.set_line_width(2.4);
    ctx.set_line_cap("round");
    ctx.set_line_join("round");
    ctx.begin_path();
    ctx.move_to(from.0, from.1);
    ctx.line_to(to.0 + 0.01, to.1);
    ctx.stroke();
}

fn canvas_2d(canvas: &web_sys::HtmlCanvasElement) -> Option<web_sys::CanvasRenderingContext2d> {
    canvas
        .get_context("2d")
        .ok()
        .flatten()
        .and_then(|c| c.dyn_into::<web_sys::CanvasRenderingContext2d>().ok())
}

fn clear_drawing(canvas: &web_sys::HtmlCanvasElement) {
    canvas.set_width(DRAW_SIZE as u32);
    canvas.set_height(DRAW_SIZE as u32);
    if let Some(ctx) = canvas_2d(canvas) {
        ctx.set_fill_style_str("#000000");
        ctx.fill_rect(0.0, 0.0, DRAW_SIZE as f64, DRAW_SIZE as f64);
    }
}

/// The drawing as a gray image in [−1, 1].
fn read_drawing(canvas: &web_sys::HtmlCanvasElement) -> Option<Image> {
    let ctx = canvas_2d(canvas)?;
    let px = ctx
        .get_image_data(0.0, 0.0, DRAW_SIZE as f64, DRAW_SIZE as f64)
        .ok()?
        .data()
        .0;
    Some(Image {
        c: 1,
        h: DRAW_SIZE,
        w: DRAW_SIZE,
        data: px.chunks(4).map(|p| p[0] as f32 / 127.5 - 1.0).collect(),
    })
}

/// Pointer position in drawing-canvas pixels.
fn pointer_pos(canvas: &web_sys::HtmlCanvasElement, ev: &web_sys::PointerEvent) -> (f64, f64) {
    // offsetX/Y are relative to the canvas's padding box, which the CSS scales up.
    let sx = DRAW_SIZE as f64 / (canvas.client_width().max(1) as f64);
    let sy = DRAW_SIZE as f64 / (canvas.client_height().max(1) as f64);
    (ev.offset_x() as f64 * sx, ev.offset_y() as f64 * sy)
}

#[component]
pub fn LikelihoodPanel(ui: Ui) -> impl IntoView {
    let which = RwSignal::new("3".to_string());
    let uploaded: RwSignal<Option<Image>> = RwSignal::new(None);
    let drawn: RwSignal<Option<Image>> = RwSignal::new(None);
    // The image the tools work on: the source, then any transforms applied to it.
    let current: RwSignal<Image> = RwSignal::new(forward::digit(3));
    let transforms: RwSignal<Vec<&'static str>> = RwSignal::new(Vec::new());
    let shuffle_seed = RwSignal::new(1u64);
    let source = move || -> Image {
        match which.get().as_str() {
            "upload" => uploaded.get(),
            "draw" => drawn.get(),
            w => Some(forward::digit(w.parse().unwrap_or(0))),
        }
        .unwrap_or_else(|| forward::digit(0))
    };
    Effect::new(move |_| {
        current.set(source());
        transforms.set(Vec::new());
    });
    // What the tools condition on: the picked digit's class by default (when the model has
    // it), else the null class ("none"); the select changes it.
    let classes = move || ui.model.get().and_then(|m| m.classes);
    let class = RwSignal::new("3".to_string());
    Effect::new(move |_| {
        let digit = which.get().parse::<usize>().ok();
        let n = classes();
        class.set(match (digit, n) {
            (Some(k), Some(n)) if k < n => k.to_string(),
            _ => "none".into(),
        });
    });

    // The image in the model's shape, on the 8-bit grid (what both tools are given).
    let model_shape = move || {
        ui.model
            .get()
            .map(|m| m.shape)
            .unwrap_or([1, DRAW_SIZE, DRAW_SIZE])
    };
    let input = Memo::new(move |_| {
        let [c, h, w] = model_shape();
        let img = current.get();
        Image {
            c,
            h,
            w,
            data: to_model_input(&img, c, h, w),
        }
    });
    let preview_ref = NodeRef::<leptos::html::Canvas>::new();
    Effect::new(move |_| {
        let img = input.get();
        if let Some(c) = preview_ref.get() {
            forward::draw(&c, &img, &[&img.data]);
        }
    });
    let apply = move |name: &'static str, f: &dyn Fn(&Image) -> Image| {
        current.update(|img| *img = f(img));
        transforms.update(|t| t.push(name));
    };

    // Drawing.
    let draw_ref = NodeRef::<leptos::html::Canvas>::new();
    let last_point: RwSignal<Option<(f64, f64)>> = RwSignal::new(None);
    Effect::new(move |_| {
        if let Some(c) = draw_ref.get() {
            clear_drawing(&c);
        }
    });
    let finish_stroke = move || {
        if last_point.get_untracked().is_some() {
            last_point.set(None);
            if let Some(img) = draw_ref.get_untracked().and_then(|c| read_drawing(&c)) {
                drawn.set(Some(img));
                if which.get_untracked() == "draw" {
                    // Re-read the source (the Effect above runs on `drawn` changing anyway).
                } else {
                    which.set("draw".into());
                }
            }
        }
    };

    let seed = RwSignal::new(0u64);
    // The image with its class and seed, as both tools take it.
    let job = move || ToolImage {
        image: input.get_untracked(),
        class: classes()
            .and_then(|n| class_of(&class.get_untracked()).filter(|&c| (c as usize) < n)),
        seed: seed.get_untracked(),
    };

    // The bound.
    let nll = NllView::new();
    let mode = RwSignal::new("stride".to_string());
    let stride = RwSignal::new(10usize);
    let per_call = RwSignal::new(1usize);
    let t_max = move || ui.model.get().map(|m| m.t_train).unwrap_or(1000);
    let nll_svg = move || {
        let terms = nll.terms.get();
        if terms.is_empty() {
            return String::new();
        }
        nll_plot(&terms, nll.t_max.get().max(2), nll.strided.get())
    };
    let start_nll = move || {
        let m = if mode.get_untracked() == "exact" {
            NllMode {
                stride: 1,
                per_call: per_call.get_untracked(),
            }
        } else {
            NllMode {
                stride: stride.get_untracked(),
                per_call: per_call.get_untracked(),
            }
        };
        engine::start_nll(nll, job(), m);
    };

    // Anomaly.
    let anomaly = AnomalyView::new();
    let an_t = RwSignal::new(300usize);
    let an_steps = RwSignal::new(5usize);
    let anomaly_ref = NodeRef::<leptos::html::Canvas>::new();
    Effect::new(move |_| {
        let imgs = anomaly.images.get();
        if let (Some(c), Some(imgs)) = (anomaly_ref.get(), imgs) {
            let shape = input.get_untracked();
            let shape = Image {
                data: Vec::new(),
                ..shape
            };
            if imgs.iter().all(|i| i.len() == shape.c * shape.h * shape.w) {
                let refs: Vec<&[f32]> = imgs.iter().map(|v| v.as_slice()).collect();
                forward::draw(&c, &shape, &refs);
            }
        }
    });
    let start_anomaly = move |_| {
        engine::start_anomaly(
            anomaly,
            job(),
            an_t.get_untracked(),
            an_steps.get_untracked(),
        );
    };
    let has_model = move || ui.model.get().is_some() && ui.gpu_ready.get();

    view! {
        <section id="likelihood-panel" class="panel likelihood" aria-labelledby="likelihood-h">
            <h2 id="likelihood-h">"Likelihood and anomaly score of an image"</h2>
            <div class="explain">
                <p>"How probable does the model find an image? The variational bound (eq. 5) adds a prior term L"
                   <sub>"T"</sub> ", one KL term per timestep (the model's reverse step against the true posterior q(x"
                   <sub>"t−1"</sub> " | x" <sub>"t"</sub> ", x" <sub>"0"</sub> "), eq. 6–7) and the decoder L" <sub>"0"</sub>
                   " (eq. 13), in bits per pixel value. And does the model recognise it? Noise it to t, let DDIM bring it back: "
                   "digits come back close, other pictures are pulled toward digits — the reconstruction error is an anomaly score."</p>
            </div>
            <div class="tool-grid">
                <div class="tool-source">
                    <label for="tool-image">"Image"</label>
                    <select id="tool-image" prop:value=move || which.get()
                        on:change=move |ev| which.set(event_target_value(&ev))>
                        {digit_options(vec![
                            ("draw", "my drawing", Signal::derive(move || drawn.get().is_some())),
                            ("upload", "uploaded image", Signal::derive(move || uploaded.get().is_some())),
                        ])}
                    </select>
                    <label for="tool-upload">"Upload an image"</label>
                    {upload_input("tool-upload", move |img| { uploaded.set(Some(img)); which.set("upload".into()); })}
                    <div class="draw-row">
                        <canvas id="tool-draw" node_ref=draw_ref
                            aria-label="Draw a digit here with the mouse or a finger"
                            on:pointerdown=move |ev: web_sys::PointerEvent| {
                                ev.prevent_default();
                                if let Some(c) = draw_ref.get_untracked() {
                                    let _ = c.set_pointer_capture(ev.pointer_id());
                                    let p = pointer_pos(&c, &ev);
                                    stroke(&c, p, p);
                                    last_point.set(Some(p));
                                }
                            }
                            on:pointermove=move |ev: web_sys::PointerEvent| {
                                if let (Some(c), Some(from)) = (draw_ref.get_untracked(), last_point.get_untracked()) {
                                    let p = pointer_pos(&c, &ev);
                                    stroke(&c, from, p);
                                    last_point.set(Some(p));
                                }
                            }
                            on:pointerup=move |_| finish_stroke()
                            on:pointercancel=move |_| finish_stroke()></canvas>
                        <div class="draw-side">
                            <span class="small">"Draw a digit (white on black)"</span>
                            <button id="tool-clear" type="button" on:click=move |_| {
                                if let Some(c) = draw_ref.get_untracked() {
                                    clear_drawing(&c);
                                }
                                if which.get_untracked() == "draw" {
                                    which.set("0".into());
                                }
                                drawn.set(None);
                            }>"Clear drawing"</button>
                        </div>
                    </div>
                    <div class="buttons ood">
                        <button id="tool-invert" type="button" on:click=move |_| apply("inverted", &invert)>"Invert"</button>
                        <button id="tool-shuffle" type="button" on:click=move |_| {
                            let s = shuffle_seed.get_untracked();
                            shuffle_seed.set(s + 1);
                            apply("shuffled", &move |i: &Image| shuffle(i, s));
                        }>"Shuffle pixels"</button>
                        <button id="tool-rotate" type="button" on:click=move |_| apply("rotated 90°", &rotate)>"Rotate 90°"</button>
                        <button id="tool-reset" type="button" disabled=move || transforms.get().is_empty()
                            on:click=move |_| { current.set(source()); transforms.set(Vec::new()); }>"Undo all"</button>
                    </div>
                    <div class="preview-row">
                        <canvas id="tool-preview" node_ref=preview_ref
                            aria-label="The image as the model sees it"></canvas>
                        <p class="small" id="tool-image-desc">{move || {
                            let [c, h, w] = model_shape();
                            let t = transforms.get();
                            format!("As the model sees it: {c}×{h}×{w}, 8-bit levels{}",
                                if t.is_empty() { String::new() } else { format!(" · {}", t.join(", ")) })
                        }}</p>
                    </div>
                    <div class="fields">
                        {class_select("tool-class", "Class label", classes, class)}
                        {NumberField::new("tool-seed", "Noise seed", seed, 0, 0).view()}
                    </div>
                    <p class="hint">{move || match classes() {
                        Some(_) => "Both tools condition the model on this class (default: the digit's own; “none” = the null class, the unconditional model). The seed draws their noise, as the CLI's --seed.".to_string(),
                        None => "The seed draws both tools' noise, as the CLI's --seed. (Class labels apply to class-conditional models only.)".to_string(),
                    }}</p>
                </div>
                <div class="tool-nll">
                    <h3>"Bits/dim by the variational bound"</h3>
                    <div class="fields">
                        <label for="nll-mode">"Timesteps"</label>
                        <select id="nll-mode" prop:value=move || mode.get()
                            on:change=move |ev| mode.set(event_target_value(&ev))>
                            <option value="exact">"all T (the bound itself)"</option>
                            <option value="stride">"every k-th (estimate)"</option>
                        </select>
                        {NumberField::new("nll-stride", "k", stride, 10, 2).max(|| 500).disabled(move || mode.get() == "exact").view()}
                        {NumberField::new("nll-batch", "t's per U-Net call", per_call, 1, 1).max(|| 200).view()}
                    </div>
                    <p class="hint">{move || if mode.get() == "exact" {
                        format!("{} U-Net evaluations (T), batched: the network takes one timestep per sample, so many t's run in one call.", t_max())
                    } else {
                        format!("Estimate: L₀ exactly, and one KL term in each block of {k} timesteps (position drawn at random), counted {k} times: ~{} evaluations instead of {}.",
                            t_max() / stride.get().max(1) + 1, t_max(), k = stride.get())
                    }}</p>
                    {run_stop(("nll-run", "Compute bits/dim"), ("nll-stop", "Stop"), move || !has_model(),
                        move || nll.state.get() == ToolState::Running, start_nll, move || engine::stop_nll(nll))}
                    <progress id="nll-progress" max="1" hidden=move || nll.state.get() != ToolState::Running
                        prop:value=move || nll.progress.get()></progress>
                    <figure class="plot" style:display=move || if nll.terms.get().is_empty() { "none" } else { "block" }>
                        <div id="nll-plot" class="svg-box" inner_html=nll_svg></div>
                        <figcaption>"Per-timestep terms L" <sub>"t−1"</sub> " (KL) and the decoder L" <sub>"0"</sub> " (orange), bits/dim, log scale."</figcaption>
                    </figure>
                    <p id="nll-total" class="result" data-state=move || nll.state.get().as_str()
                        data-bpd=move || nll.total.get().map(|v| v.to_string()).unwrap_or_default()>
                        {move || nll.text.get()}</p>
                </div>
                <div class="tool-anomaly">
                    <h3>"Anomaly score by reconstruction"</h3>
                    <div class="fields">
                        {NumberField::new("anomaly-t", "Noise to t", an_t, 300, 1).max(move || t_max().saturating_sub(1).max(1)).view()}
                        {NumberField::new("anomaly-steps", "DDIM steps back", an_steps, 5, 1).max(|| 100).view()}
                    </div>
                    <div class="buttons">
                        <button id="anomaly-run" type="button" class="primary"
                            disabled=move || !has_model() || anomaly.state.get() == ToolState::Running
                            on:click=start_anomaly>"Score this image"</button>
                    </div>
                    <div style:display=move || if anomaly.images.get().is_none() { "none" } else { "block" }>
                        <canvas id="anomaly-canvas" node_ref=anomaly_ref
                            aria-label="The input (left), noised to t (middle) and its DDIM reconstruction (right)"></canvas>
                        <p class="small">"input · noised to t · reconstruction"</p>
                    </div>
                    <p id="anomaly-score" class="result" data-state=move || anomaly.state.get().as_str()
                        data-score=move || anomaly.score.get().map(|v| v.to_string()).unwrap_or_default()
                        data-percentile=move || anomaly.percentile.get().map(|v| v.to_string()).unwrap_or_default()>
                        {move || anomaly.text.get()}</p>
                    <p id="anomaly-reference" class="hint">{move || anomaly.reference_text.get()}</p>
                </div>
            </div>
        </section>
    }
}

/// The total's line: prior, decoder, Σ KL and the total, in bits/dim.
pub fn summary_text(
    prior: f64,
    decoder: Option<f64>,
    kl: f64,
    done: usize,
    total: usize,
    strided: Option<usize>,
) -> String {
    let mut s = format!("prior L_T = {}", fmt_bits(prior));
    if let Some(d) = decoder {
        let _ = write!(s, " · L_0 = {}", fmt_bits(d));
    }
    let _ = write!(
        s,
        " · Σ KL = {}{}",
        fmt_bits(kl),
        if done < total {
            format!(" (so far: {done} of {total} terms)")
        } else {
            String::new()
        }
    );
    if done == total {
        let t = prior + decoder.unwrap_or(0.0) + kl;
        let _ = write!(
            s,
            " · total = {} bits/dim{}",
            fmt_bits(t),
            match strided {
                Some(k) => format!(" (estimate: one t in every {k}, sum scaled by {k})"),
                None => " (the bound, every t)".to_string(),
            }
        );
    }
    s
}
