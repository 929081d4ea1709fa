//! Form rows shared by the toolbox and the likelihood panel: a labelled number input bound
//! to a signal (parsed, clamped), a class select with “none” (the null class), a picker
//! of the embedded digits or an uploaded image, an upload input and run/stop buttons. One place for the markup and the parsing,
//! so every panel's fields behave alike.

use std::str::FromStr;

use leptos::prelude::*;

use crate::web::engine;
use crate::web::forward::{self, Image};

fn parse_or<T: FromStr>(s: &str, default: T) -> T {
    s.trim().parse().unwrap_or(default)
}

/// `v` clamped to `[lo, hi]` (`hi` wins when `hi < lo`, as a shrinking range should).
fn clamp<T: PartialOrd>(v: T, lo: T, hi: Option<T>) -> T {
    let v = if v < lo { lo } else { v };
    match hi {
        Some(hi) if v > hi => hi,
        _ => v,
    }
}

/// A `<label>` + `<input type=number>` pair for a `.fields` grid, bound to `value`: a value
/// that does not parse becomes `default`, and every value is clamped to `[min, max]`.
pub struct NumberField<T: Send + Sync + 'static> {
    id: &'static str,
    label: &'static str,
    value: RwSignal<T>,
    default: T,
    min: T,
    max: Option<Signal<T>>,
    /// `step` attribute for fractional fields; integer fields get `inputmode=numeric`.
    step: Option<&'static str>,
    disabled: Signal<bool>,
    hidden: Signal<bool>,
}

impl<T> NumberField<T>
where
    T: FromStr + ToString + PartialOrd + Copy + Send + Sync + 'static,
{
    pub fn new(
        id: &'static str,
        label: &'static str,
        value: RwSignal<T>,
        default: T,
        min: T,
    ) -> Self {
        NumberField {
            id,
            label,
            value,
            default,
            min,
            max: None,
            step: None,
            disabled: Signal::from(false),
            hidden: Signal::from(false),
        }
    }

    /// Largest value (also the input's `max` attribute).
    pub fn max(mut self, max: impl Fn() -> T + Send + Sync + 'static) -> Self {
        self.max = Some(Signal::derive(max));
        self
    }

    /// A fractional field with this `step`.
    pub fn step(mut self, step: &'static str) -> Self {
        self.step = Some(step);
        self
    }

    pub fn disabled(mut self, when: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.disabled = Signal::derive(when);
        self
    }

    /// Hide both the label and the input.
    pub fn hidden(mut self, when: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.hidden = Signal::derive(when);
        self
    }

    pub fn view(self) -> impl IntoView {
        let NumberField {
            id,
            label,
            value,
            default,
            min,
            max,
            step,
            disabled,
            hidden,
        } = self;
        view! {
            <label for=id hidden=move || hidden.get()>{label}</label>
            <input id=id type="number" min=min.to_string()
                max=move || max.map(|m| m.get().to_string())
                step=step
                inputmode=if step.is_some() { "decimal" } else { "numeric" }
                hidden=move || hidden.get()
                disabled=move || disabled.get()
                prop:value=move || value.get().to_string()
                on:change=move |ev| {
                    let v = parse_or(&event_target_value(&ev), default);
                    value.set(clamp(v, min, max.map(|m| m.get_untracked())));
                }/>
        }
    }
}

/// A `<label>` + `<select>` of the model's classes with “none (unconditional)” (the null
/// class) first, bound to `value` ("none" or the class number). Disabled for models
/// without classes.
pub fn class_select(
    id: &'static str,
    label: &'static str,
    classes: impl Fn() -> Option<usize> + Copy + Send + Sync + 'static,
    value: RwSignal<String>,
) -> impl IntoView {
    // Each option says itself whether it is selected: the class options appear only once a
    // model is loaded, and a select's value set before its options exist would be lost.
    let options = move || {
        (0..classes().unwrap_or(0))
            .map(|c| {
                let v = c.to_string();
                let v2 = v.clone();
                view! { <option value=v prop:selected=move || value.get() == v2>{c.to_string()}</option> }
            })
            .collect_view()
    };
    view! {
        <label for=id>{label}</label>
        <select id=id disabled=move || classes().is_none()
            prop:value=move || value.get()
            on:change=move |ev| value.set(event_target_value(&ev))>
            <option value="none" prop:selected=move || value.get() == "none">"none (unconditional)"</option>
            {options}
        </select>
    }
}

/// The class a `class_select` value stands for: `None` = the null class.
pub fn class_of(value: &str) -> Option<u32> {
    value.parse().ok()
}

/// The `<option>`s of an image picker: the ten embedded digits ("0"…"9"), then `extra`
/// (value, text, available?) entries such as an uploaded image.
pub fn digit_options(extra: Vec<(&'static str, &'static str, Signal<bool>)>) -> impl IntoView {
    view! {
        {(0..10).map(|k| view! { <option value=k.to_string()>{format!("MNIST digit {k}")}</option> }).collect_view()}
        {extra.into_iter().map(|(v, text, ok)| view! {
            <option value=v disabled=move || !ok.get()>{text}</option>
        }).collect_view()}
    }
}

/// A file input for one picture: decoded and handed to `on_image`; a file that is not a
/// readable picture goes to the page's error box.
pub fn upload_input(id: &'static str, on_image: impl Fn(Image) + Copy + 'static) -> impl IntoView {
    view! {
        <input id=id type="file" accept="image/*"
            on:change=move |ev| {
                let input = event_target::<web_sys::HtmlInputElement>(&ev);
                if let Some(f) = input.files().and_then(|f| f.get(0)) {
                    wasm_bindgen_futures::spawn_local(async move {
                        match forward::decode_upload(&f).await {
                            Ok(img) => on_image(img),
                            Err(e) => engine::report(e),
                        }
                    });
                }
            }/>
    }
}

/// A tool's primary run button and its stop button: run is disabled while `blocked()` (no
/// model) or while `running()`, stop while not running.
pub fn run_stop(
    (run_id, run_text): (&'static str, &'static str),
    (stop_id, stop_text): (&'static str, &'static str),
    blocked: impl Fn() -> bool + Copy + Send + Sync + 'static,
    running: impl Fn() -> bool + Copy + Send + Sync + 'static,
    on_run: impl Fn() + 'static,
    on_stop: impl Fn() + 'static,
) -> impl IntoView {
    view! {
        <div class="buttons">
            <button id=run_id type="button" class="primary" disabled=move || blocked() || running()
                on:click=move |_| on_run()>{run_text}</button>
            <button id=stop_id type="button" disabled=move || !running()
                on:click=move |_| on_stop()>{stop_text}</button>
        </div>
    }
}
