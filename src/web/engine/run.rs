//! The sampling run: the live [`SamplingRun`] (planned from the current model and
//! [`Settings`]) and the animation loop that steps it once per animation frame, with
//! `ctx.finish().await` between steps (never a blocking poll).
//!
//! Owns [`LiveRun`] (inside the [`Engine`]) and the loop's generation counter: bumping it
//! ([`stop_loop`]) ends a running loop at its next frame. Only this file plans, steps or
//! restarts the run and sets [`RunState`]; it is driven by the controls (play, pause, step,
//! restart, new settings), by [`loading`](super::loading) (a new model) and by
//! [`session`](super::session) (device loss and restart).

use std::cell::Cell;

use leptos::prelude::*;

use super::{clear_error, loading, next_frame, now_ms, report_error, ui, with_engine, Engine, Ui};
use crate::diffusion::sampler::{GuidanceOptions, SampleSettings, SamplingRun};
use crate::diffusion::schedule::Sampler;
use crate::model::Model;

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

/// Which reverse process the page runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    /// Ancestral sampling, paper Algorithm 2.
    Ddpm,
    /// DDIM (Song et al. 2021) with the page's η.
    Ddim,
    /// DPM-Solver++(2M) (Lu et al. 2022), diffusers' defaults.
    DpmSolver,
}

impl SamplerKind {
    /// The value used in the page's `<select>` and in `?sampler=`.
    pub fn key(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::DpmSolver => "dpm-solver",
        }
    }

    /// The inverse of [`SamplerKind::key`]; anything else is DDPM.
    pub fn from_key(v: &str) -> Self {
        match v.to_ascii_lowercase().as_str() {
            "ddim" => SamplerKind::Ddim,
            "dpm-solver" | "dpmsolver" | "dpm" => SamplerKind::DpmSolver,
            _ => SamplerKind::Ddpm,
        }
    }
}

/// The sampling controls.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub sampler: SamplerKind,
    pub steps: usize,
    pub eta: f64,
    pub seed: u64,
    pub batch: usize,
    /// None = any class (labels cycle through 0..K−1).
    pub class: Option<u32>,
    pub guidance: f64,
    /// Guide only at timesteps lo ≤ t ≤ hi (Kynkäänniemi et al. 2024), the conditional model
    /// alone elsewhere; None = every step (diffusers' behaviour).
    pub guidance_interval: Option<(usize, usize)>,
}

/// The guidance interval the page offers first for a model of `t_train` timesteps: the
/// shipped model's measured one, 80..=580 of 1000 (docs/sampling.md), scaled to T.
pub fn default_guidance_interval(t_train: usize) -> (usize, usize) {
    (t_train * 8 / 100, t_train * 58 / 100)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sampler: SamplerKind::Ddpm,
            steps: 1000,
            eta: 0.0,
            seed: 0,
            batch: 8,
            class: None,
            // Classifier-free guidance for class-conditional models (the shipped MNIST model
            // draws clean digits at 2–3); unconditional models reset it to 1.
            guidance: 2.5,
            guidance_interval: None,
        }
    }
}

/// The run being animated.
pub struct LiveRun {
    pub run: SamplingRun,
    /// (N, C, H, W) of the run.
    pub shape: [usize; 4],
    /// T of the model it samples.
    pub t_train: usize,
    /// Bytes of the tensors planned for it (weights, activations, noise, sampler state).
    pub tensor_bytes: u64,
}

