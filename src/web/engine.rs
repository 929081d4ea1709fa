//! The page's GPU side: one wgpu device shared by the sampler (compute) and the canvas
//! (render), the running [`SamplingRun`], recorded timeline frames, the animation loop and
//! the benchmark. State lives in thread-locals (the browser has one thread); the UI sees it
//! through the signals in [`Ui`].
//!
//! Timeline frames are GPU buffer copies (x_t and x̂_0, `copy_buffer_to_buffer` right after
//! the step was submitted), taken every `record_every` steps so that at most
//! [`MAX_FRAMES`] are kept; scrubbing binds a recorded pair to the same render pipeline.
//! Nothing is read back to the CPU while animating.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::diffusion::sampler::{SampleSettings, SamplingRun};
use crate::diffusion::schedule::{Sampler, Schedule};
use crate::gpu::GpuContext;
use crate::model::{Model, ModelFiles};
use crate::web::loader::{self, FetchError};
use crate::web::present::{layout, Presenter};
use crate::Error;

/// At most this many recorded frames (plus memory budget [`FRAME_BUDGET_BYTES`]).
pub const MAX_FRAMES: usize = 100;
const FRAME_BUDGET_BYTES: usize = 48 << 20;

pub const NO_WEBGPU: &str = "This browser does not offer WebGPU, which this page needs to run \
the model. WebGPU is available in Chrome and Edge 113 or newer (Windows, macOS, ChromeOS, \
Android; on Linux behind chrome://flags/#enable-unsafe-webgpu), Safari 26 or newer \
(macOS, iOS, iPadOS) and Firefox 141 or newer on Windows. The forward-process explorer \
below works without it.";

pub const NO_DEFAULT_MODEL: &str = "No default model is bundled in this build yet — load a \
diffusers UNet2DModel folder below (or open the page with ?model=<folder URL>).";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RunState {
    Idle,
    Running,
    Paused,
    Done,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Idle => "idle",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Done => "done",
        }
    }
}

/// What the page shows about the loaded model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub t_train: usize,
    /// Real classes (num_class_embeds − 1: the last embedding is the null class used for
    /// classifier-free guidance).
    pub classes: Option<usize>,
    pub shape: [usize; 3],
    pub params: usize,
    pub schedule: Schedule,
    pub schedule_desc: String,
}

/// The sampling controls.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub ddim: bool,
    pub steps: usize,
    pub eta: f64,
    pub seed: u64,
    pub batch: usize,
    /// None = any class (labels cycle through 0..K−1).
    pub class: Option<u32>,
    pub guidance: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ddim: false,
            steps: 1000,
            eta: 0.0,
            seed: 0,
            batch: 8,
            class: None,
            // Classifier-free guidance for class-conditional models (the shipped MNIST model
            // draws clean digits at 2–3); unconditional models reset it to 1.
            guidance: 2.5,
        }
    }
}

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

struct Frame {
    xt: wgpu::Buffer,
    x0: wgpu::Buffer,
    /// The timestep x_t is at (None: x_T before the first step).
    t: Option<usize>,
    step: usize,
}

pub struct Engine {
    ctx: Rc<GpuContext>,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    presenter: Presenter,
    canvas: web_sys::HtmlCanvasElement,
    run: Option<SamplingRun>,
    frames: Vec<Frame>,
    record_every: usize,
    /// (N, C, H, W) of the run.
    shape: [usize; 4],
    /// T of the current model.
    t_train: usize,
    adapter_label: String,
}

thread_local! {
    static UI: Cell<Option<Ui>> = const { Cell::new(None) };
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    static MODEL: RefCell<Option<Rc<Model>>> = const { RefCell::new(None) };
    static CANVAS: RefCell<Option<web_sys::HtmlCanvasElement>> = const { RefCell::new(None) };
    /// Bumped to stop the running animation loop.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    static FOLLOW: Cell<bool> = const { Cell::new(true) };
    /// Which device is current: a loss reported for an older one is ignored.
    static DEVICE_ID: Cell<u64> = const { Cell::new(0) };
}

pub fn set_ui(ui: Ui) {
    UI.with(|u| u.set(Some(ui)));
}

pub fn ui() -> Ui {
    UI.with(|u| u.get())
        .expect("UI signals are created before the engine starts")
}

fn with_engine<R>(f: impl FnOnce(&mut Engine) -> R) -> Option<R> {
    ENGINE.with(|e| e.borrow_mut().as_mut().map(f))
}

fn model() -> Option<Rc<Model>> {
    MODEL.with(|m| m.borrow().clone())
}

