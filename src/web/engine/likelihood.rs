//! The likelihood panel's GPU jobs: the variational bound of one image
//! ([`LikelihoodRun`], many timesteps per U-Net call) and its reconstruction anomaly score
//! ([`ReconstructionRun`]), each an async loop that awaits every readback (never blocks) and
//! writes the panel's signals as terms come in.
//!
//! Owns the jobs' generation counters (starting a job or pressing Stop ends the previous
//! one at its next await) and the cache of the model folder's `anomaly_reference.json`.
//! A job holds its run (GPU buffers) itself, across awaits; it drops the run and stops when
//! the device it was made on is no longer the engine's (device loss, “Restart GPU”).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use leptos::prelude::*;
use serde::Deserialize;

use super::{loading, now_ms, report_error, run, with_engine};
use crate::diffusion::anomaly::{ReconstructionRun, ReconstructionSettings};
use crate::diffusion::likelihood::{ImageBatch, LikelihoodRun, TermNoise, TermPlan};
use crate::gpu::GpuContext;
use crate::model::Model;
use crate::web::forward::Image;
use crate::web::likelihood::summary_text;
use crate::web::loader;
use crate::Error;

use super::toolbox::ToolState;

/// One image for the panel's tools, with what it is conditioned on.
#[derive(Clone, Debug)]
pub struct ToolImage {
    /// (C, H, W), already in the model's shape and on the 8-bit grid.
    pub image: Image,
    /// The class label for class-conditional models; `None` = the null class (the
    /// unconditional model), as the CLI without `--class-label`. Ignored by unconditional
    /// models.
    pub class: Option<u32>,
    /// Seed of the noise (the CLI's `--seed`): the bound's x_t per timestep and the
    /// strided estimate's positions; the anomaly score's x_t.
    pub seed: u64,
}

/// How to evaluate the bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NllMode {
    /// 1 = every timestep (the bound); k > 1 = the strided estimate of [`TermPlan`].
    pub stride: usize,
    /// Timesteps per U-Net call.
    pub per_call: usize,
}

/// What the panel shows of the bound.
#[derive(Clone, Copy)]
pub struct NllView {
    pub state: RwSignal<ToolState>,
    /// (timestep index, bits/dim) of every term computed so far.
    pub terms: RwSignal<Vec<(usize, f64)>>,
    pub t_max: RwSignal<usize>,
    pub strided: RwSignal<bool>,
    pub progress: RwSignal<f64>,
    pub text: RwSignal<String>,
    /// The total in bits/dim, once done.
    pub total: RwSignal<Option<f64>>,
}

impl Default for NllView {
    fn default() -> Self {
        Self::new()
    }
}

impl NllView {
    pub fn new() -> Self {
        NllView {
            state: RwSignal::new(ToolState::Idle),
            terms: RwSignal::new(Vec::new()),
            t_max: RwSignal::new(0),
            strided: RwSignal::new(false),
            progress: RwSignal::new(0.0),
            text: RwSignal::new("Not computed yet.".into()),
            total: RwSignal::new(None),
        }
    }
}

/// What the panel shows of the anomaly score.
#[derive(Clone, Copy)]
pub struct AnomalyView {
    pub state: RwSignal<ToolState>,
    /// Input, x_t and reconstruction, each (C, H, W).
    pub images: RwSignal<Option<Vec<Vec<f32>>>>,
    pub score: RwSignal<Option<f64>>,
    /// Percent of the reference's real digits scoring below, when comparable.
    pub percentile: RwSignal<Option<f64>>,
    pub text: RwSignal<String>,
    pub reference_text: RwSignal<String>,
}

impl Default for AnomalyView {
    fn default() -> Self {
        Self::new()
    }
}

impl AnomalyView {
    pub fn new() -> Self {
        AnomalyView {
            state: RwSignal::new(ToolState::Idle),
            images: RwSignal::new(None),
            score: RwSignal::new(None),
            percentile: RwSignal::new(None),
            text: RwSignal::new("Not scored yet.".into()),
            reference_text: RwSignal::new(String::new()),
        }
    }
}

