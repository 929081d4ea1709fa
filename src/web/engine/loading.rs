//! Model loading: fetch a diffusers folder (with progress) or read picked/dropped files,
//! parse and check it, and make it the current model.
//!
//! Owns the current [`Model`] (a thread-local, kept across device restarts: the weights are
//! CPU bytes, uploaded again by the next run) and writes what [`Ui`](super::Ui) shows about
//! it. Only [`install`] replaces the model; it then asks [`run`](super::run) to plan a run
//! for it (or [`bench`](super::bench) to time it).

use std::cell::RefCell;
use std::rc::Rc;

use leptos::prelude::*;

use super::{bench, clear_error, report, report_error, run, ui};
use crate::diffusion::schedule::Schedule;
use crate::model::{Model, ModelFiles};
use crate::web::loader::{self, FetchError};

pub const NO_DEFAULT_MODEL: &str = "No default model is bundled in this build yet — load a \
diffusers UNet2DModel folder below (or open the page with ?model=<folder URL>).";

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

thread_local! {
    static MODEL: RefCell<Option<Rc<Model>>> = const { RefCell::new(None) };
}

/// The current model, if one is loaded.
pub fn model() -> Option<Rc<Model>> {
    MODEL.with(|m| m.borrow().clone())
}

/// Parse a model, make it current and start sampling (or the benchmark).
fn install(files: &ModelFiles, name: &str) {
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
    if bench::bench_mode() {
        wasm_bindgen_futures::spawn_local(bench::run_bench());
    } else {
        // `?bench=lab` times the lab's training on the same GPU queue: the sampler's
        // animation must not start by itself there (its U-Net steps, queued between the
        // lab's, were most of the 18.9 s per step measured on SwiftShader; docs/lab.md).
        run::rebuild(!super::lab::lab_bench_mode());
    }
}

/// Fetch a model folder and install it.
pub async fn load_from_url(base: String, is_default: bool) {
    let ui = ui();
    run::pause();
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
        Ok(files) => install(&files, &base),
        Err(FetchError::NotFound(url)) if is_default => {
            ui.model_name.set("(none)".into());
            ui.notice.set(Some(NO_DEFAULT_MODEL.into()));
            ui.status.set(NO_DEFAULT_MODEL.into());
            bench::report_failure(&format!("no model at {url}"));
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
        Ok(m) => install(&m, "local files"),
        Err(msg) => {
            ui.status.set("The model could not be loaded".into());
            report(msg);
        }
    }
}
