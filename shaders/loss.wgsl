// Training-side diffusion kernels: the forward process q(x_t | x_0) with the regression
// target (Ho et al. 2020, eq. 4; v-prediction, Salimans & Ho 2022), and the mean squared
// error L_simple (eq. 14) with its gradient, reduced deterministically in two passes (the
// 64-thread sums of shaders/lib/workgroup_sum.wgsl, appended).
//
// All entry points share one set of bindings (a browser may reject two variables on one
// binding); unused read-only slots are filled with repeats.

struct Params {
    // Elements of x0 / pred (all samples).
    numel: u32,
    // q_sample, mse_partials (weighted): elements per sample. mse_finalize: number of partials.
    inner: u32,
    // q_sample: 0 = epsilon, 1 = v_prediction, 2 = sample. mse_partials: 0 = plain,
    // 1 = weighted per sample by in2.
    mode: u32,
    _pad: u32,
    // mse_partials: 2 / numel (the gradient's scale). mse_finalize: 1 / numel.
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
// in0: q_sample: x0 (N, C, H, W); mse_partials: pred (numel); mse_finalize: partials (P)
@group(0) @binding(1) var<storage, read> in0: array<f32>;
// in1: q_sample: noise eps (N, C, H, W); mse_partials: target (numel)
@group(0) @binding(2) var<storage, read> in1: array<f32>;
// in2: q_sample: coef (N, 2) = [sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)] per sample;
//      mse_partials (mode 1): per-sample loss weights w (N), e.g. min-SNR-gamma
@group(0) @binding(3) var<storage, read> in2: array<f32>;
// out0: q_sample: x_t (N, C, H, W); mse_partials: dpred (numel); mse_finalize: loss (1)
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;
// out1: q_sample: target (N, C, H, W); mse_partials: partials (P)
@group(0) @binding(5) var<storage, read_write> out1: array<f32>;

// Elements per workgroup in mse_partials (must match loss.rs).
const CHUNK: u32 = 2048u;

// x_t = sqrt(ab) x0 + sqrt(1 - ab) eps; target = eps | sqrt(ab) eps - sqrt(1 - ab) x0 | x0.
@compute @workgroup_size(256)
fn q_sample(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.numel) { return; }
    let n = i / p.inner;
    let a = in2[2u * n];
    let s = in2[2u * n + 1u];
    let x0 = in0[i];
    let e = in1[i];
    out0[i] = a * x0 + s * e;
    if (p.mode == 0u) {
        out1[i] = e;
    } else if (p.mode == 1u) {
        out1[i] = a * e - s * x0;
    } else {
        out1[i] = x0;
    }
}

// dpred = scale * (pred - target) with scale = 2 / numel; partials[w] = sum of
// (pred - target)^2 over elements [w*CHUNK, (w+1)*CHUNK), in a fixed order. Weighted
// (mode 1): each element's square and gradient times its sample's weight w_n, so the loss is
// (1 / numel) sum_n w_n sum_j (pred - target)^2 (the plain path stays bit-identical).
@compute @workgroup_size(64)
fn mse_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let w = wg.x + wg.y * nwg.x;
    let base = w * CHUNK;
    // Uniform control flow: padded workgroups still reach the barriers.
    var acc = 0.0;
    for (var k = 0u; k < CHUNK / WG; k = k + 1u) {
        let i = base + k * WG + lid;
        if (i < p.numel) {
            let d = in0[i] - in1[i];
            if (p.mode == 1u) {
                let wn = in2[i / p.inner];
                out0[i] = p.scale * (wn * d);
                acc = acc + wn * (d * d);
            } else {
                out0[i] = p.scale * d;
                acc = acc + d * d;
            }
        }
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u && base < p.numel) {
        out1[w] = total;
    }
}

// One workgroup: loss = sum(partials) / numel.
@compute @workgroup_size(64)
fn mse_finalize(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < p.inner; i = i + WG) {
        acc = acc + in0[i];
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        out0[0] = total * p.scale;
    }
}
