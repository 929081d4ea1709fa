//! `UNet2DModel` configuration, parsed from a diffusers `config.json`.
//!
//! Only the subset of `UNet2DModel` this crate implements is accepted: positional timestep
//! embeddings, (Attn)DownBlock2D / (Attn)UpBlock2D with conv down/upsampling, `UNetMidBlock2D`,
//! SiLU, "default" time-embedding injection and optional class embeddings via
//! `num_class_embeds`. Anything else is an [`Error::Config`] naming the field, never a silent
//! approximation. Defaults for absent keys are those of diffusers' `UNet2DModel.__init__`.

use crate::{Error, Result};
use serde_json::{json, Map, Value};

/// A down block of `UNet2DModel` (diffusers `unet_2d_blocks.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownBlockType {
    /// `layers_per_block` resnets (+ a stride-2 conv downsampler unless the last block).
    DownBlock2D,
    /// As `DownBlock2D` with a self-attention block after every resnet.
    AttnDownBlock2D,
}

/// An up block of `UNet2DModel`; it has `layers_per_block + 1` resnets, each taking a skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpBlockType {
    /// Resnets (+ nearest ×2 upsampling and a 3×3 conv unless the last block).
    UpBlock2D,
    /// As `UpBlock2D` with a self-attention block after every resnet.
    AttnUpBlock2D,
}

impl DownBlockType {
    pub fn has_attention(self) -> bool {
        matches!(self, DownBlockType::AttnDownBlock2D)
    }
    pub fn name(self) -> &'static str {
        match self {
            DownBlockType::DownBlock2D => "DownBlock2D",
            DownBlockType::AttnDownBlock2D => "AttnDownBlock2D",
        }
    }
}

impl UpBlockType {
    pub fn has_attention(self) -> bool {
        matches!(self, UpBlockType::AttnUpBlock2D)
    }
    pub fn name(self) -> &'static str {
        match self {
            UpBlockType::UpBlock2D => "UpBlock2D",
            UpBlockType::AttnUpBlock2D => "AttnUpBlock2D",
        }
    }
}

/// diffusers `UNet2DModel` config (the supported subset). Field names follow `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    /// (height, width). `config.json` holds an int (square) or `[h, w]`.
    pub sample_size: [usize; 2],
    pub in_channels: usize,
    pub out_channels: usize,
    /// If true the model maps its input x to 2x − 1 first.
    pub center_input_sample: bool,
    /// Always "positional" (sinusoidal `Timesteps`).
    pub time_embedding_type: String,
    /// `downscale_freq_shift` of the sinusoidal embedding: exponent = −ln(10000)·i/(half − shift).
    pub freq_shift: f64,
    /// If true the embedding is [cos, sin], else [sin, cos].
    pub flip_sin_to_cos: bool,
    pub down_block_types: Vec<DownBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    /// `output_scale_factor` of the mid-block resnets and attention (outputs are divided by it).
    pub mid_block_scale_factor: f64,
    /// 1: 3×3 stride-2 conv with padding 1; 0: zero-pad right/bottom by one, then no padding
    /// (diffusers `Downsample2D`).
    pub downsample_padding: usize,
    /// Always "conv".
    pub downsample_type: String,
    /// Always "conv".
    pub upsample_type: String,
    /// Training only; ignored at inference.
    pub dropout: f64,
    /// Always "silu".
    pub act_fn: String,
    /// Per-head dimension; `None` (JSON null) means one head per attention block. diffusers'
    /// default when the key is absent is 8.
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: usize,
    /// Groups of the mid-block attention's GroupNorm; `None` → `norm_num_groups`. (Attention in
    /// down/up blocks always uses `norm_num_groups`, as in diffusers.)
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    /// Always "default" (time embedding added after conv1).
    pub resnet_time_scale_shift: String,
    /// Whether the mid block has its attention layer.
    pub add_attention: bool,
    /// Always `None` (JSON null).
    pub class_embed_type: Option<String>,
    /// With `class_embed_type` null, `Some(n)` adds `class_embedding` (an n-row embedding
    /// table added to the time embedding).
    pub num_class_embeds: Option<usize>,
    /// `None` → 4 · `block_out_channels[0]`.
    pub time_embedding_dim: Option<usize>,
}

