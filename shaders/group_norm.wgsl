// Group normalisation (torch.nn.GroupNorm: biased variance, eps inside the sqrt) with an
// optional fused SiLU after the affine, as diffusers' ResnetBlock2D applies norm then SiLU.
// One workgroup of 64 threads per (sample n, group g); a group's C/G channels of H*W values
// are contiguous in NCHW. Statistics are two-pass for accuracy when |mean| >> std:
//   pass 1: m1 = mean(x) (in f32, slightly off);
//   pass 2: s1 = sum(x - m1), s2 = sum((x - m1)^2); then mean = m1 + s1/n exactly enough and
//           var = s2/n - (s1/n)^2 (the corrected two-pass algorithm, Chan, Golub & LeVeque 1983).
// The output uses (x - m1) - s1/n so the f32 mean's rounding does not enter the result.

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

// 64 threads per workgroup, not 256: a CPU adapter (llvmpipe) runs a workgroup as one
// coroutine per 8 lanes that all switch at every barrier, and with 256 threads the barriers
// cost more than the arithmetic (group norm backward went 1284 → 355 ms per training step of
// the MNIST preset, forward 308 → 126 ms); on GPUs 64 keeps occupancy via the N·G workgroups.
const WG: u32 = 64u;

var<workgroup> red_a: array<f32, 64>;
var<workgroup> red_b: array<f32, 64>;
var<workgroup> red2_a: array<f32, 8>;
var<workgroup> red2_b: array<f32, 8>;

// Sum a and b over the workgroup; every thread gets the totals back. Two levels of 8 with two
// barriers. No trailing barrier is needed before the next call: red_a/red_b are last read
// before the second barrier, red2_a/red2_b are next written after the next call's first one.
fn reduce2(lid: u32, a: f32, b: f32) -> vec2<f32> {
    red_a[lid] = a;
    red_b[lid] = b;
    workgroupBarrier();
    if (lid < 8u) {
        var sa = 0.0;
        var sb = 0.0;
        for (var k = 0u; k < 8u; k = k + 1u) {
            sa = sa + red_a[lid * 8u + k];
            sb = sb + red_b[lid * 8u + k];
        }
        red2_a[lid] = sa;
        red2_b[lid] = sb;
    }
    workgroupBarrier();
    var ta = 0.0;
    var tb = 0.0;
    for (var k = 0u; k < 8u; k = k + 1u) {
        ta = ta + red2_a[k];
        tb = tb + red2_b[k];
    }
    return vec2<f32>(ta, tb);
}

@compute @workgroup_size(64)
fn group_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let gi = wg.x + wg.y * nwg.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (gi >= p.num_groups_total) { return; }
    let n = p.group_numel;
    let base = gi * n;
    let inv_n = 1.0 / f32(n);

    // Pass 1: approximate mean.
    var s0 = 0.0;
    for (var i = lid; i < n; i = i + WG) {
        s0 = s0 + x[base + i];
    }
    let m1 = reduce2(lid, s0, 0.0).x * inv_n;

    // Pass 2: deviations from m1.
    var s1 = 0.0;
    var s2 = 0.0;
    for (var i = lid; i < n; i = i + WG) {
        let d = x[base + i] - m1;
        s1 = s1 + d;
        s2 = s2 + d * d;
    }
    let t = reduce2(lid, s1, s2);
    let m_lo = t.x * inv_n;
    let var_ = max(t.y * inv_n - m_lo * m_lo, 0.0);
    let rstd = 1.0 / sqrt(var_ + p.eps);

    // Pass 3: normalise, affine, optional SiLU.
    let c0 = (gi % p.groups) * p.channels_per_group;
    for (var i = lid; i < n; i = i + WG) {
        let c = c0 + i / p.hw;
        let y = ((x[base + i] - m1) - m_lo) * (rstd * gamma[c]) + beta[c];
        if (p.silu != 0u) {
            out[base + i] = y / (1.0 + exp(-y));
        } else {
            out[base + i] = y;
        }
    }
}
