//! The diffusion lab's GPU side (issue 8): a 2-D data set, the fused MLP trainer
//! ([`LabTrainer`], 3 dispatches per step, no CPU writes between steps), particles sampled
//! continuously from the trainer's EMA weights ([`Particles`], one dispatch per step, every
//! step's positions and Tweedie x̂_0 copied into history buffers on the GPU), and the lab
//! canvas drawn from those buffers by [`PointsRenderer`] every frame (particles between their
//! last two completed steps, so they move smoothly while a step is computed in chunks). A
//! second, small run of particles (the fit probe, [`FIT_N`]) gives the fit figure. Only small
//! things come back to the CPU, asynchronously: the loss ring about once a second, the
//! probe's end points after each of its runs, the picked particles once per click.
//!
//! The field views (`#lab-view` = density / score) draw [`FieldViews`]' panels with
//! [`FieldBlit`] under the same render pass: the exact density q(x_t) and exact arrows run
//! only when the shown t (or the data) changes, the learned arrows at most every
//! [`ARROWS_EVERY_MS`] while the weights change, the particle histogram every frame; all on
//! the GPU, recorded once per model (re-recorded only when the particles are rebuilt).
//!
//! Owns [`LabGpu`] (a field of the [`Engine`], so a new device drops it) and the lab's
//! signals ([`LabUi`]); only this file changes them. The page drives it through
//! [`activate`], [`deactivate`], [`toggle_training`], [`reset`], [`apply`], [`pick_at`] and the
//! drawing functions.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use leptos::prelude::*;

use super::{next_frame, now_ms, query_param, report, report_error, with_engine};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Tensor};
use crate::lab::data::{generate, Dataset, Preset};
use crate::lab::field::{BlitSource, FieldBlit, FieldParams, FieldViews, Panel, View};
use crate::lab::metrics::{
    sliced_wasserstein, sw_floor, variational_bound, BoundTerms, FIT_SAMPLES, SW_PROJECTIONS,
    SW_SEED,
};
use crate::lab::mlp::{forward_macs, init_params};
use crate::lab::sample::{
    plan, sample, LabSampler, Particles, StepCoef, DEFAULT_SAMPLER, DEFAULT_SAMPLE_STEPS,
};
use crate::lab::score::ExactScore;
use crate::lab::train::{
    lab_schedule, losses_from_state, LabTrainer, TrainConfig, DEFAULT_COSINE, DEFAULT_TIMESTEPS,
};
use crate::rng::SplitMix64;
use crate::web::lab_points::{
    Draw, Layer, PanelDraw, PointsRenderer, PointsView, Shape, WORLD_HALF,
};

/// Particles (and data points) compared by the fit figure.
pub const FIT_N: usize = FIT_SAMPLES;
/// Picked particles at most.
pub const MAX_PICKS: usize = 8;
/// The fit threshold of the issue: sliced W₂ ≤ 2× its floor.
pub const FIT_FACTOR: f64 = 2.0;
/// Pixels per side of the field views' panels (the blit stretches them over the canvas): the
/// exact density costs side² × data points Gaussians per change of t, seconds on a CPU
/// adapter at 128².
pub const FIELD_SIDE: u32 = 96;
/// Arrows per side of the score panels (8-pixel cells at [`FIELD_SIDE`]).
pub const FIELD_GRID: usize = 12;
/// The learned arrows are re-evaluated at most this often while the weights change.
pub const ARROWS_EVERY_MS: f64 = 1500.0;

/// Which reverse process the particles follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabSamplerKind {
    Ddpm,
    Ddim,
    Ode,
}

impl LabSamplerKind {
    pub fn key(self) -> &'static str {
        match self {
            LabSamplerKind::Ddpm => "ddpm",
            LabSamplerKind::Ddim => "ddim",
            LabSamplerKind::Ode => "ode",
        }
    }

    pub fn from_key(k: &str) -> LabSamplerKind {
        match k {
            "ddim" => LabSamplerKind::Ddim,
            "ode" => LabSamplerKind::Ode,
            _ => LabSamplerKind::Ddpm,
        }
    }
}

/// The lab's controls. Data/model fields rebuild everything; sampler fields only the particles.
#[derive(Clone, Debug, PartialEq)]
pub struct LabSettings {
    /// A preset name of `lab::data`, or "drawing".
    pub preset: String,
    pub points: usize,
    pub word: String,
    /// Train class-conditionally (presets have a class per point).
    pub classes: bool,
    pub timesteps: usize,
    pub cosine: bool,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
    pub sampler: LabSamplerKind,
    pub eta: f64,
    pub sample_steps: usize,
    pub particles: usize,
    pub guidance: f32,
}

impl Default for LabSettings {
    fn default() -> Self {
        LabSettings {
            preset: "moons".into(),
            points: 8000,
            word: "DDPM".into(),
            classes: false,
            timesteps: DEFAULT_TIMESTEPS,
            cosine: DEFAULT_COSINE,
            batch: TrainConfig::default().batch,
            lr: TrainConfig::default().lr,
            seed: 0,
            sampler: match DEFAULT_SAMPLER {
                LabSampler::Ddpm => LabSamplerKind::Ddpm,
                LabSampler::Ddim { .. } => LabSamplerKind::Ddim,
                LabSampler::ProbabilityFlow => LabSamplerKind::Ode,
            },
            eta: 0.0,
            sample_steps: DEFAULT_SAMPLE_STEPS.min(DEFAULT_TIMESTEPS),
            particles: 10_000,
            guidance: 1.0,
        }
    }
}

impl LabSettings {
    fn model_key(&self) -> (String, usize, String, bool, usize, bool, usize, u32, u64) {
        (
            self.preset.clone(),
            self.points,
            self.word.clone(),
            self.classes,
            self.timesteps,
            self.cosine,
            self.batch,
            self.lr.to_bits(),
            self.seed,
        )
    }

    fn sampler(&self) -> LabSampler {
        match self.sampler {
            LabSamplerKind::Ddpm => LabSampler::Ddpm,
            LabSamplerKind::Ddim => LabSampler::Ddim { eta: self.eta },
            LabSamplerKind::Ode => LabSampler::ProbabilityFlow,
        }
    }
}

/// What the canvas shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabView {
    /// Data and particles of the reverse process.
    Reverse,
    /// The data noised to t by the forward process.
    Forward,
    /// Particle density at the shown t beside the exact density of q(x_t).
    Density,
    /// Learned score arrows over ‖ε_θ − ε*‖ beside the exact score over q(x_t).
    Score,
}

impl LabView {
    pub fn key(self) -> &'static str {
        match self {
            LabView::Reverse => "reverse",
            LabView::Forward => "forward",
            LabView::Density => "density",
            LabView::Score => "score",
        }
    }

    pub fn from_key(k: &str) -> LabView {
        match k {
            "forward" => LabView::Forward,
            "density" => LabView::Density,
            "score" => LabView::Score,
            _ => LabView::Reverse,
        }
    }

    /// The two panels of a field view (left, right).
    fn panels(self) -> Option<[Panel; 2]> {
        match self {
            LabView::Density => Some([Panel::ParticleDensity, Panel::ExactDensity]),
            LabView::Score => Some([Panel::LearnedScore, Panel::ExactScore]),
            _ => None,
        }
    }
}

/// The fit figure and what it is compared with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub sw: f64,
    pub floor: f64,
    pub untrained: Option<f64>,
    pub step: u64,
    pub train_s: f64,
}

/// The lab's signals (the page renders them; only this file writes them).
#[derive(Clone, Copy)]
pub struct LabUi {
    pub settings: RwSignal<LabSettings>,
    /// "idle" (no model yet), "ready", "training", "paused".
    pub state: RwSignal<&'static str>,
    pub steps: RwSignal<u64>,
    pub steps_per_s: RwSignal<f64>,
    pub gflops: RwSignal<f64>,
    pub fps: RwSignal<f64>,
    /// Sampler steps of the particles per second (a step can span frames on a slow adapter).
    pub sample_steps_per_s: RwSignal<f64>,
    pub train_s: RwSignal<f64>,
    /// Every step's loss so far (the loss ring is read about once a second).
    pub losses: RwSignal<Vec<f32>>,
    pub fit: RwSignal<Option<Fit>>,
    pub fit_history: RwSignal<Vec<(u64, f64)>>,
    /// (training seconds, steps) when the fit figure first reached 2× its floor.
    pub time_to_fit: RwSignal<Option<(f64, u64)>>,
    /// (recorded row shown, rows − 1 = sampler steps).
    pub row: RwSignal<(usize, usize)>,
    /// The paper's t of the row shown (0 = x_0).
    pub shown_t: RwSignal<usize>,
    /// Some(row): the scrubber holds the particles at that row; None follows the animation.
    pub scrub: RwSignal<Option<usize>>,
    pub view: RwSignal<LabView>,
    pub forward_t: RwSignal<usize>,
    pub show_data: RwSignal<bool>,
    pub bound: RwSignal<Option<BoundTerms>>,
    pub data_info: RwSignal<String>,
    pub num_classes: RwSignal<usize>,
    pub picks: RwSignal<usize>,
    pub drawing: RwSignal<bool>,
    pub draw_class: RwSignal<u32>,
    pub draft_len: RwSignal<usize>,
    pub bench: RwSignal<Option<(String, String)>>,
    /// The field views' scales (max q(x_t) on the view, max ‖s‖ over both arrow fields), read
    /// back after each run of their exact or arrows program.
    pub field_scales: RwSignal<Option<(f32, f32)>>,
    /// The class of the score view (`#lab-field-class`; None = the null class, all points);
    /// with a class the arrows are guided with the page's w.
    pub field_class: RwSignal<Option<u32>>,
}

/// What the field views cost on the GPU, in ms (medians; each submitted and awaited on its
/// own; `?bench=lab&view=density|score`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct FieldCost {
    /// q(x_t) on every pixel (when t changes).
    exact_ms: f64,
    /// Both arrow fields and their panels (when t, the class or the weights change).
    arrows_ms: f64,
    /// Histogram of the shown particles and its panel (every frame).
    particles_ms: f64,
    /// A frame held by the scrubber: copy of the shown row + the particles program.
    held_frame_ms: f64,
    /// One particle step alone (what the reverse view costs per frame).
    particle_step_ms: f64,
    /// A frame following the animation: a particle step, then all three programs for the
    /// new t.
    live_frame_ms: f64,
}