/// Show an error in #error (and keep it out of the console-only world).
pub fn report(msg: impl Into<String>) {
    let msg = msg.into();
    let ui = ui();
    let lost = msg.contains("lost") || msg.contains("went away");
    if lost {
        ui.device_lost.set(true);
    }
    ui.error.set(Some(msg));
}

pub fn report_error(e: &Error) {
    let msg = match e {
        Error::Gpu(m) if m.contains("lost") || m.contains("went away") => format!(
            "The GPU device was lost ({m}). This happens when the GPU driver resets, the \
             tab was in the background for long, or the GPU ran out of memory. Press \
             “Restart GPU” to start again."
        ),
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

pub fn has_webgpu() -> bool {
    web_sys::window()
        .map(|w| js_sys::Reflect::has(&w.navigator(), &"gpu".into()).unwrap_or(false))
        .unwrap_or(false)
        && web_sys::window()
            .and_then(|w| js_sys::Reflect::get(&w.navigator(), &"gpu".into()).ok())
            .is_some_and(|g| !g.is_undefined() && !g.is_null())
}

/// Create the device on an adapter that can draw to `canvas`, and configure the canvas.
async fn init_gpu(canvas: web_sys::HtmlCanvasElement) -> Result<Engine, String> {
    if !has_webgpu() {
        return Err(NO_WEBGPU.into());
    }
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::BROWSER_WEBGPU;
    let instance = wgpu::Instance::new(desc);
    let surface = instance
        .create_surface(wgpu::SurfaceTarget::Canvas(canvas.clone()))
        .map_err(|e| format!("Could not draw to the canvas with WebGPU: {e}"))?;
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: Some(&surface),
            apply_limit_buckets: false,
        })
        .await
        .map_err(|e| {
            format!(
                "WebGPU is present but no GPU adapter is available ({e}). The GPU may be \
                 blocklisted for WebGPU or disabled in the browser's settings. {NO_WEBGPU}"
            )
        })?;
    let limits = adapter.limits();
    let mut small = Vec::new();
    if limits.max_storage_buffers_per_shader_stage < 8 {
        small.push(format!(
            "storage buffers per shader stage: {} (need 8)",
            limits.max_storage_buffers_per_shader_stage
        ));
    }
    if limits.max_compute_workgroup_storage_size < 16384 {
        small.push(format!(
            "workgroup memory: {} bytes (need 16384)",
            limits.max_compute_workgroup_storage_size
        ));
    }
    if limits.max_compute_invocations_per_workgroup < 256 {
        small.push(format!(
            "invocations per workgroup: {} (need 256)",
            limits.max_compute_invocations_per_workgroup
        ));
    }
    if !small.is_empty() {
        return Err(format!(
            "This GPU's WebGPU limits are too small for the model's kernels: {}. Try another \
             browser or device.",
            small.join("; ")
        ));
    }
    // Browsers often leave the adapter's name empty; vendor/architecture/driver say more.
    let info = adapter.get_info();
    let adapter_label = [info.name.as_str(), &info.driver, &info.driver_info]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let adapter_label = if adapter_label.is_empty() {
        format!(
            "WebGPU adapter (vendor {:#x}, device {:#x})",
            info.vendor, info.device
        )
    } else {
        adapter_label
    };
    let caps = surface.get_capabilities(&adapter);
    let ctx = GpuContext::from_adapter(adapter.clone())
        .await
        .map_err(|e| e.to_string())?;
    // A non-sRGB format: the shader writes (x + 1) / 2 as the pixel value, as an image file would.
    let format = caps
        .formats
        .iter()
        .copied()
        .find(|f| !f.is_srgb())
        .or_else(|| caps.formats.first().copied())
        .ok_or("The canvas offers no WebGPU texture format")?;
    let (w, h) = canvas_size(&canvas);
    let mut config = surface
        .get_default_config(&adapter, w, h)
        .ok_or("The canvas cannot be used with this GPU adapter")?;
    config.format = format;
    config.usage = wgpu::TextureUsages::RENDER_ATTACHMENT;
    config.present_mode = wgpu::PresentMode::Fifo;
    surface.configure(&ctx.device, &config);
    // GpuContext ignores "destroyed" (natively that only follows our own drop). In the
    // browser wgpu never destroys the device, so any loss — including one the browser
    // reports as "destroyed" (e.g. its GPU process restarted) — must be shown.
    let id = DEVICE_ID.with(|d| {
        d.set(d.get() + 1);
        d.get()
    });
    ctx.device.set_device_lost_callback(move |reason, msg| {
        if DEVICE_ID.with(|d| d.get()) != id {
            return;
        }
        GENERATION.with(|g| g.set(g.get() + 1));
        if ui().state.get_untracked() == RunState::Running {
            set_state(RunState::Paused);
        }
        ui().status.set("The GPU device was lost".into());
        report(format!(
            "The GPU device was lost ({reason:?}: {msg}). This happens when the GPU driver \
             resets, the browser's GPU process restarts, or the GPU runs out of memory. Press \
             “Restart GPU” to start again."
        ));
        ui().device_lost.set(true);
    });
    let presenter = Presenter::new(&ctx, format);
    ctx.check().map_err(|e| e.to_string())?;
    Ok(Engine {
        ctx: Rc::new(ctx),
        surface,
        config,
        presenter,
        canvas,
        run: None,
        frames: Vec::new(),
        record_every: 1,
        shape: [0; 4],
        t_train: 0,
        adapter_label,
    })
}

