//! The toolbox's GPU side: RePaint inpainting ([`crate::diffusion::repaint`]) and
//! interpolation ([`crate::diffusion::interpolate`] + the DDIM [`SamplingRun`]) on the
//! loaded model, each run as one async task that steps the engine and yields to the
//! browser between steps (never a blocking poll).
//!
//! Owns the toolbox's signals ([`ToolboxUi`]), the two tasks' generation counters (bumping
//! one ends that task before its next step) and the last inpainting result (for the
//! `window.kakusanInpaintResult()` test hook). A task holds its run (a U-Net on the current
//! device) itself, not in the [`Engine`](super::Engine): it lives only while the task runs,
//! and a device loss ends it with an error at its next step.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use leptos::prelude::*;
use wasm_bindgen::prelude::*;

use super::{loading, next_frame, report, report_error, run, with_engine};
use crate::diffusion::interpolate as interp;
use crate::diffusion::repaint::{Move, RepaintRun, RepaintSettings};
use crate::diffusion::sampler::{SampleSettings, SamplingRun};
use crate::diffusion::schedule::Sampler;
use crate::gpu::GpuContext;
use crate::model::Model;
use crate::Error;

/// Where a toolbox job (inpainting, interpolation, bits/dim, anomaly) is; shown as the tool's
/// `data-state` attribute.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ToolState {
    Idle,
    Running,
    Done,
    Stopped,
    Error,
}

impl ToolState {
    /// The value of the tool's `data-state` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolState::Idle => "idle",
            ToolState::Running => "running",
            ToolState::Done => "done",
            ToolState::Stopped => "stopped",
            ToolState::Error => "error",
        }
    }
}

/// What the inpainting view draws: (C, H, W) images in [−1, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct InpaintView {
    pub shape: [usize; 3],
    pub x_t: Vec<f32>,
    pub x0: Vec<f32>,
    /// The composed result once the run has finished.
    pub result: Option<Vec<f32>>,
}

/// Interpolation frames, (C, H, W) each, λ_i = i / (K − 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Frames {
    pub shape: [usize; 3],
    pub frames: Vec<Vec<f32>>,
    /// K: the number of frames of the whole run (more than `frames` holds while running in
    /// several batches).
    pub k: usize,
    /// true while these are the running x̂_0 (not yet the final x_0).
    pub live: bool,
}

/// The toolbox's signals; the tasks write them, the panel reads them.
#[derive(Clone, Copy)]
pub struct ToolboxUi {
    pub inpaint_state: RwSignal<ToolState>,
    pub inpaint_progress: RwSignal<String>,
    pub inpaint_known: RwSignal<String>,
    pub inpaint_view: RwSignal<Option<InpaintView>>,
    pub interp_state: RwSignal<ToolState>,
    pub interp_progress: RwSignal<String>,
    pub interp_frames: RwSignal<Option<Frames>>,
}

impl ToolboxUi {
    pub fn new() -> ToolboxUi {
        ToolboxUi {
            inpaint_state: RwSignal::new(ToolState::Idle),
            inpaint_progress: RwSignal::new(String::new()),
            inpaint_known: RwSignal::new(String::new()),
            inpaint_view: RwSignal::new(None),
            interp_state: RwSignal::new(ToolState::Idle),
            interp_progress: RwSignal::new(String::new()),
            interp_frames: RwSignal::new(None),
        }
    }
}

impl Default for ToolboxUi {
    fn default() -> Self {
        Self::new()
    }
}

/// An inpainting job: the image at the model's size, its mask and RePaint's settings.
#[derive(Clone, Debug)]
pub struct InpaintRequest {
    /// (C, H, W) in [−1, 1], the model's shape.
    pub image: Vec<f32>,
    pub shape: [usize; 3],
    /// (H, W): 1 = keep, 0 = fill.
    pub mask: Vec<f32>,
    /// None = the null class (unconditional).
    pub class: Option<u32>,
    pub guidance: f64,
    pub steps: usize,
    pub jump_length: usize,
    pub jump_n_sample: usize,
    pub seed: u64,
}

/// The two ends of an interpolation.
#[derive(Clone, Debug)]
pub enum Ends {
    /// Slerp between the x_T of two seeds, DDIM η = 0 from T.
    Seeds(u64, u64),
    /// Two (C, H, W) images at the model's size, noised to `t` with the noise of `seed`
    /// (Fig. 8), mixed, and denoised with DDIM η = 0 from t.
    Images {
        a: Vec<f32>,
        b: Vec<f32>,
        t: usize,
        seed: u64,
    },
}

#[derive(Clone, Debug)]
pub struct InterpRequest {
    pub ends: Ends,
    pub frames: usize,
    pub steps: usize,
    pub class: Option<u32>,
    pub guidance: f64,
}

