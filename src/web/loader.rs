//! Getting model files into the page: fetch from a folder URL (with progress, read through
//! the response's ReadableStream) or read files the user picked or dropped.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::model::ModelFiles;

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
pub const SCHEDULER: &str = "scheduler_config.json";

/// Why fetching a model folder failed.
pub enum FetchError {
    /// config.json answered 404: there is no model at that address.
    NotFound(String),
    Other(String),
}

fn js_msg(e: JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// `base` + `name`, with exactly one slash between them.
pub fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else if base.ends_with('/') {
        format!("{base}{name}")
    } else {
        format!("{base}/{name}")
    }
}

async fn response(url: &str) -> Result<web_sys::Response, String> {
    let window = web_sys::window().ok_or("no window")?;
    let resp = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("{url}: the request failed ({})", js_msg(e)))?;
    resp.dyn_into::<web_sys::Response>()
        .map_err(|_| format!("{url}: not an HTTP response"))
}

/// The body of `url` as text; None on 404.
pub async fn text(url: &str) -> Result<Option<String>, String> {
    let resp = response(url).await?;
    if resp.status() == 404 {
        return Ok(None);
    }
    if !resp.ok() {
        return Err(format!(
            "{url}: HTTP {} {}",
            resp.status(),
            resp.status_text()
        ));
    }
    let t = JsFuture::from(resp.text().map_err(js_msg)?)
        .await
        .map_err(|e| format!("{url}: {}", js_msg(e)))?;
    Ok(t.as_string())
}

/// Download `url` as bytes, calling `progress(received, total)` as chunks arrive.
async fn bytes(url: &str, progress: &dyn Fn(u64, Option<u64>)) -> Result<Vec<u8>, String> {
    let resp = response(url).await?;
    if !resp.ok() {
        return Err(format!(
            "{url}: HTTP {} {}",
            resp.status(),
            resp.status_text()
        ));
    }
    let total = resp
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u64>().ok());
    let mut out: Vec<u8> = Vec::with_capacity(total.unwrap_or(0).min(1 << 30) as usize);
    let Some(body) = resp.body() else {
        return Ok(out);
    };
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("{url}: download interrupted ({})", js_msg(e)))?;
        let done = Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true);
        if done {
            break;
        }
        let value = Reflect::get(&chunk, &"value".into()).map_err(js_msg)?;
        let arr: Uint8Array = value.unchecked_into();
        let start = out.len();
        out.resize(start + arr.length() as usize, 0);
        arr.copy_to(&mut out[start..]);
        progress(out.len() as u64, total);
    }
    Ok(out)
}

/// Fetch config.json, the weights (with progress) and scheduler_config.json (optional) from
/// a folder URL.
pub async fn fetch_model(
    base: &str,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<ModelFiles, FetchError> {
    let config_url = join(base, CONFIG);
    let config_json = match text(&config_url).await.map_err(FetchError::Other)? {
        Some(t) => t,
        None => return Err(FetchError::NotFound(config_url)),
    };
    let scheduler_json = text(&join(base, SCHEDULER))
        .await
        .map_err(FetchError::Other)?;
    let weights = bytes(&join(base, WEIGHTS), progress)
        .await
        .map_err(FetchError::Other)?;
    Ok(ModelFiles {
        config_json,
        weights,
        scheduler_json,
    })
}

/// Read one picked/dropped file as bytes.
pub async fn file_bytes(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("{}: could not be read ({})", file.name(), js_msg(e)))?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// Sort picked/dropped files into a model by their names. Any `*.safetensors` counts as the
/// weights; config.json is required.
pub async fn model_from_files(files: &web_sys::FileList) -> Result<ModelFiles, String> {
    let mut config = None;
    let mut weights = None;
    let mut scheduler = None;
    let mut ignored = Vec::new();
    for i in 0..files.length() {
        let Some(f) = files.get(i) else { continue };
        let name = f.name();
        if name == CONFIG {
            config = Some(f);
        } else if name == SCHEDULER {
            scheduler = Some(f);
        } else if name.ends_with(".safetensors") {
            weights = Some(f);
        } else {
            ignored.push(name);
        }
    }
    let missing: Vec<&str> = [
        (config.is_none(), CONFIG),
        (weights.is_none(), "a .safetensors weights file"),
    ]
    .iter()
    .filter(|(m, _)| *m)
    .map(|(_, n)| *n)
    .collect();
    if !missing.is_empty() {
        let mut msg = format!(
            "Missing {}. Pick or drop config.json, diffusion_pytorch_model.safetensors and \
             (optionally) scheduler_config.json together.",
            missing.join(" and ")
        );
        if !ignored.is_empty() {
            msg += &format!(" Ignored: {}.", ignored.join(", "));
        }
        return Err(msg);
    }
    let as_text = |b: Vec<u8>, name: &str| {
        String::from_utf8(b).map_err(|_| format!("{name} is not UTF-8 text"))
    };
    let config_json = as_text(file_bytes(config.as_ref().unwrap()).await?, CONFIG)?;
    let scheduler_json = match &scheduler {
        Some(f) => Some(as_text(file_bytes(f).await?, SCHEDULER)?),
        None => None,
    };
    let weights = file_bytes(weights.as_ref().unwrap()).await?;
    Ok(ModelFiles {
        config_json,
        weights,
        scheduler_json,
    })
}
