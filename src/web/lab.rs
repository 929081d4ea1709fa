//! The diffusion lab's view (the “Lab” tab, `#lab`): controls, teaching text, the WebGPU
//! canvas and the plots. All diffusion math runs in the Rust engine (`engine::lab`, `lab::`);
//! this file only turns signals into DOM and events into engine calls.

use leptos::prelude::*;

use crate::lab::data::Preset;
use crate::lab::field::{density_map, error_map, to_rgba8, EXACT_ARROW, LEARNED_ARROW};
use crate::web::engine::lab::{self as eng, LabSamplerKind, LabView, FIT_FACTOR};
use crate::web::plots::{self, Axis, Series};

/// Colours of the brush's classes (the palette of `lab_points.wgsl`, in order).
const CLASS_COLORS: [&str; 4] = ["#ff6b6b", "#59d973", "#669eff", "#ffcc40"];

fn parse_or<T: std::str::FromStr>(s: &str, default: T) -> T {
    s.trim().parse().unwrap_or(default)
}

/// A CSS linear gradient of a field colour map (the engine's own map, so the legend and the
/// panels cannot disagree).
fn gradient_css(map: fn(f64) -> [f64; 3]) -> String {
    let stops: Vec<String> = (0..=8)
        .map(|i| {
            let [r, g, b, _] = to_rgba8(map(i as f64 / 8.0));
            format!("rgb({r},{g},{b}) {}%", i * 100 / 8)
        })
        .collect();
    format!(
        "background: linear-gradient(to right, {})",
        stops.join(", ")
    )
}

/// A CSS colour of an arrow colour.
fn rgb_css(c: [f64; 3]) -> String {
    let [r, g, b, _] = to_rgba8(c);
    format!("rgb({r},{g},{b})")
}

