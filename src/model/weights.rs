//! UNet2DModel weights: the expected parameter list for a config, and loading/saving
//! safetensors files.
//!
//! Names are diffusers' current state-dict names. Checkpoints converted in 2022 use the old
//! `AttentionBlock` names (`query`, `key`, `value`, `proj_attn`); they are renamed on load
//! exactly as diffusers' `ModelMixin._fix_state_dict_keys_on_load` does.

use crate::model::config::UNetConfig;
use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::BTreeMap;

/// A resnet (`ResnetBlock2D`, "default" time-embedding injection) from `cin` to `cout`.
fn push_resnet(v: &mut Vec<(String, Vec<usize>)>, p: &str, cin: usize, cout: usize, temb: usize) {
    v.push((format!("{p}.norm1.weight"), vec![cin]));
    v.push((format!("{p}.norm1.bias"), vec![cin]));
    v.push((format!("{p}.conv1.weight"), vec![cout, cin, 3, 3]));
    v.push((format!("{p}.conv1.bias"), vec![cout]));
    v.push((format!("{p}.time_emb_proj.weight"), vec![cout, temb]));
    v.push((format!("{p}.time_emb_proj.bias"), vec![cout]));
    v.push((format!("{p}.norm2.weight"), vec![cout]));
    v.push((format!("{p}.norm2.bias"), vec![cout]));
    v.push((format!("{p}.conv2.weight"), vec![cout, cout, 3, 3]));
    v.push((format!("{p}.conv2.bias"), vec![cout]));
    // diffusers adds a 1×1 shortcut conv exactly when the channel count changes.
    if cin != cout {
        v.push((format!("{p}.conv_shortcut.weight"), vec![cout, cin, 1, 1]));
        v.push((format!("{p}.conv_shortcut.bias"), vec![cout]));
    }
}

/// A self-attention block (`Attention` with `_from_deprecated_attn_block`) over `c` channels.
/// q/k/v/out are `Linear(c, heads · head_dim)`; the config check guarantees that is `c`.
fn push_attention(v: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize, cfg: &UNetConfig) {
    let inner = cfg.heads(c) * cfg.head_dim(c);
    v.push((format!("{p}.group_norm.weight"), vec![c]));
    v.push((format!("{p}.group_norm.bias"), vec![c]));
    for n in ["to_q", "to_k", "to_v"] {
        v.push((format!("{p}.{n}.weight"), vec![inner, c]));
        v.push((format!("{p}.{n}.bias"), vec![inner]));
    }
    v.push((format!("{p}.to_out.0.weight"), vec![c, inner]));
    v.push((format!("{p}.to_out.0.bias"), vec![c]));
}

fn push_conv(v: &mut Vec<(String, Vec<usize>)>, p: &str, cin: usize, cout: usize) {
    v.push((format!("{p}.weight"), vec![cout, cin, 3, 3]));
    v.push((format!("{p}.bias"), vec![cout]));
}