impl LabUi {
    fn new() -> LabUi {
        LabUi {
            settings: RwSignal::new(LabSettings::default()),
            state: RwSignal::new("idle"),
            steps: RwSignal::new(0),
            steps_per_s: RwSignal::new(0.0),
            gflops: RwSignal::new(0.0),
            fps: RwSignal::new(0.0),
            sample_steps_per_s: RwSignal::new(0.0),
            train_s: RwSignal::new(0.0),
            losses: RwSignal::new(Vec::new()),
            fit: RwSignal::new(None),
            fit_history: RwSignal::new(Vec::new()),
            time_to_fit: RwSignal::new(None),
            row: RwSignal::new((0, 0)),
            shown_t: RwSignal::new(0),
            scrub: RwSignal::new(None),
            view: RwSignal::new(LabView::Reverse),
            forward_t: RwSignal::new(30),
            show_data: RwSignal::new(true),
            bound: RwSignal::new(None),
            data_info: RwSignal::new(String::new()),
            num_classes: RwSignal::new(0),
            picks: RwSignal::new(0),
            drawing: RwSignal::new(false),
            draw_class: RwSignal::new(0),
            draft_len: RwSignal::new(0),
            bench: RwSignal::new(None),
            field_scales: RwSignal::new(None),
            field_class: RwSignal::new(None),
        }
    }
}

thread_local! {
    static LAB_UI: Cell<Option<LabUi>> = const { Cell::new(None) };
    /// Bumped to stop the lab's loop.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    static CANVAS: RefCell<Option<web_sys::HtmlCanvasElement>> = const { RefCell::new(None) };
    /// The drawing being made: points and a class per point.
    static DRAFT: RefCell<(Vec<[f32; 2]>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// Building the model for the current settings failed (shown once; retried on new settings).
    static BUILD_FAILED: Cell<bool> = const { Cell::new(false) };
    /// The last drawing accepted as a data set.
    static DRAWN: RefCell<Option<Dataset>> = const { RefCell::new(None) };
}

/// The lab's signals, created on first use (by the lab component).
pub fn lab_ui() -> LabUi {
    LAB_UI.with(|u| match u.get() {
        Some(ui) => ui,
        None => {
            let ui = LabUi::new();
            // Settings from the URL (demos and tests): ?preset=&particles=&sample_steps=&…
            ui.settings.update(|s| {
                if let Some(v) = query_param("preset") {
                    s.preset = v;
                }
                if let Some(v) = query_param("particles").and_then(|v| v.parse().ok()) {
                    s.particles = usize::clamp(v, 100, 50_000);
                }
                if let Some(v) = query_param("sample_steps").and_then(|v| v.parse().ok()) {
                    s.sample_steps = v;
                }
                if let Some(v) = query_param("points").and_then(|v| v.parse().ok()) {
                    s.points = v;
                }
                if let Some(v) = query_param("lab_batch").and_then(|v| v.parse().ok()) {
                    s.batch = v;
                }
                if let Some(v) = query_param("lab_sampler") {
                    s.sampler = LabSamplerKind::from_key(&v);
                }
                if query_param("classes").is_some() {
                    s.classes = true;
                }
            });
            u.set(Some(ui));
            ui
        }
    })
}

/// The particle run: N particles, their per-step programs and the recorded history.
struct ParticleRun {
    plan: Vec<StepCoef>,
    particles: Particles,
    /// (steps + 1, n, 4): row 0 = x_T, row k = after k steps.
    history: Tensor,
    /// (steps + 1, n, 2): Tweedie's x̂_0 written by step k (row 0 unused).
    x0_history: Tensor,
    /// (n, 4): the end points of the last finished run (read back for the fit figure).
    last: Tensor,
    /// Steps done in the current run.
    k: usize,
    /// Particles of step k + 1 computed so far (a step runs in chunks on a slow adapter).
    rows_done: usize,
    /// Frames left to hold the finished run on screen.
    hold: u32,
    /// Frames a finished run is held before the next starts (0 for the fit probe).
    hold_frames: u32,
    /// True once a run has finished since it was built (the fit may read `last`).
    finished: bool,
    /// Particle classes (empty: unconditional).
    classes: Vec<u32>,
}

/// The model being trained on the current device.
struct LabModel {
    data: Dataset,
    schedule: crate::diffusion::schedule::Schedule,
    trainer: LabTrainer,
    /// (n, 4): data points (x, y, class, 0) for drawing.
    data_buf: Tensor,
    run: ParticleRun,
    /// The fit figure's particles ([`ParticleRun::probe`]).
    probe: ParticleRun,
    /// Trainer steps when the probe's current run started (None: not since it was built).
    probe_from: Option<u64>,
    init: Vec<f32>,
    reference: Vec<[f32; 2]>,
    floor: f64,
    untrained: Option<f64>,
    settings: LabSettings,
    /// The field views, made when a density or score view is first shown.
    field: Option<FieldState>,
}

/// The field views of one model: their GPU state and what they were last computed for.
struct FieldState {
    views: FieldViews,
    /// (n, 4): the particles of the shown history row (a GPU copy every frame).
    shown: Tensor,
    /// Blit sources of the four images, in [`Panel::ALL`] order.
    sources: Vec<BlitSource>,
    /// The schedule index (0-based) the exact program last ran for.
    exact_t: Option<usize>,
    /// (class, w bits) the arrows last ran for.
    shown_class: (Option<u32>, u32),
    /// Per class of the data: whether it has points (only those can be shown).
    class_has_points: Vec<bool>,
    /// (trainer steps, time ms) when the learned arrows last ran.
    arrows_at: (u64, f64),
}

impl FieldState {
    fn new(ctx: &GpuContext, blit: &FieldBlit, m: &LabModel, ti: usize) -> Result<FieldState> {
        let exact = ExactScore::new(ctx, &m.data.points)?;
        let mut views = FieldViews::new(
            ctx,
            View::square(WORLD_HALF, FIELD_SIDE),
            FIELD_GRID,
            &exact,
            &FieldParams::at(&m.schedule, ti)?,
        )?;
        let shown = ctx.zeros(&[m.run.particles.n, 4])?;
        views.bind_particles(ctx, &shown)?;
        views.bind_model(ctx, &m.trainer.ema, m.data.num_classes)?;
        let mut per_class = vec![Vec::new(); m.data.num_classes];
        if let Some(labels) = &m.data.labels {
            for (p, &y) in m.data.points.iter().zip(labels) {
                per_class[y as usize].push(*p);
            }
            views.bind_classes(ctx, &per_class)?;
        }
        let class_has_points = per_class.iter().map(|c| !c.is_empty()).collect();
        let sources = Panel::ALL
            .iter()
            .map(|&p| blit.source(ctx, views.image(p)))
            .collect::<Result<Vec<_>>>()?;
        Ok(FieldState {
            views,
            shown,
            sources,
            exact_t: None,
            shown_class: (None, 0),
            class_has_points,
            arrows_at: (0, f64::NEG_INFINITY),
        })
    }

    fn source(&self, panel: Panel) -> &BlitSource {
        let i = Panel::ALL.iter().position(|&p| p == panel).unwrap_or(0);
        &self.sources[i]
    }
}

impl LabModel {
    /// Bring the field views up to date for the shown row (one submission): q(x_t) and the
    /// exact arrows when t changed, the learned arrows when the weights changed (at most every
    /// [`ARROWS_EVERY_MS`]), the histogram of the shown particles always. Returns the (4)
    /// scales tensor when the scales changed (for the legend's one small readback).
    fn update_field(
        &mut self,
        ctx: &GpuContext,
        blit: &FieldBlit,
        row: usize,
        class: Option<u32>,
    ) -> Result<Option<Tensor>> {
        // Row r holds the particles before plan step r: x at the 0-based schedule index
        // plan[r].t; the last row is x_0, shown at index 0 (t = 1; ᾱ must stay below 1).
        let ti = self.run.plan.get(row).map_or(0, |c| c.t);
        if self.field.is_none() {
            self.field = Some(FieldState::new(ctx, blit, self, ti)?);
        }
        let n = self.run.particles.n;
        let steps = self.trainer.steps_taken();
        let now = now_ms();
        let Some(f) = self.field.as_mut() else {
            return Ok(None);
        };
        if f.shown.shape[0] != n {
            // The particles were rebuilt with another count.
            f.shown = ctx.zeros(&[n, 4])?;
            f.views.bind_particles(ctx, &f.shown)?;
        }
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("lab field views"),
            });
        let bytes = f.shown.bytes();
        enc.copy_buffer_to_buffer(
            &self.run.history.buffer,
            row as u64 * bytes,
            &f.shown.buffer,
            0,
            bytes,
        );
        let mut scales = None;
        // A class the data do not have (a new data set) shows the null class.
        let class = class.filter(|&c| f.class_has_points.get(c as usize) == Some(&true));
        let w = self.settings.guidance;
        let shown_class = (class, w.to_bits());
        let params = FieldParams {
            class,
            guidance: w,
            ..FieldParams::at(&self.schedule, ti)?
        };
        // The exact density is q(x_t | y) with a class shown: it reruns when the class does.
        if f.exact_t != Some(ti) || f.shown_class.0 != class {
            scales = Some(f.views.maxima().clone());
            f.views.update(ctx, &params)?;
            f.views.exact_program().encode(&mut enc);
            f.views.arrows_program().encode(&mut enc);
            f.exact_t = Some(ti);
            f.shown_class = shown_class;
            f.arrows_at = (steps, now);
        } else if f.shown_class != shown_class {
            scales = Some(f.views.maxima().clone());
            f.views.update(ctx, &params)?;
            f.views.arrows_program().encode(&mut enc);
            f.shown_class = shown_class;
            f.arrows_at = (steps, now);
        } else if steps != f.arrows_at.0 && now - f.arrows_at.1 >= ARROWS_EVERY_MS {
            scales = Some(f.views.maxima().clone());
            f.views.arrows_program().encode(&mut enc);
            f.arrows_at = (steps, now);
        }
        f.views.particles_program().encode(&mut enc);
        ctx.queue.submit([enc.finish()]);
        ctx.check()?;
        Ok(scales)
    }
}

/// Everything the lab holds on the device (a field of the [`Engine`]).
pub struct LabGpu {
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    renderer: PointsRenderer,
    /// Draws the field views' panels (one render pipeline, made with the canvas).
    blit: FieldBlit,
    canvas: web_sys::HtmlCanvasElement,
    /// (MAX_PICKS) u32 indices of picked particles.
    picks: Tensor,
    n_picks: usize,
    /// (MAX_POINTS, 4) the drawing being made.
    draft: Tensor,
    model: Option<LabModel>,
    /// The data points of the reverse view, drawn once (see [`Layer`]); redrawn when stale.
    data_layer: RefCell<Option<Layer>>,
    /// The data or the canvas size changed since `data_layer` was drawn.
    layer_stale: Cell<bool>,
}