/// The legend and teaching text of the field views (density, score).
fn field_legend(ui: eng::LabUi) -> impl IntoView {
    let view = move || ui.view.get();
    let t_text = move || {
        let t = ui.shown_t.get().max(1);
        let held = if ui.scrub.get().is_some() {
            "held by the scrubber"
        } else {
            "following the animation; drag the scrubber to hold a t"
        };
        format!("t = {t} ({held})")
    };
    view! {
        <div id="lab-field-legend" class="lab-legend" hidden=move || !matches!(view(), LabView::Density | LabView::Score)
            data-view=move || view().key()>
            <p class="lab-legend-title">{move || match (view(), ui.field_class.get()) {
                (LabView::Score, None) => "Left: the learned score s_θ = −ε_θ/√(1−ᾱ_t) over ‖ε_θ − ε*‖. Right: the exact score ∇log q(x_t) over q(x_t).".to_string(),
                (LabView::Score, Some(y)) => {
                    let w = ui.settings.get().guidance;
                    format!("Class {y}, guidance w = {w}. Left: the learned guided score −(ε_∅ + w(ε_{y} − ε_∅))/√(1−ᾱ_t) over its error. Right: the exact guided score ∇log q(x_t) + w(∇log q(x_t | y = {y}) − ∇log q(x_t)) over q(x_t | y = {y}).")
                }
                (_, Some(y)) => {
                    let w = ui.settings.get().guidance;
                    format!("Class {y}. Left: the density at t of class {y}'s particles (sampled with guidance w = {w}). Right: the exact density q(x_t | y = {y}) of class {y}'s points alone.")
                }
                _ => "Left: the particles' density at t. Right: the exact density q(x_t) of the noised data.".to_string(),
            }} " " <span class="lab-legend-t">{t_text}</span></p>
            {field_class_select(ui)}
            <div class="lab-scale">
                <span>"density 0"</span>
                <span class="lab-bar" style=gradient_css(density_map)></span>
                <span class="lab-scale-max">{move || {
                    let q_name = if ui.field_class.get().is_some() { "q(x_t | y)" } else { "q(x_t)" };
                    match ui.field_scales.get() {
                        Some((q, _)) => format!("max {q_name} = {q:.3}"),
                        None => format!("max {q_name}"),
                    }
                }}</span>
            </div>
            <div class="lab-scale" hidden=move || view() != LabView::Score>
                <span>"‖ε_θ − ε*‖ 0"</span>
                <span class="lab-bar" style=gradient_css(error_map)></span>
                <span>"≥ 1"</span>
            </div>
            <p class="hint" hidden=move || view() != LabView::Score>{move || match ui.field_scales.get() {
                Some((_, s)) => format!("Longest arrow: ‖s‖ = {s:.2} (length ∝ √‖s‖, one scale for both panels)."),
                None => String::new(),
            }}</p>
            <p class="hint" hidden=move || view() != LabView::Density>
                "The exact density is a mixture of one Gaussian per data point, q(x_t) = (1/N) Σ_i 𝒩(√ᾱ_t x_i, (1−ᾱ_t) I) (eq. 4 applied to every x_i). Both panels use one colour scale — (density / max q(x_t))^½, the maximum taken over the right panel — so they compare pixel for pixel; where the particles are denser than q's peak the left panel saturates to white. If the model has learned the score, the left panel looks like the right one at every t (and at t = 0 like the data)."</p>
            <p class="hint" hidden=move || view() != LabView::Score>
                "Each arrow is a score, the direction in which log-density rises fastest. The network predicts noise, and the noise is a scaled score: ε_θ(x_t, t) ≈ −√(1−ᾱ_t) ∇log q(x_t) (denoising score matching; eq. 4 and eq. 14), so s_θ = −ε_θ/√(1−ᾱ_t) ("
                <span style=rgb_css(LEARNED_ARROW)>"cyan"</span> ") estimates ∇log q(x_t) ("
                <span style=rgb_css(EXACT_ARROW)>"orange"</span>
                "). The exact score is known in closed form: ∇log q(x_t) = (√ᾱ_t Σ_i w_i x_i − x_t)/(1−ᾱ_t), where w_i is the softmax over data points of −‖x_t − √ᾱ_t x_i‖²/(2(1−ᾱ_t)) — the posterior probability that x_t came from x_i. So Σ_i w_i x_i is Tweedie's E[x_0 | x_t], a weighted mean of data points, and every arrow points from x_t towards √ᾱ_t times it. Both panels share one arrow scale (length ∝ √‖s‖). The red-yellow heat map on the left is ‖ε_θ − ε*‖: where the model is still wrong. The learned arrows are re-evaluated from the EMA weights every ~1.5 s while it trains."</p>
            <p class="hint" hidden=move || view() != LabView::Score || ui.num_classes.get() == 0>
                "With classes, pick one under “Arrows for”: the network is then asked for ε_y (class y) as well as ε_∅ (the null class it learned by label dropout), and both panels show classifier-free guidance, ε_∅ + w(ε_y − ε_∅), the ε the particles of class y follow. Its exact counterpart combines the exact score of all points with that of class y's points alone, ∇log q(x_t) + w(∇log q(x_t | y) − ∇log q(x_t)) = ∇log(q(x_t)^(1−w) q(x_t | y)^w): at w = 1 the arrows lead into class y's modes only; w > 1 also pushes away from the other classes. The background is then q(x_t | y), the mixture over class y's points alone."</p>
            <p class="hint" hidden=move || view() != LabView::Density || ui.num_classes.get() == 0>
                "With classes, pick one under “Density of”: the left panel then counts only the particles of class y, the right one is q(x_t | y) = (1/N_y) Σ_{i in class y} 𝒩(√ᾱ_t x_i, (1−ᾱ_t) I), the mixture over class y's points alone. At w = 1 a well-trained model's class-y particles follow q(x_t | y); with w > 1 they crowd into the parts of it farthest from the other classes."</p>
        </div>
    }
}

/// The field views' class (`#lab-field-class`, class-conditional data only): all points (the
/// null class) or one class — its density q(x_t | y) and particles in the density view, its
/// arrows guided with the page's w over q(x_t | y) in the score view.
fn field_class_select(ui: eng::LabUi) -> impl IntoView {
    let hidden = move || {
        !matches!(ui.view.get(), LabView::Density | LabView::Score) || ui.num_classes.get() == 0
    };
    let score = move || ui.view.get() == LabView::Score;
    view! {
        <div class="lab-row" hidden=hidden>
            <label for="lab-field-class">{move || if score() { "Arrows for" } else { "Density of" }}</label>
            <select id="lab-field-class"
                prop:value=move || ui.field_class.get().map(|c| c.to_string()).unwrap_or_default()
                on:change=move |ev| ui.field_class.set(event_target_value(&ev).parse().ok())>
                <option value="">"all points (null class ∅)"</option>
                {move || (0..ui.num_classes.get()).map(|c| view! {
                    <option value=c.to_string()>{move || if score() {
                        format!("class {c} (guided, w from the slider)")
                    } else {
                        format!("class {c}: q(x_t | y = {c})")
                    }}</option>
                }).collect_view()}
            </select>
        </div>
    }
}