/// The last finished inpainting: (shape, image, mask (H, W), result).
type LastInpaint = ([usize; 3], Vec<f32>, Vec<f32>, Vec<f32>);

thread_local! {
    static TOOLBOX_UI: Cell<Option<ToolboxUi>> = const { Cell::new(None) };
    static INPAINT_GENERATION: Cell<u64> = const { Cell::new(0) };
    static INTERP_GENERATION: Cell<u64> = const { Cell::new(0) };
    static LAST_INPAINT: RefCell<Option<LastInpaint>> = const { RefCell::new(None) };
}

/// Called once by the toolbox panel: its signals, and the test hook
/// `window.kakusanInpaintResult()` → JSON `{shape, image, mask, result}` of the last
/// finished inpainting (or null).
pub fn set_toolbox_ui(tb: ToolboxUi) {
    TOOLBOX_UI.with(|u| u.set(Some(tb)));
    if let Some(w) = web_sys::window() {
        let hook = Closure::<dyn Fn() -> JsValue>::new(|| {
            LAST_INPAINT.with(|l| match &*l.borrow() {
                Some((shape, image, mask, result)) => {
                    let list = |v: &[f32]| {
                        v.iter()
                            .map(|x| format!("{x:?}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    JsValue::from_str(&format!(
                        r#"{{"shape":[{},{},{}],"image":[{}],"mask":[{}],"result":[{}]}}"#,
                        shape[0],
                        shape[1],
                        shape[2],
                        list(image),
                        list(mask),
                        list(result)
                    ))
                }
                None => JsValue::NULL,
            })
        });
        let _ = js_sys::Reflect::set(&w, &"kakusanInpaintResult".into(), hook.as_ref());
        hook.forget();
    }
}

fn tb() -> Option<ToolboxUi> {
    TOOLBOX_UI.with(|u| u.get())
}

fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>) -> u64 {
    counter.with(|g| {
        g.set(g.get() + 1);
        g.get()
    })
}

fn is_current(counter: &'static std::thread::LocalKey<Cell<u64>>, generation: u64) -> bool {
    counter.with(|g| g.get()) == generation
}

/// The loaded model and the device, or a message saying what is missing.
fn model_and_ctx() -> Result<(Rc<Model>, Rc<GpuContext>), String> {
    let ctx = with_engine(|e| e.session.ctx().clone()).ok_or_else(|| {
        "The toolbox needs WebGPU, which is not ready (see the message above).".to_string()
    })?;
    let model = loading::model().ok_or_else(|| {
        "Load a model first (see “Model”): the toolbox runs the loaded model.".to_string()
    })?;
    Ok((model, ctx))
}

/// Labels and guidance for N images: a class (with guidance w) or the null class.
fn labels_and_guidance(
    model: &Model,
    class: Option<u32>,
    guidance: f64,
    n: usize,
) -> (Option<Vec<u32>>, Option<f32>) {
    match (model.config.num_class_embeds, class) {
        (Some(_), Some(c)) => (Some(vec![c; n]), Some(guidance as f32)),
        (Some(k), None) => (Some(vec![(k - 1) as u32; n]), None),
        (None, _) => (None, None),
    }
}

/// Stop the inpainting task (before its next move).
pub fn stop_inpaint() {
    bump(&INPAINT_GENERATION);
    if let Some(tb) = tb() {
        if tb.inpaint_state.get_untracked() == ToolState::Running {
            tb.inpaint_state.set(ToolState::Stopped);
            tb.inpaint_progress.update(|p| p.push_str(" · stopped"));
        }
    }
}

/// Start inpainting (stops a previous inpainting and pauses the reverse panel's run).
pub fn start_inpaint(req: InpaintRequest) {
    let generation = bump(&INPAINT_GENERATION);
    run::pause();
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = inpaint_task(generation, req).await {
            if let Some(tb) = tb() {
                tb.inpaint_state.set(ToolState::Stopped);
            }
            match e {
                TaskError::Engine(e) => report_error(&e),
                TaskError::Message(m) => report(m),
            }
        }
    });
}

enum TaskError {
    Engine(Error),
    Message(String),
}