/// The canvas's drawing-buffer size: its CSS size × devicePixelRatio (at least 1×1).
fn canvas_size(canvas: &web_sys::HtmlCanvasElement) -> (u32, u32) {
    let dpr = web_sys::window()
        .map(|w| w.device_pixel_ratio())
        .unwrap_or(1.0)
        .clamp(1.0, 3.0);
    let w = ((canvas.client_width() as f64 * dpr).round() as u32).clamp(1, 4096);
    let h = ((canvas.client_height() as f64 * dpr).round() as u32).clamp(1, 4096);
    canvas.set_width(w);
    canvas.set_height(h);
    (w, h)
}

impl Engine {
    pub fn adapter_name(&self) -> String {
        let a = &self.ctx.adapter;
        let name = if a.name == "unnamed adapter" {
            &self.adapter_label
        } else {
            &a.name
        };
        format!(
            "{name} ({}{})",
            a.backend,
            if a.is_software { ", software" } else { "" }
        )
    }

    fn resize(&mut self) {
        let (w, h) = canvas_size(&self.canvas);
        if (w, h) != (self.config.width, self.config.height) {
            self.config.width = w;
            self.config.height = h;
            self.surface.configure(&self.ctx.device, &self.config);
        }
    }

    /// Plan a new run (drops the old one first to free its buffers).
    fn build_run(&mut self, model: &Model, s: &Settings) -> crate::Result<()> {
        self.run = None;
        self.frames.clear();
        let sampler = if s.ddim {
            Sampler::Ddim { eta: s.eta }
        } else {
            Sampler::Ddpm
        };
        let class_labels = match (model.config.num_class_embeds, s.class) {
            (Some(_), Some(c)) => Some(vec![c; s.batch]),
            _ => None,
        };
        let guidance = model.config.num_class_embeds.map(|_| s.guidance as f32);
        let run = SamplingRun::new(
            &self.ctx,
            &model.config,
            &model.weights,
            &model.scheduler,
            SampleSettings {
                sampler,
                steps: s.steps,
                seed: s.seed,
                batch: s.batch,
                class_labels,
                guidance,
            },
        )?;
        let sh = &run.x_t().shape;
        self.shape = [sh[0], sh[1], sh[2], sh[3]];
        let frame_bytes = 2 * run.x_t().bytes() as usize;
        let max_frames = (FRAME_BUDGET_BYTES / frame_bytes.max(1)).clamp(2, MAX_FRAMES);
        // Frame 0 is x_T; then every `record_every` steps, and always the last step.
        self.record_every = s.steps.div_ceil(max_frames - 1).max(1);
        self.t_train = model.scheduler.num_train_timesteps;
        self.run = Some(run);
        self.record_frame(None)?;
        self.ctx.check()
    }

