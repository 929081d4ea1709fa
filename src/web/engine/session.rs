//! The GPU session: the WebGPU adapter and device (one wgpu device shared by the sampler's
//! compute and the canvas's render pass), the configured canvas surface and the
//! [`Presenter`] that draws x_t and x̂_0 onto it.
//!
//! Owns [`Session`] (inside the [`Engine`]), the canvas element and the current device's
//! id. Only this file opens a device and installs or drops the engine: at page start
//! ([`open_first`]), and on “Restart GPU” ([`restart_device`]) after the browser reported
//! the device lost. Others only read the context ([`Session::ctx`]) and draw
//! ([`Session::present`], [`Session::render`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use leptos::prelude::*;

use super::{clear_error, report, run, set_engine, ui, with_engine, Engine, RunState};
use crate::gpu::GpuContext;
use crate::web::present::{layout, Presenter};

pub const NO_WEBGPU: &str = "This browser does not offer WebGPU, which this page needs to run \
the model. WebGPU is available in Chrome and Edge 113 or newer (Windows, macOS, ChromeOS, \
Android; on Linux behind chrome://flags/#enable-unsafe-webgpu), Safari 26 or newer \
(macOS, iOS, iPadOS) and Firefox 141 or newer on Windows. The forward-process explorer \
below works without it.";

thread_local! {
    /// The page's canvas, kept to open a new device on it after a loss.
    static CANVAS: RefCell<Option<web_sys::HtmlCanvasElement>> = const { RefCell::new(None) };
    /// Which device is current: a loss reported for an older one is ignored.
    static DEVICE_ID: Cell<u64> = const { Cell::new(0) };
}

/// The device and what draws to the canvas with it.
pub struct Session {
    ctx: Rc<GpuContext>,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    presenter: Presenter,
    canvas: web_sys::HtmlCanvasElement,
    adapter_label: String,
}

/// What #error says when the device is lost; `detail` is the browser's reason.
pub fn device_lost_message(detail: &str) -> String {
    format!(
        "The GPU device was lost ({detail}). This happens when the GPU driver resets, the \
         browser's GPU process restarts, the tab was in the background for long, or the GPU \
         runs out of memory. Press “Restart GPU” to start again."
    )
}

pub fn has_webgpu() -> bool {
    web_sys::window()
        .and_then(|w| js_sys::Reflect::get(&w.navigator(), &"gpu".into()).ok())
        .is_some_and(|g| !g.is_undefined() && !g.is_null())
}

impl Session {
    /// Create the device on an adapter that can draw to `canvas`, and configure the canvas.
    async fn open(canvas: web_sys::HtmlCanvasElement) -> Result<Session, String> {
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
        check_limits(&adapter.limits())?;
        let adapter_label = adapter_label(&adapter.get_info());
        let caps = surface.get_capabilities(&adapter);
        let ctx = GpuContext::from_adapter(adapter.clone())
            .await
            .map_err(|e| e.to_string())?;
        // A non-sRGB format: the shader writes (x + 1) / 2 as the pixel value, as an image
        // file would.
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
        watch_device_loss(&ctx.device);
        let presenter = Presenter::new(&ctx, format);
        ctx.check().map_err(|e| e.to_string())?;
        Ok(Session {
            ctx: Rc::new(ctx),
            surface,
            config,
            presenter,
            canvas,
            adapter_label,
        })
    }

    pub fn ctx(&self) -> &Rc<GpuContext> {
        &self.ctx
    }

    /// The canvas's configuration: its size in pixels and texture format.
    pub fn surface_config(&self) -> &wgpu::SurfaceConfiguration {
        &self.config
    }

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

    /// Follow the canvas's CSS size (reconfigures the surface when it changed).
    pub fn resize(&mut self) {
        let (w, h) = canvas_size(&self.canvas);
        if (w, h) != (self.config.width, self.config.height) {
            self.config.width = w;
            self.config.height = h;
            self.surface.configure(&self.ctx.device, &self.config);
        }
    }

    /// Draw x_t and x̂_0 (buffers of `shape` = (N, C, H, W)) side by side into `target`, a
    /// `width` × `height` view in the canvas's format.
    pub fn render(
        &self,
        target: &wgpu::TextureView,
        (width, height): (u32, u32),
        shape: [usize; 4],
        xt: &wgpu::Buffer,
        x0: &wgpu::Buffer,
    ) {
        let [n, c, h, w] = shape;
        let params = layout(n, c, h, w, width, height);
        self.presenter.draw(&self.ctx, target, &params, xt, x0);
    }