thread_local! {
    static NLL_JOB: Cell<u64> = const { Cell::new(0) };
    static ANOMALY_JOB: Cell<u64> = const { Cell::new(0) };
    /// The model folder a reference was looked for in, and what was found.
    static REFERENCE: RefCell<Option<(String, Option<Rc<AnomalyReference>>)>> = const { RefCell::new(None) };
}

fn bump(job: &'static std::thread::LocalKey<Cell<u64>>) -> u64 {
    job.with(|g| {
        g.set(g.get() + 1);
        g.get()
    })
}

fn current(job: &'static std::thread::LocalKey<Cell<u64>>, generation: u64) -> bool {
    job.with(|g| g.get()) == generation
}

/// The engine's device context and the current model, pausing the reverse-process
/// animation so that the GPU works on this job alone.
fn gpu_and_model() -> Option<(Rc<GpuContext>, Rc<Model>)> {
    let ctx = with_engine(|e| e.session.ctx().clone())?;
    let model = loading::model()?;
    run::pause();
    Some((ctx, model))
}

/// Still the engine's device? (Not after a device loss or “Restart GPU”.)
fn same_device(ctx: &Rc<GpuContext>) -> bool {
    with_engine(|e| Rc::ptr_eq(e.session.ctx(), ctx)) == Some(true)
}

/// The label of a one-image job: `class` for class-conditional models, else their null class
/// (the last embedding: the unconditional model); `None` for unconditional models, which
/// have no labels to take. A class the model does not have is an error.
pub fn tool_labels(model: &Model, class: Option<u32>) -> Result<Option<Vec<u32>>, Error> {
    let Some(k) = model.config.num_class_embeds else {
        return Ok(None);
    };
    let null = k.saturating_sub(1) as u32;
    match class {
        Some(c) if c >= null => Err(Error::Config(format!(
            "class {c} is not one of this model's classes (0 … {})",
            null.saturating_sub(1)
        ))),
        Some(c) => Ok(Some(vec![c])),
        None => Ok(Some(vec![null])),
    }
}