fn with_lab<R>(f: impl FnOnce(&mut LabGpu, &Rc<GpuContext>) -> R) -> Option<R> {
    with_engine(|e| {
        let ctx = e.session.ctx().clone();
        // Buffers made in here count as the lab's in `window.kakusanMemory()`.
        let _tag = ctx.tag_scope(LAB_TAG);
        e.lab.as_mut().map(|l| f(l, &ctx))
    })
    .flatten()
}

/// The tag of the lab's GPU buffers (`GpuContext::tag_scope`; `lab_bytes` of
/// `window.kakusanMemory()`).
pub(super) const LAB_TAG: &str = "lab";

fn canvas_size(canvas: &web_sys::HtmlCanvasElement) -> (u32, u32) {
    let dpr = web_sys::window()
        .map(|w| w.device_pixel_ratio())
        .unwrap_or(1.0)
        .clamp(1.0, 2.0);
    let w = ((canvas.client_width() as f64 * dpr).round() as u32).clamp(1, 2048);
    let h = ((canvas.client_height() as f64 * dpr).round() as u32).clamp(1, 2048);
    (w, h)
}

impl LabGpu {
    fn open(
        ctx: &GpuContext,
        base_config: wgpu::SurfaceConfiguration,
        canvas: web_sys::HtmlCanvasElement,
    ) -> Result<LabGpu> {
        let format = base_config.format;
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::BROWSER_WEBGPU;
        let instance = wgpu::Instance::new(desc);
        let surface = instance
            .create_surface(wgpu::SurfaceTarget::Canvas(canvas.clone()))
            .map_err(|e| Error::Gpu(format!("could not draw to the lab canvas: {e}")))?;
        let (w, h) = canvas_size(&canvas);
        canvas.set_width(w);
        canvas.set_height(h);
        let mut config = base_config;
        config.width = w;
        config.height = h;
        surface.configure(&ctx.device, &config);
        let renderer = PointsRenderer::new(ctx, format);
        let blit = FieldBlit::new(ctx, format);
        let picks = ctx.upload_u32(&[0; MAX_PICKS], &[MAX_PICKS])?;
        let draft = ctx.zeros(&[crate::lab::data::MAX_POINTS, 4])?;
        ctx.check()?;
        Ok(LabGpu {
            surface,
            config,
            renderer,
            blit,
            canvas,
            picks,
            n_picks: 0,
            draft,
            model: None,
            data_layer: RefCell::new(None),
            layer_stale: Cell::new(true),
        })
    }

    fn resize(&mut self, ctx: &GpuContext) {
        let (w, h) = canvas_size(&self.canvas);
        if (w, h) != (self.config.width, self.config.height) {
            self.canvas.set_width(w);
            self.canvas.set_height(h);
            self.config.width = w;
            self.config.height = h;
            self.surface.configure(&ctx.device, &self.config);
            self.layer_stale.set(true);
        }
    }

    /// The picked particles over the particles or a field panel (`base` = that view): their
    /// trajectories up to `row` (line strips through the history), their position at `row`,
    /// and a ring at their Tweedie x̂_0 there.
    fn pick_draws<'a>(
        &'a self,
        run: &'a ParticleRun,
        row: u32,
        base: PointsView,
        dpr: f32,
    ) -> Vec<Draw<'a>> {
        let k = self.n_picks as u32;
        let n = run.particles.n as u32;
        let mut draws = Vec::new();
        if k == 0 {
            return draws;
        }
        draws.push(Draw {
            view: PointsView {
                alpha: 0.9,
                count: n,
                use_color: 1,
                rgb: [1.0, 1.0, 1.0],
                ..base
            },
            pts: &run.history.buffer,
            picks: &self.picks.buffer,
            shape: Shape::Lines {
                len: row + 1,
                strips: k,
            },
        });
        draws.push(Draw {
            view: PointsView {
                radius_px: 4.5 * dpr,
                alpha: 1.0,
                base: row * n,
                use_pick: 1,
                use_color: 1,
                rgb: [1.0, 1.0, 1.0],
                ..base
            },
            pts: &run.history.buffer,
            picks: &self.picks.buffer,
            shape: Shape::Points(k),
        });
        if row > 0 {
            draws.push(Draw {
                view: PointsView {
                    radius_px: 7.0 * dpr,
                    alpha: 1.0,
                    base: row * n,
                    // Row 0 of the x̂_0 history is unused: no interpolation towards it.
                    back: if row > 1 { base.back } else { 0.0 },
                    stride: 2,
                    use_pick: 1,
                    ring: 1,
                    use_color: 1,
                    rgb: [1.0, 0.85, 0.2],
                    ..base
                },
                pts: &run.x0_history.buffer,
                picks: &self.picks.buffer,
                shape: Shape::Points(k),
            });
        }
        draws
    }

    /// Draw the current view onto the lab canvas.
    fn render(&self, ctx: &GpuContext, ui: &LabUi) {
        let tex = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(t)
            | wgpu::CurrentSurfaceTexture::Suboptimal(t) => t,
            wgpu::CurrentSurfaceTexture::Outdated | wgpu::CurrentSurfaceTexture::Lost => {
                self.surface.configure(&ctx.device, &self.config);
                return;
            }
            _ => return,
        };
        let target = tex
            .texture
            .create_view(&wgpu::TextureViewDescriptor::default());
        let base = PointsView::fit(self.config.width, self.config.height);
        let dpr = (self.config.width as f32 / self.canvas.client_width().max(1) as f32).max(1.0);
        let mut draws: Vec<Draw> = Vec::new();
        let mut panels: Vec<PanelDraw> = Vec::new();
        let mut with_layer = false;
        if ui.drawing.get_untracked() {
            let n = DRAFT
                .with(|d| d.borrow().0.len())
                .min(crate::lab::data::MAX_POINTS);
            draws.push(Draw {
                view: PointsView {
                    radius_px: 2.5 * dpr,
                    alpha: 0.9,
                    num_classes: 8,
                    ..base
                },
                pts: &self.draft.buffer,
                picks: &self.picks.buffer,
                shape: Shape::Points(n as u32),
            });
        } else if let Some(m) = &self.model {
            let nc = m.data.num_classes as u32;
            let n_data = m.data.len() as u32;
            let data_view = PointsView {
                radius_px: 2.2 * dpr,
                alpha: 0.35,
                use_color: 1,
                rgb: [0.62, 0.64, 0.70],
                ..base
            };
            match ui.view.get_untracked() {
                v @ (LabView::Density | LabView::Score) => {
                    if let (Some(f), Some(pair)) = (&m.field, v.panels()) {
                        let rects = panel_rects(self.config.width, self.config.height, dpr);
                        let row = shown_row(ui, &m.run) as u32;
                        for (p, rect) in pair.into_iter().zip(rects) {
                            // Picks over each panel, in the panel's own viewport.
                            let side = rect[2].round().max(1.0) as u32;
                            let fit = PointsView::fit(side, side);
                            panels.push(PanelDraw {
                                blit: &self.blit,
                                src: f.source(p),
                                rect,
                                overlay: self.pick_draws(&m.run, row, fit, dpr),
                            });
                        }
                    }
                }
                LabView::Forward => {
                    let t = ui
                        .forward_t
                        .get_untracked()
                        .min(m.schedule.num_train_timesteps());
                    let ab = if t == 0 {
                        1.0
                    } else {
                        m.schedule.alphas_cumprod[t - 1]
                    };
                    draws.push(Draw {
                        view: PointsView {
                            alpha: 0.15,
                            ..data_view
                        },
                        pts: &m.data_buf.buffer,
                        picks: &self.picks.buffer,
                        shape: Shape::Points(n_data),
                    });
                    draws.push(Draw {
                        view: PointsView {
                            radius_px: 1.8 * dpr,
                            alpha: 0.75,
                            num_classes: nc,
                            sqrt_ab: ab.sqrt() as f32,
                            sqrt_one_minus_ab: (1.0 - ab).sqrt() as f32,
                            noise_seed: 7,
                            ..base
                        },
                        pts: &m.data_buf.buffer,
                        picks: &self.picks.buffer,
                        shape: Shape::Points(n_data),
                    });
                }
                LabView::Reverse => {
                    let run = &m.run;
                    let n = run.particles.n as u32;
                    let row = shown_row(ui, run) as u32;
                    // Following the animation, the particles move from the last completed
                    // step (row k) towards the next as its chunks are computed: drawn between
                    // rows k − 1 and k, by how much of step k + 1 is done (a GPU lerp).
                    let back = if ui.scrub.get_untracked().is_none()
                        && run.k > 0
                        && run.k < run.plan.len()
                    {
                        1.0 - run.progress()
                    } else {
                        0.0
                    };
                    let moving = PointsView {
                        back,
                        prev_base: row.saturating_sub(1) * n,
                        ..base
                    };
                    if ui.show_data.get_untracked() {
                        // The data do not move: drawn into the layer once, copied every frame.
                        let size = [self.config.width, self.config.height];
                        let mut layer = self.data_layer.borrow_mut();
                        if self.layer_stale.get() || layer.as_ref().map(|l| l.size) != Some(size) {
                            let l = match layer.take() {
                                Some(l) if l.size == size => l,
                                _ => self.renderer.layer(ctx, size),
                            };
                            let data = Draw {
                                view: data_view,
                                pts: &m.data_buf.buffer,
                                picks: &self.picks.buffer,
                                shape: Shape::Points(n_data),
                            };
                            self.renderer.draw_layer(ctx, &l, &[data]);
                            *layer = Some(l);
                            self.layer_stale.set(false);
                        }
                        with_layer = true;
                    }
                    draws.push(Draw {
                        view: PointsView {
                            radius_px: 1.5 * dpr,
                            alpha: 0.8,
                            num_classes: nc,
                            base: row * n,
                            ..moving
                        },
                        pts: &run.history.buffer,
                        picks: &self.picks.buffer,
                        shape: Shape::Points(n),
                    });
                    draws.extend(self.pick_draws(run, row, moving, dpr));
                }
            }
        }
        let layer = self.data_layer.borrow();
        self.renderer.draw_with_panels(
            ctx,
            &target,
            [self.config.width, self.config.height],
            layer.as_ref().filter(|_| with_layer),
            &panels,
            &draws,
        );
        ctx.queue.present(tex);
    }
}

