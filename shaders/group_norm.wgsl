// Group normalisation (torch.nn.GroupNorm: biased variance, eps inside the sqrt) with an
// optional fused SiLU after the affine, as diffusers' ResnetBlock2D applies norm then SiLU.
// One workgroup of WG threads (64 on GPUs, 8 on CPU adapters) per (sample n, group g); a
// group's C/G channels of H*W values are contiguous in NCHW. Statistics:
// shaders/lib/group_norm_stats.wgsl (appended; two-pass, with the workgroup sums of
// shaders/lib/workgroup_sum.wgsl). The output uses
// (x - m1) - m_lo, so the f32 mean's rounding does not enter the result.
// group_norm_stats (training) also writes each group's (m1, m_lo, rstd) to `stats`, so the
// backward (group_norm_backward.wgsl) need not recompute them.

struct Params {
    // Elements per group: (C / G) * H * W.
    group_numel: u32,
    // H * W.
    hw: u32,
    // C / G.
    channels_per_group: u32,
    // G.
    groups: u32,
    // N * G: the number of real workgroups (the grid may be padded, see gpu::grid_1d).
    num_groups_total: u32,
    // 1: apply SiLU after the affine.
    silu: u32,
    eps: f32,
    // group_norm_stats: where the statistics start in `stats` (elements).
    stats_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (N, C, H, W)
@group(0) @binding(1) var<storage, read> x: array<f32>;
// gamma: (C)
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
// beta: (C)
@group(0) @binding(3) var<storage, read> beta: array<f32>;
// out: (N, C, H, W); must not alias x
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// stats: group_norm_stats only: [stats_offset + 4·(n·G + g) ..][0..3] = (m1, m_lo, rstd, 0)
//    of group g of sample n (the rest of the buffer is the backward's scratch)
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

// Pass 3 of group (n, g) = gi: normalise, affine, optional SiLU; channel by channel, so that
// γ and β are loaded once per channel (on llvmpipe every load is a per-lane gather).
fn normalize_group(gi: u32, lid: u32, st: GroupStats) {
    let base = gi * p.group_numel;
    let c0 = (gi % p.groups) * p.channels_per_group;
    for (var k = 0u; k < p.channels_per_group; k = k + 1u) {
        let c = c0 + k;
        let cbase = base + k * p.hw;
        let scale = st.rstd * gamma[c];
        let shift = beta[c];
        for (var i = lid; i < p.hw; i = i + WG) {
            let y = ((x[cbase + i] - st.m1) - st.m_lo) * scale + shift;
            if (p.silu != 0u) {
                out[cbase + i] = y / (1.0 + exp(-y));
            } else {
                out[cbase + i] = y;
            }
        }
    }
}

@compute @workgroup_size(WG)
fn group_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let gi = wg.x + wg.y * nwg.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (gi >= p.num_groups_total) { return; }
    // Passes 1 and 2: mean and variance.
    let st = group_stats(lid, gi * p.group_numel, p.group_numel, p.eps);
    normalize_group(gi, lid, st);
}

@compute @workgroup_size(WG)
fn group_norm_stats(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let gi = wg.x + wg.y * nwg.x;
    if (gi >= p.num_groups_total) { return; }
    let st = group_stats(lid, gi * p.group_numel, p.group_numel, p.eps);
    if (lid == 0u) {
        let o = p.stats_offset + 4u * gi;
        stats[o] = st.m1;
        stats[o + 1u] = st.m_lo;
        stats[o + 2u] = st.rstd;
        stats[o + 3u] = 0.0;
    }
    normalize_group(gi, lid, st);
}