/// Every parameter of a `UNet2DModel` with this config: (diffusers name, shape), in module
/// order. Matches `UNet2DModel(**config).state_dict()` (checked against diffusers 0.42.1).
pub fn expected_tensors(cfg: &UNetConfig) -> Vec<(String, Vec<usize>)> {
    let mut v = Vec::new();
    let ch = &cfg.block_out_channels;
    let n = ch.len();
    if n == 0 {
        return v;
    }
    let temb = cfg.time_embed_dim();
    push_conv(&mut v, "conv_in", cfg.in_channels, ch[0]);
    v.push(("time_embedding.linear_1.weight".into(), vec![temb, ch[0]]));
    v.push(("time_embedding.linear_1.bias".into(), vec![temb]));
    v.push(("time_embedding.linear_2.weight".into(), vec![temb, temb]));
    v.push(("time_embedding.linear_2.bias".into(), vec![temb]));
    if let Some(classes) = cfg.num_class_embeds {
        v.push(("class_embedding.weight".into(), vec![classes, temb]));
    }
    // Down path: block i maps ch[i-1] (ch[0] for i = 0) to ch[i].
    for (i, b) in cfg.down_block_types.iter().enumerate().take(n) {
        let cout = ch[i];
        for j in 0..cfg.layers_per_block {
            let cin = if j == 0 {
                ch[i.saturating_sub(1)]
            } else {
                cout
            };
            push_resnet(
                &mut v,
                &format!("down_blocks.{i}.resnets.{j}"),
                cin,
                cout,
                temb,
            );
            if b.has_attention() {
                push_attention(
                    &mut v,
                    &format!("down_blocks.{i}.attentions.{j}"),
                    cout,
                    cfg,
                );
            }
        }
        if i + 1 < n {
            push_conv(
                &mut v,
                &format!("down_blocks.{i}.downsamplers.0.conv"),
                cout,
                cout,
            );
        }
    }
    let last = ch[n - 1];
    push_resnet(&mut v, "mid_block.resnets.0", last, last, temb);
    if cfg.add_attention {
        push_attention(&mut v, "mid_block.attentions.0", last, cfg);
    }
    push_resnet(&mut v, "mid_block.resnets.1", last, last, temb);
    // Up path: block i works at ch[n-1-i]; resnet j concatenates a skip connection. The skips
    // are consumed in reverse order of production, hence the channel bookkeeping below
    // (diffusers `UNet2DModel.__init__` / `AttnUpBlock2D`).
    for (i, b) in cfg.up_block_types.iter().enumerate().take(n) {
        let cout = ch[n - 1 - i];
        // Output channels of the previous up block (the mid block for i = 0).
        let prev_out = ch[(n - i).min(n - 1)];
        let input_channel = ch[n - 1 - (i + 1).min(n - 1)];
        let layers = cfg.layers_per_block + 1;
        for j in 0..layers {
            let skip = if j == layers - 1 { input_channel } else { cout };
            let rin = if j == 0 { prev_out } else { cout };
            push_resnet(
                &mut v,
                &format!("up_blocks.{i}.resnets.{j}"),
                rin + skip,
                cout,
                temb,
            );
            if b.has_attention() {
                push_attention(&mut v, &format!("up_blocks.{i}.attentions.{j}"), cout, cfg);
            }
        }
        if i + 1 < n {
            push_conv(
                &mut v,
                &format!("up_blocks.{i}.upsamplers.0.conv"),
                cout,
                cout,
            );
        }
    }
    v.push(("conv_norm_out.weight".into(), vec![ch[0]]));
    v.push(("conv_norm_out.bias".into(), vec![ch[0]]));
    push_conv(&mut v, "conv_out", ch[0], cfg.out_channels);
    v
}

/// Named f32 tensors (row-major, PyTorch layout), keyed by diffusers name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a tensor; `data.len()` must equal the product of `shape`.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<()> {
        let name = name.into();
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(format!(
                "tensor {name}: shape {shape:?} holds {n} values but {} were given",
                data.len()
            )));
        }
        self.tensors.insert(name, (shape, data));
        Ok(())
    }

    /// The shape and values of a tensor.
    pub fn get(&self, name: &str) -> Result<(&[usize], &[f32])> {
        self.tensors
            .get(name)
            .map(|(s, d)| (s.as_slice(), d.as_slice()))
            .ok_or_else(|| Error::weights(format!("no tensor named {name}")))
    }

    /// Mutable values of a tensor (e.g. for an optimizer step).
    pub fn get_mut(&mut self, name: &str) -> Result<(&[usize], &mut [f32])> {
        self.tensors
            .get_mut(name)
            .map(|(s, d)| (s.as_slice(), d.as_mut_slice()))
            .ok_or_else(|| Error::weights(format!("no tensor named {name}")))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of scalars.
    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(|(_, d)| d.len()).sum()
    }
}