/// Calls `start` with `job`'s image as a batch of one, labelled by [`tool_labels`].
fn with_job_images<R>(
    model: &Model,
    job: &ToolImage,
    start: impl FnOnce(ImageBatch<'_>) -> Result<R, Error>,
) -> Result<R, Error> {
    let image = &job.image;
    let labels = tool_labels(model, job.class)?;
    start(ImageBatch {
        data: &image.data,
        shape: &[1, image.c, image.h, image.w],
        class_labels: labels.as_deref(),
    })
}

/// The bound's run for `job` (what the panel's “Compute bits/dim” starts).
pub fn nll_run(
    ctx: &GpuContext,
    model: &Model,
    job: &ToolImage,
    mode: NllMode,
) -> Result<LikelihoodRun, Error> {
    let plan = TermPlan {
        per_call: mode.per_call.max(1),
        stride: mode.stride.max(1),
        seed: job.seed,
    };
    with_job_images(model, job, |images| {
        LikelihoodRun::with_plan(ctx, model, images, TermNoise::Seeded(job.seed), plan)
    })
}

/// The reconstruction run for `job`: noise to `t`, DDIM back in `steps`, one repeat
/// (what the panel's “Score this image” starts).
pub fn anomaly_run(
    ctx: &GpuContext,
    model: &Model,
    job: &ToolImage,
    t: usize,
    steps: usize,
) -> Result<ReconstructionRun, Error> {
    let settings = ReconstructionSettings {
        t,
        steps,
        repeats: 1,
        seed: job.seed,
    };
    with_job_images(model, job, |images| {
        ReconstructionRun::new(ctx, model, images, settings)
    })
}

/// The state and status line that a job writes.
#[derive(Clone, Copy)]
struct JobStatus {
    state: RwSignal<ToolState>,
    text: RwSignal<String>,
}

impl JobStatus {
    /// Show `what: {e}` as the job's error (and in the page's error box).
    fn fail(self, what: &str, e: &Error) {
        self.state.set(ToolState::Error);
        self.text.set(format!("{what}: {e}"));
        report_error(e);
    }

    /// After each awaited step: `Some(true)` = the run made progress, `Some(false)` = the
    /// run is finished, `None` = stop now (a newer job started, the device was replaced, or
    /// the step failed; the status says which).
    fn after_step<T>(
        self,
        job: &'static std::thread::LocalKey<Cell<u64>>,
        generation: u64,
        ctx: &Rc<GpuContext>,
        r: Result<Option<T>, Error>,
    ) -> Option<bool> {
        if !current(job, generation) {
            return None;
        }
        if !same_device(ctx) {
            self.state.set(ToolState::Error);
            self.text
                .set("Stopped: the GPU device was replaced.".into());
            return None;
        }
        match r {
            Ok(Some(_)) => Some(true),
            Ok(None) => Some(false),
            Err(e) => {
                self.fail("Failed", &e);
                None
            }
        }
    }
}

/// Evaluate the bound of `job`'s image.
pub fn start_nll(view: NllView, job: ToolImage, mode: NllMode) {
    let generation = bump(&NLL_JOB);
    wasm_bindgen_futures::spawn_local(nll_job(view, job, mode, generation));
}

pub fn stop_nll(view: NllView) {
    bump(&NLL_JOB);
    if view.state.get_untracked() == ToolState::Running {
        view.state.set(ToolState::Stopped);
        view.text.update(|t| t.push_str(" — stopped."));
    }
}

async fn nll_job(view: NllView, job: ToolImage, mode: NllMode, generation: u64) {
    let Some((ctx, model)) = gpu_and_model() else {
        return;
    };
    let status = JobStatus {
        state: view.state,
        text: view.text,
    };
    let mut lk = match nll_run(&ctx, &model, &job, mode) {
        Ok(r) => r,
        Err(e) => {
            status.fail("Could not start", &e);
            return;
        }
    };
    let t_max = lk.num_timesteps();
    let total_terms = lk.plan().len();
    let weights: Vec<f64> = {
        let mut w = vec![0.0; t_max];
        for &(t, wt) in lk.plan() {
            w[t] = wt;
        }
        w
    };
    let (stride, per_call) = (mode.stride.max(1), mode.per_call.max(1));
    let strided = (stride > 1).then_some(stride);
    let prior = lk.prior_bits()[0];
    view.t_max.set(t_max);
    view.strided.set(strided.is_some());
    view.terms.set(Vec::new());
    view.total.set(None);
    view.progress.set(0.0);
    view.state.set(ToolState::Running);
    view.text
        .set(summary_text(prior, None, 0.0, 0, total_terms, strided));
    let calls = total_terms.div_ceil(per_call.min(total_terms));
    let start = now_ms();
    loop {
        let r = lk.step(&ctx).await;
        match status.after_step(&NLL_JOB, generation, &ctx, r) {
            Some(true) => {}
            Some(false) => break,
            None => return,
        }
        let done = lk.terms_done();
        let terms: Vec<(usize, f64)> = lk
            .terms()
            .iter()
            .enumerate()
            .filter_map(|(t, v)| v.first().map(|&b| (t, b)))
            .collect();
        let decoder = lk.terms()[0].first().copied();
        let kl: f64 = terms
            .iter()
            .filter(|(t, _)| *t > 0)
            .map(|&(t, v)| weights[t] * v)
            .sum();
        view.terms.set(terms);
        view.progress.set(done as f64 / total_terms as f64);
        let mut text = summary_text(prior, decoder, kl, done, total_terms, strided);
        let secs = (now_ms() - start) / 1000.0;
        if done == total_terms {
            text.push_str(&format!(
                " · {total_terms} evaluations in {calls} U-Net calls of batch {}, {secs:.1} s",
                per_call.min(total_terms)
            ));
            view.total.set(Some(prior + decoder.unwrap_or(0.0) + kl));
        } else {
            text.push_str(&format!(" · {secs:.0} s"));
        }
        view.text.set(text);
        if done == total_terms {
            break;
        }
    }
    if let Some(r) = lk.report() {
        view.total.set(r.bits_per_dim.first().copied());
    }
    view.state.set(ToolState::Done);
}

/// The score distribution of real digits, made natively by `kakusan anomaly` (the model
/// folder's `anomaly_reference.json`; docs/toolbox.md). The top-level distribution is that of
/// the null class (the unconditional model); `conditioned`, when present, that of every
/// digit conditioned on its own class label.
#[derive(Debug, Deserialize)]
pub struct AnomalyReference {
    pub t: usize,
    pub ddim_steps: usize,
    pub repeats: usize,
    /// How many real digits.
    pub n: usize,
    pub digits: String,
    /// Scores at 0 %, 1 %, …, 100 % of the real digits (ascending), null class.
    pub quantiles: Vec<f64>,
    /// Median score of each out-of-distribution kind, null class.
    #[serde(default)]
    pub ood_medians: Vec<(String, f64)>,
    /// The same digits (and out-of-distribution sets) scored with class labels.
    #[serde(default)]
    pub conditioned: Option<ScoreDistribution>,
}

/// Real digits' score quantiles and the out-of-distribution medians under one conditioning.
#[derive(Debug, Deserialize)]
pub struct ScoreDistribution {
    /// What the images were conditioned on, in words.
    pub class: String,
    pub quantiles: Vec<f64>,
    #[serde(default)]
    pub ood_medians: Vec<(String, f64)>,
}

/// One conditioning's scores in an [`AnomalyReference`].
pub struct Distribution<'a> {
    pub class: &'a str,
    pub quantiles: &'a [f64],
    pub ood_medians: &'a [(String, f64)],
}