/// `window.kakusanLabParticles()` → Promise<JSON `{row, last, xyc}` of the particles on
/// screen, or null> (tests: e2e check r compares the classes' particles across guidance).
fn install_particles_hook() {
    use wasm_bindgen::prelude::*;
    let Some(w) = web_sys::window() else {
        return;
    };
    let hook = Closure::<dyn Fn() -> js_sys::Promise>::new(|| {
        wasm_bindgen_futures::future_to_promise(async {
            match eng::shown_particles_json().await {
                Ok(Some(json)) => Ok(JsValue::from_str(&json)),
                Ok(None) => Ok(JsValue::NULL),
                Err(e) => Err(JsValue::from_str(&e.to_string())),
            }
        })
    });
    let _ = js_sys::Reflect::set(&w, &"kakusanLabParticles".into(), hook.as_ref());
    hook.forget();
}

/// Chunk means of `v`, at most `max` values.
fn downsample(v: &[f32], max: usize) -> Vec<f64> {
    let chunk = v.len().div_ceil(max).max(1);
    v.chunks(chunk)
        .map(|c| c.iter().map(|&x| x as f64).sum::<f64>() / c.len() as f64)
        .collect()
}

fn loss_svg(losses: &[f32]) -> String {
    if losses.is_empty() {
        return String::new();
    }
    let vals = downsample(losses, 200);
    let top = vals.iter().cloned().fold(0.0f64, f64::max).clamp(0.5, 2.0);
    let top = (top * 2.0).ceil() / 2.0;
    plots::line_plot_x(
        "training loss",
        &[Series {
            values: &vals,
            color: "#4aa8ff",
            label: "L_simple (mean per chunk)",
            dashed: false,
            right_axis: false,
        }],
        &Axis {
            min: 0.0,
            max: top,
            ticks: vec![0.0, top / 2.0, top],
            label: "loss",
        },
        None,
        None,
        "step",
        Some(losses.len() as f64),
    )
}

fn fit_svg(history: &[(u64, f64)], floor: f64) -> String {
    if history.is_empty() || floor <= 0.0 {
        return String::new();
    }
    let ratio: Vec<f64> = history.iter().map(|h| (h.1 / floor).min(20.0)).collect();
    let thr = vec![FIT_FACTOR; ratio.len()];
    let top = ratio.iter().cloned().fold(4.0f64, f64::max).ceil();
    plots::line_plot_x(
        "fit figure over training",
        &[
            Series {
                values: &ratio,
                color: "#ff7a90",
                label: "sliced W₂ / floor",
                dashed: false,
                right_axis: false,
            },
            Series {
                values: &thr,
                color: "#9aa0aa",
                label: "target 2×",
                dashed: true,
                right_axis: false,
            },
        ],
        &Axis {
            min: 0.0,
            max: top,
            ticks: vec![0.0, 1.0, FIT_FACTOR, top],
            label: "× floor",
        },
        None,
        None,
        "step",
        history.last().map(|h| h.0 as f64),
    )
}

fn bound_svg(terms: &[f64]) -> String {
    // L_0 (the decoder, a density term) is shown in the text; the plot has L_1 … L_{T−1}.
    if terms.len() < 3 {
        return String::new();
    }
    let v: Vec<f64> = terms[1..].to_vec();
    let max = v.iter().cloned().fold(0.01f64, f64::max);
    let top = if max > 1.0 {
        max.ceil()
    } else {
        (max * 100.0).ceil() / 100.0
    };
    plots::line_plot_x(
        "variational bound terms",
        &[Series {
            values: &v,
            color: "#ffd166",
            label: "L_t (bits per point)",
            dashed: false,
            right_axis: false,
        }],
        &Axis {
            min: 0.0,
            max: top,
            ticks: vec![0.0, top / 2.0, top],
            label: "bits",
        },
        None,
        None,
        "t",
        Some(v.len() as f64),
    )
}

