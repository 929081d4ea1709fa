//! The page: reverse process (WebGPU canvas + controls + schedule plot), model loading,
//! forward-process explorer, benchmark. DOM ids follow the web contract.

use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::web::engine::{self, RunState, SamplerKind, Settings, Ui};
use crate::web::forward::{self, Image};
use crate::web::plots::{self, Series};
use crate::web::toolbox::ToolboxPanel;

fn parse_or<T: std::str::FromStr>(s: &str, default: T) -> T {
    s.trim().parse().unwrap_or(default)
}

/// Change the sampling settings and re-plan the run when they differ.
fn update_settings(ui: Ui, f: impl FnOnce(&mut Settings)) {
    let old = ui.settings.get_untracked();
    let mut new = old.clone();
    f(&mut new);
    if new != old {
        ui.settings.set(new.clone());
        engine::apply_settings(&old, &new);
    }
}

#[component]
pub fn App() -> impl IntoView {
    let ui = Ui::new();
    engine::set_ui(ui);
    let bench = engine::bench_mode();
    let lab_bench = engine::lab::lab_bench_mode();
    // The Lab tab is the `#lab` view of the same page (and the same GPU device).
    let lab = RwSignal::new(location_is_lab());
    if let Some(w) = web_sys::window() {
        let cb = Closure::<dyn FnMut()>::new(move || lab.set(location_is_lab()));
        let _ = w.add_event_listener_with_callback("hashchange", cb.as_ref().unchecked_ref());
        cb.forget();
    }
    view! {
        <header class="top">
            <div class="title">
                <h1>"kakusan " <span lang="ja">"拡散"</span></h1>
                <p class="subtitle">"Denoising diffusion (Ho, Jain & Abbeel 2020), live on your GPU with WebGPU"</p>
            </div>
            <p id="status" class="status" role="status" aria-live="polite">{move || ui.status.get()}</p>
        </header>
        <div id="error" class="error" role="alert" hidden=move || ui.error.get().is_none()>
            <span class="error-text">{move || ui.error.get().unwrap_or_default()}</span>
            <span class="error-actions">
                <button id="restart-device" type="button"
                    hidden=move || !ui.device_lost.get()
                    on:click=move |_| wasm_bindgen_futures::spawn_local(engine::restart_device())>
                    "Restart GPU"
                </button>
                <button id="dismiss-error" type="button" aria-label="Dismiss this message"
                    on:click=move |_| ui.error.set(None)>
                    "Dismiss"
                </button>
            </span>
        </div>
        <nav class="tabs" role="tablist" aria-label="Views">
            <a id="sampler-tab" role="tab" href="#" aria-selected=move || (!lab.get()).to_string()
                class:active=move || !lab.get()>"Sampler"</a>
            <a id="lab-tab" role="tab" href="#lab" aria-selected=move || lab.get().to_string()
                class:active=move || lab.get()>"Lab"</a>
        </nav>
        <main>
            {bench.then(|| view! { <BenchPanel ui=ui/> })}
            {lab_bench.then(|| view! { <crate::web::lab::LabBenchPanel/> })}
            <div id="sampler-view" hidden=move || lab.get()>
                <ReversePanel ui=ui/>
                <ModelPanel ui=ui/>
                <ForwardPanel/>
                <ToolboxPanel ui=ui/>
                <crate::web::likelihood::LikelihoodPanel ui=ui/>
            </div>
            <div id="lab-view-box" hidden=move || !lab.get()>
                <crate::web::lab::LabPanel active=Signal::derive(move || lab.get())/>
            </div>
        </main>
        <footer>
            <p>"kakusan — Rust + hand-written WGSL. Runs offline once loaded; nothing is sent anywhere. MNIST digits: Yann LeCun and Corinna Cortes (CC BY-SA 3.0)."</p>
        </footer>
    }
}

fn location_is_lab() -> bool {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .is_some_and(|h| h == "#lab")
}

