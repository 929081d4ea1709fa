// group_norm_backward.wgsl's dx pass for H·W a multiple of 4 (chosen by
// src/ops/group_norm_backward.rs, with group_norm_v4.wgsl in the forward): the same
// computation with every load and store of x, dout and dx moving a vec4 (on llvmpipe a load
// costs about the same per lane whatever its width). The per-(n, c) partials it writes are
// summed by group_norm_backward_params in group_norm_backward.wgsl. Statistics:
// shaders/lib/group_norm_stats_v4.wgsl (appended), the same as the v4 forward's.

struct Params {
    // Elements per group: (C / G) * H * W.
    group_numel: u32,
    // H * W (a multiple of 4).
    hw: u32,
    // C / G.
    channels_per_group: u32,
    // G.
    groups: u32,
    // N * G: the number of real workgroups of the dx pass.
    num_groups_total: u32,
    // 1: the forward applied SiLU after the affine.
    silu: u32,
    eps: f32,
    // 1: dx += gradient; 0: dx = gradient.
    accumulate: u32,
    // N and C.
    batch: u32,
    channels: u32,
    // 1: the forward saved the statistics (group_norm_stats) in scratch from stats_offset;
    // 0: recompute them here.
    saved: u32,
    stats_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (N, C, H, W), as vec4 along W — the forward input
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
// gamma: (C)
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
// beta: (C)
@group(0) @binding(3) var<storage, read> beta: array<f32>;
// dout: (N, C, H, W), as vec4 along W — gradient of the forward output
@group(0) @binding(4) var<storage, read> dout: array<vec4<f32>>;
// scratch: (2, N, C) — [0]: Σ_hw dz·x̂, [1]: Σ_hw dz per (n, c); when saved, followed at
//    stats_offset by the forward's (m1, m_lo, rstd, 0) per (n, g)
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
// dx: (N, C, H, W), as vec4 along W; read only when accumulating
@group(0) @binding(6) var<storage, read_write> dx: array<vec4<f32>>;
// dgamma, dbeta: (C); written by group_norm_backward_params, not here
@group(0) @binding(7) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(8) var<storage, read_write> dbeta: array<f32>;

// dz = dy · dy/dz for dy = d, given x̂ and its channel's γ (g) and β (bt).
fn dz_of4(d: vec4<f32>, g: f32, bt: f32, xh: vec4<f32>) -> vec4<f32> {
    if (p.silu == 0u) { return d; }
    let z = g * xh + bt;
    let s = 1.0 / (1.0 + exp(-z));
    return d * (s * (1.0 + z * (1.0 - s)));
}

@compute @workgroup_size(WG)
fn group_norm_backward_dx_v4(@builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let gi = wg.x + wg.y * nwg.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (gi >= p.num_groups_total) { return; }
    let n4 = p.group_numel / 4u;
    let base4 = gi * n4;
    let hw4 = p.hw / 4u;
    let inv_m = 1.0 / f32(p.group_numel);
    var st: GroupStats4;
    if (p.saved != 0u) {
        let o = p.stats_offset + 4u * gi;
        st = GroupStats4(scratch[o], scratch[o + 1u], scratch[o + 2u]);
    } else {
        st = group_stats_v4(lid, base4, n4, p.eps);
    }
    let m1 = st.m1;
    let m_lo = st.m_lo;
    let rstd = st.rstd;

    // Per-channel sums of dz and dz·x̂; the group sums of γ·dz and γ·dz·x̂ follow from them.
    let n = gi / p.groups;
    let c0 = (gi % p.groups) * p.channels_per_group;
    // Up to 8 channels per round of workgroup_slots_reduce (two barriers per round).
    var g_dz = 0.0;
    var g_dzx = 0.0;
    for (var k0 = 0u; k0 < p.channels_per_group; k0 = k0 + 8u) {
        let count = min(8u, p.channels_per_group - k0);
        for (var kk = 0u; kk < count; kk = kk + 1u) {
            let c = c0 + k0 + kk;
            let cbase = base4 + (k0 + kk) * hw4;
            let g = gamma[c];
            let bt = beta[c];
            var a = vec4<f32>(0.0);
            var b = vec4<f32>(0.0);
            for (var i = lid; i < hw4; i = i + WG) {
                let xh = ((x[cbase + i] - m1) - m_lo) * rstd;
                let dz = dz_of4(dout[cbase + i], g, bt, xh);
                a = a + dz;
                b = b + dz * xh;
            }
            wg_slots[kk * WG + lid] = vec2<f32>(hsum4(a), hsum4(b));
        }
        workgroup_slots_reduce(lid, count);
        for (var kk = 0u; kk < count; kk = kk + 1u) {
            let c = c0 + k0 + kk;
            let r = workgroup_slot_sum(kk);
            if (lid == 0u) {
                scratch[n * p.channels + c] = r.y;
                scratch[(p.batch + n) * p.channels + c] = r.x;
            }
            let g = gamma[c];
            g_dz = g_dz + g * r.x;
            g_dzx = g_dzx + g * r.y;
        }
    }
    let mean_dz = g_dz * inv_m;
    let mean_dzx = g_dzx * inv_m;

    for (var k = 0u; k < p.channels_per_group; k = k + 1u) {
        let c = c0 + k;
        let cbase = base4 + k * hw4;
        let g = gamma[c];
        let bt = beta[c];
        for (var i = lid; i < hw4; i = i + WG) {
            let j = cbase + i;
            let xh = ((x[j] - m1) - m_lo) * rstd;
            let dz = dz_of4(dout[j], g, bt, xh);
            let v = rstd * ((g * dz - mean_dz) - xh * mean_dzx);
            if (p.accumulate != 0u) {
                dx[j] = dx[j] + v;
            } else {
                dx[j] = v;
            }
        }
    }
}
