//! The toolbox panel: RePaint inpainting with a mask painted by mouse, finger or keyboard
//! presets, and interpolation between two seeds or two digits with a λ slider. The runs
//! themselves are [`engine::start_inpaint`] / [`engine::start_interpolation`]; this file is
//! the controls, the mask editor and the 2-D canvases (the images are small and read back
//! anyway, so no WebGPU canvas is needed).

use leptos::prelude::*;
use wasm_bindgen::{Clamped, JsCast};

use crate::diffusion::interpolate as interp;
use crate::web::controls::{
    class_of, class_select, digit_options, run_stop, upload_input, NumberField,
};
use crate::web::engine::{self, Ends, InpaintRequest, InterpRequest, ToolState, ToolboxUi, Ui};
use crate::web::forward::{self, Image};

fn parse_or<T: std::str::FromStr>(s: &str, default: T) -> T {
    s.trim().parse().unwrap_or(default)
}

/// `img` converted to `shape` = (C, H, W): grey from RGB by luma, RGB from grey by
/// repetition, and resampled by averaging the source pixels whose centres fall in each
/// target pixel (nearest when none do, i.e. when enlarging).
pub fn fit(img: &Image, shape: [usize; 3]) -> Vec<f32> {
    let [c, h, w] = shape;
    let (sc, sh, sw) = (img.c, img.h, img.w);
    let at = |ch: usize, y: usize, x: usize| -> f32 {
        let px = |k: usize| img.data[(k * sh + y) * sw + x];
        match (sc, c) {
            (3, 1) => 0.299 * px(0) + 0.587 * px(1) + 0.114 * px(2),
            (3, _) => px(ch.min(2)),
            _ => px(0),
        }
    };
    let mut out = vec![0f32; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            let (y0, y1) = (y * sh / h, ((y + 1) * sh).div_ceil(h).min(sh));
            for x in 0..w {
                let (x0, x1) = (x * sw / w, ((x + 1) * sw).div_ceil(w).min(sw));
                let (mut sum, mut n) = (0f32, 0usize);
                for sy in y0..y1.max(y0 + 1) {
                    for sx in x0..x1.max(x0 + 1) {
                        sum += at(ch, sy.min(sh - 1), sx.min(sw - 1));
                        n += 1;
                    }
                }
                out[(ch * h + y) * w + x] = sum / n as f32;
            }
        }
    }
    out
}

/// Mask presets; the mask is (H, W) with 1 = keep, 0 = fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    TopHalf,
    BottomHalf,
    LeftHalf,
    Centre,
    Clear,
    Invert,
}

pub fn apply_preset(mask: &mut [f32], h: usize, w: usize, p: Preset) {
    for y in 0..h {
        for x in 0..w {
            let m = &mut mask[y * w + x];
            *m = match p {
                Preset::TopHalf => f32::from(y >= h / 2),
                Preset::BottomHalf => f32::from(y < h / 2),
                Preset::LeftHalf => f32::from(x >= w / 2),
                Preset::Centre => {
                    let inside = |v: usize, n: usize| v >= n / 4 && v < n - n / 4;
                    f32::from(!(inside(y, h) && inside(x, w)))
                }
                Preset::Clear => 1.0,
                Preset::Invert => 1.0 - *m,
            };
        }
    }
}

/// The source image picked in a select: a digit "0"…"9", or "upload".
fn source(which: &str, uploaded: Option<Image>) -> Image {
    match (which, uploaded) {
        ("upload", Some(img)) => img,
        _ => forward::digit(which.parse().unwrap_or(0)),
    }
}

fn ctx2d(canvas: &web_sys::HtmlCanvasElement) -> Option<web_sys::CanvasRenderingContext2d> {
    canvas
        .get_context("2d")
        .ok()
        .flatten()
        .and_then(|c| c.dyn_into().ok())
}