impl From<Error> for TaskError {
    fn from(e: Error) -> Self {
        TaskError::Engine(e)
    }
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

async fn inpaint_task(generation: u64, req: InpaintRequest) -> Result<(), TaskError> {
    let Some(tb) = tb() else { return Ok(()) };
    let (model, ctx) = model_and_ctx().map_err(TaskError::Message)?;
    let [c, h, w] = req.shape;
    let cfg = &model.config;
    if [cfg.in_channels, cfg.sample_size[0], cfg.sample_size[1]] != req.shape {
        return Err(TaskError::Message(format!(
            "The image is {c}×{h}×{w} but the model takes {}×{}×{}: pick the image again.",
            cfg.in_channels, cfg.sample_size[0], cfg.sample_size[1]
        )));
    }
    if req.mask.iter().all(|&m| m == 1.0) {
        return Err(TaskError::Message(
            "The mask is empty: paint the part to fill in (or press a preset such as “Bottom half”)."
                .into(),
        ));
    }
    let (class_labels, guidance) = labels_and_guidance(&model, req.class, req.guidance, 1);
    tb.inpaint_state.set(ToolState::Running);
    tb.inpaint_known.set(String::new());
    tb.inpaint_progress.set("Planning…".into());
    let mut repaint = RepaintRun::new(
        &ctx,
        &model.config,
        &model.weights,
        &model.scheduler,
        &req.image,
        &req.mask,
        &[1, c, h, w],
        RepaintSettings {
            steps: req.steps,
            jump_length: req.jump_length,
            jump_n_sample: req.jump_n_sample,
            class_labels,
            guidance,
            seed: req.seed,
        },
    )?;
    let total = repaint.moves().len();
    let calls = repaint
        .moves()
        .iter()
        .filter(|m| matches!(m, Move::Down(_)))
        .count();
    let mut done_calls = 0;
    let t0 = super::now_ms();
    loop {
        if !is_current(&INPAINT_GENERATION, generation) {
            return Ok(());
        }
        let Some(mv) = repaint.step(&ctx).await? else {
            break;
        };
        if !is_current(&INPAINT_GENERATION, generation) {
            return Ok(());
        }
        let what = match mv {
            Move::Down(u) => {
                done_calls += 1;
                format!("down to level {}", u - 1)
            }
            Move::Up(u) => format!("jump up to level {}", u + 1),
        };
        tb.inpaint_progress.set(format!(
            "move {}/{total} ({what}) · U-Net call {done_calls}/{calls} · {:.1} s",
            repaint.moves_done(),
            (super::now_ms() - t0) / 1000.0
        ));
        tb.inpaint_view.set(Some(InpaintView {
            shape: req.shape,
            x_t: to_f32(repaint.sample()),
            x0: to_f32(repaint.x0_estimate()),
            result: None,
        }));
        next_frame().await;
    }
    let result = repaint.result();
    // Known pixels (mask 1, every channel) must be the input's values bit for bit.
    let hw = h * w;
    let (mut known, mut same) = (0usize, 0usize);
    for (i, (&r, &x)) in result.iter().zip(&req.image).enumerate() {
        if req.mask[i % hw] == 1.0 {
            known += 1;
            same += usize::from(r.to_bits() == x.to_bits());
        }
    }
    tb.inpaint_known.set(format!(
        "Known pixels: {same} of {known} identical to the input{}",
        if same == known {
            " (bit for bit)"
        } else {
            " — MISMATCH"
        }
    ));
    tb.inpaint_view.set(Some(InpaintView {
        shape: req.shape,
        x_t: to_f32(repaint.sample()),
        x0: to_f32(repaint.x0_estimate()),
        result: Some(result.clone()),
    }));
    LAST_INPAINT.with(|l| *l.borrow_mut() = Some((req.shape, req.image, req.mask, result)));
    tb.inpaint_progress.set(format!(
        "Done: {total} moves, {calls} U-Net calls in {:.1} s",
        (super::now_ms() - t0) / 1000.0
    ));
    tb.inpaint_state.set(ToolState::Done);
    Ok(())
}

/// Stop the interpolation task (before its next step).
pub fn stop_interpolation() {
    bump(&INTERP_GENERATION);
    if let Some(tb) = tb() {
        if tb.interp_state.get_untracked() == ToolState::Running {
            tb.interp_state.set(ToolState::Stopped);
            tb.interp_progress.update(|p| p.push_str(" · stopped"));
        }
    }
}

/// Start an interpolation (stops a previous one and pauses the reverse panel's run).
pub fn start_interpolation(req: InterpRequest) {
    let generation = bump(&INTERP_GENERATION);
    run::pause();
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = interp_task(generation, req).await {
            if let Some(tb) = tb() {
                tb.interp_state.set(ToolState::Stopped);
            }
            match e {
                TaskError::Engine(e) => report_error(&e),
                TaskError::Message(m) => report(m),
            }
        }
    });
}