    fn record_frame(&mut self, t: Option<usize>) -> crate::Result<()> {
        let Some(run) = &self.run else { return Ok(()) };
        let bytes = run.x_t().bytes();
        let make = || {
            self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timeline frame"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (xt, x0) = (make(), make());
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(&run.x_t().buffer, 0, &xt, 0, bytes);
        enc.copy_buffer_to_buffer(&run.x0().buffer, 0, &x0, 0, bytes);
        self.ctx.queue.submit([enc.finish()]);
        self.frames.push(Frame {
            xt,
            x0,
            t,
            step: run.steps_done(),
        });
        let ui = ui();
        let n = self.frames.len();
        ui.frames.set(n);
        if FOLLOW.with(|f| f.get()) {
            ui.timeline.set(n - 1);
        }
        Ok(())
    }

    /// Draw the live run (`frame` None) or a recorded frame.
    fn draw(&mut self, frame: Option<usize>) {
        let Some(run) = &self.run else { return };
        let (xt, x0) = match frame.and_then(|i| self.frames.get(i)) {
            Some(f) => (&f.xt, &f.x0),
            None => (&*run.x_t().buffer, &*run.x0().buffer),
        };
        let tex = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(t)
            | wgpu::CurrentSurfaceTexture::Suboptimal(t) => t,
            wgpu::CurrentSurfaceTexture::Outdated | wgpu::CurrentSurfaceTexture::Lost => {
                self.surface.configure(&self.ctx.device, &self.config);
                return;
            }
            other => {
                web_sys::console::warn_1(
                    &format!(
                        "canvas texture unavailable: {}",
                        match other {
                            wgpu::CurrentSurfaceTexture::Timeout => "timeout",
                            wgpu::CurrentSurfaceTexture::Occluded => "occluded",
                            wgpu::CurrentSurfaceTexture::Validation => "validation",
                            _ => "other",
                        }
                    )
                    .into(),
                );
                return;
            }
        };
        let view = tex
            .texture
            .create_view(&wgpu::TextureViewDescriptor::default());
        let [n, c, h, w] = self.shape;
        let params = layout(n, c, h, w, self.config.width, self.config.height);
        self.presenter.draw(&self.ctx, &view, &params, xt, x0);
        self.ctx.queue.present(tex);
    }

    /// Render what the canvas shows into an offscreen texture and read it back as RGBA.
    /// For tests and screenshots only (headless browsers often cannot capture WebGPU
    /// canvases); the animation itself never reads back.
    fn snapshot_start(&self) -> Option<(wgpu::Buffer, u32, u32, u32, bool, wgpu::Texture)> {
        let run = self.run.as_ref()?;
        let (w, h) = (self.config.width, self.config.height);
        let format = self.config.format;
        let tex = self.ctx.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("snapshot"),
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let view = tex.create_view(&wgpu::TextureViewDescriptor::default());
        let follow = FOLLOW.with(|f| f.get());
        let i = ui().timeline.get_untracked();
        let (xt, x0) = match (!follow).then(|| self.frames.get(i)).flatten() {
            Some(f) => (&f.xt, &f.x0),
            None => (&*run.x_t().buffer, &*run.x0().buffer),
        };
        let [n, c, hh, ww] = self.shape;
        let params = layout(n, c, hh, ww, w, h);
        self.presenter.draw(&self.ctx, &view, &params, xt, x0);
        let bpr = (w * 4).div_ceil(256) * 256;
        let buf = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("snapshot readback"),
            size: (bpr * h) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &tex,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &buf,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(bpr),
                    rows_per_image: Some(h),
                },
            },
            wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
        );
        self.ctx.queue.submit([enc.finish()]);
        let bgra = matches!(
            format,
            wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb
        );
        Some((buf, w, h, bpr, bgra, tex))
    }

    /// One denoising step, then record/draw. Returns (t, steps done, steps in all), or None
    /// if the run was already finished.
    fn step(&mut self) -> crate::Result<Option<(usize, usize, usize)>> {
        let Some(run) = &mut self.run else {
            return Ok(None);
        };
        let Some(t) = run.step(&self.ctx)? else {
            return Ok(None);
        };
        let (done, total) = (run.steps_done(), run.timesteps().len());
        if done % self.record_every == 0 || done == total {
            self.record_frame(Some(t))?;
        }
        if FOLLOW.with(|f| f.get()) {
            self.draw(None);
        }
        Ok(Some((t, done, total)))
    }
}

fn set_state(s: RunState) {
    ui().state.set(s);
}

fn describe_position(t: Option<usize>, done: usize, total: usize, t_train: usize) -> String {
    match t {
        Some(t) => format!("t = {t} / {t_train} · step {done}/{total}"),
        None => format!("t = {t_train} / {t_train} (x_T, pure noise) · step 0/{total}"),
    }
}

/// Start (or continue) animating.
pub fn play() {
    let ui = ui();
    if ENGINE.with(|e| e.borrow().as_ref().is_none_or(|e| e.run.is_none())) {
        return;
    }
    if ui.state.get_untracked() == RunState::Done {
        restart(true);
        return;
    }
    let gen = GENERATION.with(|g| {
        g.set(g.get() + 1);
        g.get()
    });
    set_state(RunState::Running);
    wasm_bindgen_futures::spawn_local(run_loop(gen));
}