impl AnomalyReference {
    /// The quantiles and out-of-distribution medians for a score computed with a class label
    /// (`conditioned`) or with the null class; None when the file has no such distribution.
    pub fn distribution(&self, conditioned: bool) -> Option<Distribution<'_>> {
        match (conditioned, &self.conditioned) {
            (false, _) => Some(Distribution {
                class: "null class",
                quantiles: &self.quantiles,
                ood_medians: &self.ood_medians,
            }),
            (true, Some(d)) => Some(Distribution {
                class: &d.class,
                quantiles: &d.quantiles,
                ood_medians: &d.ood_medians,
            }),
            (true, None) => None,
        }
    }

    /// Percent of real digits (null class) scoring below `score`.
    pub fn percent_below(&self, score: f64) -> f64 {
        percent_below(&self.quantiles, score)
    }
}

/// Percent of the scores whose quantiles (0 %, …, 100 %) are `q` lying below `score` (linear
/// between the quantiles).
pub fn percent_below(q: &[f64], score: f64) -> f64 {
    if q.len() < 2 || score <= q[0] {
        return 0.0;
    }
    if score >= q[q.len() - 1] {
        return 100.0;
    }
    let step = 100.0 / (q.len() - 1) as f64;
    for i in 0..q.len() - 1 {
        if score < q[i + 1] {
            let f = if q[i + 1] > q[i] {
                (score - q[i]) / (q[i + 1] - q[i])
            } else {
                0.0
            };
            return (i as f64 + f) * step;
        }
    }
    100.0
}

/// The current model folder's reference (fetched once per folder); None when it has none.
async fn reference() -> Result<Option<Rc<AnomalyReference>>, String> {
    let name = super::ui().model_name.get_untracked();
    // Models from picked or dropped files have no folder to look in.
    if name == "local files" {
        return Ok(None);
    }
    if let Some(found) = REFERENCE.with(|r| {
        r.borrow()
            .as_ref()
            .filter(|(n, _)| *n == name)
            .map(|(_, f)| f.clone())
    }) {
        return Ok(found);
    }
    let url = loader::join(&name, "anomaly_reference.json");
    let found = match loader::text(&url).await? {
        Some(t) => Some(Rc::new(
            serde_json::from_str::<AnomalyReference>(&t)
                .map_err(|e| format!("{url}: not a reference file ({e})"))?,
        )),
        None => None,
    };
    REFERENCE.with(|r| *r.borrow_mut() = Some((name, found.clone())));
    Ok(found)
}