/// The world point under a click at (fx, fy) (fractions of the canvas, y down) and the pick
/// radius there (14 CSS pixels in world units): over the whole canvas, or in a field view over
/// the panel clicked (None between or outside the panels).
fn click_to_world(l: &LabGpu, view: LabView, fx: f32, fy: f32) -> Option<([f32; 2], f32)> {
    let (w, h) = (l.config.width, l.config.height);
    let dpr = (w as f32 / l.canvas.client_width().max(1) as f32).max(1.0);
    if view.panels().is_none() {
        let css_px =
            2.0 * WORLD_HALF / l.canvas.client_width().min(l.canvas.client_height()).max(1) as f32;
        return Some((PointsView::fit(w, h).to_world(fx, fy), 14.0 * css_px));
    }
    let (px, py) = (fx * w as f32, fy * h as f32);
    panel_rects(w, h, dpr)
        .into_iter()
        .find_map(|[x, y, rw, rh]| {
            let (u, v) = ((px - x) / rw, (py - y) / rh);
            ((0.0..=1.0).contains(&u) && (0.0..=1.0).contains(&v)).then(|| {
                let world = [WORLD_HALF * (2.0 * u - 1.0), WORLD_HALF * (1.0 - 2.0 * v)];
                (world, 14.0 * dpr * 2.0 * WORLD_HALF / rw.max(1.0))
            })
        })
}

/// Two squares side by side, centred in a `width` × `height` canvas, `8·dpr` pixels apart.
fn panel_rects(width: u32, height: u32, dpr: f32) -> [[f32; 4]; 2] {
    let (w, h) = (width as f32, height as f32);
    let gap = (8.0 * dpr).min(w / 8.0);
    let side = ((w - 3.0 * gap) / 2.0).min(h - 2.0 * gap).max(1.0);
    let x0 = ((w - 2.0 * side - gap) / 2.0).max(0.0);
    let y0 = ((h - side) / 2.0).max(0.0);
    [[x0, y0, side, side], [x0 + side + gap, y0, side, side]]
}

/// The history row on screen: the scrubber's, else the animation's.
fn shown_row(ui: &LabUi, run: &ParticleRun) -> usize {
    ui.scrub.get_untracked().unwrap_or(run.k).min(run.k)
}

fn particle_classes(data: &Dataset, n: usize, seed: u64) -> Vec<u32> {
    let Some(labels) = &data.labels else {
        return Vec::new();
    };
    let mut rng = SplitMix64(seed ^ 0x636c);
    (0..n)
        .map(|_| labels[rng.below(labels.len() as u64) as usize])
        .collect()
}

/// What one [`ParticleRun::advance`] did.
#[derive(Default, Clone, Copy)]
struct Advance {
    /// Particle rows computed (0: a held or restarted run).
    rows: usize,
}

fn copy_rows(enc: &mut wgpu::CommandEncoder, src: &Tensor, dst: &Tensor, row: usize) {
    let bytes = src.bytes();
    enc.copy_buffer_to_buffer(&src.buffer, 0, &dst.buffer, row as u64 * bytes, bytes);
}

impl ParticleRun {
    fn new(
        ctx: &GpuContext,
        trainer: &LabTrainer,
        data: &Dataset,
        schedule: &crate::diffusion::schedule::Schedule,
        s: &LabSettings,
    ) -> Result<ParticleRun> {
        let steps = s.sample_steps.clamp(1, schedule.num_train_timesteps());
        let plan = plan(schedule, s.sampler(), steps)?;
        let classes = particle_classes(data, s.particles, s.seed ^ 0x11);
        let particles = Particles::new(
            ctx,
            &trainer.ema,
            data.num_classes,
            &plan,
            s.particles,
            &classes,
            s.guidance,
            s.seed ^ 0x22,
        )?;
        let n = s.particles;
        let history = ctx.zeros(&[steps + 1, n, 4])?;
        let x0_history = ctx.zeros(&[steps + 1, n, 2])?;
        let last = ctx.zeros(&[n, 4])?;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        copy_rows(&mut enc, &particles.state, &history, 0);
        ctx.queue.submit([enc.finish()]);
        Ok(ParticleRun {
            plan,
            particles,
            history,
            x0_history,
            last,
            k: 0,
            rows_done: 0,
            hold: 0,
            hold_frames: 20,
            finished: false,
            classes,
        })
    }

    /// The fit figure's own particles: [`FIT_N`] of them (at most the page's count), the same
    /// sampler and classes, never held. A run of them costs a tenth of the animated
    /// particles', so on a slow adapter a fit figure comes every few seconds while the
    /// animation advances at its own pace.
    fn probe(
        ctx: &GpuContext,
        trainer: &LabTrainer,
        data: &Dataset,
        schedule: &crate::diffusion::schedule::Schedule,
        s: &LabSettings,
    ) -> Result<ParticleRun> {
        let s = LabSettings {
            particles: FIT_N.min(s.particles),
            ..s.clone()
        };
        let mut run = ParticleRun::new(ctx, trainer, data, schedule, &s)?;
        run.hold_frames = 0;
        Ok(run)
    }

    /// How far the step being computed is (rows done / particles), 0 when none is.
    fn progress(&self) -> f32 {
        if self.k >= self.plan.len() {
            0.0
        } else {
            self.rows_done as f32 / self.particles.n as f32
        }
    }

    /// Sampler work for one frame: the next chunk of at most `max_rows` particles of the
    /// current step (the whole step when it fits; never more than one step per frame, so the
    /// animation keeps its pace on a fast GPU), or the restart from x_T after a finished run
    /// has been shown. A step is copied into the history (and so drawn) once all its chunks
    /// ran.
    fn advance(&mut self, ctx: &GpuContext, max_rows: usize) -> Result<Advance> {
        let steps = self.plan.len();
        if self.k >= steps {
            if self.hold > 0 {
                self.hold -= 1;
                return Ok(Advance::default());
            }
            // Back to x_T (row 0) for the next run from the current EMA weights.
            let mut enc = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            let bytes = self.particles.state.bytes();
            enc.copy_buffer_to_buffer(
                &self.history.buffer,
                0,
                &self.particles.state.buffer,
                0,
                bytes,
            );
            ctx.queue.submit([enc.finish()]);
            self.k = 0;
            self.rows_done = 0;
            return Ok(Advance::default());
        }
        let n = self.particles.n;
        let align = Particles::CHUNK_ALIGN;
        let rows = max_rows.div_ceil(align).max(1) * align;
        let end = (self.rows_done + rows).min(n);
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        if self.rows_done == 0 && end == n {
            self.particles.encode_whole(ctx, &mut enc, self.k);
        } else {
            self.particles
                .encode_chunk(ctx, &mut enc, self.k, self.rows_done, end)?;
        }
        let computed = end - self.rows_done;
        self.rows_done = end;
        if end == n {
            copy_rows(&mut enc, &self.particles.state, &self.history, self.k + 1);
            copy_rows(
                &mut enc,
                &self.particles.x0_hat,
                &self.x0_history,
                self.k + 1,
            );
            self.k += 1;
            self.rows_done = 0;
            if self.k == steps {
                copy_rows(&mut enc, &self.particles.state, &self.last, 0);
                self.hold = self.hold_frames;
                self.finished = true;
            }
        }
        ctx.queue.submit([enc.finish()]);
        ctx.check()?;
        Ok(Advance { rows: computed })
    }
}

fn dataset_for(s: &LabSettings) -> Result<Dataset> {
    if s.preset == "drawing" {
        return DRAWN.with(|d| d.borrow().clone()).ok_or_else(|| {
            Error::config("no drawing yet: draw some points and press “Use drawing”")
        });
    }
    let data = generate(Preset::from_name(&s.preset)?, s.points, s.seed, &s.word)?;
    Ok(if s.classes { data } else { data.unlabelled() })
}

impl LabModel {
    fn new(ctx: &GpuContext, s: &LabSettings) -> Result<LabModel> {
        let data = dataset_for(s)?;
        let schedule = lab_schedule(s.cosine, s.timesteps)?;
        let cfg = TrainConfig {
            batch: s.batch,
            lr: s.lr,
            seed: s.seed,
            ..Default::default()
        };
        let init = init_params(data.num_classes, cfg.seed);
        let trainer = LabTrainer::with_params(ctx, &data, &schedule, &cfg, &init)?;
        let flat: Vec<f32> = data
            .points
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                let c = data
                    .labels
                    .as_ref()
                    .map_or(data.num_classes as u32, |l| l[i]);
                [p[0], p[1], c as f32, 0.0]
            })
            .collect();
        let data_buf = ctx.upload(&flat, &[data.len(), 4])?;
        let run = ParticleRun::new(ctx, &trainer, &data, &schedule, s)?;
        let probe = ParticleRun::probe(ctx, &trainer, &data, &schedule, s)?;
        let m = FIT_N.min(s.particles);
        let reference = data.draw(m, s.seed ^ 0x5245);
        let floor = sw_floor(&data, m, s.seed)?;
        Ok(LabModel {
            data,
            schedule,
            trainer,
            data_buf,
            run,
            probe,
            probe_from: None,
            init,
            reference,
            floor,
            untrained: None,
            settings: s.clone(),
            field: None,
        })
    }
}

/// Counters of the loop (steps/s, frames/s, training time) and its GPU time estimates.
struct Clock {
    /// (time ms, steps) at the start of the current rate window.
    window: (f64, u64),
    frames: (f64, u32),
    /// (time ms, sampler steps) at the start of the sampling rate window.
    sample_window: (f64, f64),
    /// Sampler steps of the animated particles computed by this loop (rows / particles: a
    /// step computed in chunks counts by parts).
    sample_steps: f64,
    train_ms: f64,
    last_losses: f64,
    last_fit: f64,
    last_bound: f64,
    bound_step: u64,
    /// GPU ms per particle row of a sampler step (measured, smoothed).
    ms_per_row: Option<f64>,
    /// GPU ms of the picture (field views + particles).
    ms_render: Option<f64>,
    /// GPU ms per training half step.
    ms_per_half: Option<f64>,
    /// Frame ms outside the awaited GPU work (smoothed; see [`FRAME_TARGET_MS`]).
    ms_outside: Option<f64>,
    /// Training's unspent GPU time (ms): a half step longer than a frame's share runs once
    /// enough frames have passed.
    train_credit_ms: f64,
    /// The same for the fit probe's and the animated particles' chunks ([probe, animation]):
    /// a chunk runs once its credit buys [`MIN_CHUNK_ROWS`] rows, so a small share does not
    /// become many tiny dispatches whose fixed cost would swamp the per-row estimate.
    particle_credit_ms: [f64; 2],
    /// Whether particles / training have run once (their first run may include compiling
    /// pipelines, so it does not count as a time sample).
    warm: (bool, bool),
}

/// `?lab_debug`: phase timings of the lab's loop in the console.
fn debug(msg: impl FnOnce() -> String) {
    thread_local! {
        static ON: bool = query_param("lab_debug").is_some();
    }
    if ON.with(|o| *o) {
        web_sys::console::log_1(&format!("lab: {}", msg()).into());
    }
}

fn is_current(generation: u64) -> bool {
    GENERATION.with(|g| g.get()) == generation
}

fn stop_loop() -> u64 {
    GENERATION.with(|g| {
        g.set(g.get() + 1);
        g.get()
    })
}