/// Called once the DOM exists: start the GPU and load the model, follow window resizes.
pub fn after_mount() {
    let doc = web_sys::window().and_then(|w| w.document());
    let canvas = doc
        .as_ref()
        .and_then(|d| d.get_element_by_id("reverse-canvas"))
        .and_then(|e| e.dyn_into::<web_sys::HtmlCanvasElement>().ok());
    if let Some(canvas) = canvas {
        wasm_bindgen_futures::spawn_local(engine::start(canvas));
    }
    if let Some(w) = web_sys::window() {
        // `window.kakusanSnapshot()` → Promise<PNG data URL of the reverse canvas> (tests).
        let snap = Closure::<dyn Fn() -> js_sys::Promise>::new(|| {
            wasm_bindgen_futures::future_to_promise(engine::snapshot())
        });
        let _ = js_sys::Reflect::set(&w, &"kakusanSnapshot".into(), snap.as_ref());
        snap.forget();
        let lose = Closure::<dyn Fn()>::new(engine::simulate_device_loss);
        let _ = js_sys::Reflect::set(&w, &"kakusanSimulateDeviceLoss".into(), lose.as_ref());
        lose.forget();
        let cb = Closure::<dyn FnMut()>::new(engine::redraw);
        let _ = w.add_event_listener_with_callback("resize", cb.as_ref().unchecked_ref());
        cb.forget();
    }
    // The canvas box also changes size without a window resize (panels reflowing, fonts
    // loading, the batch size changing the grid): follow the box itself.
    let canvas_box = doc.as_ref().and_then(|d| {
        d.query_selector("#reverse-panel .canvas-box")
            .ok()
            .flatten()
    });
    if let Some(canvas_box) = canvas_box {
        let cb = Closure::<dyn FnMut()>::new(engine::redraw);
        if let Ok(observer) = web_sys::ResizeObserver::new(cb.as_ref().unchecked_ref()) {
            observer.observe(&canvas_box);
            // Lives as long as the page.
            std::mem::forget(observer);
        }
        cb.forget();
    }
}