impl Default for UNetConfig {
    /// diffusers' `UNet2DModel()` defaults, except `sample_size` (None there) which is 32.
    fn default() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        UNetConfig {
            sample_size: [32, 32],
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: "positional".into(),
            freq_shift: 0.0,
            flip_sin_to_cos: true,
            down_block_types: vec![
                DownBlock2D,
                AttnDownBlock2D,
                AttnDownBlock2D,
                AttnDownBlock2D,
            ],
            up_block_types: vec![AttnUpBlock2D, AttnUpBlock2D, AttnUpBlock2D, UpBlock2D],
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            downsample_type: "conv".into(),
            upsample_type: "conv".into(),
            dropout: 0.0,
            act_fn: "silu".into(),
            attention_head_dim: Some(8),
            norm_num_groups: 32,
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: "default".into(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            time_embedding_dim: None,
        }
    }
}

fn type_err(key: &str, v: &Value, want: &str) -> Error {
    Error::config(format!("config.json: `{key}` is {v}, expected {want}"))
}

fn as_usize(key: &str, v: &Value) -> Result<usize> {
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| type_err(key, v, "a non-negative integer"))
}

fn as_opt_usize(key: &str, v: &Value) -> Result<Option<usize>> {
    if v.is_null() {
        Ok(None)
    } else {
        as_usize(key, v).map(Some)
    }
}

fn as_f64(key: &str, v: &Value) -> Result<f64> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| type_err(key, v, "a number"))
}

fn as_bool(key: &str, v: &Value) -> Result<bool> {
    v.as_bool().ok_or_else(|| type_err(key, v, "true or false"))
}