/// The mask editor's picture: the image in grey, pixels to fill tinted red.
fn draw_mask(canvas: &web_sys::HtmlCanvasElement, shape: [usize; 3], img: &[f32], mask: &[f32]) {
    let [c, h, w] = shape;
    canvas.set_width(w as u32);
    canvas.set_height(h as u32);
    let Some(ctx) = ctx2d(canvas) else { return };
    let to_u8 = |v: f32| ((v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round();
    let mut rgba = vec![0u8; w * h * 4];
    for y in 0..h {
        for x in 0..w {
            let o = (y * w + x) * 4;
            let fill = 1.0 - mask.get(y * w + x).copied().unwrap_or(1.0);
            for ch in 0..3 {
                let src = if c == 3 { ch } else { 0 };
                let v = to_u8(img[(src * h + y) * w + x]);
                let tint = [230.0, 60.0, 80.0][ch];
                rgba[o + ch] = (v * (1.0 - 0.6 * fill) + tint * 0.6 * fill) as u8;
            }
            rgba[o + 3] = 255;
        }
    }
    if let Ok(data) =
        web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), w as u32, h as u32)
    {
        let _ = ctx.put_image_data(&data, 0.0, 0.0);
    }
}

/// Images side by side; `None` entries stay dark.
fn draw_row(canvas: &web_sys::HtmlCanvasElement, shape: [usize; 3], images: &[Option<&[f32]>]) {
    let [c, h, w] = shape;
    let blank = vec![-0.8f32; c * h * w];
    let imgs: Vec<&[f32]> = images.iter().map(|i| i.unwrap_or(&blank)).collect();
    let fake = Image {
        c,
        h,
        w,
        data: Vec::new(),
    };
    forward::draw(canvas, &fake, &imgs);
}

