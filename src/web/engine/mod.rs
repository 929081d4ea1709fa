//! The page's GPU side, split by concern. The browser gives the page one thread, so state
//! lives in thread-locals; each part owns its state and is the only code that changes it
//! (the others call its functions). The page's components see it all through the signals
//! in [`Ui`] and change it only through the functions re-exported here.
//!
//! | part | owns | changed by |
//! |---|---|---|
//! | this file | the [`Ui`] signals' handle, the [`Engine`] cell | [`set_ui`] once; the engine cell only by [`session`] |
//! | [`session`] | device, adapter, canvas surface, presenter ([`session::Session`]); the canvas element and device id | page start, device loss, “Restart GPU” |
//! | [`run`] | the live [`SamplingRun`](crate::diffusion::sampler::SamplingRun) and the animation loop's generation | play / pause / step / restart / new settings / new model |
//! | [`timeline`] | recorded x_t / x̂_0 frames, which one is shown | each recorded step, the scrubber |
//! | [`loading`] | the current [`Model`](crate::model::Model) | URL / file loading |
//! | [`bench`] | nothing (its result goes to [`Ui::bench`]) | `?bench` |
//! | [`lab`] | the diffusion lab's canvas, data, trainer and particles ([`lab::LabGpu`]) and its signals | the Lab tab's controls |
//! | [`snapshot`] | nothing (an offscreen render read back once) | `window.kakusanSnapshot()` |
//! | [`toolbox`] | the toolbox's signals, its inpainting/interpolation tasks (each holds its own run while it lasts) | the toolbox panel's Run/Stop |
//! | [`memory`] | nothing (adds up what the others hold) | `window.kakusanMemory()` |
//! | [`likelihood`] | the bound / anomaly jobs (each holds its run across awaits and stops when the device changes), the model folder's anomaly reference | the likelihood panel's buttons |
//!
//! Everything made on one wgpu device — surface, presenter, the live run, timeline frames —
//! sits in one [`Engine`], so replacing the device after a loss drops all of it at once.
//! A new view with GPU state of its own (e.g. the diffusion lab) gets its own part here: a
//! file owning that state (a field of [`Engine`] if it holds device objects), driven by the
//! same [`session`].

mod bench;
pub mod lab;
mod likelihood;
mod loading;
mod memory;
mod run;
mod session;
mod snapshot;
mod timeline;
mod toolbox;

use std::cell::{Cell, RefCell};

use leptos::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::Error;

pub use bench::bench_mode;
pub use likelihood::{
    anomaly_run, nll_run, start_anomaly, start_nll, stop_nll, tool_labels, AnomalyReference,
    AnomalyView, NllMode, NllView, ToolImage,
};
pub use loading::{load_from_files, load_from_url, ModelInfo, NO_DEFAULT_MODEL};
pub use memory::memory;
pub use run::{
    apply_settings, default_guidance_interval, pause, play, restart, step_once, toggle_play,
    RunState, SamplerKind, Settings,
};
pub use session::{has_webgpu, restart_device, simulate_device_loss, NO_WEBGPU};
pub use snapshot::snapshot;
pub use timeline::{redraw, scrub, MAX_FRAMES};
pub use toolbox::{
    set_toolbox_ui, start_inpaint, start_interpolation, stop_inpaint, stop_interpolation, Ends,
    Frames, InpaintRequest, InpaintView, InterpRequest, ToolState, ToolboxUi,
};

/// The signals the page renders; the engine writes them, the components read them.
#[derive(Clone, Copy)]
pub struct Ui {
    pub status: RwSignal<String>,
    pub error: RwSignal<Option<String>>,
    pub device_lost: RwSignal<bool>,
    pub notice: RwSignal<Option<String>>,
    pub model_name: RwSignal<String>,
    pub progress: RwSignal<Option<f64>>,
    pub model: RwSignal<Option<ModelInfo>>,
    pub state: RwSignal<RunState>,
    pub step_text: RwSignal<String>,
    pub current_t: RwSignal<Option<usize>>,
    pub settings: RwSignal<Settings>,
    pub frames: RwSignal<usize>,
    pub timeline: RwSignal<usize>,
    pub frame_text: RwSignal<String>,
    pub bench: RwSignal<Option<(String, String)>>,
    pub gpu_ready: RwSignal<bool>,
}

impl Default for Ui {
    fn default() -> Self {
        Self::new()
    }
}