pub fn pause() {
    GENERATION.with(|g| g.set(g.get() + 1));
    let ui = ui();
    if ui.state.get_untracked() == RunState::Running {
        set_state(RunState::Paused);
        ui.status
            .set(format!("Paused at {}", ui.step_text.get_untracked()));
    }
}

pub fn toggle_play() {
    if ui().state.get_untracked() == RunState::Running {
        pause();
    } else {
        play();
    }
}

async fn run_loop(gen: u64) {
    let ui = ui();
    let mut times: Vec<f64> = Vec::new();
    loop {
        if GENERATION.with(|g| g.get()) != gen {
            return;
        }
        let out = with_engine(|e| e.step().map(|r| (r, e.ctx.clone(), e.t_train)));
        let (r, ctx, t_train) = match out {
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                report_error(&e);
                set_state(RunState::Paused);
                return;
            }
            None => return,
        };
        let Some((t, done, total)) = r else {
            set_state(RunState::Done);
            return;
        };
        if let Err(e) = ctx.finish().await {
            report_error(&e);
            set_state(RunState::Paused);
            return;
        }
        let now = now_ms();
        times.push(now);
        if times.len() > 20 {
            times.remove(0);
        }
        let rate = if times.len() >= 2 {
            let r = (times.len() - 1) as f64 * 1000.0 / (now - times[0]).max(1e-3);
            format!("{r:.1} steps/s")
        } else {
            "– steps/s".to_string()
        };
        let pos = describe_position(Some(t), done, total, t_train);
        ui.current_t.set(Some(t));
        ui.step_text.set(format!("{pos} · {rate}"));
        if done == total {
            set_state(RunState::Done);
            ui.status.set(format!("Done: {total} steps, x_0 reached"));
            return;
        }
        if GENERATION.with(|g| g.get()) == gen {
            ui.status.set(format!("Denoising t = {t}/{t_train}"));
        }
        next_frame().await;
    }
}

/// One step while paused (or idle).
pub fn step_once() {
    pause();
    let ui = ui();
    let out = with_engine(|e| e.step().map(|r| (r, e.t_train)));
    match out {
        Some(Ok((Some((t, done, total)), t_train))) => {
            ui.current_t.set(Some(t));
            ui.step_text
                .set(describe_position(Some(t), done, total, t_train));
            if done == total {
                set_state(RunState::Done);
                ui.status.set(format!("Done: {total} steps, x_0 reached"));
            } else {
                set_state(RunState::Paused);
                ui.status.set(format!("Paused at t = {t}/{t_train}"));
            }
        }
        Some(Ok((None, _))) => set_state(RunState::Done),
        Some(Err(e)) => report_error(&e),
        None => {}
    }
}

fn show_start(ui: Ui, t_train: usize, total: usize) {
    ui.current_t.set(None);
    ui.step_text.set(describe_position(None, 0, total, t_train));
}

/// Back to x_T with the current seed; `autoplay` starts the animation.
pub fn restart(autoplay: bool) {
    GENERATION.with(|g| g.set(g.get() + 1));
    FOLLOW.with(|f| f.set(true));
    let ui = ui();
    let seed = ui.settings.get_untracked().seed;
    let r = with_engine(|e| -> crate::Result<(usize, usize)> {
        let Some(run) = &mut e.run else {
            return Ok((0, 0));
        };
        run.restart(&e.ctx, seed)?;
        let total = run.timesteps().len();
        e.frames.clear();
        e.record_frame(None)?;
        e.draw(None);
        Ok((e.t_train, total))
    });
    match r {
        Some(Ok((t_train, total))) => {
            show_start(ui, t_train, total);
            set_state(RunState::Idle);
            ui.status.set("Ready: x_T drawn".into());
            if autoplay {
                play();
            }
        }
        Some(Err(e)) => report_error(&e),
        None => {}
    }
}

/// Settings changed: re-plan the run (a new seed alone only re-draws x_T).
pub fn apply_settings(old: &Settings, new: &Settings) {
    let ui = ui();
    // Keep animating unless the user paused: a new class or sampler should just play.
    let was_running = ui.state.get_untracked() != RunState::Paused;
    let only_seed = Settings {
        seed: new.seed,
        ..old.clone()
    } == *new;
    if only_seed {
        restart(was_running);
        return;
    }
    GENERATION.with(|g| g.set(g.get() + 1));
    rebuild(was_running);
}