/// The current diffusers name of a tensor saved under a legacy (2022) `AttentionBlock` name.
fn canonical_name(name: &str) -> String {
    if name.contains(".attentions.") {
        for (old, new) in [
            (".query.", ".to_q."),
            (".key.", ".to_k."),
            (".value.", ".to_v."),
            (".proj_attn.", ".to_out.0."),
        ] {
            if let Some(pos) = name.rfind(old) {
                let tail = &name[pos + old.len()..];
                if tail == "weight" || tail == "bias" {
                    return format!("{}{}{}", &name[..pos], new, tail);
                }
            }
        }
    }
    name.to_string()
}

fn to_f32(name: &str, t: &TensorView<'_>) -> Result<Vec<f32>> {
    let bytes = t.data();
    let n: usize = t.shape().iter().product();
    let size = match t.dtype() {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => {
            return Err(Error::weights(format!(
                "tensor {name} has dtype {other:?}; only F32, F16 and BF16 are supported"
            )))
        }
    };
    if bytes.len() != n * size {
        return Err(Error::weights(format!(
            "tensor {name}: {} bytes of data for shape {:?}",
            bytes.len(),
            t.shape()
        )));
    }
    Ok(match t.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    })
}

/// Formats at most `max` items, then "… and N more".
fn list(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(", … and {} more", items.len() - max));
    }
    s
}

/// Loads a safetensors file (F32, F16 or BF16; converted to f32) and checks it against the
/// config: every expected tensor present with its shape, nothing else. All problems are
/// reported in one [`Error::Weights`].
pub fn load_weights(bytes: &[u8], cfg: &UNetConfig) -> Result<Weights> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        Error::weights(format!(
            "not a valid safetensors file ({} bytes; truncated or corrupt?): {e}",
            bytes.len()
        ))
    })?;
    let mut found: BTreeMap<String, (String, TensorView<'_>)> = BTreeMap::new();
    for (name, view) in st.iter() {
        let canon = canonical_name(name);
        if let Some((other, _)) = found.get(&canon) {
            return Err(Error::weights(format!(
                "tensors {other} and {name} both map to {canon}"
            )));
        }
        found.insert(canon, (name.to_string(), view));
    }
    let expected = expected_tensors(cfg);
    let mut missing = vec![];
    let mut misshapen = vec![];
    for (name, shape) in &expected {
        match found.get(name) {
            None => missing.push(name.clone()),
            Some((orig, t)) if t.shape() != shape.as_slice() => {
                misshapen.push(format!("{orig}: expected {shape:?}, found {:?}", t.shape()))
            }
            Some(_) => {}
        }
    }
    let expected_names: std::collections::HashSet<&str> =
        expected.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<String> = found
        .iter()
        .filter(|(canon, _)| !expected_names.contains(canon.as_str()))
        .map(|(_, (orig, t))| format!("{orig} {:?}", t.shape()))
        .collect();
    if !(missing.is_empty() && misshapen.is_empty() && unexpected.is_empty()) {
        let mut parts = vec![];
        if !missing.is_empty() {
            parts.push(format!("{} missing: {}", missing.len(), list(&missing, 8)));
        }
        if !unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected: {}",
                unexpected.len(),
                list(&unexpected, 8)
            ));
        }
        if !misshapen.is_empty() {
            parts.push(format!(
                "{} with the wrong shape: {}",
                misshapen.len(),
                list(&misshapen, 8)
            ));
        }
        return Err(Error::weights(format!(
            "the file does not match config.json ({} tensors expected, {} in the file): {}",
            expected.len(),
            found.len(),
            parts.join("; ")
        )));
    }
    let mut w = Weights::new();
    for (name, shape) in expected {
        let (orig, t) = &found[&name];
        let data = to_f32(orig, t)?;
        w.tensors.insert(name, (shape, data));
    }
    Ok(w)
}

/// Serializes weights as an F32 safetensors file (diffusers-loadable with a matching
/// `config.json`).
pub fn save_weights(w: &Weights) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .tensors
        .iter()
        .map(|(name, (shape, data))| {
            let b = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name.clone(), shape.clone(), b)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.as_str(), v))
                .map_err(|e| Error::weights(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| Error::weights(format!("could not serialize weights: {e}")))
}
