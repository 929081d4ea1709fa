//! A text summary of a UNet2DModel config and its cost, computed from the config alone
//! (no GPU, no weights), for `kakusan info`.

use crate::model::config::UNetConfig;

/// 2 × multiply-adds of one forward pass for one sample: convs, linears and attention
/// matmuls (normalisations and elementwise ops are not counted).
pub fn forward_flops(cfg: &UNetConfig) -> u64 {
    let [mut h, mut w] = cfg.sample_size;
    let boc = &cfg.block_out_channels;
    let ted = cfg.time_embed_dim();
    let conv = |cin: usize, cout: usize, k: usize, ho: usize, wo: usize| {
        2 * (cin * cout * k * k * ho * wo) as u64
    };
    let resnet = |cin: usize, cout: usize, h: usize, w: usize| {
        conv(cin, cout, 3, h, w)
            + conv(cout, cout, 3, h, w)
            + 2 * (ted * cout) as u64
            + if cin != cout {
                conv(cin, cout, 1, h, w)
            } else {
                0
            }
    };
    let attention = |c: usize, h: usize, w: usize| {
        let hw = h * w;
        // q, k, v, out projections + QKᵀ + PV (heads split channels, so the total is the same).
        (4 * 2 * c * c * hw + 2 * 2 * hw * hw * c) as u64
    };
    let mut f = 2 * (boc[0] * ted + ted * ted) as u64 + conv(cfg.in_channels, boc[0], 3, h, w);
    let mut skips = vec![boc[0]];
    let mut c = boc[0];
    for (i, &out) in boc.iter().enumerate() {
        for _ in 0..cfg.layers_per_block {
            f += resnet(c, out, h, w);
            c = out;
            if cfg.down_block_types[i].has_attention() {
                f += attention(c, h, w);
            }
            skips.push(c);
        }
        if i + 1 < boc.len() {
            let pad = if cfg.downsample_padding == 0 {
                1
            } else {
                2 * cfg.downsample_padding
            };
            h = (h + pad - 3) / 2 + 1;
            w = (w + pad - 3) / 2 + 1;
            f += conv(c, c, 3, h, w);
            skips.push(c);
        }
    }
    f += 2 * resnet(c, c, h, w);
    if cfg.add_attention {
        f += attention(c, h, w);
    }
    for (i, &out) in boc.iter().rev().enumerate() {
        for _ in 0..cfg.layers_per_block + 1 {
            let skip = skips.pop().unwrap_or(0);
            f += resnet(c + skip, out, h, w);
            c = out;
            if cfg.up_block_types[i].has_attention() {
                f += attention(c, h, w);
            }
        }
        if i + 1 < boc.len() {
            h *= 2;
            w *= 2;
            f += conv(c, c, 3, h, w);
        }
    }
    f + conv(c, cfg.out_channels, 3, h, w)
}

/// Human-readable architecture summary.
pub fn summary(cfg: &UNetConfig) -> String {
    let [h, w] = cfg.sample_size;
    let mut s = String::new();
    s += &format!(
        "UNet2DModel: {}x{} x {} channels in, {} out\n",
        h, w, cfg.in_channels, cfg.out_channels
    );
    s += &format!(
        "  blocks: {:?}, {} layers per block, GroupNorm({} groups, eps {:e})\n",
        cfg.block_out_channels, cfg.layers_per_block, cfg.norm_num_groups, cfg.norm_eps
    );
    let (mut rh, mut rw) = (h, w);
    for (i, &c) in cfg.block_out_channels.iter().enumerate() {
        let attn = if cfg.down_block_types[i].has_attention() {
            format!(" + attention ({} heads)", cfg.heads(c))
        } else {
            String::new()
        };
        s += &format!("  down {i}: {c} channels at {rh}x{rw}{attn}\n");
        if i + 1 < cfg.block_out_channels.len() {
            let pad = if cfg.downsample_padding == 0 {
                1
            } else {
                2 * cfg.downsample_padding
            };
            rh = (rh + pad - 3) / 2 + 1;
            rw = (rw + pad - 3) / 2 + 1;
        }
    }
    let last = *cfg.block_out_channels.last().unwrap_or(&0);
    s += &format!(
        "  mid: {last} channels at {rh}x{rw}{}, scale factor {}\n",
        if cfg.add_attention {
            format!(" + attention ({} heads)", cfg.heads(last))
        } else {
            String::new()
        },
        cfg.mid_block_scale_factor
    );
    s += &format!(
        "  time embedding: {} (flip_sin_to_cos {}, freq_shift {}){}\n",
        cfg.time_embed_dim(),
        cfg.flip_sin_to_cos,
        cfg.freq_shift,
        match cfg.num_class_embeds {
            Some(k) => format!(", {k} class embeddings (null class = {})", k - 1),
            None => String::new(),
        }
    );
    let params = cfg.parameter_count();
    s += &format!(
        "  parameters: {} ({:.2} M, {:.1} MiB as f32)\n",
        params,
        params as f64 / 1e6,
        params as f64 * 4.0 / (1 << 20) as f64
    );
    s += &format!(
        "  FLOPs per forward (batch 1): {:.3} GFLOP\n",
        forward_flops(cfg) as f64 / 1e9
    );
    s
}