/// The lab tab became visible: open its canvas on the page's device (once) and start the loop.
pub fn activate(canvas: web_sys::HtmlCanvasElement) {
    CANVAS.with(|c| *c.borrow_mut() = Some(canvas));
    let generation = stop_loop();
    wasm_bindgen_futures::spawn_local(run_loop(generation));
}

/// The lab tab was hidden: stop the loop (training pauses with it).
pub fn deactivate() {
    stop_loop();
    let ui = lab_ui();
    if ui.state.get_untracked() == "training" {
        ui.state.set("paused");
    }
}

/// Make sure the lab's GPU state exists on the current device. False while there is none.
fn ensure_lab(ui: &LabUi) -> bool {
    let Some(canvas) = CANVAS.with(|c| c.borrow().clone()) else {
        return false;
    };
    let opened = with_engine(|e| {
        if e.lab.is_none() {
            let ctx = e.session.ctx().clone();
            let config = e.session.surface_config().clone();
            let _tag = ctx.tag_scope(LAB_TAG);
            match LabGpu::open(&ctx, config, canvas) {
                Ok(l) => e.lab = Some(l),
                Err(err) => {
                    report_error(&err);
                    return false;
                }
            }
        }
        true
    });
    if opened != Some(true) {
        return false;
    }
    let need_model = with_lab(|l, _| l.model.is_none()).unwrap_or(false);
    if need_model && !BUILD_FAILED.with(|f| f.get()) {
        rebuild_model(ui);
    }
    true
}

fn clear_progress(ui: &LabUi) {
    ui.steps.set(0);
    ui.losses.set(Vec::new());
    ui.fit.set(None);
    ui.fit_history.set(Vec::new());
    ui.time_to_fit.set(None);
    ui.train_s.set(0.0);
    ui.bound.set(None);
    ui.steps_per_s.set(0.0);
    ui.gflops.set(0.0);
    ui.field_scales.set(None);
}

/// Build the data set, trainer and particles for the current settings (drops the old ones).
fn rebuild_model(ui: &LabUi) {
    let s = ui.settings.get_untracked();
    let t0 = now_ms();
    let r = with_lab(|l, ctx| {
        l.model = None;
        l.n_picks = 0;
        l.layer_stale.set(true);
        let m = LabModel::new(ctx, &s)?;
        let info = (
            m.data.len(),
            m.data.num_classes,
            m.trainer.dispatches_per_step(),
        );
        l.model = Some(m);
        Ok::<_, Error>(info)
    });
    clear_progress(ui);
    ui.picks.set(0);
    ui.scrub.set(None);
    BUILD_FAILED.with(|f| f.set(matches!(r, Some(Err(_)))));
    debug(|| format!("model built in {:.0} ms", now_ms() - t0));
    match r {
        Some(Ok((n, nc, d))) => {
            ui.num_classes.set(nc);
            ui.data_info.set(format!(
                "{n} points{} · T = {} ({}) · batch {} · {d} dispatches per training step",
                if nc > 0 {
                    format!(", {nc} classes")
                } else {
                    String::new()
                },
                s.timesteps,
                if s.cosine { "cosine" } else { "linear β" },
                s.batch
            ));
            ui.state.set(if ui.state.get_untracked() == "training" {
                "training"
            } else {
                "ready"
            });
        }
        Some(Err(e)) => {
            ui.state.set("idle");
            report(format!("Lab: {e}"));
        }
        None => {}
    }
}

/// Rebuild the particles only (sampler, steps, count, guidance changed).
fn rebuild_particles(ui: &LabUi) {
    let s = ui.settings.get_untracked();
    let r = with_lab(|l, ctx| {
        l.n_picks = 0;
        let Some(m) = &mut l.model else {
            return Ok(());
        };
        m.settings = s.clone();
        m.untrained = None;
        m.run = ParticleRun::new(ctx, &m.trainer, &m.data, &m.schedule, &s)?;
        m.probe = ParticleRun::probe(ctx, &m.trainer, &m.data, &m.schedule, &s)?;
        m.probe_from = None;
        let k = FIT_N.min(s.particles);
        if m.reference.len() != k {
            m.reference = m.data.draw(k, s.seed ^ 0x5245);
            m.floor = sw_floor(&m.data, k, s.seed)?;
        }
        Ok::<_, Error>(())
    });
    ui.picks.set(0);
    ui.scrub.set(None);
    ui.fit.set(None);
    ui.fit_history.set(Vec::new());
    if let Some(Err(e)) = r {
        report(format!("Lab: {e}"));
    }
}

/// New settings from the controls: rebuild what they affect.
pub fn apply(f: impl FnOnce(&mut LabSettings)) {
    let ui = lab_ui();
    let old = ui.settings.get_untracked();
    let mut new = old.clone();
    f(&mut new);
    if new == old {
        return;
    }
    ui.settings.set(new.clone());
    if with_lab(|_, _| ()).is_none() {
        return;
    }
    if new.model_key() != old.model_key() {
        rebuild_model(&ui);
    } else {
        rebuild_particles(&ui);
    }
}

pub fn toggle_training() {
    let ui = lab_ui();
    match ui.state.get_untracked() {
        "training" => ui.state.set("paused"),
        "ready" | "paused" => ui.state.set("training"),
        _ => {}
    }
}

/// Back to the initial weights (and the same data).
pub fn reset() {
    let ui = lab_ui();
    let r = with_lab(|l, ctx| {
        let Some(m) = &mut l.model else {
            return Ok(());
        };
        m.trainer.reset(ctx, &m.init)?;
        let s = m.settings.clone();
        m.run = ParticleRun::new(ctx, &m.trainer, &m.data, &m.schedule, &s)?;
        m.probe = ParticleRun::probe(ctx, &m.trainer, &m.data, &m.schedule, &s)?;
        m.probe_from = None;
        Ok::<_, Error>(())
    });
    clear_progress(&ui);
    ui.picks.set(0);
    with_lab(|l, _| l.n_picks = 0);
    if ui.state.get_untracked() != "idle" {
        ui.state.set("ready");
    }
    if let Some(Err(e)) = r {
        report(format!("Lab: {e}"));
    }
}

/// The history row on screen read back (one small readback): (row, the run's last row, the
/// rows (x, y, class, ·) of every particle). Picking and `window.kakusanLabParticles` (tests).
async fn read_shown_row(ui: &LabUi) -> Result<Option<(usize, usize, Vec<f32>)>> {
    let Some((ctx, tmp, row, last)) = with_lab(|l, ctx| {
        let m = l.model.as_ref()?;
        let row = shown_row(ui, &m.run);
        let tmp = ctx.zeros(&[m.run.particles.n, 4]).ok()?;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        let bytes = tmp.bytes();
        enc.copy_buffer_to_buffer(
            &m.run.history.buffer,
            row as u64 * bytes,
            &tmp.buffer,
            0,
            bytes,
        );
        ctx.queue.submit([enc.finish()]);
        Some((ctx.clone(), tmp, row, m.run.plan.len()))
    })
    .flatten() else {
        return Ok(None);
    };
    Ok(Some((row, last, ctx.read(&tmp).await?)))
}

/// The particles on screen for tests: `{"row": r, "last": steps, "xyc": [x, y, class, …]}`
/// (class = the number of classes for unconditional particles), or null without a model.
pub async fn shown_particles_json() -> Result<Option<String>> {
    let Some((row, last, v)) = read_shown_row(&lab_ui()).await? else {
        return Ok(None);
    };
    let xyc: Vec<String> = v
        .chunks(4)
        .flat_map(|c| [c[0], c[1], c[2]])
        .map(|x| {
            if x.is_finite() {
                x.to_string()
            } else {
                "null".into()
            }
        })
        .collect();
    Ok(Some(format!(
        r#"{{"row":{row},"last":{last},"xyc":[{}]}}"#,
        xyc.join(",")
    )))
}

/// Pick the particles nearest to a click at (fx, fy) (fractions of the canvas, y down) on the
/// row shown: one small readback of that row.
pub async fn pick_at(fx: f32, fy: f32) {
    let ui = lab_ui();
    let Some((w, radius)) =
        with_lab(|l, _| click_to_world(l, ui.view.get_untracked(), fx, fy)).flatten()
    else {
        return;
    };
    let pos = match read_shown_row(&ui).await {
        Ok(Some((_, _, p))) => p,
        Ok(None) => return,
        Err(e) => {
            report_error(&e);
            return;
        }
    };
    let mut near: Vec<(f32, u32)> = pos
        .chunks(4)
        .enumerate()
        .map(|(i, p)| ((p[0] - w[0]).powi(2) + (p[1] - w[1]).powi(2), i as u32))
        .filter(|(d, _)| *d <= radius * radius)
        .collect();
    near.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Spread the picks: every few-th of the nearby particles, at most MAX_PICKS.
    let step = (near.len() / MAX_PICKS).max(1);
    let chosen: Vec<u32> = near
        .iter()
        .step_by(step)
        .take(MAX_PICKS)
        .map(|x| x.1)
        .collect();
    let k = chosen.len();
    with_lab(|l, ctx| {
        let mut words = [0u32; MAX_PICKS];
        words[..k].copy_from_slice(&chosen);
        let _ = ctx.write_u32(&l.picks, &words);
        l.n_picks = k;
    });
    ui.picks.set(k);
}

pub fn clear_picks() {
    with_lab(|l, _| l.n_picks = 0);
    lab_ui().picks.set(0);
}

/// Brush: add points around (fx, fy) (fractions of the canvas) with the current class.
pub fn brush_at(fx: f32, fy: f32, count: usize) {
    let ui = lab_ui();
    let class = ui.draw_class.get_untracked();
    let added = with_lab(|l, ctx| {
        let view = PointsView::fit(l.config.width, l.config.height);
        let c = view.to_world(fx, fy);
        let css_px = 2.0 * super::super::lab_points::WORLD_HALF
            / l.canvas.client_width().min(l.canvas.client_height()).max(1) as f32;
        let r = 10.0 * css_px;
        DRAFT.with(|d| {
            let mut d = d.borrow_mut();
            let start = d.0.len();
            let mut rng = SplitMix64((start as u64) ^ 0xb125_4a11 ^ ((fx.to_bits() as u64) << 20));
            for _ in 0..count {
                let a = rng.next_f64() * std::f64::consts::TAU;
                let rr = r as f64 * rng.next_f64().sqrt();
                d.0.push([c[0] + (rr * a.cos()) as f32, c[1] + (rr * a.sin()) as f32]);
                d.1.push(class);
            }
            // Mirror the new points into the draft buffer (those that fit).
            let max = crate::lab::data::MAX_POINTS;
            if start < max {
                let end = d.0.len().min(max);
                let flat: Vec<f32> = (start..end)
                    .flat_map(|i| [d.0[i][0], d.0[i][1], d.1[i] as f32, 0.0])
                    .collect();
                ctx.queue.write_buffer(
                    &l.draft.buffer,
                    start as u64 * 16,
                    bytemuck::cast_slice(&flat),
                );
            }
            d.0.len()
        })
    });
    if let Some(n) = added {
        ui.draft_len.set(n);
    }
}