#[component]
pub fn ToolboxPanel(ui: Ui) -> impl IntoView {
    let tb = ToolboxUi::new();
    engine::set_toolbox_ui(tb);
    let shape = Memo::new(move |_| ui.model.get().map(|m| m.shape).unwrap_or([1, 28, 28]));
    let classes = move || ui.model.get().and_then(|m| m.classes);
    let t_train = move || ui.model.get().map(|m| m.t_train).unwrap_or(1000);
    let uploaded: RwSignal<Option<Image>> = RwSignal::new(None);
    let has_upload = Signal::derive(move || uploaded.get().is_some());
    let no_model = move || ui.model.get().is_none();

    // ---- inpainting
    let which = RwSignal::new("3".to_string());
    let class = RwSignal::new("3".to_string());
    let guidance = RwSignal::new(2.5f64);
    let steps = RwSignal::new(25usize);
    let jump = RwSignal::new(5usize);
    let resample = RwSignal::new(2usize);
    let seed = RwSignal::new(0u64);
    let brush_fill = RwSignal::new(true);
    let painting = RwSignal::new(false);
    let image = Memo::new(move |_| fit(&source(&which.get(), uploaded.get()), shape.get()));
    let mask: RwSignal<Vec<f32>> = RwSignal::new(Vec::new());
    Effect::new(move |_| {
        let [_, h, w] = shape.get();
        if mask.with_untracked(|m| m.len()) != h * w {
            let mut m = vec![1.0; h * w];
            apply_preset(&mut m, h, w, Preset::BottomHalf);
            mask.set(m);
        }
    });
    let preset = move |p: Preset| {
        let [_, h, w] = shape.get_untracked();
        mask.update(|m| {
            if m.len() == h * w {
                apply_preset(m, h, w, p);
            }
        });
    };
    let mask_ref = NodeRef::<leptos::html::Canvas>::new();
    Effect::new(move |_| {
        let (img, m, sh) = (image.get(), mask.get(), shape.get());
        if let Some(c) = mask_ref.get() {
            if m.len() == sh[1] * sh[2] {
                draw_mask(&c, sh, &img, &m);
            }
        }
    });
    // Paint at a pointer position: a round brush of radius ~H/10 model pixels.
    let paint = move |ev: &web_sys::PointerEvent| {
        let Some(c) = mask_ref.get_untracked() else {
            return;
        };
        let [_, h, w] = shape.get_untracked();
        let (cw, ch) = (
            c.client_width().max(1) as f64,
            c.client_height().max(1) as f64,
        );
        let px = ev.offset_x() as f64 / cw * w as f64;
        let py = ev.offset_y() as f64 / ch * h as f64;
        let r = (h.max(w) as f64 / 10.0).max(1.0);
        let v = if brush_fill.get_untracked() { 0.0 } else { 1.0 };
        mask.update(|m| {
            if m.len() != h * w {
                return;
            }
            for y in 0..h {
                for x in 0..w {
                    let (dx, dy) = (x as f64 + 0.5 - px, y as f64 + 0.5 - py);
                    if dx * dx + dy * dy <= r * r {
                        m[y * w + x] = v;
                    }
                }
            }
        });
    };
    let inpaint_running = move || tb.inpaint_state.get() == ToolState::Running;
    let run_inpaint = move || {
        let sh = shape.get_untracked();
        engine::start_inpaint(InpaintRequest {
            image: image.get_untracked(),
            shape: sh,
            mask: mask.get_untracked(),
            class: class_of(&class.get_untracked()),
            guidance: guidance.get_untracked(),
            steps: steps.get_untracked(),
            jump_length: jump.get_untracked(),
            jump_n_sample: resample.get_untracked(),
            seed: seed.get_untracked(),
        });
    };
    let out_ref = NodeRef::<leptos::html::Canvas>::new();
    Effect::new(move |_| {
        let view = tb.inpaint_view.get();
        let (img, m, sh) = (image.get(), mask.get(), shape.get());
        let Some(c) = out_ref.get() else { return };
        let hw = sh[1] * sh[2];
        if m.len() != hw {
            return;
        }
        // The input with the part to fill shown grey.
        let masked: Vec<f32> = img
            .iter()
            .enumerate()
            .map(|(i, &v)| if m[i % hw] == 1.0 { v } else { 0.0 })
            .collect();
        match view.filter(|v| v.shape == sh) {
            Some(v) => draw_row(
                &c,
                sh,
                &[
                    Some(&masked),
                    Some(&v.x_t),
                    Some(&v.x0),
                    v.result.as_deref(),
                ],
            ),
            None => draw_row(&c, sh, &[Some(&masked), None, None, None]),
        }
    });
    // ---- interpolation
    let mode = RwSignal::new("seeds".to_string());
    let seed_a = RwSignal::new(0u64);
    let seed_b = RwSignal::new(1u64);
    let digit_a = RwSignal::new("1".to_string());
    let digit_b = RwSignal::new("7".to_string());
    let t_mix = RwSignal::new(500usize);
    let noise_seed = RwSignal::new(0u64);
    let frames_k = RwSignal::new(5usize);
    let interp_steps = RwSignal::new(10usize);
    let interp_class = RwSignal::new("none".to_string());
    let interp_guidance = RwSignal::new(2.5f64);
    let lambda_i = RwSignal::new(0usize);
    let interp_running = move || tb.interp_state.get() == ToolState::Running;
    let run_interp = move || {
        let sh = shape.get_untracked();
        let ends = if mode.get_untracked() == "digits" {
            Ends::Images {
                a: fit(
                    &source(&digit_a.get_untracked(), uploaded.get_untracked()),
                    sh,
                ),
                b: fit(
                    &source(&digit_b.get_untracked(), uploaded.get_untracked()),
                    sh,
                ),
                t: t_mix.get_untracked(),
                seed: noise_seed.get_untracked(),
            }
        } else {
            Ends::Seeds(seed_a.get_untracked(), seed_b.get_untracked())
        };
        lambda_i.set(frames_k.get_untracked() / 2);
        engine::start_interpolation(InterpRequest {
            ends,
            frames: frames_k.get_untracked(),
            steps: interp_steps.get_untracked(),
            class: class_of(&interp_class.get_untracked()),
            guidance: interp_guidance.get_untracked(),
        });
    };
    let n_frames = move || {
        tb.interp_frames
            .with(|f| f.as_ref().map_or(0, |f| f.frames.len()))
    };
    let frame_ref = NodeRef::<leptos::html::Canvas>::new();
    let strip_ref = NodeRef::<leptos::html::Canvas>::new();
    let slider_ref = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        let Some(f) = tb.interp_frames.get() else {
            return;
        };
        let i = lambda_i.get().min(f.frames.len().saturating_sub(1));
        // The range's max grows as frames arrive; a value set while max was smaller was
        // clamped by the browser, so set both here, max first.
        if let Some(el) = slider_ref.get() {
            el.set_max(&f.frames.len().saturating_sub(1).to_string());
            el.set_value(&i.to_string());
        }
        if let (Some(c), Some(frame)) = (frame_ref.get(), f.frames.get(i)) {
            draw_row(&c, f.shape, &[Some(frame)]);
        }
        if let Some(c) = strip_ref.get() {
            let row: Vec<Option<&[f32]>> = f.frames.iter().map(|v| Some(v.as_slice())).collect();
            draw_row(&c, f.shape, &row);
        }
    });
    let lambda_text = move || {
        tb.interp_frames.with(|f| match f {
            Some(f) if !f.frames.is_empty() => {
                let i = lambda_i.get().min(f.frames.len() - 1);
                format!(
                    "λ = {:.3} (frame {} of {}){}",
                    interp::frame_lambda(i, f.k),
                    i + 1,
                    f.k,
                    if f.live {
                        " · running: x̂₀ so far"
                    } else {
                        ""
                    }
                )
            }
            _ => "λ = –".to_string(),
        })
    };

    view! {
        <section id="toolbox-panel" class="panel toolbox" aria-labelledby="toolbox-h">
            <h2 id="toolbox-h">"Toolbox: inpainting and interpolation"</h2>
            <p class="hint">"Both use the loaded model (see “Model”); images are converted to its size "
                {move || { let [c, h, w] = shape.get(); format!("({c}×{h}×{w})") }} "."</p>
            <div id="inpaint" class="tool" data-state=move || tb.inpaint_state.get().as_str()>
                <h3>"Inpainting (RePaint, Lugmayr et al. 2022)"</h3>
                <p class="explain">"Paint the part of the image to fill in. The model samples it with DDPM steps while the kept pixels are replaced, at every step, by the input noised to the same level; every “jump length” steps the sample goes back up that many levels and comes down again (“resampling”), so the new part fits the old. Kept pixels come back exactly."</p>
                <div class="tool-grid">
                    <div class="mask-editor">
                        <canvas id="inpaint-mask" node_ref=mask_ref tabindex="0"
                            aria-label="Mask editor: the image, with the part to fill in tinted red. Paint with the mouse or a finger. Keys: T top half, B bottom half, L left half, C centre square, X clear, I invert."
                            on:pointerdown=move |ev| {
                                ev.prevent_default();
                                if let Some(c) = mask_ref.get_untracked() {
                                    let _ = c.set_pointer_capture(ev.pointer_id());
                                    let _ = c.focus();
                                }
                                painting.set(true);
                                paint(&ev);
                            }
                            on:pointermove=move |ev| if painting.get_untracked() { paint(&ev) }
                            on:pointerup=move |_| painting.set(false)
                            on:pointercancel=move |_| painting.set(false)
                            on:keydown=move |ev| {
                                let p = match ev.key().to_ascii_lowercase().as_str() {
                                    "t" => Some(Preset::TopHalf),
                                    "b" => Some(Preset::BottomHalf),
                                    "l" => Some(Preset::LeftHalf),
                                    "c" => Some(Preset::Centre),
                                    "x" => Some(Preset::Clear),
                                    "i" => Some(Preset::Invert),
                                    _ => None,
                                };
                                if let Some(p) = p { ev.prevent_default(); preset(p); }
                            }></canvas>
                        <div class="buttons presets" role="group" aria-label="Mask presets">
                            <button id="mask-top" type="button" on:click=move |_| preset(Preset::TopHalf)>"Top half"</button>
                            <button id="mask-bottom" type="button" on:click=move |_| preset(Preset::BottomHalf)>"Bottom half"</button>
                            <button id="mask-left" type="button" on:click=move |_| preset(Preset::LeftHalf)>"Left half"</button>
                            <button id="mask-centre" type="button" on:click=move |_| preset(Preset::Centre)>"Centre square"</button>
                            <button id="mask-clear" type="button" on:click=move |_| preset(Preset::Clear)>"Clear"</button>
                            <button id="mask-invert" type="button" on:click=move |_| preset(Preset::Invert)>"Invert"</button>
                        </div>
                        <div class="brush-row" role="radiogroup" aria-label="Brush">
                            <label><input id="brush-fill" type="radio" name="brush" prop:checked=move || brush_fill.get()
                                on:change=move |_| brush_fill.set(true)/>" brush fills in"</label>
                            <label><input id="brush-keep" type="radio" name="brush" prop:checked=move || !brush_fill.get()
                                on:change=move |_| brush_fill.set(false)/>" brush keeps"</label>
                        </div>
                    </div>
                    <div class="fields">
                        <label for="inpaint-image">"Image"</label>
                        <select id="inpaint-image" prop:value=move || which.get()
                            on:change=move |ev| {
                                let v = event_target_value(&ev);
                                if let (Ok(k), Some(n)) = (v.parse::<usize>(), classes()) {
                                    if k < n { class.set(k.to_string()); }
                                }
                                which.set(v);
                            }>
                            {digit_options(vec![("upload", "uploaded image", has_upload)])}
                        </select>
                        <label for="inpaint-upload">"Upload"</label>
                        {upload_input("inpaint-upload", move |img| { uploaded.set(Some(img)); which.set("upload".into()); })}
                        {class_select("inpaint-class", "Class", classes, class)}
                        {NumberField::new("inpaint-guidance", "Guidance w", guidance, 2.5, 0.0).max(|| 20.0).step("0.5")
                            .disabled(move || classes().is_none() || class.get() == "none").view()}
                        {NumberField::new("inpaint-steps", "Steps", steps, 25, 1).max(t_train).view()}
                        {NumberField::new("inpaint-jump", "Jump length", jump, 5, 1).view()}
                        {NumberField::new("inpaint-resample", "Resampling r", resample, 2, 1).max(|| 20).view()}
                        {NumberField::new("inpaint-seed", "Seed", seed, 0, 0).view()}
                    </div>
                    <div class="tool-out">
                        {run_stop(("inpaint-run", "▶ Inpaint"), ("inpaint-stop", "■ Stop"), no_model, inpaint_running,
                            run_inpaint, engine::stop_inpaint)}
                        <canvas id="inpaint-canvas" node_ref=out_ref
                            aria-label="Left to right: the input with the part to fill grey, the current x_t, the network's x̂_0, and the result"></canvas>
                        <div class="quad-labels"><span>"input"</span><span>"x" <sub>"t"</sub></span><span>"x̂" <sub>"0"</sub></span><span>"result"</span></div>
                        <p id="inpaint-progress" class="counter" aria-live="polite">{move || tb.inpaint_progress.get()}</p>
                        <p id="inpaint-known" class="small">{move || tb.inpaint_known.get()}</p>
                        <p class="hint">{move || {
                            let moves = crate::diffusion::repaint::repaint_schedule(steps.get(), jump.get(), resample.get());
                            let calls = moves.iter().filter(|m| matches!(m, crate::diffusion::repaint::Move::Down(_))).count();
                            format!("{calls} U-Net calls ({} moves). The defaults (25 steps, jump 5, r = 2: 45 calls) took 54 s for the 28×28 MNIST model in a browser without a GPU (SwiftShader, busy 2-core machine); RePaint's paper uses 250 steps, jump 10, r = 10.", moves.len())
                        }}</p>
                    </div>
                </div>
            </div>
            <div id="interp" class="tool" data-state=move || tb.interp_state.get().as_str()>
                <h3>"Interpolation"</h3>
                <p class="explain">"Between two seeds: spherical interpolation of the starting noises x" <sub>"T"</sub> ", each frame denoised with DDIM (η = 0, deterministic), so λ = 0 and λ = 1 are the plain samples of the two seeds. Between two digits (the DDPM paper's Fig. 8): both noised to step t with the same noise, mixed (1 − λ)·x" <sub>"t"</sub> "ᴬ + λ·x" <sub>"t"</sub> "ᴮ, and denoised from t; a larger t gives smoother but less faithful mixes."</p>
                <div class="tool-grid">
                    <div class="fields">
                        <label for="interp-mode">"Between"</label>
                        <select id="interp-mode" prop:value=move || mode.get()
                            on:change=move |ev| mode.set(event_target_value(&ev))>
                            <option value="seeds">"two seeds"</option>
                            <option value="digits">"two digits (Fig. 8)"</option>
                        </select>
                        {NumberField::new("interp-seed-a", "Seed A", seed_a, 0, 0).hidden(move || mode.get() != "seeds").view()}
                        {NumberField::new("interp-seed-b", "Seed B", seed_b, 1, 0).hidden(move || mode.get() != "seeds").view()}
                        <label for="interp-digit-a" hidden=move || mode.get() != "digits">"Image A"</label>
                        <select id="interp-digit-a" hidden=move || mode.get() != "digits" prop:value=move || digit_a.get()
                            on:change=move |ev| digit_a.set(event_target_value(&ev))>
                            {digit_options(vec![("upload", "uploaded image", has_upload)])}
                        </select>
                        <label for="interp-digit-b" hidden=move || mode.get() != "digits">"Image B"</label>
                        <select id="interp-digit-b" hidden=move || mode.get() != "digits" prop:value=move || digit_b.get()
                            on:change=move |ev| digit_b.set(event_target_value(&ev))>
                            {digit_options(vec![("upload", "uploaded image", has_upload)])}
                        </select>
                        {NumberField::new("interp-t", "Noise to t", t_mix, 500, 0).max(move || t_train() - 1)
                            .hidden(move || mode.get() != "digits").view()}
                        {NumberField::new("interp-noise-seed", "Noise seed", noise_seed, 0, 0).hidden(move || mode.get() != "digits").view()}
                        {NumberField::new("interp-frames", "Frames K", frames_k, 5, 2).max(|| 16).view()}
                        {NumberField::new("interp-steps", "DDIM steps", interp_steps, 10, 1).max(t_train).view()}
                        {class_select("interp-class", "Class", classes, interp_class)}
                        {NumberField::new("interp-guidance", "Guidance w", interp_guidance, 2.5, 0.0).max(|| 20.0).step("0.5")
                            .disabled(move || classes().is_none() || interp_class.get() == "none").view()}
                    </div>
                    <div class="tool-out">
                        {run_stop(("interp-run", "▶ Interpolate"), ("interp-stop", "■ Stop"), no_model, interp_running,
                            run_interp, engine::stop_interpolation)}
                        <canvas id="interp-frame" node_ref=frame_ref
                            aria-label="The frame chosen with the λ slider"></canvas>
                        <div class="lambda-row">
                            <label for="interp-lambda">"λ"</label>
                            <input id="interp-lambda" node_ref=slider_ref type="range" min="0" step="1"
                                max=move || n_frames().saturating_sub(1).to_string()
                                prop:value=move || lambda_i.get().to_string()
                                disabled=move || n_frames() < 2
                                aria-describedby="interp-lambda-text"
                                on:input=move |ev| lambda_i.set(parse_or(&event_target_value(&ev), 0usize))/>
                            <span id="interp-lambda-text" class="frame-text">{lambda_text}</span>
                        </div>
                        <canvas id="interp-strip" node_ref=strip_ref
                            aria-label="All frames, λ = 0 (left) to λ = 1 (right)"></canvas>
                        <p id="interp-progress" class="counter" aria-live="polite">{move || tb.interp_progress.get()}</p>
                        <p class="hint">"Frames run as one batch when the device allows (else in smaller batches). The defaults (5 frames × 10 DDIM steps) took 32 s for the 28×28 MNIST model in a browser without a GPU (SwiftShader, busy 2-core machine)."</p>
                    </div>
                </div>
            </div>
        </section>
    }
}