thread_local! {
    /// Bumped to stop the running animation loop.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// Stop the animation loop (it ends before its next step).
pub fn stop_loop() -> u64 {
    GENERATION.with(|g| {
        g.set(g.get() + 1);
        g.get()
    })
}

fn is_current(generation: u64) -> bool {
    GENERATION.with(|g| g.get()) == generation
}

impl Engine {
    /// Plan a new run (drops the old one and its frames first to free their buffers).
    fn build_run(&mut self, model: &Model, s: &Settings) -> crate::Result<()> {
        self.live = None;
        self.timeline.clear();
        let sampler = match s.sampler {
            SamplerKind::Ddpm => Sampler::Ddpm,
            SamplerKind::Ddim => Sampler::Ddim { eta: s.eta },
            SamplerKind::DpmSolver => Sampler::DpmSolver,
        };
        let class_labels = match (model.config.num_class_embeds, s.class) {
            (Some(_), Some(c)) => Some(vec![c; s.batch]),
            _ => None,
        };
        let guidance = model.config.num_class_embeds.map(|_| s.guidance as f32);
        let ctx = self.session.ctx();
        let before = ctx.allocated_bytes();
        let tag = ctx.tag_scope("sampler");
        let mut run = SamplingRun::new(
            ctx,
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
        run.set_guidance_options(
            ctx,
            GuidanceOptions {
                rescale: 0.0,
                interval: s.guidance_interval,
            },
        )?;
        drop(tag);
        let tensor_bytes = ctx.allocated_bytes() - before;
        let sh = &run.x_t().shape;
        let shape = [sh[0], sh[1], sh[2], sh[3]];
        self.timeline.plan(run.x_t().bytes(), s.steps);
        self.live = Some(LiveRun {
            run,
            shape,
            t_train: model.scheduler.num_train_timesteps,
            tensor_bytes,
        });
        self.record_frame(None);
        self.session.ctx().check()
    }

    /// One denoising step, then record/draw. Returns (t, steps done, steps in all), or None
    /// if there is no run or it was already finished.
    fn step(&mut self) -> crate::Result<Option<(usize, usize, usize)>> {
        let Some(live) = &mut self.live else {
            return Ok(None);
        };
        let Some(t) = live.run.step(self.session.ctx())? else {
            return Ok(None);
        };
        let (done, total) = (live.run.steps_done(), live.run.timesteps().len());
        if self.timeline.due(done, total) {
            self.record_frame(Some(t));
        }
        if self.timeline.following() {
            self.draw(None);
        }
        Ok(Some((t, done, total)))
    }

    /// T of the run's model (0 without a run).
    pub(super) fn t_train(&self) -> usize {
        self.live.as_ref().map_or(0, |l| l.t_train)
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

/// x_T is drawn: show the start position, and play if `autoplay`.
fn ready(ui: Ui, t_train: usize, total: usize, autoplay: bool) {
    ui.current_t.set(None);
    ui.step_text.set(describe_position(None, 0, total, t_train));
    set_state(RunState::Idle);
    ui.status.set("Ready: x_T drawn".into());
    if autoplay {
        play();
    }
}

/// Show that step `done` of `total` (at `t`) was taken; true when the run is finished.
fn show_step(
    ui: Ui,
    t: usize,
    done: usize,
    total: usize,
    t_train: usize,
    rate: Option<&str>,
) -> bool {
    let pos = describe_position(Some(t), done, total, t_train);
    ui.current_t.set(Some(t));
    ui.step_text.set(match rate {
        Some(rate) => format!("{pos} · {rate}"),
        None => pos,
    });
    if done == total {
        set_state(RunState::Done);
        ui.status.set(format!("Done: {total} steps, x_0 reached"));
    }
    done == total
}

/// Start (or continue) animating.
pub fn play() {
    let ui = ui();
    if with_engine(|e| e.live.is_some()) != Some(true) {
        return;
    }
    if ui.state.get_untracked() == RunState::Done {
        restart(true);
        return;
    }
    let generation = stop_loop();
    set_state(RunState::Running);
    wasm_bindgen_futures::spawn_local(run_loop(generation));
}

pub fn pause() {
    stop_loop();
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

async fn run_loop(generation: u64) {
    let ui = ui();
    let mut times: Vec<f64> = Vec::new();
    loop {
        if !is_current(generation) {
            return;
        }
        let out = with_engine(|e| e.step().map(|r| (r, e.session.ctx().clone(), e.t_train())));
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
        if show_step(ui, t, done, total, t_train, Some(&rate)) {
            return;
        }
        if is_current(generation) {
            ui.status.set(format!("Denoising t = {t}/{t_train}"));
        }
        next_frame().await;
    }
}

/// One step while paused (or idle).
pub fn step_once() {
    pause();
    let ui = ui();
    let out = with_engine(|e| e.step().map(|r| (r, e.t_train())));
    match out {
        Some(Ok((Some((t, done, total)), t_train))) => {
            let finished = show_step(ui, t, done, total, t_train, None);
            if !finished {
                set_state(RunState::Paused);
                ui.status.set(format!("Paused at t = {t}/{t_train}"));
            }
        }
        Some(Ok((None, _))) => set_state(RunState::Done),
        Some(Err(e)) => report_error(&e),
        None => {}
    }
}

/// Back to x_T with the current seed; `autoplay` starts the animation.
pub fn restart(autoplay: bool) {
    stop_loop();
    let ui = ui();
    let seed = ui.settings.get_untracked().seed;
    let r = with_engine(|e| -> crate::Result<(usize, usize)> {
        e.timeline.follow_live();
        let Some(live) = &mut e.live else {
            return Ok((0, 0));
        };
        live.run.restart(e.session.ctx(), seed)?;
        let (t_train, total) = (live.t_train, live.run.timesteps().len());
        e.timeline.clear();
        e.record_frame(None);
        e.draw(None);
        Ok((t_train, total))
    });
    match r {
        Some(Ok((t_train, total))) => ready(ui, t_train, total, autoplay),
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
    stop_loop();
    rebuild(was_running);
}

/// Plan a run for the current model and settings and draw its x_T; `autoplay` starts it.
pub fn rebuild(autoplay: bool) {
    let ui = ui();
    let Some(model) = loading::model() else {
        return;
    };
    let s = ui.settings.get_untracked();
    let r = with_engine(|e| -> crate::Result<(usize, usize)> {
        e.timeline.follow_live();
        e.session.resize();
        e.build_run(&model, &s)?;
        e.draw(None);
        Ok((e.t_train(), s.steps))
    });
    match r {
        Some(Ok((t_train, total))) => {
            clear_error();
            ready(ui, t_train, total, autoplay);
        }
        Some(Err(e)) => {
            set_state(RunState::Idle);
            report_error(&e);
        }
        None => {}
    }
}