#[component]
fn ReversePanel(ui: Ui) -> impl IntoView {
    let state = move || ui.state.get();
    let running = move || state() == RunState::Running;
    let has_model = move || ui.model.get().is_some();
    let classes = move || ui.model.get().and_then(|m| m.classes);
    let schedule_svg = move || match ui.model.get() {
        Some(m) => plots::schedule_plot(&m.schedule, ui.current_t.get()),
        None => String::new(),
    };
    view! {
        <section id="reverse-panel" class="panel reverse" data-state=move || state().as_str()
            aria-labelledby="reverse-h">
            <h2 id="reverse-h">"Reverse process: from noise x" <sub>"T"</sub> " to an image x" <sub>"0"</sub></h2>
            <div class="reverse-grid">
                <div class="stage">
                    <div class="canvas-box">
                        <p class="canvas-empty" hidden=has_model>
                            {move || if ui.gpu_ready.get() { "No model loaded yet — see “Model” below." } else { "Waiting for WebGPU…" }}
                        </p>
                        <canvas id="reverse-canvas" aria-label="For each sample: the current noisy x_t (left) and the model's prediction of the clean image x̂_0 (right)"></canvas>
                    </div>
                    <p class="legend-line">
                        "Each pair: " <b>"left"</b> " the current sample x" <sub>"t"</sub>
                        ", " <b>"right"</b> " the network's guess of the clean image, x̂" <sub>"0"</sub>
                        " = (x" <sub>"t"</sub> " − √(1−ᾱ" <sub>"t"</sub> ") ε" <sub>"θ"</sub> ") / √ᾱ" <sub>"t"</sub>
                    </p>
                    <p id="step-counter" class="counter">{move || ui.step_text.get()}</p>
                    <div class="timeline-row">
                        <label for="timeline">"Timeline"</label>
                        <input id="timeline" type="range" min="0"
                            max=move || ui.frames.get().saturating_sub(1).to_string()
                            prop:value=move || ui.timeline.get().to_string()
                            disabled=move || ui.frames.get() < 2
                            aria-describedby="frame-text"
                            on:input=move |ev| engine::scrub(parse_or(&event_target_value(&ev), 0))/>
                        <span id="frame-text" class="frame-text">{move || ui.frame_text.get()}</span>
                    </div>
                </div>
                <div class="controls" role="group" aria-label="Sampling controls">
                    <div class="buttons">
                        <button id="play" type="button" class="primary"
                            aria-pressed=move || running().to_string()
                            disabled=move || !has_model()
                            on:click=move |_| engine::toggle_play()>
                            {move || if running() { "❚❚ Pause" } else { "▶ Play" }}
                        </button>
                        <button id="step-once" type="button" disabled=move || !has_model()
                            on:click=move |_| engine::step_once()>"Step"</button>
                        <button id="restart" type="button" disabled=move || !has_model()
                            on:click=move |_| engine::restart(true)>"↺ Restart"</button>
                    </div>
                    <div class="fields">
                        <label for="sampler">"Sampler"</label>
                        <select id="sampler"
                            prop:value=move || ui.settings.get().sampler.key()
                            on:change=move |ev| {
                                let v = event_target_value(&ev);
                                update_settings(ui, |s| {
                                    let kind = SamplerKind::from_key(&v);
                                    // DPM-Solver++ is a few-step solver: from DDPM's 1000
                                    // steps, start at its usual 20.
                                    if kind == SamplerKind::DpmSolver && s.steps > 100 {
                                        s.steps = 20;
                                    }
                                    s.sampler = kind;
                                });
                            }>
                            <option value="ddpm">"DDPM (ancestral)"</option>
                            <option value="ddim">"DDIM"</option>
                            <option value="dpm-solver">"DPM-Solver++ (2M)"</option>
                        </select>
                        <label for="steps">"Steps"</label>
                        <input id="steps" type="number" min="1" inputmode="numeric"
                            max=move || ui.model.get().map(|m| m.t_train).unwrap_or(1000).to_string()
                            prop:value=move || ui.settings.get().steps.to_string()
                            on:change=move |ev| {
                                let t = ui.model.get_untracked().map(|m| m.t_train).unwrap_or(1000);
                                let v: usize = parse_or(&event_target_value(&ev), 50);
                                update_settings(ui, |s| s.steps = v.clamp(1, t));
                            }/>
                        <label for="eta">"η (DDIM noise)"</label>
                        <input id="eta" type="number" min="0" max="1" step="0.1"
                            disabled=move || ui.settings.get().sampler != SamplerKind::Ddim
                            prop:value=move || ui.settings.get().eta.to_string()
                            on:change=move |ev| {
                                let v: f64 = parse_or(&event_target_value(&ev), 0.0);
                                update_settings(ui, |s| s.eta = v.clamp(0.0, 1.0));
                            }/>
                        <label for="seed">"Seed"</label>
                        <input id="seed" type="number" min="0" inputmode="numeric"
                            prop:value=move || ui.settings.get().seed.to_string()
                            on:change=move |ev| {
                                let v: u64 = parse_or(&event_target_value(&ev), 0);
                                update_settings(ui, |s| s.seed = v);
                            }/>
                        <label for="batch">"Samples"</label>
                        <input id="batch" type="number" min="1" max="64" inputmode="numeric"
                            prop:value=move || ui.settings.get().batch.to_string()
                            on:change=move |ev| {
                                let v: usize = parse_or(&event_target_value(&ev), 8);
                                update_settings(ui, |s| s.batch = v.clamp(1, 64));
                            }/>
                        <label for="class">"Class"</label>
                        <select id="class" disabled=move || classes().is_none()
                            prop:value=move || ui.settings.get().class.map(|c| c.to_string()).unwrap_or_else(|| "any".into())
                            on:change=move |ev| {
                                let v = event_target_value(&ev);
                                update_settings(ui, |s| s.class = v.parse().ok());
                            }>
                            <option value="any">"any (mixed)"</option>
                            {move || (0..classes().unwrap_or(0)).map(|c| view! {
                                <option value=c.to_string()>{c.to_string()}</option>
                            }).collect_view()}
                        </select>
                        <label for="guidance">"Guidance w"</label>
                        <input id="guidance" type="number" min="0" max="20" step="0.5"
                            disabled=move || classes().is_none()
                            prop:value=move || ui.settings.get().guidance.to_string()
                            on:change=move |ev| {
                                let v: f64 = parse_or(&event_target_value(&ev), 1.0);
                                update_settings(ui, |s| s.guidance = v.clamp(0.0, 50.0));
                            }/>
                        <label for="guidance-interval">"Guide only at"</label>
                        <span class="row">
                            <input id="guidance-interval" type="checkbox"
                                disabled=move || classes().is_none()
                                prop:checked=move || ui.settings.get().guidance_interval.is_some()
                                on:change=move |ev| {
                                    let on = event_target_checked(&ev);
                                    let t = ui.model.get_untracked().map(|m| m.t_train).unwrap_or(1000);
                                    update_settings(ui, |s| {
                                        s.guidance_interval = on.then(|| engine::default_guidance_interval(t));
                                    });
                                }/>
                            <GuidanceIntervalEnd ui=ui upper=false/>
                            " ≤ t ≤ "
                            <GuidanceIntervalEnd ui=ui upper=true/>
                        </span>
                    </div>
                    <p class="hint">{move || match classes() {
                        Some(k) => format!("Class-conditional model ({k} classes). Guidance w = 1 is plain conditional sampling; w > 1 is classifier-free guidance (ε = ε_∅ + w(ε_c − ε_∅)). “Guide only at” applies it in a range of t and the conditional model alone elsewhere (Kynkäänniemi et al. 2024): for the shipped model at w = 3, 80 ≤ t ≤ 580 keeps the digits' variety that guidance at the noisiest steps removes."),
                        None => "Class and guidance apply to class-conditional models only.".to_string(),
                    }}</p>
                    <figure class="plot">
                        <div id="schedule-plot" class="svg-box" inner_html=schedule_svg></div>
                        <figcaption>{move || ui.model.get().map(|m| m.schedule_desc).unwrap_or_default()}
                            " · marker: current t"</figcaption>
                    </figure>
                </div>
            </div>
        </section>
    }
}

