// group_norm.wgsl for H·W a multiple of 4 (chosen by src/ops/group_norm.rs): the same
// computation with every load and store moving a vec4. On llvmpipe a load costs about the
// same per lane whatever its width (docs/training.md, "Training speed"), so this reads x a
// quarter as often. Statistics: shaders/lib/group_norm_stats_v4.wgsl (appended; their sums
// run in a different order from the scalar kernel's, so results differ by rounding).

struct Params {
    // Elements per group: (C / G) * H * W.
    group_numel: u32,
    // H * W (a multiple of 4).
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
    // group_norm_v4_stats: where the statistics start in `stats` (elements).
    stats_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (N, C, H, W), as vec4 along W
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
// gamma: (C)
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
// beta: (C)
@group(0) @binding(3) var<storage, read> beta: array<f32>;
// out: (N, C, H, W), as vec4 along W; must not alias x
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
// stats: group_norm_v4_stats only, as group_norm.wgsl's: (m1, m_lo, rstd, 0) per (n, g) from
//    element stats_offset
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

fn normalize_group_v4(gi: u32, lid: u32, st: GroupStats4) {
    let base4 = gi * (p.group_numel / 4u);
    let hw4 = p.hw / 4u;
    let c0 = (gi % p.groups) * p.channels_per_group;
    for (var k = 0u; k < p.channels_per_group; k = k + 1u) {
        let c = c0 + k;
        let cbase = base4 + k * hw4;
        let scale = st.rstd * gamma[c];
        let shift = beta[c];
        for (var i = lid; i < hw4; i = i + WG) {
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
fn group_norm_v4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let gi = wg.x + wg.y * nwg.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (gi >= p.num_groups_total) { return; }
    let n4 = p.group_numel / 4u;
    let st = group_stats_v4(lid, gi * n4, n4, p.eps);
    normalize_group_v4(gi, lid, st);
}

@compute @workgroup_size(WG)
fn group_norm_v4_stats(@builtin(workgroup_id) wg: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let gi = wg.x + wg.y * nwg.x;
    if (gi >= p.num_groups_total) { return; }
    let n4 = p.group_numel / 4u;
    let st = group_stats_v4(lid, gi * n4, n4, p.eps);
    if (lid == 0u) {
        let o = p.stats_offset + 4u * gi;
        stats[o] = st.m1;
        stats[o + 1u] = st.m_lo;
        stats[o + 2u] = st.rstd;
        stats[o + 3u] = 0.0;
    }
    normalize_group_v4(gi, lid, st);
}