impl Ui {
    pub fn new() -> Ui {
        Ui {
            status: RwSignal::new("Starting…".into()),
            error: RwSignal::new(None),
            device_lost: RwSignal::new(false),
            notice: RwSignal::new(None),
            model_name: RwSignal::new("(none)".into()),
            progress: RwSignal::new(None),
            model: RwSignal::new(None),
            state: RwSignal::new(RunState::Idle),
            step_text: RwSignal::new("t = – / –".into()),
            current_t: RwSignal::new(None),
            settings: RwSignal::new(Settings::default()),
            frames: RwSignal::new(0),
            timeline: RwSignal::new(0),
            frame_text: RwSignal::new(String::new()),
            bench: RwSignal::new(None),
            gpu_ready: RwSignal::new(false),
        }
    }
}

/// Everything that lives on the current wgpu device. Created by [`session`] when a device
/// is opened and dropped whole when it is replaced.
struct Engine {
    session: session::Session,
    /// None until a model is loaded (or after planning a run failed).
    live: Option<run::LiveRun>,
    timeline: timeline::Timeline,
    /// The diffusion lab's canvas, model and particles (once the Lab tab was opened).
    lab: Option<lab::LabGpu>,
}

impl Engine {
    fn new(session: session::Session) -> Engine {
        Engine {
            session,
            live: None,
            timeline: timeline::Timeline::default(),
            lab: None,
        }
    }
}

thread_local! {
    static UI: Cell<Option<Ui>> = const { Cell::new(None) };
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
}

pub fn set_ui(ui: Ui) {
    UI.with(|u| u.set(Some(ui)));
}

pub fn ui() -> Ui {
    UI.with(|u| u.get())
        .expect("UI signals are created before the engine starts")
}

/// Runs `f` on the engine, if a device is open.
fn with_engine<R>(f: impl FnOnce(&mut Engine) -> R) -> Option<R> {
    ENGINE.with(|e| e.borrow_mut().as_mut().map(f))
}

/// Replaces the engine (and with it everything on the old device). [`session`] only.
fn set_engine(engine: Option<Engine>) {
    ENGINE.with(|e| *e.borrow_mut() = engine);
}

/// Show an error in #error (and keep it out of the console-only world).
pub fn report(msg: impl Into<String>) {
    let msg = msg.into();
    let ui = ui();
    if msg.contains("lost") || msg.contains("went away") {
        ui.device_lost.set(true);
    }
    ui.error.set(Some(msg));
}

pub fn report_error(e: &Error) {
    let msg = match e {
        Error::Gpu(m) if m.contains("lost") || m.contains("went away") => {
            session::device_lost_message(m)
        }
        Error::Config(m) => format!("This model's configuration is not supported: {m}"),
        Error::Weights(m) => format!("The weights file does not match config.json: {m}"),
        Error::File { path, msg } => format!("Broken or unreadable file {path}: {msg}"),
        Error::Shape(m) => format!("This does not fit on this GPU or these settings: {m}"),
        other => other.to_string(),
    };
    report(msg);
}

fn clear_error() {
    let ui = ui();
    ui.error.set(None);
    ui.device_lost.set(false);
}

fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or(0.0)
}

/// Resolves at the next animation frame.
async fn next_frame() {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.request_animation_frame(&resolve);
        }
    });
    let _ = JsFuture::from(p).await;
}

pub fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    params.get(name).or_else(|| {
        // `?bench` with no value.
        params.has(name).then(String::new)
    })
}

/// Page start: settings from the URL, the GPU, then the model from `?model=` or the default
/// folder.
pub async fn start(canvas: web_sys::HtmlCanvasElement) {
    let ui = ui();
    memory::install();
    // Settings from the URL (handy for demos and tests): steps, sampler, batch, seed, eta.
    let mut s = ui.settings.get_untracked();
    if let Some(v) = query_param("steps").and_then(|v| v.parse().ok()) {
        s.steps = v;
    }
    if let Some(v) = query_param("sampler") {
        s.sampler = run::SamplerKind::from_key(&v);
        if s.sampler == run::SamplerKind::DpmSolver && query_param("steps").is_none() {
            s.steps = 20;
        }
    }
    if let Some(v) = query_param("batch").and_then(|v| v.parse::<usize>().ok()) {
        s.batch = v.clamp(1, 64);
    }
    if let Some(v) = query_param("seed").and_then(|v| v.parse().ok()) {
        s.seed = v;
    }
    if let Some(v) = query_param("eta").and_then(|v| v.parse().ok()) {
        s.eta = v;
    }
    ui.settings.set(s);
    if !session::open_first(canvas).await {
        return;
    }
    let (url, is_default) = match query_param("model").filter(|m| !m.is_empty()) {
        Some(m) => (m, false),
        None => ("models/mnist/".to_string(), true),
    };
    load_from_url(url, is_default).await;
}