fn rebuild(autoplay: bool) {
    let ui = ui();
    let Some(model) = model() else { return };
    let s = ui.settings.get_untracked();
    FOLLOW.with(|f| f.set(true));
    let r = with_engine(|e| -> crate::Result<(usize, usize)> {
        e.resize();
        e.build_run(&model, &s)?;
        e.draw(None);
        Ok((e.t_train, s.steps))
    });
    match r {
        Some(Ok((t_train, total))) => {
            clear_error();
            show_start(ui, t_train, total);
            set_state(RunState::Idle);
            ui.status.set("Ready: x_T drawn".into());
            if autoplay {
                play();
            }
        }
        Some(Err(e)) => {
            set_state(RunState::Idle);
            report_error(&e);
        }
        None => {}
    }
}

/// Show recorded frame `i` (following the live run again when it is the last one).
pub fn scrub(i: usize) {
    let ui = ui();
    let r = with_engine(|e| {
        let last = e.frames.len().saturating_sub(1);
        let i = i.min(last);
        let follow = i == last;
        FOLLOW.with(|f| f.set(follow));
        e.draw(if follow { None } else { Some(i) });
        e.frames.get(i).map(|f| (f.t, f.step, e.t_train))
    });
    if let Some(Some((t, step, t_train))) = r {
        ui.timeline.set(i);
        ui.current_t.set(t);
        ui.frame_text.set(match t {
            Some(t) => format!("frame {i}: t = {t}/{t_train}, after step {step}"),
            None => format!("frame {i}: x_T (pure noise)"),
        });
    }
}

pub fn redraw() {
    with_engine(|e| {
        e.resize();
        let follow = FOLLOW.with(|f| f.get());
        let i = ui().timeline.get_untracked();
        e.draw(if follow { None } else { Some(i) });
    });
}

/// Parse a model, make it current and start sampling (or the benchmark).
fn install_model(files: &ModelFiles, name: &str) {
    let ui = ui();
    ui.status.set("Checking the model…".into());
    let model = match Model::from_files(files) {
        Ok(m) => Rc::new(m),
        Err(e) => {
            report_error(&e);
            ui.status.set("The model could not be loaded".into());
            return;
        }
    };
    let schedule = match Schedule::new(&model.scheduler) {
        Ok(s) => s,
        Err(e) => {
            report_error(&e);
            return;
        }
    };
    let cfg = &model.config;
    let sc = &model.scheduler;
    let info = ModelInfo {
        name: name.to_string(),
        t_train: sc.num_train_timesteps,
        classes: cfg.num_class_embeds.map(|k| k.saturating_sub(1).max(1)),
        shape: [cfg.in_channels, cfg.sample_size[0], cfg.sample_size[1]],
        params: cfg.parameter_count(),
        schedule,
        schedule_desc: format!(
            "{} β from {} to {}, T = {}, predicts {}",
            sc.beta_schedule.name(),
            sc.beta_start,
            sc.beta_end,
            sc.num_train_timesteps,
            sc.prediction_type.name()
        ),
    };
    MODEL.with(|m| *m.borrow_mut() = Some(model.clone()));
    ui.model_name.set(name.to_string());
    // Settings valid for this model.
    let mut s = ui.settings.get_untracked();
    s.steps = s.steps.clamp(1, info.t_train);
    if info.classes.is_none() {
        s.class = None;
        s.guidance = 1.0;
    } else if let (Some(c), Some(k)) = (s.class, info.classes) {
        if c as usize >= k {
            s.class = None;
        }
    }
    ui.settings.set(s);
    ui.model.set(Some(info));
    clear_error();
    if bench_mode() {
        wasm_bindgen_futures::spawn_local(run_bench());
    } else {
        rebuild(true);
    }
}

