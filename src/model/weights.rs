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

    /// Deterministic random weights for `cfg` (for benchmarks and tests): PyTorch's default
    /// initialisation, U(−1/√fan_in, 1/√fan_in) for conv/linear weights and biases, N(0, 1)-like
    /// rows for embeddings, and the identity affine (γ = 1, β = 0) for group norms.
    pub fn random(cfg: &UNetConfig, seed: u64) -> Weights {
        let mut rng = crate::rng::SplitMix64(seed ^ 0x9E37_79B9_7F4A_7C15);
        let mut next = move || rng.next_f64() * 2.0 - 1.0;
        let mut w = Weights::new();
        for (name, shape) in expected_tensors(cfg) {
            let n: usize = shape.iter().product();
            let is_norm = name.contains("norm");
            let data: Vec<f32> = if is_norm {
                vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
            } else if name.starts_with("class_embedding") {
                (0..n).map(|_| next() as f32 * 1.7).collect()
            } else {
                // fan_in of the layer this tensor belongs to: its weight's size / out features.
                let fan_in = if shape.len() > 1 {
                    shape[1..].iter().product::<usize>()
                } else {
                    n.max(1)
                };
                let bound = 1.0 / (fan_in as f64).sqrt();
                (0..n).map(|_| (next() * bound) as f32).collect()
            };
            w.tensors.insert(name, (shape, data));
        }
        w
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
    let mut non_finite = vec![];
    for (name, shape) in expected {
        let (orig, t) = &found[&name];
        let data = to_f32(orig, t)?;
        let bad = data.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            non_finite.push(format!("{orig} ({bad} of {})", data.len()));
        }
        w.tensors.insert(name, (shape, data));
    }
    // NaN/Inf weights (a diverged training run, a broken conversion) would only show up as
    // NaN samples after a whole sampling run; name the tensors instead.
    if !non_finite.is_empty() {
        return Err(Error::weights(format!(
            "{} tensors hold NaN or Inf values: {}",
            non_finite.len(),
            list(&non_finite, 8)
        )));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{DownBlockType::*, UpBlockType::*};

    /// `UNet2DModel(sample_size=8, in_channels=3, out_channels=2, block_out_channels=(8, 12),
    /// down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D",
    /// "UpBlock2D"), layers_per_block=1, norm_num_groups=4, attention_head_dim=4,
    /// num_class_embeds=3).state_dict()`, diffusers 0.42.1: "name shape" per line.
    const TINY_KEYS: &str = "
conv_in.weight 8x3x3x3
conv_in.bias 8
time_embedding.linear_1.weight 32x8
time_embedding.linear_1.bias 32
time_embedding.linear_2.weight 32x32
time_embedding.linear_2.bias 32
class_embedding.weight 3x32
down_blocks.0.resnets.0.norm1.weight 8
down_blocks.0.resnets.0.norm1.bias 8
down_blocks.0.resnets.0.conv1.weight 8x8x3x3
down_blocks.0.resnets.0.conv1.bias 8
down_blocks.0.resnets.0.time_emb_proj.weight 8x32
down_blocks.0.resnets.0.time_emb_proj.bias 8
down_blocks.0.resnets.0.norm2.weight 8
down_blocks.0.resnets.0.norm2.bias 8
down_blocks.0.resnets.0.conv2.weight 8x8x3x3
down_blocks.0.resnets.0.conv2.bias 8
down_blocks.0.downsamplers.0.conv.weight 8x8x3x3
down_blocks.0.downsamplers.0.conv.bias 8
down_blocks.1.attentions.0.group_norm.weight 12
down_blocks.1.attentions.0.group_norm.bias 12
down_blocks.1.attentions.0.to_q.weight 12x12
down_blocks.1.attentions.0.to_q.bias 12
down_blocks.1.attentions.0.to_k.weight 12x12
down_blocks.1.attentions.0.to_k.bias 12
down_blocks.1.attentions.0.to_v.weight 12x12
down_blocks.1.attentions.0.to_v.bias 12
down_blocks.1.attentions.0.to_out.0.weight 12x12
down_blocks.1.attentions.0.to_out.0.bias 12
down_blocks.1.resnets.0.norm1.weight 8
down_blocks.1.resnets.0.norm1.bias 8
down_blocks.1.resnets.0.conv1.weight 12x8x3x3
down_blocks.1.resnets.0.conv1.bias 12
down_blocks.1.resnets.0.time_emb_proj.weight 12x32
down_blocks.1.resnets.0.time_emb_proj.bias 12
down_blocks.1.resnets.0.norm2.weight 12
down_blocks.1.resnets.0.norm2.bias 12
down_blocks.1.resnets.0.conv2.weight 12x12x3x3
down_blocks.1.resnets.0.conv2.bias 12
down_blocks.1.resnets.0.conv_shortcut.weight 12x8x1x1
down_blocks.1.resnets.0.conv_shortcut.bias 12
up_blocks.0.attentions.0.group_norm.weight 12
up_blocks.0.attentions.0.group_norm.bias 12
up_blocks.0.attentions.0.to_q.weight 12x12
up_blocks.0.attentions.0.to_q.bias 12
up_blocks.0.attentions.0.to_k.weight 12x12
up_blocks.0.attentions.0.to_k.bias 12
up_blocks.0.attentions.0.to_v.weight 12x12
up_blocks.0.attentions.0.to_v.bias 12
up_blocks.0.attentions.0.to_out.0.weight 12x12
up_blocks.0.attentions.0.to_out.0.bias 12
up_blocks.0.attentions.1.group_norm.weight 12
up_blocks.0.attentions.1.group_norm.bias 12
up_blocks.0.attentions.1.to_q.weight 12x12
up_blocks.0.attentions.1.to_q.bias 12
up_blocks.0.attentions.1.to_k.weight 12x12
up_blocks.0.attentions.1.to_k.bias 12
up_blocks.0.attentions.1.to_v.weight 12x12
up_blocks.0.attentions.1.to_v.bias 12
up_blocks.0.attentions.1.to_out.0.weight 12x12
up_blocks.0.attentions.1.to_out.0.bias 12
up_blocks.0.resnets.0.norm1.weight 24
up_blocks.0.resnets.0.norm1.bias 24
up_blocks.0.resnets.0.conv1.weight 12x24x3x3
up_blocks.0.resnets.0.conv1.bias 12
up_blocks.0.resnets.0.time_emb_proj.weight 12x32
up_blocks.0.resnets.0.time_emb_proj.bias 12
up_blocks.0.resnets.0.norm2.weight 12
up_blocks.0.resnets.0.norm2.bias 12
up_blocks.0.resnets.0.conv2.weight 12x12x3x3
up_blocks.0.resnets.0.conv2.bias 12
up_blocks.0.resnets.0.conv_shortcut.weight 12x24x1x1
up_blocks.0.resnets.0.conv_shortcut.bias 12
up_blocks.0.resnets.1.norm1.weight 20
up_blocks.0.resnets.1.norm1.bias 20
up_blocks.0.resnets.1.conv1.weight 12x20x3x3
up_blocks.0.resnets.1.conv1.bias 12
up_blocks.0.resnets.1.time_emb_proj.weight 12x32
up_blocks.0.resnets.1.time_emb_proj.bias 12
up_blocks.0.resnets.1.norm2.weight 12
up_blocks.0.resnets.1.norm2.bias 12
up_blocks.0.resnets.1.conv2.weight 12x12x3x3
up_blocks.0.resnets.1.conv2.bias 12
up_blocks.0.resnets.1.conv_shortcut.weight 12x20x1x1
up_blocks.0.resnets.1.conv_shortcut.bias 12
up_blocks.0.upsamplers.0.conv.weight 12x12x3x3
up_blocks.0.upsamplers.0.conv.bias 12
up_blocks.1.resnets.0.norm1.weight 20
up_blocks.1.resnets.0.norm1.bias 20
up_blocks.1.resnets.0.conv1.weight 8x20x3x3
up_blocks.1.resnets.0.conv1.bias 8
up_blocks.1.resnets.0.time_emb_proj.weight 8x32
up_blocks.1.resnets.0.time_emb_proj.bias 8
up_blocks.1.resnets.0.norm2.weight 8
up_blocks.1.resnets.0.norm2.bias 8
up_blocks.1.resnets.0.conv2.weight 8x8x3x3
up_blocks.1.resnets.0.conv2.bias 8
up_blocks.1.resnets.0.conv_shortcut.weight 8x20x1x1
up_blocks.1.resnets.0.conv_shortcut.bias 8
up_blocks.1.resnets.1.norm1.weight 16
up_blocks.1.resnets.1.norm1.bias 16
up_blocks.1.resnets.1.conv1.weight 8x16x3x3
up_blocks.1.resnets.1.conv1.bias 8
up_blocks.1.resnets.1.time_emb_proj.weight 8x32
up_blocks.1.resnets.1.time_emb_proj.bias 8
up_blocks.1.resnets.1.norm2.weight 8
up_blocks.1.resnets.1.norm2.bias 8
up_blocks.1.resnets.1.conv2.weight 8x8x3x3
up_blocks.1.resnets.1.conv2.bias 8
up_blocks.1.resnets.1.conv_shortcut.weight 8x16x1x1
up_blocks.1.resnets.1.conv_shortcut.bias 8
mid_block.attentions.0.group_norm.weight 12
mid_block.attentions.0.group_norm.bias 12
mid_block.attentions.0.to_q.weight 12x12
mid_block.attentions.0.to_q.bias 12
mid_block.attentions.0.to_k.weight 12x12
mid_block.attentions.0.to_k.bias 12
mid_block.attentions.0.to_v.weight 12x12
mid_block.attentions.0.to_v.bias 12
mid_block.attentions.0.to_out.0.weight 12x12
mid_block.attentions.0.to_out.0.bias 12
mid_block.resnets.0.norm1.weight 12
mid_block.resnets.0.norm1.bias 12
mid_block.resnets.0.conv1.weight 12x12x3x3
mid_block.resnets.0.conv1.bias 12
mid_block.resnets.0.time_emb_proj.weight 12x32
mid_block.resnets.0.time_emb_proj.bias 12
mid_block.resnets.0.norm2.weight 12
mid_block.resnets.0.norm2.bias 12
mid_block.resnets.0.conv2.weight 12x12x3x3
mid_block.resnets.0.conv2.bias 12
mid_block.resnets.1.norm1.weight 12
mid_block.resnets.1.norm1.bias 12
mid_block.resnets.1.conv1.weight 12x12x3x3
mid_block.resnets.1.conv1.bias 12
mid_block.resnets.1.time_emb_proj.weight 12x32
mid_block.resnets.1.time_emb_proj.bias 12
mid_block.resnets.1.norm2.weight 12
mid_block.resnets.1.norm2.bias 12
mid_block.resnets.1.conv2.weight 12x12x3x3
mid_block.resnets.1.conv2.bias 12
conv_norm_out.weight 8
conv_norm_out.bias 8
conv_out.weight 2x8x3x3
conv_out.bias 2
";

    fn tiny() -> UNetConfig {
        UNetConfig {
            sample_size: [8, 8],
            in_channels: 3,
            out_channels: 2,
            block_out_channels: vec![8, 12],
            down_block_types: vec![DownBlock2D, AttnDownBlock2D],
            up_block_types: vec![AttnUpBlock2D, UpBlock2D],
            layers_per_block: 1,
            norm_num_groups: 4,
            attention_head_dim: Some(4),
            num_class_embeds: Some(3),
            ..UNetConfig::default()
        }
    }

    #[test]
    fn expected_tensors_match_diffusers_tiny() {
        let mut want: Vec<(String, Vec<usize>)> = TINY_KEYS
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, s) = l.split_once(' ').unwrap();
                (
                    n.to_string(),
                    s.split('x').map(|d| d.parse().unwrap()).collect(),
                )
            })
            .collect();
        assert_eq!(want.len(), 145);
        let mut got = expected_tensors(&tiny());
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(tiny().parameter_count(), 30206);
    }

    #[test]
    fn expected_tensors_counts_match_diffusers() {
        // (tensor count, parameter count) of diffusers 0.42.1 state_dicts.
        let mnist = UNetConfig {
            sample_size: [28, 28],
            in_channels: 1,
            out_channels: 1,
            block_out_channels: vec![32, 64, 64],
            down_block_types: vec![DownBlock2D, AttnDownBlock2D, DownBlock2D],
            up_block_types: vec![UpBlock2D, AttnUpBlock2D, UpBlock2D],
            layers_per_block: 1,
            norm_num_groups: 8,
            attention_head_dim: None,
            num_class_embeds: Some(10),
            ..UNetConfig::default()
        };
        let cifar = UNetConfig {
            block_out_channels: vec![128, 256, 256, 256],
            down_block_types: vec![DownBlock2D, AttnDownBlock2D, DownBlock2D, DownBlock2D],
            up_block_types: vec![UpBlock2D, UpBlock2D, AttnUpBlock2D, UpBlock2D],
            attention_head_dim: None,
            ..UNetConfig::default()
        };
        let no_mid_attn = UNetConfig {
            sample_size: [16, 16],
            block_out_channels: vec![32, 64],
            down_block_types: vec![AttnDownBlock2D, AttnDownBlock2D],
            up_block_types: vec![AttnUpBlock2D, AttnUpBlock2D],
            layers_per_block: 3,
            norm_num_groups: 16,
            add_attention: false,
            time_embedding_dim: Some(96),
            ..UNetConfig::default()
        };
        for (cfg, tensors, params) in [
            (&mnist, 183, 1_114_081),
            (&cifar, 328, 35_746_307),
            (&no_mid_attn, 332, 1_282_659),
        ] {
            cfg.validate().unwrap();
            assert_eq!(expected_tensors(cfg).len(), tensors);
            assert_eq!(cfg.parameter_count(), params);
        }
        let e = expected_tensors(&mnist);
        let find = |n: &str| e.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone());
        assert_eq!(
            find("up_blocks.1.resnets.1.conv_shortcut.weight"),
            Some(vec![64, 96, 1, 1])
        );
        assert_eq!(find("class_embedding.weight"), Some(vec![10, 128]));
        assert_eq!(
            find("mid_block.attentions.0.to_out.0.weight"),
            Some(vec![64, 64])
        );
        assert_eq!(
            find("up_blocks.0.upsamplers.0.conv.weight"),
            Some(vec![64, 64, 3, 3])
        );
        assert_eq!(find("down_blocks.2.downsamplers.0.conv.weight"), None);
    }

    /// Deterministic weights for `cfg`, value i·1e-3 + tensor index.
    fn synthetic(cfg: &UNetConfig) -> Weights {
        let mut w = Weights::new();
        for (k, (name, shape)) in expected_tensors(cfg).into_iter().enumerate() {
            let n: usize = shape.iter().product();
            let data = (0..n).map(|i| k as f32 + i as f32 * 1e-3).collect();
            w.insert(name, shape, data).unwrap();
        }
        w
    }

    #[test]
    fn save_load_round_trip() {
        let cfg = tiny();
        let w = synthetic(&cfg);
        let bytes = save_weights(&w).unwrap();
        let back = load_weights(&bytes, &cfg).unwrap();
        assert_eq!(back, w);
        let (shape, data) = back.get("down_blocks.1.attentions.0.to_q.weight").unwrap();
        assert_eq!(shape, &[12, 12]);
        assert_eq!(data.len(), 144);
        assert!(back.get("nope").is_err());
        assert_eq!(back.parameter_count(), 30206);
    }

    /// Builds a safetensors file from (name, dtype, shape, bytes).
    fn file(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::tensor::serialize(views, None).unwrap()
    }

    fn legacy_name(n: &str) -> String {
        n.replace(".to_q.", ".query.")
            .replace(".to_k.", ".key.")
            .replace(".to_v.", ".value.")
            .replace(".to_out.0.", ".proj_attn.")
    }

    #[test]
    fn loads_half_precision_and_legacy_attention_names() {
        let cfg = tiny();
        let w = synthetic(&cfg);
        for (k, dtype) in [Dtype::F16, Dtype::BF16].into_iter().enumerate() {
            let tensors: Vec<_> = w
                .tensors
                .iter()
                .map(|(n, (s, d))| {
                    let bytes: Vec<u8> = d
                        .iter()
                        .flat_map(|&x| match dtype {
                            Dtype::F16 => half::f16::from_f32(x).to_le_bytes(),
                            _ => half::bf16::from_f32(x).to_le_bytes(),
                        })
                        .collect();
                    // The F16 file uses the 2022 attention names.
                    let name = if k == 0 { legacy_name(n) } else { n.clone() };
                    (name, dtype, s.clone(), bytes)
                })
                .collect();
            assert!(k != 0 || tensors.iter().any(|t| t.0.contains(".proj_attn.")));
            let back = load_weights(&file(&tensors), &cfg).unwrap();
            assert_eq!(back.len(), w.len());
            // f16: 11-bit mantissa; bf16: 8-bit. Values are < 145.
            let rtol = if dtype == Dtype::F16 { 1e-3 } else { 8e-3 };
            for (name, (s, d)) in &w.tensors {
                let (s2, d2) = back.get(name).unwrap();
                assert_eq!(s.as_slice(), s2);
                for (a, b) in d.iter().zip(d2) {
                    assert!((a - b).abs() <= rtol * a.abs() + 1e-6, "{name}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn reports_all_problems_in_one_error() {
        let cfg = tiny();
        let w = synthetic(&cfg);
        let mut tensors: Vec<_> = w
            .tensors
            .iter()
            .filter(|(n, _)| !n.starts_with("conv_out") && !n.contains("time_emb_proj"))
            .map(|(n, (s, d))| {
                let mut s = s.clone();
                let mut d = d.clone();
                if n == "conv_in.weight" {
                    s = vec![8, 1, 3, 3];
                    d.truncate(72);
                }
                let b = d.iter().flat_map(|x| x.to_le_bytes()).collect();
                (n.clone(), Dtype::F32, s, b)
            })
            .collect();
        tensors.push(("extra.weight".into(), Dtype::F32, vec![2], vec![0; 8]));
        let e = load_weights(&file(&tensors), &cfg).unwrap_err();
        let Error::Weights(m) = e else {
            panic!("{e:?}")
        };
        // 2 conv_out + 8 resnets × 2 time_emb_proj; the list is cut after 8 names.
        assert!(m.contains("18 missing"), "{m}");
        assert!(
            m.contains("mid_block.resnets.0.time_emb_proj.weight") && m.contains("… and 10 more"),
            "{m}"
        );
        assert!(m.contains("1 unexpected: extra.weight [2]"), "{m}");
        assert!(
            m.contains("conv_in.weight: expected [8, 3, 3, 3], found [8, 1, 3, 3]"),
            "{m}"
        );
        // Unsupported dtype.
        let mut tensors: Vec<_> = w
            .tensors
            .iter()
            .map(|(n, (s, d))| {
                (
                    n.clone(),
                    Dtype::F32,
                    s.clone(),
                    d.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                )
            })
            .collect();
        let t = tensors.iter_mut().find(|t| t.0 == "conv_out.bias").unwrap();
        t.1 = Dtype::I32;
        let e = load_weights(&file(&tensors), &cfg).unwrap_err();
        assert!(
            e.to_string().contains("conv_out.bias") && e.to_string().contains("I32"),
            "{e}"
        );
    }

    #[test]
    fn truncated_or_corrupt_files_are_errors() {
        let cfg = tiny();
        let bytes = save_weights(&synthetic(&cfg)).unwrap();
        for len in [0, 1, 7, 8, 9, 20, 100, bytes.len() / 2, bytes.len() - 1] {
            let e = load_weights(&bytes[..len], &cfg).unwrap_err();
            assert!(matches!(e, Error::Weights(_)), "len {len}: {e:?}");
        }
        // Flip bytes throughout the 8-byte length and the JSON header.
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut errors = 0;
        for pos in (0..8 + header_len).step_by(7) {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[pos] ^= mask;
                // Either a clean error or (if the flip hit a harmless byte, e.g. inside a
                // metadata string) a successful load; never a panic.
                if let Err(e) = load_weights(&b, &cfg) {
                    assert!(matches!(e, Error::Weights(_)), "pos {pos}: {e:?}");
                    errors += 1;
                }
            }
        }
        // Most flips corrupt the JSON, a name, a shape or an offset.
        assert!(errors > (8 + header_len) / 7 * 3 / 2, "{errors}");
        // Extra trailing bytes are also rejected by safetensors.
        let mut b = bytes.clone();
        b.extend_from_slice(&[0; 3]);
        assert!(load_weights(&b, &cfg).is_err());
    }

    #[test]
    fn insert_checks_length() {
        let mut w = Weights::new();
        assert!(w.insert("a", vec![2, 3], vec![0.0; 5]).is_err());
        w.insert("a", vec![2, 3], vec![0.0; 6]).unwrap();
        w.get_mut("a").unwrap().1[0] = 1.0;
        assert_eq!(w.get("a").unwrap().1[0], 1.0);
    }
}