#[component]
pub fn LabPanel(active: Signal<bool>) -> impl IntoView {
    let ui = eng::lab_ui();
    install_particles_hook();
    let canvas_ref = NodeRef::<leptos::html::Canvas>::new();
    Effect::new(move |_| {
        if active.get() {
            if let Some(c) = canvas_ref.get() {
                eng::activate(c);
            }
        } else {
            eng::deactivate();
        }
    });
    let s = move || ui.settings.get();
    let state = move || ui.state.get();
    let classes = move || ui.num_classes.get();
    let drawing_pointer = RwSignal::new(false);
    let frac = |ev: &leptos::ev::PointerEvent| -> Option<(f32, f32)> {
        let c = event_target::<web_sys::HtmlCanvasElement>(ev);
        let (w, h) = (c.client_width(), c.client_height());
        if w <= 0 || h <= 0 {
            return None;
        }
        Some((
            ev.offset_x() as f32 / w as f32,
            ev.offset_y() as f32 / h as f32,
        ))
    };
    let fit_text = move || match ui.fit.get() {
        Some(f) => format!(
            "sliced W₂ {:.4} = {:.2}× floor ({:.4}) at step {}{}",
            f.sw,
            f.sw / f.floor,
            f.floor,
            f.step,
            f.untrained
                .map(|u| format!(" · untrained {u:.3}"))
                .unwrap_or_default()
        ),
        None => "waiting for the first finished run of the particles…".into(),
    };
    view! {
        <section id="lab-panel" class="panel lab" data-state=state aria-labelledby="lab-h">
            <h2 id="lab-h">"Diffusion lab: train a diffusion model on 2-D points, live"</h2>
            <div class="explain">
                <p>"A small network ε" <sub>"θ"</sub> "(x" <sub>"t"</sub> ", t) (an MLP, 3 × 128 SiLU) learns to predict the noise ε that the forward process added, x"
                   <sub>"t"</sub> " = √ᾱ" <sub>"t"</sub> " x" <sub>"0"</sub> " + √(1−ᾱ" <sub>"t"</sub> ") ε (eq. 4), by minimising ‖ε − ε"
                   <sub>"θ"</sub> "‖² (eq. 14, Algorithm 1) on your GPU — three compute dispatches per training step."</p>
                <p>"The coloured dots are " <b>"particles"</b> ": independent samples started from pure noise x" <sub>"T"</sub>
                   " ~ 𝒩(0, I) and moved step by step with the current (EMA) weights — DDPM (eq. 11, Algorithm 2), DDIM (Song et al., η = 0 deterministic) or the probability-flow ODE. Gray dots are the data. While it trains, each new run of particles uses newer weights, so you watch it learn."</p>
            </div>
            <div class="lab-grid">
                <div class="lab-stage">
                    <canvas id="lab-canvas" node_ref=canvas_ref tabindex="0"
                        class:drawing=move || ui.drawing.get()
                        aria-label="Particles of the reverse process over the data (click to pick particles; in draw mode, drag to draw points)"
                        on:pointerdown=move |ev| {
                            let Some((fx, fy)) = frac(&ev) else { return };
                            if ui.drawing.get_untracked() {
                                drawing_pointer.set(true);
                                eng::brush_at(fx, fy, 12);
                            } else {
                                wasm_bindgen_futures::spawn_local(eng::pick_at(fx, fy));
                            }
                        }
                        on:pointermove=move |ev| {
                            if ui.drawing.get_untracked() && drawing_pointer.get_untracked() {
                                if let Some((fx, fy)) = frac(&ev) {
                                    eng::brush_at(fx, fy, 6);
                                }
                            }
                        }
                        on:pointerup=move |_| drawing_pointer.set(false)
                        on:pointerleave=move |_| drawing_pointer.set(false)
                        on:keydown=move |ev| {
                            if ev.key() == " " {
                                ev.prevent_default();
                                eng::toggle_training();
                            }
                        }></canvas>
                    <div class="lab-row">
                        <label for="lab-t">{move || {
                            let (row, total) = ui.row.get();
                            format!("reverse step {row} of {total} (t = {})", ui.shown_t.get())
                        }}</label>
                        <input id="lab-t" type="range" min="0"
                            max=move || ui.row.get().1.to_string()
                            prop:value=move || ui.row.get().0.to_string()
                            on:input=move |ev| ui.scrub.set(Some(parse_or(&event_target_value(&ev), 0)))/>
                        <button id="lab-live" type="button" disabled=move || ui.scrub.get().is_none()
                            on:click=move |_| ui.scrub.set(None)>"Follow live"</button>
                    </div>
                    {field_legend(ui)}
                    <p class="hint">"Drag the scrubber to hold the particles at step t of the reverse run (x" <sub>"T"</sub>
                        " at the left, x" <sub>"0"</sub> " at the right). Click the canvas to pick a few particles: their paths are drawn in white and a yellow ring marks Tweedie's x̂"
                        <sub>"0"</sub> " = (x" <sub>"t"</sub> " − √(1−ᾱ" <sub>"t"</sub> ") ε" <sub>"θ"</sub> ")/√ᾱ" <sub>"t"</sub>
                        " — the model's guess of where the particle ends. For the exact score that guess is a weighted mean of data points (their posterior weights), so early in the run it sits between the clusters."</p>
                    <p class="lab-picks">{move || match ui.picks.get() {
                        0 => "No particles picked.".to_string(),
                        k => format!("{k} particles picked."),
                    }} " "
                        <button id="lab-clear-picks" type="button" disabled=move || ui.picks.get() == 0
                            on:click=move |_| eng::clear_picks()>"Clear picks"</button></p>
                </div>
                <div class="lab-controls">
                    <div class="lab-buttons">
                        <button id="lab-train" type="button" class="primary"
                            disabled=move || state() == "idle"
                            aria-pressed=move || (state() == "training").to_string()
                            on:click=move |_| eng::toggle_training()>
                            {move || if state() == "training" { "Pause" } else { "Train" }}
                        </button>
                        <button id="lab-reset" type="button" disabled=move || state() == "idle"
                            on:click=move |_| eng::reset()>"Reset"</button>
                    </div>
                    <p id="lab-rate" class="lab-rate"
                        data-steps=move || ui.steps.get().to_string()
                        data-steps-per-s=move || format!("{:.3}", ui.steps_per_s.get())
                        data-gflops=move || format!("{:.3}", ui.gflops.get())
                        data-fps=move || format!("{:.2}", ui.fps.get())
                        data-sample-steps-per-s=move || format!("{:.3}", ui.sample_steps_per_s.get())
                        data-train-s=move || format!("{:.2}", ui.train_s.get())>
                        {move || format!("step {} · {:.1} steps/s · {:.2} GFLOP/s · {:.0} s of training · sampling {:.1} steps/s, drawing {:.1} frames/s",
                            ui.steps.get(), ui.steps_per_s.get(), ui.gflops.get(), ui.train_s.get(), ui.sample_steps_per_s.get(), ui.fps.get())}
                    </p>
                    <p class="hint" id="lab-data-info">{move || ui.data_info.get()}</p>
                    <div class="fields">
                        <label for="lab-preset">"Data"</label>
                        <select id="lab-preset" prop:value=move || s().preset
                            on:change=move |ev| { let v = event_target_value(&ev); eng::apply(|s| s.preset = v); }>
                            {Preset::ALL.iter().map(|p| view! { <option value=p.name()>{p.name()}</option> }).collect_view()}
                            <option value="drawing">"your drawing"</option>
                        </select>
                        <label for="lab-points">"Points"</label>
                        <input id="lab-points" type="number" min="2" max="20000" step="1000"
                            prop:value=move || s().points.to_string()
                            on:change=move |ev| { let v = parse_or(&event_target_value(&ev), 8000usize); eng::apply(|s| s.points = v); }/>
                        <label for="lab-word" hidden=move || s().preset != "word">"Word"</label>
                        <input id="lab-word" type="text" maxlength="12" hidden=move || s().preset != "word"
                            prop:value=move || s().word
                            on:change=move |ev| { let v = event_target_value(&ev); eng::apply(|s| s.word = v); }/>
                        <label for="lab-classes">"Classes"</label>
                        <input id="lab-classes" type="checkbox" prop:checked=move || s().classes
                            disabled=move || s().preset == "drawing"
                            on:change=move |ev| { let v = event_target_checked(&ev); eng::apply(|s| s.classes = v); }/>
                        <label for="lab-sampler">"Sampler"</label>
                        <select id="lab-sampler" prop:value=move || s().sampler.key().to_string()
                            on:change=move |ev| { let v = LabSamplerKind::from_key(&event_target_value(&ev)); eng::apply(|s| s.sampler = v); }>
                            <option value="ddpm">"DDPM (ancestral)"</option>
                            <option value="ddim">"DDIM"</option>
                            <option value="ode">"probability-flow ODE"</option>
                        </select>
                        <label for="lab-eta">"DDIM η"</label>
                        <input id="lab-eta" type="number" min="0" max="1" step="0.1"
                            disabled=move || s().sampler != LabSamplerKind::Ddim
                            prop:value=move || s().eta.to_string()
                            on:change=move |ev| { let v: f64 = parse_or(&event_target_value(&ev), 0.0); eng::apply(|s| s.eta = v.clamp(0.0, 1.0)); }/>
                        <label for="lab-sample-steps">"Sampling steps"</label>
                        <input id="lab-sample-steps" type="number" min="1" max=move || s().timesteps.to_string()
                            prop:value=move || s().sample_steps.to_string()
                            on:change=move |ev| { let v = parse_or(&event_target_value(&ev), 50usize); eng::apply(|s| s.sample_steps = v.clamp(1, s.timesteps)); }/>
                        <label for="lab-particles">"Particles"</label>
                        <select id="lab-particles" prop:value=move || s().particles.to_string()
                            on:change=move |ev| { let v = parse_or(&event_target_value(&ev), 10_000usize); eng::apply(|s| s.particles = v); }>
                            {move || {
                                // The menu's sizes, plus one set by the URL (?particles=).
                                let mut sizes = vec![1000usize, 2000, 5000, 10_000, 20_000];
                                let cur = s().particles;
                                if !sizes.contains(&cur) {
                                    sizes.push(cur);
                                    sizes.sort_unstable();
                                }
                                sizes.into_iter().map(|n| view! { <option value=n.to_string() selected=n == cur>{n.to_string()}</option> }).collect_view()
                            }}
                        </select>
                        <label for="lab-guidance" hidden=move || classes() == 0>{move || format!("Guidance w = {}", s().guidance)}</label>
                        <input id="lab-guidance" type="range" min="0" max="6" step="0.5" hidden=move || classes() == 0
                            prop:value=move || s().guidance.to_string()
                            on:change=move |ev| { let v: f32 = parse_or(&event_target_value(&ev), 1.0); eng::apply(|s| s.guidance = v); }/>
                        <label for="lab-view">"View"</label>
                        <select id="lab-view" prop:value=move || ui.view.get().key()
                            on:change=move |ev| ui.view.set(LabView::from_key(&event_target_value(&ev)))>
                            <option value="reverse">"reverse process (particles)"</option>
                            <option value="forward">"forward process (data noised to t)"</option>
                            <option value="density">"density: particles | exact q(x_t)"</option>
                            <option value="score">"score: learned | exact"</option>
                        </select>
                        <label for="lab-forward-t" hidden=move || ui.view.get() != LabView::Forward>{move || format!("forward t = {}", ui.forward_t.get())}</label>
                        <input id="lab-forward-t" type="range" min="0" max=move || s().timesteps.to_string()
                            hidden=move || ui.view.get() != LabView::Forward
                            prop:value=move || ui.forward_t.get().to_string()
                            on:input=move |ev| ui.forward_t.set(parse_or(&event_target_value(&ev), 0))/>
                        <label for="lab-show-data">"Show data"</label>
                        <input id="lab-show-data" type="checkbox" prop:checked=move || ui.show_data.get()
                            on:change=move |ev| ui.show_data.set(event_target_checked(&ev))/>
                    </div>
                    <p class="hint">{move || if classes() > 0 {
                        "Class-conditional: each particle has a class (its colour). Classifier-free guidance ε = ε_∅ + w(ε_y − ε_∅): w = 1 is plain conditional sampling, w > 1 pulls particles into their own class's modes (and away from the others)."
                    } else {
                        "Forward view: the same data noised to t by eq. 4 — by t = T it is indistinguishable from 𝒩(0, I), where the particles start."
                    }}</p>
                    <fieldset class="lab-draw">
                        <legend>"Draw your own data"</legend>
                        <button id="lab-draw" type="button" aria-pressed=move || ui.drawing.get().to_string()
                            on:click=move |_| ui.drawing.update(|d| *d = !*d)>
                            {move || if ui.drawing.get() { "Stop drawing" } else { "Draw" }}
                        </button>
                        <span class="lab-colors" role="radiogroup" aria-label="Class of the next stroke">
                            {CLASS_COLORS.iter().enumerate().map(|(i, c)| view! {
                                <button type="button" class="swatch" id=format!("lab-class-{i}")
                                    role="radio" aria-checked=move || (ui.draw_class.get() == i as u32).to_string()
                                    aria-label=format!("class {i}")
                                    style=format!("background:{c}")
                                    on:click=move |_| ui.draw_class.set(i as u32)></button>
                            }).collect_view()}
                        </span>
                        <button id="lab-draw-clear" type="button" on:click=move |_| eng::clear_drawing()>"Clear"</button>
                        <button id="lab-draw-use" type="button" on:click=move |_| eng::use_drawing()>"Use drawing"</button>
                        <p class="hint">{move || format!("{} points drawn. Drag on the canvas (mouse or finger); one colour per stroke gives one class per colour for class-conditional training.", ui.draft_len.get())}</p>
                    </fieldset>
                </div>
            </div>
            <div class="lab-plots">
                <figure class="plot">
                    <div id="lab-loss-plot" class="svg-box" inner_html=move || loss_svg(&ui.losses.get())></div>
                    <figcaption>"L_simple (eq. 14) per step, read from a loss ring on the GPU about once a second."</figcaption>
                </figure>
                <figure class="plot">
                    <p id="lab-fit" data-fit=move || ui.fit.get().map(|f| format!("{:.5}", f.sw)).unwrap_or_default()
                        data-floor=move || ui.fit.get().map(|f| format!("{:.5}", f.floor)).unwrap_or_default()
                        data-untrained=move || ui.fit.get().and_then(|f| f.untrained).map(|u| format!("{u:.5}")).unwrap_or_default()
                        data-step=move || ui.fit.get().map(|f| f.step.to_string()).unwrap_or_default()
                        data-time-to-fit=move || ui.time_to_fit.get().map(|t| format!("{:.2}", t.0)).unwrap_or_default()>
                        {fit_text}</p>
                    <div id="lab-fit-plot" class="svg-box" inner_html=move || fit_svg(&ui.fit_history.get(), ui.fit.get().map_or(0.0, |f| f.floor))></div>
                    <figcaption>"Fit figure: the sliced 2-Wasserstein distance between the particles' end points and the data (64 projections, 1,000 points each), next to its floor — the mean of the same distance between two independent draws of the data, over 16 pairs — and the untrained model's. "
                        {move || ui.time_to_fit.get().map(|(s, k)| format!("Reached 2× the floor after {s:.0} s of training ({k} steps)."))}</figcaption>
                </figure>
                <figure class="plot">
                    <div id="lab-bound-plot" class="svg-box" inner_html=move || ui.bound.get().map(|b| bound_svg(&b.terms)).unwrap_or_default()></div>
                    <figcaption id="lab-nll">{move || match ui.bound.get() {
                        Some(b) => format!("Variational bound (eq. 5): L_0 = {:.2}, Σ L_1…L_(T−1) = {:.2}, L_T = {:.3}; total {:.2} bits per point (an upper bound on −log₂ p(x_0); a density, so it can be negative). Monte Carlo, 16 draws per t, every few seconds while training.",
                            b.terms[0], b.terms[1..].iter().sum::<f64>(), b.prior, b.total),
                        None => "The variational bound's terms L_t (eq. 5, bits per point) appear here while it trains.".into(),
                    }}</figcaption>
                </figure>
            </div>
        </section>
    }
}

/// `?bench=lab`: the training benchmark's result (JSON in #bench-result, like `?bench`).
#[component]
pub fn LabBenchPanel() -> impl IntoView {
    let ui = eng::lab_ui();
    wasm_bindgen_futures::spawn_local(eng::run_lab_bench());
    view! {
        <section class="panel bench" aria-labelledby="lab-bench-h">
            <h2 id="lab-bench-h">"Benchmark: diffusion lab training step"</h2>
            <pre id="bench-result">{move || ui.bench.get().map(|b| b.0).unwrap_or_default()}</pre>
            <pre class="bench-table">{move || ui.bench.get().map(|b| b.1).unwrap_or_else(|| "running…".into())}</pre>
        </section>
    }
}