/// Fetch a model folder and install it.
pub async fn load_from_url(base: String, is_default: bool) {
    let ui = ui();
    pause();
    let previous_name = ui.model_name.get_untracked();
    ui.notice.set(None);
    ui.progress.set(Some(0.0));
    ui.model_name.set(format!("{base} (loading)"));
    ui.status.set("Loading model… 0%".into());
    let progress = move |got: u64, total: Option<u64>| {
        let p = total.map(|t| got as f64 / t.max(1) as f64);
        ui.progress.set(Some(p.unwrap_or(0.0)));
        ui.status.set(match p {
            Some(p) => format!("Loading model… {:.0}%", p * 100.0),
            None => format!("Loading model… {:.1} MB", got as f64 / 1e6),
        });
    };
    let r = loader::fetch_model(&base, &progress).await;
    ui.progress.set(None);
    match r {
        Ok(files) => install_model(&files, &base),
        Err(FetchError::NotFound(url)) if is_default => {
            ui.model_name.set("(none)".into());
            ui.notice.set(Some(NO_DEFAULT_MODEL.into()));
            ui.status.set(NO_DEFAULT_MODEL.into());
            if bench_mode() {
                ui.bench.set(Some((
                    format!(r#"{{"error": "no model at {url}"}}"#),
                    String::new(),
                )));
            }
        }
        Err(FetchError::NotFound(url)) => {
            ui.model_name.set(previous_name);
            ui.status.set("The model could not be loaded".into());
            report(format!(
                "No model found at {base}: {url} answered “404 Not Found”. The folder must hold \
                 config.json, diffusion_pytorch_model.safetensors and (optionally) \
                 scheduler_config.json."
            ));
        }
        Err(FetchError::Other(msg)) => {
            ui.model_name.set(previous_name);
            ui.status.set("The model could not be loaded".into());
            report(format!("Could not download the model: {msg}"));
        }
    }
}

/// Read picked/dropped files and install them.
pub async fn load_from_files(files: web_sys::FileList) {
    let ui = ui();
    ui.status.set("Reading files…".into());
    match loader::model_from_files(&files).await {
        Ok(m) => install_model(&m, "local files"),
        Err(msg) => {
            ui.status.set("The model could not be loaded".into());
            report(msg);
        }
    }
}

pub fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    params.get(name).or_else(|| {
        // `?bench` with no value.
        params.has(name).then(String::new)
    })
}

pub fn bench_mode() -> bool {
    query_param("bench").is_some()
}