/// A DDIM (η = 0) run of `batch` frames, the largest batch ≤ `want` that this device plans
/// (halving on a failure such as a binding over the size limit).
fn plan_run(
    ctx: &GpuContext,
    model: &Model,
    req: &InterpRequest,
    want: usize,
) -> crate::Result<SamplingRun> {
    let mut batch = want.max(1);
    loop {
        let (class_labels, guidance) = labels_and_guidance(model, req.class, req.guidance, batch);
        let r = SamplingRun::new(
            ctx,
            &model.config,
            &model.weights,
            &model.scheduler,
            SampleSettings {
                sampler: Sampler::Ddim { eta: 0.0 },
                steps: req.steps,
                seed: 0,
                batch,
                class_labels,
                guidance,
            },
        );
        match r {
            Err(Error::Shape(_)) if batch > 1 => batch = batch.div_ceil(2),
            other => return other,
        }
    }
}

async fn interp_task(generation: u64, req: InterpRequest) -> Result<(), TaskError> {
    let Some(tb) = tb() else { return Ok(()) };
    let (model, ctx) = model_and_ctx().map_err(TaskError::Message)?;
    let k = req.frames;
    if k < 2 {
        return Err(TaskError::Message(
            "Interpolation needs at least 2 frames (the two ends).".into(),
        ));
    }
    let cfg = &model.config;
    let shape = [cfg.in_channels, cfg.sample_size[0], cfg.sample_size[1]];
    let numel = shape.iter().product::<usize>();
    tb.interp_state.set(ToolState::Running);
    tb.interp_progress.set("Planning…".into());
    tb.interp_frames.set(None);
    let t0 = super::now_ms();
    let mut run = plan_run(&ctx, &model, &req, k)?;
    let batch = run.x_t().shape[0];
    let (starts, start_index, what) = match &req.ends {
        Ends::Seeds(a, b) => {
            let noise = interp::seed_noise(
                &ctx,
                &model.config,
                &model.weights,
                &model.scheduler,
                &[*a, *b],
            )
            .await?;
            (
                interp::seed_frames(&noise[0], &noise[1], k),
                0,
                format!("seeds {a} → {b}, slerp of x_T"),
            )
        }
        Ends::Images { a, b, t, seed } => {
            if a.len() != numel || b.len() != numel {
                return Err(TaskError::Message(
                    "The two images do not have the model's size: pick them again.".into(),
                ));
            }
            let z = interp::seed_noise(
                &ctx,
                &model.config,
                &model.weights,
                &model.scheduler,
                &[*seed],
            )
            .await?;
            let (frames, index, t_used) =
                interp::image_start(&model.scheduler, run.timesteps(), *t, a, b, &z[0], k)?;
            (frames, index, format!("images noised to t = {t_used}"))
        }
    };
    let steps_each = run.timesteps().len() - start_index;
    let chunks = k.div_ceil(batch);
    let mut finished: Vec<Vec<f32>> = Vec::with_capacity(k);
    for chunk in 0..chunks {
        let first = chunk * batch;
        let count = batch.min(k - first);
        // Pad the last chunk with copies of its last frame (the run's batch is fixed).
        let mut x = starts[first * numel..(first + count) * numel].to_vec();
        for _ in count..batch {
            x.extend_from_within((count - 1) * numel..count * numel);
        }
        run.set_state(&ctx, start_index, &x)?;
        let mut done = 0;
        while run.step(&ctx)?.is_some() {
            ctx.finish().await?;
            done += 1;
            if !is_current(&INTERP_GENERATION, generation) {
                return Ok(());
            }
            // The running x̂_0 of this chunk next to the frames already finished.
            let x0 = ctx.read(run.x0()).await?;
            let mut live = finished.clone();
            live.extend(x0.chunks(numel).take(count).map(<[f32]>::to_vec));
            tb.interp_frames.set(Some(Frames {
                shape,
                frames: live,
                k,
                live: true,
            }));
            tb.interp_progress.set(format!(
                "{what}: DDIM step {done}/{steps_each}{} · {:.1} s",
                if chunks > 1 {
                    format!(" of batch {}/{chunks}", chunk + 1)
                } else {
                    String::new()
                },
                (super::now_ms() - t0) / 1000.0
            ));
            next_frame().await;
            if !is_current(&INTERP_GENERATION, generation) {
                return Ok(());
            }
        }
        let out = ctx.read(run.x_t()).await?;
        if out.iter().any(|v| !v.is_finite()) {
            return Err(TaskError::Message(
                "The frames contain NaN or Inf: the model or its weights are broken.".into(),
            ));
        }
        finished.extend(out.chunks(numel).take(count).map(<[f32]>::to_vec));
    }
    tb.interp_frames.set(Some(Frames {
        shape,
        frames: finished,
        k,
        live: false,
    }));
    tb.interp_progress.set(format!(
        "Done: {k} frames ({what}), {steps_each} DDIM steps × {chunks} batch{} of {batch} in {:.1} s",
        if chunks > 1 { "es" } else { "" },
        (super::now_ms() - t0) / 1000.0
    ));
    tb.interp_state.set(ToolState::Done);
    Ok(())
}