/// Noise `image` to `t`, DDIM back in `steps` steps, score the reconstruction.
pub fn start_anomaly(view: AnomalyView, job: ToolImage, t: usize, steps: usize) {
    let generation = bump(&ANOMALY_JOB);
    wasm_bindgen_futures::spawn_local(anomaly_job(view, job, t, steps, generation));
}

async fn anomaly_job(view: AnomalyView, job: ToolImage, t: usize, steps: usize, generation: u64) {
    let Some((ctx, model)) = gpu_and_model() else {
        return;
    };
    let status = JobStatus {
        state: view.state,
        text: view.text,
    };
    let created = anomaly_run(&ctx, &model, &job, t, steps);
    let conditioned = model.config.num_class_embeds.is_some() && job.class.is_some();
    let image = job.image;
    let mut rec = match created {
        Ok(r) => r,
        Err(e) => {
            status.fail("Could not start", &e);
            return;
        }
    };
    let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let xt = to_f32(rec.reconstructions());
    view.state.set(ToolState::Running);
    view.score.set(None);
    view.percentile.set(None);
    view.images
        .set(Some(vec![image.data.clone(), xt.clone(), xt.clone()]));
    let total = rec.timesteps().len();
    let start = now_ms();
    let mut done = 0;
    loop {
        view.text
            .set(format!("Reconstructing: DDIM step {done} of {total}…"));
        let r = rec.step(&ctx).await;
        match status.after_step(&ANOMALY_JOB, generation, &ctx, r) {
            Some(true) => done += 1,
            Some(false) => break,
            None => return,
        }
        view.images.set(Some(vec![
            image.data.clone(),
            xt.clone(),
            to_f32(rec.reconstructions()),
        ]));
        if rec.is_done() {
            break;
        }
    }
    let secs = (now_ms() - start) / 1000.0;
    let score = rec.scores()[0];
    view.score.set(Some(score));
    let head = format!("score s = {score:.4} (mean squared error, pixels in [−1, 1])");
    let (text, reference_text, percentile) = match reference().await {
        Ok(Some(r)) if r.t != t || r.ddim_steps != total || r.repeats != 1 => (
            head.clone(),
            format!(
                "This model's reference distribution was made with t = {} and {} DDIM steps: \
                 set those to place the score among real digits.",
                r.t, r.ddim_steps
            ),
            None,
        ),
        Ok(Some(r)) => match r.distribution(conditioned) {
            Some(d) => {
                let q = d.quantiles;
                let p = percent_below(q, score);
                let ood = d
                    .ood_medians
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let class = d.class;
                (
                    format!("{head} — higher than {p:.0}% of real digits"),
                    format!(
                        "Reference: {} real digits ({}), {class}, t = {}, {} DDIM steps, median {:.4}, 95th percentile {:.4}{}.",
                        r.n,
                        r.digits,
                        r.t,
                        r.ddim_steps,
                        q.get(50).copied().unwrap_or(f64::NAN),
                        q.get(95).copied().unwrap_or(f64::NAN),
                        if ood.is_empty() {
                            String::new()
                        } else {
                            format!("; medians of out-of-distribution sets: {ood}")
                        }
                    ),
                    Some(p),
                )
            }
            None => (
                head.clone(),
                "This model's reference distribution was made with the null class only: set \
                 the class to “none” to place the score among real digits."
                    .into(),
                None,
            ),
        },
        Ok(None) => (
            head.clone(),
            "The reference is missing: this model folder has no anomaly_reference.json (the \
             scores of real digits, made with `kakusan anomaly`; see docs/toolbox.md)."
                .into(),
            None,
        ),
        Err(e) => (
            head.clone(),
            format!("The reference could not be read: {e}"),
            None,
        ),
    };
    if !current(&ANOMALY_JOB, generation) {
        return;
    }
    view.percentile.set(percentile);
    view.text
        .set(format!("{text} · {total} DDIM steps in {secs:.1} s"));
    view.reference_text.set(reference_text);
    view.state.set(ToolState::Done);
}