/// One end of "Guide only at"'s t interval (`upper`: its upper end), kept so that lo ≤ hi:
/// a lower end past the upper one becomes the upper one, and the other way round.
#[component]
fn GuidanceIntervalEnd(ui: Ui, upper: bool) -> impl IntoView {
    let end = move |i: (usize, usize)| if upper { i.1 } else { i.0 };
    view! {
        <input id=if upper { "guidance-hi" } else { "guidance-lo" } type="number" min="0"
            inputmode="numeric" aria-label=if upper { "to t" } else { "from t" }
            disabled=move || ui.settings.get().guidance_interval.is_none()
            prop:value=move || ui.settings.get().guidance_interval.map_or(String::new(), |i| end(i).to_string())
            on:change=move |ev| {
                let v: usize = parse_or(&event_target_value(&ev), 0);
                update_settings(ui, |s| {
                    if let Some(i) = &mut s.guidance_interval {
                        *i = if upper { (i.0, v.max(i.0)) } else { (v.min(i.1), i.1) };
                    }
                });
            }/>
    }
}

#[component]
fn ModelPanel(ui: Ui) -> impl IntoView {
    let url = RwSignal::new(String::new());
    let dragging = RwSignal::new(false);
    let load_url = move || {
        let u = url.get_untracked().trim().to_string();
        if u.is_empty() {
            engine::report("Enter the URL of a folder with config.json, diffusion_pytorch_model.safetensors and scheduler_config.json.");
        } else {
            wasm_bindgen_futures::spawn_local(engine::load_from_url(u, false));
        }
    };
    view! {
        <section class="panel model" aria-labelledby="model-h">
            <h2 id="model-h">"Model"</h2>
            <p class="model-line">"Loaded: " <span id="model-name">{move || ui.model_name.get()}</span>
                <progress id="model-progress" max="1"
                    hidden=move || ui.progress.get().is_none()
                    prop:value=move || ui.progress.get().unwrap_or(0.0)></progress>
            </p>
            <p class="model-info">{move || ui.model.get().map(|m| format!(
                "{}×{}×{} images · {:.1} M parameters · {}{}",
                m.shape[0], m.shape[1], m.shape[2], m.params as f64 / 1e6, m.schedule_desc,
                m.classes.map(|k| format!(" · {k} classes")).unwrap_or_default()
            ))}</p>
            {move || ui.notice.get().map(|n| view! { <p class="notice">{n}</p> })}
            <div id="model-drop" class="drop" class:dragging=move || dragging.get()
                on:dragover=move |ev| { ev.prevent_default(); dragging.set(true); }
                on:dragleave=move |_| dragging.set(false)
                on:drop=move |ev| {
                    ev.prevent_default();
                    dragging.set(false);
                    if let Some(files) = ev.data_transfer().and_then(|d| d.files()) {
                        wasm_bindgen_futures::spawn_local(engine::load_from_files(files));
                    }
                }>
                <label for="model-files">"Another diffusers UNet2DModel: pick or drop "
                    <code>"config.json"</code>", "<code>"diffusion_pytorch_model.safetensors"</code>
                    " and "<code>"scheduler_config.json"</code></label>
                <input id="model-files" type="file" multiple accept=".json,.safetensors"
                    on:change=move |ev| {
                        let input = event_target::<web_sys::HtmlInputElement>(&ev);
                        if let Some(files) = input.files() {
                            wasm_bindgen_futures::spawn_local(engine::load_from_files(files));
                        }
                    }/>
            </div>
            <div class="url-row">
                <label for="model-url">"…or a folder URL"</label>
                <input id="model-url" type="url" placeholder="https://example.org/my-model/"
                    prop:value=move || url.get()
                    on:input=move |ev| url.set(event_target_value(&ev))
                    on:keydown=move |ev| if ev.key() == "Enter" { load_url() }/>
                <button id="model-url-load" type="button" on:click=move |_| load_url()>"Load"</button>
            </div>
            <p class="hint">"The model must fit WebGPU's default limits (no single buffer over 128 MiB). Loading replaces the current run."</p>
        </section>
    }
}