pub fn clear_drawing() {
    DRAFT.with(|d| {
        let mut d = d.borrow_mut();
        d.0.clear();
        d.1.clear();
    });
    lab_ui().draft_len.set(0);
}

/// Turn the drawing into the data set (validated by [`Dataset::new`]) and train on it.
pub fn use_drawing() {
    let ui = lab_ui();
    let (points, labels) = DRAFT.with(|d| d.borrow().clone());
    let mut used: Vec<u32> = labels.clone();
    used.sort_unstable();
    used.dedup();
    // One colour: unlabelled; several: classes renumbered 0..k in colour order.
    let result = if used.len() <= 1 {
        Dataset::new(points, None, 0)
    } else {
        let relabel: Vec<u32> = labels
            .iter()
            .map(|c| used.iter().position(|u| u == c).unwrap_or(0) as u32)
            .collect();
        Dataset::new(points, Some(relabel), used.len())
    };
    match result {
        Ok(d) => {
            DRAWN.with(|x| *x.borrow_mut() = Some(d));
            ui.drawing.set(false);
            let classes = used.len() > 1;
            ui.settings.update(|s| {
                s.preset = "drawing".into();
                s.classes = classes;
            });
            rebuild_model(&ui);
            super::clear_error();
        }
        Err(e) => report(format!("Your drawing cannot be used: {e}")),
    }
}

/// Fit figure of the fit probe's last finished run: read its end points (small) and compare.
async fn measure_fit(ui: &LabUi, train_s: f64) -> Result<()> {
    let Some((ctx, last, n, reference, floor, step)) = with_lab(|l, ctx| {
        let m = l.model.as_mut()?;
        if !m.probe.finished {
            return None;
        }
        m.probe.finished = false;
        Some((
            ctx.clone(),
            m.probe.last.clone(),
            m.reference.len(),
            m.reference.clone(),
            m.floor,
            m.trainer.steps_taken(),
        ))
    })
    .flatten() else {
        return Ok(());
    };
    let v = ctx.read(&last).await?;
    let samples: Vec<[f32; 2]> = v.chunks(4).take(n).map(|c| [c[0], c[1]]).collect();
    let sw = sliced_wasserstein(&samples, &reference, SW_PROJECTIONS, SW_SEED)?;
    // A run finished before any training step used only the initial weights: it is the
    // untrained model's figure.
    let untrained = with_lab(|l, _| {
        let m = l.model.as_mut()?;
        if step == 0 && m.untrained.is_none() {
            m.untrained = Some(sw);
        }
        m.untrained
    })
    .flatten();
    ui.fit.set(Some(Fit {
        sw,
        floor,
        untrained,
        step,
        train_s,
    }));
    ui.fit_history.update(|h| h.push((step, sw)));
    if sw <= FIT_FACTOR * floor && ui.time_to_fit.get_untracked().is_none() && step > 0 {
        ui.time_to_fit.set(Some((train_s, step)));
    }
    Ok(())
}

/// The untrained model's fit figure: the same sampler from the initial weights (once per model).
async fn measure_untrained() -> Result<()> {
    let Some((ctx, init, nc, plan, classes, guidance, seed, reference)) = with_lab(|l, ctx| {
        let m = l.model.as_ref()?;
        if m.untrained.is_some() {
            return None;
        }
        let k = m.reference.len();
        Some((
            ctx.clone(),
            m.init.clone(),
            m.data.num_classes,
            m.run.plan.clone(),
            m.run.classes.iter().take(k).copied().collect::<Vec<_>>(),
            m.settings.guidance,
            m.settings.seed,
            m.reference.clone(),
        ))
    })
    .flatten() else {
        return Ok(());
    };
    let params = ctx.upload(&init, &[init.len()])?;
    let s = sample(
        &ctx,
        &params,
        nc,
        &plan,
        reference.len(),
        &classes,
        guidance,
        seed ^ 0x33,
    )
    .await?;
    let sw = sliced_wasserstein(&s, &reference, SW_PROJECTIONS, SW_SEED)?;
    with_lab(|l, _| {
        if let Some(m) = &mut l.model {
            m.untrained = Some(sw);
        }
    });
    lab_ui().fit.update(|f| {
        if let Some(f) = f {
            f.untrained = Some(sw);
        }
    });
    Ok(())
}

async fn read_losses(ui: &LabUi) -> Result<()> {
    let Some((ctx, state)) = with_lab(|l, ctx| {
        l.model
            .as_ref()
            .map(|m| (ctx.clone(), m.trainer.loss_state().clone()))
    })
    .flatten() else {
        return Ok(());
    };
    let words = ctx.read_u32(&state).await?;
    let (steps, recent) = losses_from_state(&words);
    ui.losses.update(|l| {
        let have = l.len() as u64;
        if steps > have {
            let new = (steps - have) as usize;
            let from = recent.len().saturating_sub(new);
            l.extend_from_slice(&recent[from..]);
        }
    });
    Ok(())
}

async fn measure_bound(ui: &LabUi) -> Result<()> {
    let Some((ctx, ema, data, schedule, seed)) = with_lab(|l, ctx| {
        l.model.as_ref().map(|m| {
            (
                ctx.clone(),
                m.trainer.ema.clone(),
                m.data.clone(),
                m.schedule.clone(),
                m.settings.seed,
            )
        })
    })
    .flatten() else {
        return Ok(());
    };
    let b = variational_bound(&ctx, &ema, &data, &schedule, 16, seed ^ 0xb0).await?;
    ui.bound.set(Some(b));
    Ok(())
}

/// Training FLOPs per step: forward + backward counted as 3× the forward's 2·MACs.
pub fn flops_per_step(batch: usize) -> f64 {
    3.0 * 2.0 * forward_macs() as f64 * batch as f64
}

/// The frame period aimed at on a slow adapter (ms): ≥ 10 frames/s with a margin. The GPU
/// work queued per frame (particles, picture and training together) is this less the
/// frame's measured time outside GPU work (waiting for the animation frame, round trips,
/// the page's own updates).
const FRAME_TARGET_MS: f64 = 95.0;
/// The least GPU time given to training per frame while it trains (ms).
const MIN_TRAIN_MS: f64 = 12.0;
/// While training, the shares of a frame's GPU time left after the picture: training first
/// (the fit needs a few hundred steps), then the fit probe (a fit figure every few seconds),
/// then the animated particles, which advance more slowly while the model trains.
const TRAIN_SHARE: f64 = 0.6;
/// The fewest particle rows a chunk computes (except a step's last rows).
const MIN_CHUNK_ROWS: usize = 256;
const PROBE_SHARE: f64 = 0.25;
const ANIM_SHARE: f64 = 0.15;

/// Smoothed estimate: the first sample as it is, then half way to each new one (frame times
/// are noisy on a shared CPU).
fn smooth(old: Option<f64>, sample: f64) -> Option<f64> {
    Some(old.map_or(sample, |o| 0.5 * (o + sample)))
}

/// Wait until the GPU has done everything submitted (just before); the ms that took.
async fn timed_on_gpu(ctx: &GpuContext) -> Result<f64> {
    let t = now_ms();
    ctx.finish().await?;
    Ok(now_ms() - t)
}