/// Page start: GPU, then the model from `?model=` or the default folder.
pub async fn start(canvas: web_sys::HtmlCanvasElement) {
    let ui = ui();
    CANVAS.with(|c| *c.borrow_mut() = Some(canvas.clone()));
    // Settings from the URL (handy for demos and tests): steps, sampler, batch, seed.
    let mut s = ui.settings.get_untracked();
    if let Some(v) = query_param("steps").and_then(|v| v.parse().ok()) {
        s.steps = v;
    }
    if let Some(v) = query_param("sampler") {
        s.ddim = v.eq_ignore_ascii_case("ddim");
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
    ui.status.set("Starting WebGPU…".into());
    match init_gpu(canvas).await {
        Ok(e) => {
            ENGINE.with(|x| *x.borrow_mut() = Some(e));
            ui.gpu_ready.set(true);
        }
        Err(msg) => {
            ui.status.set("WebGPU is not available".into());
            report(msg);
            if bench_mode() {
                ui.bench
                    .set(Some((r#"{"error": "no WebGPU"}"#.into(), String::new())));
            }
            return;
        }
    }
    let (url, is_default) = match query_param("model").filter(|m| !m.is_empty()) {
        Some(m) => (m, false),
        None => ("models/mnist/".to_string(), true),
    };
    load_from_url(url, is_default).await;
}

/// Restart after device loss: new device, same canvas and model.
/// `window.kakusanSimulateDeviceLoss()`: destroy the WebGPU device as a driver reset would,
/// so that tests (and curious users) can exercise the device-lost message and "Restart GPU".
pub fn simulate_device_loss() {
    with_engine(|e| e.ctx.device.destroy());
}

pub async fn restart_device() {
    let ui = ui();
    GENERATION.with(|g| g.set(g.get() + 1));
    DEVICE_ID.with(|d| d.set(d.get() + 1));
    ENGINE.with(|e| *e.borrow_mut() = None);
    clear_error();
    ui.status.set("Restarting WebGPU…".into());
    let Some(canvas) = CANVAS.with(|c| c.borrow().clone()) else {
        return;
    };
    match init_gpu(canvas).await {
        Ok(e) => {
            ENGINE.with(|x| *x.borrow_mut() = Some(e));
            if model().is_some() {
                rebuild(false);
            } else {
                ui.status.set("WebGPU restarted; no model loaded".into());
            }
        }
        Err(msg) => report(msg),
    }
}

/// `?bench[&batch=N]`: time the U-Net forward pass after warm-up; median over the runs.
async fn run_bench() {
    let ui = ui();
    let Some(model) = model() else { return };
    let batch = query_param("batch")
        .and_then(|b| b.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    ui.status
        .set(format!("Benchmark: batch {batch}, warming up…"));
    let Some((ctx, adapter)) = with_engine(|e| (e.ctx.clone(), e.adapter_name())) else {
        return;
    };
    let result: crate::Result<(f64, Vec<f64>, u64)> = async {
        let unet = crate::unet::UNet::new(&ctx, &model.config, &model.weights, batch)?;
        let ts = vec![500.0f32; batch];
        let labels = model.config.num_class_embeds.map(|_| vec![0u32; batch]);
        unet.set_inputs(&ctx, None, &ts, labels.as_deref())?;
        for _ in 0..3 {
            ctx.run(unet.program())?;
            ctx.finish().await?;
        }
        let mut times = Vec::new();
        let t_start = now_ms();
        while times.len() < 20 && (times.len() < 5 || now_ms() - t_start < 10_000.0) {
            let t0 = now_ms();
            ctx.run(unet.program())?;
            ctx.finish().await?;
            times.push(now_ms() - t0);
            ui.status
                .set(format!("Benchmark: batch {batch}, run {}", times.len()));
        }
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        Ok((sorted[sorted.len() / 2], times, unet.flops))
    }
    .await;
    match result {
        Ok((median, times, flops)) => {
            let gflops = flops as f64 / (median * 1e6);
            let json = format!(
                r#"{{"adapter": {}, "batch": {batch}, "median_ms": {median:.3}, "gflops": {gflops:.3}}}"#,
                serde_json::Value::String(adapter.clone())
            );
            let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
            let table = format!(
                "adapter\t{adapter}\nbatch\t{batch}\nruns\t{}\nmedian\t{median:.2} ms\nfastest\t{min:.2} ms\nwork\t{:.3} GFLOP per call\nspeed\t{gflops:.2} GFLOP/s",
                times.len(),
                flops as f64 / 1e9
            );
            ui.bench.set(Some((json, table)));
            ui.status
                .set(format!("Benchmark done: {median:.2} ms median"));
        }
        Err(e) => {
            report_error(&e);
            ui.bench.set(Some((
                format!(
                    r#"{{"error": {}}}"#,
                    serde_json::Value::String(e.to_string())
                ),
                String::new(),
            )));
        }
    }
}

/// Let the canvas follow window size changes.
pub fn on_resize() {
    redraw();
}

/// A JS value's message.
pub fn js_error(e: wasm_bindgen::JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// `window.kakusanSnapshot()`: a PNG data URL of what #reverse-canvas shows, rendered
/// offscreen by the same pipeline (headless browsers often cannot screenshot WebGPU
/// canvases). Resolves to an empty string when no run exists.
#[wasm_bindgen::prelude::wasm_bindgen(js_name = kakusanSnapshot)]
pub async fn snapshot() -> Result<wasm_bindgen::JsValue, wasm_bindgen::JsValue> {
    let Some((snap, scope)) = with_engine(|e| {
        let scope = e.ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        (e.snapshot_start(), scope.pop())
    }) else {
        return Ok("".into());
    };
    if let Some(err) = scope.await {
        return Err(wasm_bindgen::JsValue::from_str(&format!("snapshot: {err}")));
    }
    let Some((buf, w, h, bpr, bgra, _tex)) = snap else {
        return Ok("".into());
    };
    if let Some(ctx) = with_engine(|e| e.ctx.clone()) {
        ctx.finish()
            .await
            .map_err(|e| wasm_bindgen::JsValue::from_str(&e.to_string()))?;
    }
    let (tx, rx) = futures_channel::oneshot::channel();
    buf.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    rx.await
        .map_err(|_| wasm_bindgen::JsValue::from_str("device lost"))?
        .map_err(|e| {
            let gpu = with_engine(|e| e.ctx.check().err().map(|x| x.to_string())).flatten();
            wasm_bindgen::JsValue::from_str(&format!("{e} {}", gpu.unwrap_or_default()))
        })?;
    let mut rgba = vec![0u8; (w * h * 4) as usize];
    {
        let data = buf
            .get_mapped_range(..)
            .map_err(|e| wasm_bindgen::JsValue::from_str(&e.to_string()))?;
        for y in 0..h as usize {
            let row = &data[y * bpr as usize..y * bpr as usize + w as usize * 4];
            let out = &mut rgba[y * w as usize * 4..(y + 1) * w as usize * 4];
            out.copy_from_slice(row);
            if bgra {
                for p in out.chunks_mut(4) {
                    p.swap(0, 2);
                }
            }
        }
    }
    buf.unmap();
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let canvas: web_sys::HtmlCanvasElement = doc.create_element("canvas")?.unchecked_into();
    canvas.set_width(w);
    canvas.set_height(h);
    let ctx: web_sys::CanvasRenderingContext2d = canvas
        .get_context("2d")?
        .ok_or("no 2-D canvas")?
        .unchecked_into();
    let img =
        web_sys::ImageData::new_with_u8_clamped_array_and_sh(wasm_bindgen::Clamped(&rgba), w, h)?;
    ctx.put_image_data(&img, 0.0, 0.0)?;
    Ok(canvas.to_data_url()?.into())
}