    /// Draw x_t and x̂_0 onto the canvas.
    pub fn present(&self, shape: [usize; 4], xt: &wgpu::Buffer, x0: &wgpu::Buffer) {
        let tex = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(t)
            | wgpu::CurrentSurfaceTexture::Suboptimal(t) => t,
            wgpu::CurrentSurfaceTexture::Outdated | wgpu::CurrentSurfaceTexture::Lost => {
                self.surface.configure(&self.ctx.device, &self.config);
                return;
            }
            other => {
                let why = match other {
                    wgpu::CurrentSurfaceTexture::Timeout => "timeout",
                    wgpu::CurrentSurfaceTexture::Occluded => "occluded",
                    wgpu::CurrentSurfaceTexture::Validation => "validation",
                    _ => "other",
                };
                web_sys::console::warn_1(&format!("canvas texture unavailable: {why}").into());
                return;
            }
        };
        let view = tex
            .texture
            .create_view(&wgpu::TextureViewDescriptor::default());
        let size = (self.config.width, self.config.height);
        self.render(&view, size, shape, xt, x0);
        self.ctx.queue.present(tex);
    }
}

/// The kernels need WebGPU's default limits; some adapters offer less.
fn check_limits(limits: &wgpu::Limits) -> Result<(), String> {
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
    if small.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "This GPU's WebGPU limits are too small for the model's kernels: {}. Try another \
             browser or device.",
            small.join("; ")
        ))
    }
}

/// A name for the adapter: browsers often leave its name empty; vendor/architecture/driver
/// say more.
fn adapter_label(info: &wgpu::AdapterInfo) -> String {
    let label = [info.name.as_str(), &info.driver, &info.driver_info]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    if label.is_empty() {
        format!(
            "WebGPU adapter (vendor {:#x}, device {:#x})",
            info.vendor, info.device
        )
    } else {
        label
    }
}

/// Show a loss of `device` (while it is the current one): stop the animation, say so in
/// #error and offer “Restart GPU”.
fn watch_device_loss(device: &wgpu::Device) {
    // GpuContext ignores "destroyed" (natively that only follows our own drop). In the
    // browser wgpu never destroys the device, so any loss — including one the browser
    // reports as "destroyed" (e.g. its GPU process restarted) — must be shown.
    let id = DEVICE_ID.with(|d| {
        d.set(d.get() + 1);
        d.get()
    });
    device.set_device_lost_callback(move |reason, msg| {
        if DEVICE_ID.with(|d| d.get()) != id {
            return;
        }
        run::stop_loop();
        let ui = ui();
        if ui.state.get_untracked() == RunState::Running {
            ui.state.set(RunState::Paused);
        }
        ui.status.set("The GPU device was lost".into());
        // report() also shows “Restart GPU” (the message says “lost”).
        report(device_lost_message(&format!("{reason:?}: {msg}")));
    });
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

/// Page start: open the device on `canvas`. False (with #error saying why) when the page
/// cannot use WebGPU.
pub async fn open_first(canvas: web_sys::HtmlCanvasElement) -> bool {
    let ui = ui();
    CANVAS.with(|c| *c.borrow_mut() = Some(canvas.clone()));
    ui.status.set("Starting WebGPU…".into());
    match Session::open(canvas).await {
        Ok(s) => {
            set_engine(Some(Engine::new(s)));
            ui.gpu_ready.set(true);
            true
        }
        Err(msg) => {
            ui.status.set("WebGPU is not available".into());
            report(msg);
            super::bench::report_failure("no WebGPU");
            false
        }
    }
}

/// `window.kakusanSimulateDeviceLoss()`: destroy the WebGPU device as a driver reset would,
/// so that tests (and curious users) can exercise the device-lost message and "Restart GPU".
pub fn simulate_device_loss() {
    with_engine(|e| e.session.ctx.device.destroy());
}

/// Restart after device loss: new device, same canvas and model.
pub async fn restart_device() {
    let ui = ui();
    run::stop_loop();
    DEVICE_ID.with(|d| d.set(d.get() + 1));
    set_engine(None);
    clear_error();
    ui.status.set("Restarting WebGPU…".into());
    let Some(canvas) = CANVAS.with(|c| c.borrow().clone()) else {
        return;
    };
    match Session::open(canvas).await {
        Ok(s) => {
            set_engine(Some(Engine::new(s)));
            if super::loading::model().is_some() {
                run::rebuild(false);
            } else {
                ui.status.set("WebGPU restarted; no model loaded".into());
            }
        }
        Err(msg) => report(msg),
    }
}