/// A string field that may only take the listed values.
fn as_choice(key: &str, v: &Value, supported: &[&str]) -> Result<String> {
    match v.as_str() {
        Some(s) if supported.contains(&s) => Ok(s.to_string()),
        _ => Err(Error::config(format!(
            "config.json: `{key}` = {v} is not supported (supported: {})",
            supported
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn as_list<'a>(key: &str, v: &'a Value) -> Result<&'a Vec<Value>> {
    v.as_array().ok_or_else(|| type_err(key, v, "a list"))
}

impl UNetConfig {
    /// Parses a diffusers `UNet2DModel` `config.json`. Keys starting with `_` are ignored;
    /// unknown keys and unsupported values are errors naming the field.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(format!("config.json is not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| Error::config("config.json must hold a JSON object"))?;
        let mut c = UNetConfig::default();
        let mut sample_size_seen = false;
        if let Some(class) = obj.get("_class_name").and_then(|v| v.as_str()) {
            if class != "UNet2DModel" {
                return Err(Error::config(format!(
                    "config.json: `_class_name` = \"{class}\" is not supported (only \"UNet2DModel\")"
                )));
            }
        }
        for (key, v) in obj {
            if key.starts_with('_') {
                continue;
            }
            let k = key.as_str();
            match k {
                "sample_size" => {
                    sample_size_seen = !v.is_null();
                    if let Some(list) = v.as_array() {
                        if list.len() != 2 {
                            return Err(type_err(k, v, "an integer or [height, width]"));
                        }
                        c.sample_size = [as_usize(k, &list[0])?, as_usize(k, &list[1])?];
                    } else if !v.is_null() {
                        let s = as_usize(k, v)?;
                        c.sample_size = [s, s];
                    }
                }
                "in_channels" => c.in_channels = as_usize(k, v)?,
                "out_channels" => c.out_channels = as_usize(k, v)?,
                "center_input_sample" => c.center_input_sample = as_bool(k, v)?,
                "time_embedding_type" => c.time_embedding_type = as_choice(k, v, &["positional"])?,
                "freq_shift" => c.freq_shift = as_f64(k, v)?,
                "flip_sin_to_cos" => c.flip_sin_to_cos = as_bool(k, v)?,
                "down_block_types" => {
                    c.down_block_types = as_list(k, v)?
                        .iter()
                        .map(|b| {
                            as_choice(k, b, &["DownBlock2D", "AttnDownBlock2D"]).map(|s| {
                                if s == "DownBlock2D" {
                                    DownBlockType::DownBlock2D
                                } else {
                                    DownBlockType::AttnDownBlock2D
                                }
                            })
                        })
                        .collect::<Result<_>>()?
                }
                "up_block_types" => {
                    c.up_block_types = as_list(k, v)?
                        .iter()
                        .map(|b| {
                            as_choice(k, b, &["UpBlock2D", "AttnUpBlock2D"]).map(|s| {
                                if s == "UpBlock2D" {
                                    UpBlockType::UpBlock2D
                                } else {
                                    UpBlockType::AttnUpBlock2D
                                }
                            })
                        })
                        .collect::<Result<_>>()?
                }
                "mid_block_type" => {
                    as_choice(k, v, &["UNetMidBlock2D"])?;
                }
                "block_out_channels" => {
                    c.block_out_channels = as_list(k, v)?
                        .iter()
                        .map(|x| as_usize(k, x))
                        .collect::<Result<_>>()?
                }
                "layers_per_block" => c.layers_per_block = as_usize(k, v)?,
                "mid_block_scale_factor" => c.mid_block_scale_factor = as_f64(k, v)?,
                "downsample_padding" => {
                    c.downsample_padding = as_usize(k, v)?;
                    if c.downsample_padding > 1 {
                        return Err(Error::config(format!(
                            "config.json: `downsample_padding` = {v} is not supported (supported: 0, 1)"
                        )));
                    }
                }
                "downsample_type" => c.downsample_type = as_choice(k, v, &["conv"])?,
                "upsample_type" => c.upsample_type = as_choice(k, v, &["conv"])?,
                "dropout" => c.dropout = as_f64(k, v)?,
                "act_fn" => c.act_fn = as_choice(k, v, &["silu"])?,
                "attention_head_dim" => c.attention_head_dim = as_opt_usize(k, v)?,
                "norm_num_groups" => c.norm_num_groups = as_usize(k, v)?,
                "attn_norm_num_groups" => c.attn_norm_num_groups = as_opt_usize(k, v)?,
                "norm_eps" => c.norm_eps = as_f64(k, v)?,
                "resnet_time_scale_shift" => {
                    c.resnet_time_scale_shift = as_choice(k, v, &["default"])?
                }
                "add_attention" => c.add_attention = as_bool(k, v)?,
                "class_embed_type" => {
                    if !v.is_null() {
                        return Err(Error::config(format!(
                            "config.json: `class_embed_type` = {v} is not supported (only null; \
                             use `num_class_embeds` for class conditioning)"
                        )));
                    }
                }
                "num_class_embeds" => c.num_class_embeds = as_opt_usize(k, v)?,
                "time_embedding_dim" => c.time_embedding_dim = as_opt_usize(k, v)?,
                // Only used by the "learned" time embedding, which is rejected above.
                "num_train_timesteps" => {
                    as_opt_usize(k, v)?;
                }
                _ => {
                    return Err(Error::config(format!(
                        "config.json: unknown key `{key}` (= {v}); this is not a UNet2DModel \
                         config this crate supports"
                    )))
                }
            }
        }
        if !sample_size_seen {
            return Err(Error::config(
                "config.json: `sample_size` is missing or null (needed for the image size)",
            ));
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks the cross-field constraints (what diffusers would fail on at build or run time).
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::config("config.json: `block_out_channels` is empty"));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::config(format!(
                "config.json: `down_block_types` ({}), `up_block_types` ({}) and \
                 `block_out_channels` ({n}) must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        for (name, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("norm_num_groups", self.norm_num_groups),
            ("layers_per_block", self.layers_per_block),
        ] {
            if v == 0 {
                return Err(Error::config(format!("config.json: `{name}` must be > 0")));
            }
        }
        // Sizes far beyond any real UNet2DModel (diffusers' largest use ≤ 1280 channels, ≤ 1024
        // pixels, ≤ 6 levels): bounded so that shapes, parameter and FLOP counts cannot
        // overflow and a nonsense file fails here instead of hanging in a 10⁹-layer loop.
        const MAX_LEVELS: usize = 8;
        const MAX_LAYERS: usize = 16;
        const MAX_SIZE: usize = 8192;
        if n > MAX_LEVELS {
            return Err(Error::config(format!(
                "config.json: {n} entries in `block_out_channels`; at most {MAX_LEVELS} are supported"
            )));
        }
        if self.layers_per_block > MAX_LAYERS {
            return Err(Error::config(format!(
                "config.json: `layers_per_block` = {} is more than the {MAX_LAYERS} supported",
                self.layers_per_block
            )));
        }
        // Channels first: the default time embedding is 4 × block_out_channels[0].
        let channels = self
            .block_out_channels
            .iter()
            .map(|&c| ("block_out_channels", c, MAX_SIZE));
        let sizes = [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("norm_num_groups", self.norm_num_groups),
            ("sample_size", self.sample_size[0]),
            ("sample_size", self.sample_size[1]),
            ("attention_head_dim", self.attention_head_dim.unwrap_or(1)),
            (
                "attn_norm_num_groups",
                self.attn_norm_num_groups.unwrap_or(1),
            ),
        ]
        .map(|(name, v)| (name, v, MAX_SIZE));
        for (name, v, max) in channels.chain(sizes) {
            if v > max {
                return Err(Error::config(format!(
                    "config.json: `{name}` = {v} is larger than the {max} supported"
                )));
            }
        }
        if self.time_embed_dim() > 4 * MAX_SIZE {
            return Err(Error::config(format!(
                "config.json: `time_embedding_dim` = {} is larger than the {} supported",
                self.time_embed_dim(),
                4 * MAX_SIZE
            )));
        }
        if self.num_class_embeds.is_some_and(|k| k > 1 << 20) {
            return Err(Error::config(
                "config.json: `num_class_embeds` is larger than the 1048576 supported",
            ));
        }
        if self.attn_norm_num_groups == Some(0) || self.attention_head_dim == Some(0) {
            return Err(Error::config(
                "config.json: `attn_norm_num_groups` and `attention_head_dim` must be > 0",
            ));
        }
        if self.time_embed_dim() == 0 || self.num_class_embeds == Some(0) {
            return Err(Error::config(
                "config.json: `time_embedding_dim` and `num_class_embeds` must be > 0",
            ));
        }
        if self.norm_eps <= 0.0 {
            return Err(Error::config("config.json: `norm_eps` must be > 0"));
        }
        if self.mid_block_scale_factor == 0.0 {
            return Err(Error::config(
                "config.json: `mid_block_scale_factor` must not be 0",
            ));
        }
        // Every GroupNorm acts on a block's channels or a sum of them, so checking each block
        // suffices.
        for (i, &ch) in self.block_out_channels.iter().enumerate() {
            if ch == 0 || !ch.is_multiple_of(self.norm_num_groups) {
                return Err(Error::config(format!(
                    "config.json: block_out_channels[{i}] = {ch} is not a positive multiple of \
                     norm_num_groups = {}",
                    self.norm_num_groups
                )));
            }
        }
        let last = self.block_out_channels[n - 1];
        if self.add_attention {
            let g = self.attn_groups();
            if !last.is_multiple_of(g) {
                return Err(Error::config(format!(
                    "config.json: mid-block channels {last} are not a multiple of \
                     attn_norm_num_groups = {g}"
                )));
            }
        }
        let mut attn_channels = vec![];
        for (i, b) in self.down_block_types.iter().enumerate() {
            if b.has_attention() {
                attn_channels.push((format!("down_blocks.{i}"), self.block_out_channels[i]));
            }
        }
        if self.add_attention {
            attn_channels.push(("mid_block".into(), last));
        }
        for (i, b) in self.up_block_types.iter().enumerate() {
            if b.has_attention() {
                attn_channels.push((format!("up_blocks.{i}"), self.block_out_channels[n - 1 - i]));
            }
        }
        if let Some(d) = self.attention_head_dim {
            for (block, ch) in attn_channels {
                if !ch.is_multiple_of(d) {
                    return Err(Error::config(format!(
                        "config.json: attention_head_dim = {d} does not divide the {ch} channels \
                         of {block}"
                    )));
                }
            }
        }
        let levels = 1usize << (n - 1);
        for (axis, s) in ["height", "width"].iter().zip(self.sample_size) {
            if s == 0 || !s.is_multiple_of(levels) {
                return Err(Error::config(format!(
                    "config.json: sample_size {axis} {s} must be a positive multiple of {levels} \
                     so that {} downsamplings and upsamplings return the same size",
                    n - 1
                )));
            }
        }
        Ok(())
    }

    /// Checks an input image size against the network's down/upsampling: each of the
    /// `len(block_out_channels) − 1` stride-2 downsamplings must see an even size.
    pub fn check_input_size(&self, height: usize, width: usize) -> Result<()> {
        let levels = 1usize << (self.block_out_channels.len() - 1);
        if height == 0
            || width == 0
            || !height.is_multiple_of(levels)
            || !width.is_multiple_of(levels)
        {
            return Err(Error::shape(format!(
                "input {height}×{width}: height and width must be positive multiples of {levels} \
                 for this UNet"
            )));
        }
        Ok(())
    }

    /// Width of the time embedding (output of `time_embedding.linear_1/2`).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels.first().copied().unwrap_or(0))
    }

    /// Number of attention heads of an attention block over `channels` channels.
    pub fn heads(&self, channels: usize) -> usize {
        match self.attention_head_dim {
            Some(d) if d > 0 => channels / d,
            _ => 1,
        }
    }

    /// Per-head dimension of an attention block over `channels` channels.
    pub fn head_dim(&self, channels: usize) -> usize {
        self.attention_head_dim.unwrap_or(channels)
    }

    /// GroupNorm groups of the mid-block attention.
    pub fn attn_groups(&self) -> usize {
        self.attn_norm_num_groups.unwrap_or(self.norm_num_groups)
    }

    /// Number of scalar parameters (the sum over [`crate::model::weights::expected_tensors`]).
    pub fn parameter_count(&self) -> usize {
        crate::model::weights::expected_tensors(self)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// A `config.json` that diffusers' `UNet2DModel.from_pretrained` loads.
    pub fn to_json(&self) -> String {
        let [h, w] = self.sample_size;
        let sample_size = if h == w { json!(h) } else { json!([h, w]) };
        let mut m = Map::new();
        m.insert("_class_name".into(), json!("UNet2DModel"));
        m.insert("_diffusers_version".into(), json!("0.42.1"));
        m.insert("sample_size".into(), sample_size);
        m.insert("in_channels".into(), json!(self.in_channels));
        m.insert("out_channels".into(), json!(self.out_channels));
        m.insert(
            "center_input_sample".into(),
            json!(self.center_input_sample),
        );
        m.insert(
            "time_embedding_type".into(),
            json!(self.time_embedding_type),
        );
        let fs = if self.freq_shift.fract() == 0.0 && self.freq_shift.abs() < 1e15 {
            json!(self.freq_shift as i64)
        } else {
            json!(self.freq_shift)
        };
        m.insert("freq_shift".into(), fs);
        m.insert("flip_sin_to_cos".into(), json!(self.flip_sin_to_cos));
        m.insert(
            "down_block_types".into(),
            json!(self
                .down_block_types
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()),
        );
        m.insert("mid_block_type".into(), json!("UNetMidBlock2D"));
        m.insert(
            "up_block_types".into(),
            json!(self
                .up_block_types
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()),
        );
        m.insert("block_out_channels".into(), json!(self.block_out_channels));
        m.insert("layers_per_block".into(), json!(self.layers_per_block));
        m.insert(
            "mid_block_scale_factor".into(),
            json!(self.mid_block_scale_factor),
        );
        m.insert("downsample_padding".into(), json!(self.downsample_padding));
        m.insert("downsample_type".into(), json!(self.downsample_type));
        m.insert("upsample_type".into(), json!(self.upsample_type));
        m.insert("dropout".into(), json!(self.dropout));
        m.insert("act_fn".into(), json!(self.act_fn));
        m.insert("attention_head_dim".into(), json!(self.attention_head_dim));
        m.insert("norm_num_groups".into(), json!(self.norm_num_groups));
        m.insert(
            "attn_norm_num_groups".into(),
            json!(self.attn_norm_num_groups),
        );
        m.insert("norm_eps".into(), json!(self.norm_eps));
        m.insert(
            "resnet_time_scale_shift".into(),
            json!(self.resnet_time_scale_shift),
        );
        m.insert("add_attention".into(), json!(self.add_attention));
        m.insert("class_embed_type".into(), Value::Null);
        m.insert("num_class_embeds".into(), json!(self.num_class_embeds));
        m.insert("time_embedding_dim".into(), json!(self.time_embedding_dim));
        serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Modelled on google/ddpm-cifar10-32's config.json.
    pub const CIFAR_CONFIG: &str = r#"{
      "_class_name": "UNet2DModel",
      "_diffusers_version": "0.0.4",
      "act_fn": "silu",
      "attention_head_dim": null,
      "block_out_channels": [128, 256, 256, 256],
      "center_input_sample": false,
      "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
      "downsample_padding": 0,
      "flip_sin_to_cos": false,
      "freq_shift": 1,
      "in_channels": 3,
      "layers_per_block": 2,
      "mid_block_scale_factor": 1,
      "norm_eps": 1e-06,
      "norm_num_groups": 32,
      "out_channels": 3,
      "sample_size": 32,
      "time_embedding_type": "positional",
      "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
    }"#;

    #[test]
    fn parses_cifar_config() {
        let c = UNetConfig::from_json(CIFAR_CONFIG).unwrap();
        assert_eq!(c.sample_size, [32, 32]);
        assert_eq!(c.block_out_channels, vec![128, 256, 256, 256]);
        assert_eq!(c.downsample_padding, 0);
        assert!(!c.flip_sin_to_cos);
        assert_eq!(c.freq_shift, 1.0);
        assert_eq!(c.norm_eps, 1e-6);
        assert_eq!(c.time_embed_dim(), 512);
        assert_eq!(c.heads(256), 1);
        assert_eq!(c.head_dim(256), 256);
        assert_eq!(c.attn_groups(), 32);
        assert_eq!(c.down_block_types[1], DownBlockType::AttnDownBlock2D);
        assert_eq!(c.up_block_types[2], UpBlockType::AttnUpBlock2D);
        // diffusers: sum(p.numel()) of this model (35.7M)
        assert_eq!(c.parameter_count(), 35_746_307);
    }

    #[test]
    fn defaults_match_diffusers() {
        let c = UNetConfig::from_json(r#"{"sample_size": [64, 32]}"#).unwrap();
        assert_eq!(c.sample_size, [64, 32]);
        assert_eq!(c.attention_head_dim, Some(8));
        assert_eq!(c.heads(448), 56);
        assert_eq!(c.block_out_channels, vec![224, 448, 672, 896]);
        assert!(c.flip_sin_to_cos);
        assert_eq!(c.norm_eps, 1e-5);
        assert_eq!(c.time_embed_dim(), 896);
        assert_eq!(
            c,
            UNetConfig {
                sample_size: [64, 32],
                ..UNetConfig::default()
            }
        );
    }

    #[test]
    fn json_round_trip() {
        let mut c = UNetConfig::from_json(CIFAR_CONFIG).unwrap();
        c.num_class_embeds = Some(10);
        c.attn_norm_num_groups = Some(16);
        c.sample_size = [32, 64];
        let back = UNetConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
        let v: Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["_class_name"], "UNet2DModel");
        assert_eq!(v["freq_shift"], json!(1));
    }

    fn err(text: &str) -> String {
        match UNetConfig::from_json(text) {
            Err(Error::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn rejects_unsupported() {
        let base: Value = serde_json::from_str(CIFAR_CONFIG).unwrap();
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            b.to_string()
        };
        let m = err(&with("time_embedding_type", json!("fourier")));
        assert!(
            m.contains("time_embedding_type") && m.contains("fourier") && m.contains("positional"),
            "{m}"
        );
        let m = err(&with("act_fn", json!("gelu")));
        assert!(m.contains("act_fn") && m.contains("silu"), "{m}");
        let m = err(&with(
            "down_block_types",
            json!([
                "DownBlock2D",
                "SkipDownBlock2D",
                "DownBlock2D",
                "DownBlock2D"
            ]),
        ));
        assert!(m.contains("SkipDownBlock2D"), "{m}");
        let m = err(&with("resnet_time_scale_shift", json!("scale_shift")));
        assert!(m.contains("resnet_time_scale_shift"), "{m}");
        let m = err(&with("class_embed_type", json!("timestep")));
        assert!(m.contains("class_embed_type"), "{m}");
        let m = err(&with("upsample_type", json!("resnet")));
        assert!(m.contains("upsample_type"), "{m}");
        let m = err(&with("mystery", json!(3)));
        assert!(m.contains("mystery"), "{m}");
        let m = err(&with("in_channels", json!("three")));
        assert!(m.contains("in_channels"), "{m}");
        // ignored private keys
        UNetConfig::from_json(&with("_name_or_path", json!("x"))).unwrap();
        let m = err(&with("_class_name", json!("UNet2DConditionModel")));
        assert!(m.contains("UNet2DConditionModel"), "{m}");
    }

    #[test]
    fn validates_cross_field_constraints() {
        let base: Value = serde_json::from_str(CIFAR_CONFIG).unwrap();
        let with = |pairs: &[(&str, Value)]| {
            let mut b = base.clone();
            for (k, v) in pairs {
                b[*k] = v.clone();
            }
            b.to_string()
        };
        let m = err(&with(&[("norm_num_groups", json!(48))]));
        assert!(m.contains("norm_num_groups"), "{m}");
        let m = err(&with(&[("attention_head_dim", json!(96))]));
        assert!(m.contains("attention_head_dim"), "{m}");
        let m = err(&with(&[("up_block_types", json!(["UpBlock2D"]))]));
        assert!(m.contains("same length"), "{m}");
        let m = err(&with(&[("sample_size", json!(28))]));
        assert!(m.contains("sample_size") && m.contains("28"), "{m}");
        let m = err(&with(&[("attn_norm_num_groups", json!(3))]));
        assert!(m.contains("attn_norm_num_groups"), "{m}");
        let m = err(&with(&[("sample_size", Value::Null)]));
        assert!(m.contains("sample_size"), "{m}");
        // 28 with three blocks: 28 → 14 → 7 → 14 → 28.
        let ok = with(&[
            ("sample_size", json!(28)),
            ("block_out_channels", json!([32, 64, 64])),
            (
                "down_block_types",
                json!(["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"]),
            ),
            (
                "up_block_types",
                json!(["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]),
            ),
            ("norm_num_groups", json!(8)),
        ]);
        let c = UNetConfig::from_json(&ok).unwrap();
        c.check_input_size(28, 12).unwrap();
        assert!(c.check_input_size(28, 10).is_err());
        // Head dim divides: 64 channels with head dim 16 → 4 heads.
        let c = UNetConfig::from_json(&with(&[("attention_head_dim", json!(16))])).unwrap();
        assert_eq!(c.heads(256), 16);
    }

    /// Found by probing `kakusan info` with absurd sizes: overflowing multiplications
    /// (panics in debug builds), a shift past 64 bits, a 10⁹-iteration loop.
    #[test]
    fn absurd_sizes_are_errors() {
        let base: Value = serde_json::from_str(CIFAR_CONFIG).unwrap();
        let with = |pairs: &[(&str, Value)]| {
            let mut b = base.clone();
            for (k, v) in pairs {
                b[*k] = v.clone();
            }
            b.to_string()
        };
        let many = 70;
        for (pairs, field) in [
            (vec![("sample_size", json!(1u64 << 50))], "sample_size"),
            (
                vec![("block_out_channels", json!([1u64 << 62, 128, 256, 256]))],
                "block_out_channels",
            ),
            (vec![("in_channels", json!(1u64 << 62))], "in_channels"),
            (
                vec![("layers_per_block", json!(1_000_000_000))],
                "layers_per_block",
            ),
            (
                vec![("time_embedding_dim", json!(1u64 << 40))],
                "time_embedding_dim",
            ),
            (
                vec![("num_class_embeds", json!(1u64 << 40))],
                "num_class_embeds",
            ),
            (
                vec![
                    ("block_out_channels", json!(vec![32; many])),
                    ("down_block_types", json!(vec!["DownBlock2D"; many])),
                    ("up_block_types", json!(vec!["UpBlock2D"; many])),
                ],
                "block_out_channels",
            ),
        ] {
            let m = err(&with(&pairs));
            assert!(m.contains(field) && m.contains("supported"), "{m}");
        }
    }
}