/// The frame loop. Per frame, each part timed on its own (`ctx.finish().await`, never a
/// blocking poll) so that the next frame's shares can be sized from measured GPU times. The
/// GPU time per frame is [`FRAME_TARGET_MS`] less the measured time outside GPU work; what the
/// picture leaves of it (at least half the picture's time) is shared out:
/// 1. particles: the next chunks of the fit probe and of the animated particles' current
///    sampler steps, while training [`PROBE_SHARE`] and [`ANIM_SHARE`] of it (half each
///    while the probe runs without training, all to the animation otherwise), from credits
///    of GPU time in chunks of at least [`MIN_CHUNK_ROWS`] rows; never more than one step
///    per frame (on a fast GPU one step per frame is the animation's pace). A step is drawn
///    once all its chunks ran; until the next one is, the particles are drawn between it
///    and the one before, by the fraction of the next step done.
/// 2. the picture (field views if shown; else the data layer, then the particles).
/// 3. training: half steps (`train_fwd_bwd`, or the update) worth [`TRAIN_SHARE`] of it, at
///    least [`MIN_TRAIN_MS`], at most three times the frame's other GPU work (so a fast GPU
///    keeps a high frame rate). A half step that takes longer than its share goes every few
///    frames (a credit of GPU time is kept).
async fn run_loop(generation: u64) {
    let ui = lab_ui();
    let mut clock = Clock {
        window: (now_ms(), ui.steps.get_untracked()),
        frames: (now_ms(), 0),
        sample_window: (now_ms(), 0.0),
        sample_steps: 0.0,
        train_ms: ui.train_s.get_untracked() * 1000.0,
        last_losses: 0.0,
        last_fit: 0.0,
        last_bound: 0.0,
        bound_step: u64::MAX,
        ms_per_row: None,
        ms_render: None,
        ms_per_half: None,
        ms_outside: None,
        train_credit_ms: 0.0,
        particle_credit_ms: [0.0; 2],
        warm: (false, false),
    };
    // (start ms, awaited GPU ms) of the previous frame.
    let mut prev_frame: Option<(f64, f64)> = None;
    loop {
        next_frame().await;
        if !is_current(generation) {
            return;
        }
        // One GPU for both views: the sampler's animation (which starts by itself when a
        // model loads) waits while the lab is shown.
        if super::ui().state.get_untracked() == super::RunState::Running {
            super::run::pause();
        }
        if !ensure_lab(&ui) {
            continue;
        }
        let t0 = now_ms();
        if let Some((p0, gpu)) = prev_frame {
            // One stall (a readback, a busy machine) must not shrink the budget for long.
            let outside = (t0 - p0 - gpu).clamp(0.0, 40.0);
            clock.ms_outside = smooth(clock.ms_outside, outside);
        }
        let training = ui.state.get_untracked() == "training";
        let scrubbing = ui.scrub.get_untracked().is_some();
        let drawing = ui.drawing.get_untracked();
        let Some(ctx) = with_engine(|e| e.session.ctx().clone()) else {
            continue;
        };
        // Phase 1: the next chunks of the fit probe and of the animated particles (or a
        // restart / hold).
        let render_ms = clock.ms_render.unwrap_or(10.0);
        // Where the picture alone costs more than the budget (a loaded CPU adapter), the frame
        // is long anyway: give particles and training half the picture's time.
        let budget = (FRAME_TARGET_MS - clock.ms_outside.unwrap_or(20.0)).max(40.0);
        let left = (budget - render_ms).max(0.5 * render_ms).max(20.0);
        let ms_per_row = clock.ms_per_row;
        let credit = &mut clock.particle_credit_ms;
        // Rows a share buys this frame: its credit grows by the share (up to one minimum
        // chunk beyond it); 0 (skip) until a minimum chunk or the step's rest is affordable.
        let mut rows_for = |i: usize, share_ms: f64, left_in_step: usize| -> usize {
            let Some(c) = ms_per_row else {
                return MIN_CHUNK_ROWS;
            };
            let c = c.max(1e-6);
            credit[i] = (credit[i] + share_ms).min(share_ms + MIN_CHUNK_ROWS as f64 * c);
            let rows = (credit[i] / c).min(1e9) as usize;
            if rows >= MIN_CHUNK_ROWS.min(left_in_step) {
                rows
            } else {
                0
            }
        };
        let adv = with_lab(|l, ctx| -> Result<(Advance, usize, usize)> {
            let Some(m) = &mut l.model else {
                return Ok((Advance::default(), 0, 1));
            };
            if drawing {
                return Ok((Advance::default(), 0, 1));
            }
            // The probe runs while the weights change (and once more after they did): its
            // finished runs give the fit figure.
            let steps_now = m.trainer.steps_taken();
            let probe = &m.probe;
            let probe_mid = probe.k < probe.plan.len() && (probe.k > 0 || probe.rows_done > 0);
            let probe_on = probe_mid || training || m.probe_from != Some(steps_now);
            let (probe_ms, anim_ms) = match (training, probe_on) {
                (true, _) => (PROBE_SHARE * left, ANIM_SHARE * left),
                (false, true) => (0.5 * left, 0.5 * left),
                (false, false) => (0.0, left),
            };
            let mut probe_rows = 0;
            if probe_on {
                if m.probe.k == 0 && m.probe.rows_done == 0 {
                    m.probe_from = Some(steps_now);
                }
                let p = &m.probe;
                let rows = rows_for(0, probe_ms, p.particles.n - p.rows_done);
                // A finished run restarts (no rows) whatever the credit.
                if rows > 0 || p.k >= p.plan.len() {
                    probe_rows = m.probe.advance(ctx, rows)?.rows;
                }
            }
            let mut anim = Advance::default();
            if !scrubbing {
                let r = &m.run;
                let rows = rows_for(1, anim_ms, r.particles.n - r.rows_done);
                if rows > 0 || r.k >= r.plan.len() {
                    anim = m.run.advance(ctx, rows)?;
                }
            }
            Ok((anim, probe_rows, m.run.particles.n))
        });
        let (adv, probe_rows, n_particles) = match adv {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                report_error(&e);
                ui.state.set("paused");
                continue;
            }
            None => continue,
        };
        let t_chunk = match timed_on_gpu(&ctx).await {
            Ok(t) => t,
            Err(e) => {
                report_error(&e);
                return;
            }
        };
        let rows = adv.rows + probe_rows;
        if rows > 0 {
            // The first chunk may include compiling the pipeline: not a sample. Nor is a
            // step's small tail (its fixed cost would dominate).
            if clock.warm.0 && rows >= MIN_CHUNK_ROWS {
                clock.ms_per_row = smooth(clock.ms_per_row, t_chunk / rows as f64);
            }
            clock.warm.0 = true;
            for (c, r) in clock
                .particle_credit_ms
                .iter_mut()
                .zip([probe_rows, adv.rows])
            {
                *c = (*c - t_chunk * r as f64 / rows as f64).max(0.0);
            }
        }
        clock.sample_steps += adv.rows as f64 / n_particles.max(1) as f64;
        // Phase 2: the picture.
        let mut field_scales: Option<Tensor> = None;
        let out = with_lab(|l, ctx| -> Result<(usize, usize, usize)> {
            l.resize(ctx);
            if let Some(m) = &mut l.model {
                if !drawing && ui.view.get_untracked().panels().is_some() {
                    let row = shown_row(&ui, &m.run);
                    field_scales =
                        m.update_field(ctx, &l.blit, row, ui.field_class.get_untracked())?;
                }
            }
            l.render(ctx, &ui);
            Ok(match &l.model {
                Some(m) => {
                    let row = shown_row(&ui, &m.run);
                    let total = m.run.plan.len();
                    let t = m.run.plan.get(row).map_or(0, |c| c.t + 1);
                    (row, total, t)
                }
                None => (0, 0, 0),
            })
        });
        let t = match out {
            Some(Ok((row, total, t))) => {
                ui.row.set((row, total));
                t
            }
            Some(Err(e)) => {
                report_error(&e);
                ui.state.set("paused");
                continue;
            }
            None => continue,
        };
        ui.shown_t.set(t);
        let t_render = match timed_on_gpu(&ctx).await {
            Ok(t) => t,
            Err(e) => {
                report_error(&e);
                return;
            }
        };
        clock.ms_render = smooth(clock.ms_render, t_render);
        let mut gpu_ms = t_chunk + t_render;
        debug(|| {
            format!(
                "particles {} + probe {probe_rows} rows {t_chunk:.0} ms, picture {t_render:.0} ms",
                adv.rows
            )
        });
        if let Some(scales) = field_scales {
            // 16 bytes, only after the field views' exact or arrows program ran.
            match ctx.read_u32(&scales).await {
                Ok(v) if v.len() >= 2 => ui
                    .field_scales
                    .set(Some((f32::from_bits(v[0]), f32::from_bits(v[1])))),
                Ok(_) => {}
                Err(e) => report_error(&e),
            }
        }
        // Phase 3: training, as many half steps as this frame's share of GPU time buys.
        let mut steps = ui.steps.get_untracked();
        if training && !drawing && is_current(generation) {
            let share = (TRAIN_SHARE * left)
                .min(3.0 * (t_chunk + t_render))
                .max(MIN_TRAIN_MS);
            let halves = match clock.ms_per_half {
                Some(h) => {
                    clock.train_credit_ms = (clock.train_credit_ms + share).min(share + h);
                    (clock.train_credit_ms / h.max(1e-3)).floor().min(512.0) as usize
                }
                None => 1,
            };
            if halves > 0 {
                let r = with_lab(|l, ctx| -> Result<u64> {
                    match &mut l.model {
                        Some(m) => {
                            m.trainer.run_halves(ctx, halves)?;
                            Ok(m.trainer.steps_taken())
                        }
                        None => Ok(0),
                    }
                });
                match r {
                    Some(Ok(s)) => steps = s,
                    Some(Err(e)) => {
                        report_error(&e);
                        ui.state.set("paused");
                        continue;
                    }
                    None => continue,
                }
                let t_train = match timed_on_gpu(&ctx).await {
                    Ok(t) => t,
                    Err(e) => {
                        report_error(&e);
                        return;
                    }
                };
                if clock.warm.1 {
                    clock.ms_per_half = smooth(clock.ms_per_half, t_train / halves as f64);
                }
                clock.warm.1 = true;
                clock.train_credit_ms = (clock.train_credit_ms - t_train).max(0.0);
                gpu_ms += t_train;
                debug(|| format!("{halves} training half steps {t_train:.0} ms"));
            }
        } else {
            clock.train_credit_ms = 0.0;
        }
        if !is_current(generation) {
            return;
        }
        // A Reset (or Pause) may have landed during this frame's awaits: then the count taken
        // before them is stale and must not overwrite the cleared counter.
        let training = training && ui.state.get_untracked() == "training";
        if training {
            if let Some(s) =
                with_lab(|l, _| l.model.as_ref().map(|m| m.trainer.steps_taken())).flatten()
            {
                steps = s;
            }
        }
        let t1 = now_ms();
        let frame_ms = t1 - t0;
        prev_frame = Some((t0, gpu_ms));
        if training {
            clock.train_ms += frame_ms;
            ui.train_s.set(clock.train_ms / 1000.0);
            ui.steps.set(steps);
        }
        clock.frames.1 += 1;
        if t1 - clock.frames.0 >= 1000.0 {
            ui.fps
                .set(clock.frames.1 as f64 * 1000.0 / (t1 - clock.frames.0));
            clock.frames = (t1, 0);
            let (w0, s0) = clock.window;
            if training && steps > s0 {
                let rate = (steps - s0) as f64 * 1000.0 / (t1 - w0);
                let batch = ui.settings.get_untracked().batch;
                ui.steps_per_s.set(rate);
                ui.gflops.set(rate * flops_per_step(batch) / 1e9);
            }
            clock.window = (t1, steps);
            let (sw0, ss0) = clock.sample_window;
            if t1 - sw0 >= 2000.0 {
                ui.sample_steps_per_s
                    .set((clock.sample_steps - ss0) * 1000.0 / (t1 - sw0));
                clock.sample_window = (t1, clock.sample_steps);
            }
        }
        if !training {
            clock.window = (t1, steps);
        }
        let res: Result<()> = async {
            if steps > 0 && t1 - clock.last_losses >= 1000.0 {
                clock.last_losses = t1;
                read_losses(&ui).await?;
            }
            let tu = now_ms();
            // Otherwise the untrained figure is sampled on its own, while not training (on a
            // slow adapter it would hold up the training loop).
            if !training && steps > 0 {
                measure_untrained().await?;
            }
            debug(|| format!("untrained check {:.0} ms", now_ms() - tu));
            // A finished run of the fit probe (measure_fit does nothing otherwise).
            if t1 - clock.last_fit >= 1000.0 {
                clock.last_fit = t1;
                measure_fit(&ui, clock.train_ms / 1000.0).await?;
            }
            if steps != clock.bound_step && t1 - clock.last_bound >= 8000.0 {
                clock.last_bound = t1;
                clock.bound_step = steps;
                measure_bound(&ui).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = res {
            report_error(&e);
        }
    }
}

/// `?bench=lab`: time training steps at batch 512 on the moons preset and write JSON into
/// #bench-result (steps/s, GFLOP/s, ms per step), like the U-Net's `?bench`.
pub fn lab_bench_mode() -> bool {
    query_param("bench").as_deref() == Some("lab")
}

/// Particles in `?bench=lab`'s sampler-step timing (the page's default count).
const BENCH_PARTICLES: usize = 10_000;
/// Side of `?bench=lab`'s offscreen picture (the lab canvas at 1280×720, device pixel ratio 1).
const BENCH_CANVAS: u32 = 560;

pub async fn run_lab_bench() {
    let ui = lab_ui();
    // Wait for the page's device.
    let mut waited = 0;
    let (ctx, adapter) = loop {
        if let Some(x) = with_engine(|e| (e.session.ctx().clone(), e.session.adapter_name())) {
            break x;
        }
        next_frame().await;
        waited += 1;
        if waited > 6000 {
            return;
        }
    };
    if let Some(view) = query_param("view") {
        run_field_bench(&ui, &ctx, &adapter, &view).await;
        return;
    }
    let batch = query_param("batch")
        .and_then(|b| b.parse::<usize>().ok())
        .unwrap_or(512)
        .max(1);
    let result: Result<(f64, usize, Vec<f64>, f64, f64)> = async {
        let data = generate(Preset::Moons, 8000, 0, "")?.unlabelled();
        let schedule = lab_schedule(false, 100)?;
        let cfg = TrainConfig {
            batch,
            ..Default::default()
        };
        let mut tr = LabTrainer::new(&ctx, &data, &schedule, &cfg)?;
        tr.run(&ctx, 3)?;
        ctx.finish().await?;
        // Runs of `per` steps in one submission; per grows until a run takes ≥ 200 ms.
        let mut per = 1;
        let mut times = Vec::new();
        let start = now_ms();
        while times.len() < 10 && (times.len() < 3 || now_ms() - start < 15_000.0) {
            let t0 = now_ms();
            tr.run(&ctx, per)?;
            ctx.finish().await?;
            let ms = now_ms() - t0;
            if ms < 200.0 && per < 256 {
                per *= 2;
                continue;
            }
            times.push(ms / per as f64);
        }
        times.sort_by(f64::total_cmp);
        // One sampler step over the page's default 10,000 particles (from the trained EMA
        // weights), alone on the GPU: what the frame loop splits into chunks on a slow adapter.
        let steps = plan(&schedule, LabSampler::Ddpm, 50)?;
        let parts = Particles::new(&ctx, &tr.ema, 0, &steps, BENCH_PARTICLES, &[], 1.0, 0)?;
        let mut ptimes = Vec::new();
        for k in 0..4 {
            let t0 = now_ms();
            let mut enc = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            parts.encode_whole(&ctx, &mut enc, k);
            ctx.queue.submit([enc.finish()]);
            ctx.finish().await?;
            if k > 0 {
                ptimes.push(now_ms() - t0); // the first one compiles the pipeline
            }
        }
        ptimes.sort_by(f64::total_cmp);
        // The Lab tab's picture alone (its reverse view: the layer of 8,000 data points and
        // the 10,000 particles between two steps) into an offscreen target of a desktop
        // canvas's size.
        let draw_ms = {
            let format = wgpu::TextureFormat::Rgba8Unorm;
            let renderer = PointsRenderer::new(&ctx, format);
            let side = BENCH_CANVAS;
            let tex = ctx.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("lab draw bench"),
                size: wgpu::Extent3d {
                    width: side,
                    height: side,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
                view_formats: &[],
            });
            let target = tex.create_view(&wgpu::TextureViewDescriptor::default());
            let data_buf = {
                let flat: Vec<f32> = data
                    .points
                    .iter()
                    .flat_map(|p| [p[0], p[1], 0.0, 0.0])
                    .collect();
                ctx.upload(&flat, &[data.len(), 4])?
            };
            let picks = ctx.upload_u32(&[0; MAX_PICKS], &[MAX_PICKS])?;
            let base = PointsView::fit(side, side);
            let layer = renderer.layer(&ctx, [side, side]);
            let data_draw = Draw {
                view: PointsView {
                    radius_px: 2.2,
                    alpha: 0.35,
                    use_color: 1,
                    ..base
                },
                pts: &data_buf.buffer,
                picks: &picks.buffer,
                shape: Shape::Points(data.len() as u32),
            };
            renderer.draw_layer(&ctx, &layer, &[data_draw]);
            let particles = Draw {
                view: PointsView {
                    radius_px: 1.5,
                    alpha: 0.8,
                    back: 0.5,
                    ..base
                },
                pts: &parts.state.buffer,
                picks: &picks.buffer,
                shape: Shape::Points(BENCH_PARTICLES as u32),
            };
            let draws = [particles];
            time_gpu(&ctx, 10_000.0, || {
                renderer.draw_with_panels(&ctx, &target, [side, side], Some(&layer), &[], &draws);
                Ok(())
            })
            .await?
        };
        Ok((
            times[times.len() / 2],
            tr.dispatches_per_step(),
            times,
            ptimes[1],
            draw_ms,
        ))
    }
    .await;
    match result {
        Ok((ms, dispatches, times, particle_ms, draw_ms)) => {
            let sps = 1000.0 / ms;
            let gflops = sps * flops_per_step(batch) / 1e9;
            let json = format!(
                r#"{{"bench": "lab", "adapter": {}, "batch": {batch}, "ms_per_step": {ms:.3}, "steps_per_s": {sps:.3}, "gflops": {gflops:.3}, "dispatches_per_step": {dispatches}, "particles": {BENCH_PARTICLES}, "particle_step_ms": {particle_ms:.1}, "draw_ms": {draw_ms:.1}}}"#,
                serde_json::Value::String(adapter.clone())
            );
            let table = format!(
                "adapter\t{adapter}\nbatch\t{batch}\nruns\t{}\nmedian\t{ms:.2} ms per step\nspeed\t{sps:.2} steps/s, {gflops:.2} GFLOP/s ({:.1} MFLOP per step)\ndispatches\t{dispatches} per step\nparticles\t{particle_ms:.1} ms per sampler step of {BENCH_PARTICLES}\npicture\t{draw_ms:.1} ms ({BENCH_CANVAS}² px, 8,000 data points + {BENCH_PARTICLES} particles)",
                times.len(),
                flops_per_step(batch) / 1e6
            );
            ui.bench.set(Some((json, table)));
        }
        Err(e) => {
            let json = format!(
                r#"{{"error": {}}}"#,
                serde_json::Value::String(e.to_string())
            );
            ui.bench.set(Some((json, String::new())));
            report_error(&e);
        }
    }
}