#[component]
fn ForwardPanel() -> impl IntoView {
    let (linear, cosine) = forward::schedules();
    let which = RwSignal::new("3".to_string());
    let uploaded: RwSignal<Option<Image>> = RwSignal::new(None);
    let upload_error: RwSignal<Option<String>> = RwSignal::new(None);
    let t = RwSignal::new(250usize);
    let seed = RwSignal::new(1u64);
    let image = Memo::new(move |_| {
        let w = which.get();
        if w == "upload" {
            if let Some(img) = uploaded.get() {
                return img;
            }
        }
        forward::digit(w.parse().unwrap_or(0))
    });
    let eps = Memo::new(move |_| {
        let img = image.get();
        forward::noise(seed.get(), img.data.len())
    });
    let (lin2, cos2) = (linear.clone(), cosine.clone());
    let xts = Memo::new(move |_| {
        let img = image.get();
        let e = eps.get();
        let tt = t.get();
        (
            forward::q_sample(&lin2, tt, &img.data, &e),
            forward::q_sample(&cos2, tt, &img.data, &e),
        )
    });
    let canvas_ref = NodeRef::<leptos::html::Canvas>::new();
    Effect::new(move |_| {
        let (a, b) = xts.get();
        let img = image.get();
        if let Some(c) = canvas_ref.get() {
            forward::draw(&c, &img, &[&a, &b]);
        }
    });
    let (lin3, cos3) = (linear.clone(), cosine.clone());
    let coeff_text = Memo::new(move |_| {
        let tt = t.get();
        let f = |s: &crate::diffusion::schedule::Schedule| {
            let a = s.alphas_cumprod[tt];
            format!(
                "ᾱ = {a:.4}, √ᾱ = {:.3}, √(1−ᾱ) = {:.3}, log SNR = {:.2}",
                a.sqrt(),
                (1.0 - a).sqrt(),
                (a / (1.0 - a)).ln()
            )
        };
        (f(&lin3), f(&cos3))
    });
    let (lin4, cos4) = (linear, cosine);
    let plots_svg = move || {
        let tt = Some(t.get());
        let snr_l = plots::log_snr(&lin4.alphas_cumprod);
        let snr_c = plots::log_snr(&cos4.alphas_cumprod);
        let beta = plots::line_plot(
            "β_t",
            &[
                Series {
                    values: &lin4.betas,
                    color: "#4aa8ff",
                    label: "linear",
                    dashed: false,
                    right_axis: false,
                },
                Series {
                    values: &cos4.betas,
                    color: "#ff7a90",
                    label: "cosine",
                    dashed: true,
                    right_axis: false,
                },
            ],
            &plots::Axis {
                min: 0.0,
                max: 0.04,
                ticks: vec![0.0, 0.02, 0.04],
                label: "β_t",
            },
            None,
            tt,
        );
        let abar = plots::line_plot(
            "ᾱ_t",
            &[
                Series {
                    values: &lin4.alphas_cumprod,
                    color: "#4aa8ff",
                    label: "linear",
                    dashed: false,
                    right_axis: false,
                },
                Series {
                    values: &cos4.alphas_cumprod,
                    color: "#ff7a90",
                    label: "cosine",
                    dashed: true,
                    right_axis: false,
                },
            ],
            &plots::alpha_axis(),
            None,
            tt,
        );
        let snr = plots::line_plot(
            "log SNR",
            &[
                Series {
                    values: &snr_l,
                    color: "#4aa8ff",
                    label: "linear",
                    dashed: false,
                    right_axis: false,
                },
                Series {
                    values: &snr_c,
                    color: "#ff7a90",
                    label: "cosine",
                    dashed: true,
                    right_axis: false,
                },
            ],
            &plots::snr_axis(),
            None,
            tt,
        );
        format!(
            r#"<figure><figcaption>β<sub>t</sub></figcaption>{beta}</figure><figure><figcaption>ᾱ<sub>t</sub></figcaption>{abar}</figure><figure><figcaption>log SNR = ln(ᾱ<sub>t</sub>/(1−ᾱ<sub>t</sub>))</figcaption>{snr}</figure>"#
        )
    };
    let hist_svg = move || {
        let (a, b) = xts.get();
        plots::histogram(&[(&a, "#4aa8ff", "x_t linear"), (&b, "#ff7a90", "x_t cosine")])
    };
    view! {
        <section class="panel forward" aria-labelledby="forward-h">
            <h2 id="forward-h">"Forward process: adding noise"</h2>
            <div class="explain">
                <p>"Training images are destroyed step by step with Gaussian noise. Each step "
                   <span class="eq">"q(x" <sub>"t"</sub> " | x" <sub>"t−1"</sub> ") = 𝒩(x" <sub>"t"</sub> "; √(1−β" <sub>"t"</sub> ") x" <sub>"t−1"</sub> ", β" <sub>"t"</sub> " I)"</span>
                   " adds a little; because Gaussians compose, any step can be reached in one jump (eq. 4):"</p>
                <p class="eq-block">"x" <sub>"t"</sub> " = √ᾱ" <sub>"t"</sub> " · x" <sub>"0"</sub> " + √(1 − ᾱ" <sub>"t"</sub> ") · ε,   ε ~ 𝒩(0, I),   ᾱ" <sub>"t"</sub> " = ∏" <sub>"s≤t"</sub> " (1 − β" <sub>"s"</sub> ")"</p>
                <p>"The network ε" <sub>"θ"</sub> "(x" <sub>"t"</sub> ", t) learns to predict ε by minimising ‖ε − ε" <sub>"θ"</sub>
                   "(x" <sub>"t"</sub> ", t)‖² (eq. 14); sampling runs the chain backwards, "
                   <span class="eq">"x" <sub>"t−1"</sub> " = (x" <sub>"t"</sub> " − β" <sub>"t"</sub> "/√(1−ᾱ" <sub>"t"</sub> ") ε" <sub>"θ"</sub> ") / √α" <sub>"t"</sub> " + σ" <sub>"t"</sub> " z"</span>
                   " (Algorithm 2). The cosine schedule (Nichol & Dhariwal 2021) destroys information more slowly at the start."</p>
            </div>
            <div class="forward-grid">
                <div class="forward-controls">
                    <label for="forward-image">"Image"</label>
                    <select id="forward-image" prop:value=move || which.get()
                        on:change=move |ev| which.set(event_target_value(&ev))>
                        {(0..10).map(|k| view! { <option value=k.to_string()>{format!("MNIST digit {k}")}</option> }).collect_view()}
                        <option value="upload" disabled=move || uploaded.get().is_none()>"uploaded image"</option>
                    </select>
                    <label for="forward-upload">"Upload an image"</label>
                    <input id="forward-upload" type="file" accept="image/*"
                        on:change=move |ev| {
                            let input = event_target::<web_sys::HtmlInputElement>(&ev);
                            if let Some(f) = input.files().and_then(|f| f.get(0)) {
                                wasm_bindgen_futures::spawn_local(async move {
                                    match forward::decode_upload(&f).await {
                                        Ok(img) => {
                                            upload_error.set(None);
                                            uploaded.set(Some(img));
                                            which.set("upload".into());
                                        }
                                        Err(e) => {
                                            upload_error.set(Some(e.clone()));
                                            engine::report(e);
                                        }
                                    }
                                });
                            }
                        }/>
                    <label for="forward-t">{move || format!("t = {} (of 1000)", t.get())}</label>
                    <input id="forward-t" type="range" min="0" max="999"
                        prop:value=move || t.get().to_string()
                        on:input=move |ev| t.set(parse_or(&event_target_value(&ev), 0))/>
                    <button id="forward-new-noise" type="button"
                        on:click=move |_| seed.update(|s| *s += 1)>"New noise ε"</button>
                    {move || upload_error.get().map(|e| view! { <p class="notice">{e}</p> })}
                </div>
                <div class="forward-view">
                    <canvas id="forward-canvas" node_ref=canvas_ref
                        aria-label="x_t under the linear schedule (left) and the cosine schedule (right)"></canvas>
                    <div class="forward-labels">
                        <div><b>"linear β"</b><br/><span class="small">{move || coeff_text.get().0}</span></div>
                        <div><b>"cosine"</b><br/><span class="small">{move || coeff_text.get().1}</span></div>
                    </div>
                </div>
                <figure class="hist">
                    <div id="forward-histogram" class="svg-box" inner_html=hist_svg></div>
                    <figcaption>"Histogram of x" <sub>"t"</sub> "'s pixels against 𝒩(0, 1): by t = 999 the image is (almost) pure noise."</figcaption>
                </figure>
            </div>
            <div id="forward-plots" class="plots" inner_html=plots_svg></div>
        </section>
    }
}

#[component]
fn BenchPanel(ui: Ui) -> impl IntoView {
    view! {
        <section class="panel bench" aria-labelledby="bench-h">
            <h2 id="bench-h">"Benchmark: U-Net forward pass"</h2>
            <pre id="bench-result">{move || ui.bench.get().map(|b| b.0).unwrap_or_default()}</pre>
            <pre class="bench-table">{move || ui.bench.get().map(|b| b.1).unwrap_or_else(|| "running…".into())}</pre>
        </section>
    }
}