/// Median ms of `run` (submit, then wait for the GPU): at least 3 runs (one stall on a
/// loaded machine must not be the result), at most 5 or until `budget_ms` is spent.
async fn time_gpu(
    ctx: &GpuContext,
    budget_ms: f64,
    mut run: impl FnMut() -> Result<()>,
) -> Result<f64> {
    let start = now_ms();
    let mut times = Vec::new();
    while times.len() < 3 || (times.len() < 5 && now_ms() - start < budget_ms) {
        let t0 = now_ms();
        run()?;
        ctx.finish().await?;
        times.push(now_ms() - t0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// `?bench=lab&view=density|score`: the field views' GPU cost per frame at the page's sizes
/// (the lab's settings, URL parameters included; untrained weights), JSON in #bench-result:
/// each program on its own, a held frame (the scrubber holds t: copy of the shown row +
/// histogram) and a live frame (one particle step, then all three programs for the new t).
/// The canvas render (two 96² blits and the points) is not included. `field_class=y` times
/// the guided arrows of class y (with `classes=1`).
async fn run_field_bench(ui: &LabUi, ctx: &Rc<GpuContext>, adapter: &str, view: &str) {
    let settings = ui.settings.get_untracked();
    let class: Option<u32> = query_param("field_class").and_then(|c| c.parse().ok());
    let result: Result<(FieldCost, usize)> = async {
        let mut m = LabModel::new(ctx, &settings)?;
        let blit = FieldBlit::new(ctx, wgpu::TextureFormat::Rgba8Unorm);
        // Row 1 (t just below T): the first frame builds the views and runs everything.
        m.run.advance(ctx, m.run.particles.n)?;
        m.update_field(ctx, &blit, 1, class)?;
        ctx.finish().await?;
        let budget = 20_000.0;
        let f = m
            .field
            .as_ref()
            .ok_or_else(|| Error::Gpu("no field views".into()))?;
        let exact_ms = time_gpu(ctx, budget, || ctx.run(f.views.exact_program())).await?;
        let arrows_ms = time_gpu(ctx, budget, || ctx.run(f.views.arrows_program())).await?;
        let particles_ms = time_gpu(ctx, budget, || ctx.run(f.views.particles_program())).await?;
        // A held frame: update_field at the same row runs only the copy and the histogram.
        let held_frame_ms = time_gpu(ctx, budget, || {
            m.update_field(ctx, &blit, 1, class).map(|_| ())
        })
        .await?;
        let particle_step_ms = time_gpu(ctx, budget, || {
            if m.run.k + 1 >= m.run.plan.len() {
                m.run.k = 1;
            }
            m.run.advance(ctx, m.run.particles.n).map(|_| ())
        })
        .await?;
        let live_frame_ms = time_gpu(ctx, budget, || {
            if m.run.k + 1 >= m.run.plan.len() {
                m.run.k = 1;
            }
            m.run.advance(ctx, m.run.particles.n)?;
            m.update_field(ctx, &blit, m.run.k, class).map(|_| ())
        })
        .await?;
        let cost = FieldCost {
            exact_ms,
            arrows_ms,
            particles_ms,
            held_frame_ms,
            particle_step_ms,
            live_frame_ms,
        };
        Ok((cost, m.data.len()))
    }
    .await;
    match result {
        Ok((c, points)) => {
            let json = format!(
                r#"{{"bench": "lab-field", "view": {}, "adapter": {}, "side": {FIELD_SIDE}, "grid": {FIELD_GRID}, "points": {points}, "particles": {}, "class": {}, "exact_ms": {:.2}, "arrows_ms": {:.2}, "particles_ms": {:.2}, "held_frame_ms": {:.2}, "particle_step_ms": {:.2}, "live_frame_ms": {:.2}}}"#,
                serde_json::Value::String(view.to_string()),
                serde_json::Value::String(adapter.to_string()),
                settings.particles,
                class.map_or("null".to_string(), |c| c.to_string()),
                c.exact_ms,
                c.arrows_ms,
                c.particles_ms,
                c.held_frame_ms,
                c.particle_step_ms,
                c.live_frame_ms,
            );
            let table = format!(
                "adapter\t{adapter}\nview\t{view} ({FIELD_SIDE}² pixels, {FIELD_GRID}² arrows, {points} points, {} particles)\nexact q(x_t)\t{:.1} ms (when t changes)\narrows\t{:.1} ms (when t, class or weights change)\nhistogram\t{:.1} ms\nheld frame\t{:.1} ms (copy + histogram)\nparticle step\t{:.1} ms\nlive frame\t{:.1} ms (step + all three)",
                settings.particles, c.exact_ms, c.arrows_ms, c.particles_ms, c.held_frame_ms, c.particle_step_ms, c.live_frame_ms
            );
            ui.bench.set(Some((json, table)));
        }
        Err(e) => {
            let json = format!(
                r#"{{"error": {}}}"#,
                serde_json::Value::String(e.to_string())
            );
            ui.bench.set(Some((json, String::new())));
            report_error(&e);
        }
    }
}
