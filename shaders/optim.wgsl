// Optimizer kernels: global gradient norm (partial sums of squares, then one final reduce
// into [norm, clip factor], both with the 64-thread sums of shaders/lib/workgroup_sum.wgsl,
// appended), fused AdamW with the clip factor applied to the gradient, and the EMA of the
// weights. One dispatch per parameter tensor; element counts come from
// arrayLength (the launchers check every buffer holds exactly its tensor), so one uniform
// buffer of per-step values serves every tensor.
//
// All entry points share one set of bindings (a browser may reject two variables on one
// binding); each binds what it uses, padding unused read-only slots with a repeat.

struct Params {
    // sumsq_partials: index of this tensor's first partial. finalize: number of partials.
    offset: u32,
    // adamw_ema: 1 - EMA decay.
    ema_rate: f32,
    _pad1: u32,
    _pad2: u32,
    // finalize: max_norm.  adamw: 1 - lr * weight_decay.  ema: 1 - decay.
    s0: f32,
    // adamw: lr / (1 - beta1^t).
    s1: f32,
    // adamw: 1 / sqrt(1 - beta2^t).
    s2: f32,
    // adamw: eps.
    s3: f32,
    // adamw: beta1, 1 - beta1, beta2, 1 - beta2 (1 - beta rounded from f64).
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
// a: sumsq: grad (numel); finalize: partials (P); adamw: grad (numel); ema: param (numel)
@group(0) @binding(1) var<storage, read> a: array<f32>;
// b: adamw: grad-norm stats (2) = [norm, clip factor]; otherwise a repeat of a (unused)
@group(0) @binding(2) var<storage, read> b: array<f32>;
// x: sumsq: partials (P); finalize: stats (2); adamw: param (numel); ema: ema weights (numel)
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
// y: adamw: first moment m (numel)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
// z: adamw: second moment v (numel)
@group(0) @binding(5) var<storage, read_write> z: array<f32>;
// e: adamw_ema: EMA weights (numel)
@group(0) @binding(6) var<storage, read_write> e: array<f32>;

// Elements per workgroup in sumsq_partials (must match optim.rs).
const CHUNK: u32 = 2048u;

// partials[offset + w] = sum of g^2 over elements [w*CHUNK, (w+1)*CHUNK) of one grad tensor.
// Fixed order, so the result is deterministic.
@compute @workgroup_size(64)
fn sumsq_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let w = wg.x + wg.y * nwg.x;
    let n = arrayLength(&a);
    let base = w * CHUNK;
    // Uniform control flow: padded workgroups still reach the barriers.
    var acc = 0.0;
    for (var k = 0u; k < CHUNK / WG; k = k + 1u) {
        let i = base + k * WG + lid;
        if (i < n) {
            let g = a[i];
            acc = acc + g * g;
        }
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u && base < n) {
        x[p.offset + w] = total;
    }
}

// One workgroup: x = [norm, min(1, max_norm / (norm + 1e-6))] from the p.offset partials
// in a (torch.nn.utils.clip_grad_norm_).
@compute @workgroup_size(64)
fn grad_norm_finalize(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < p.offset; i = i + WG) {
        acc = acc + a[i];
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        let norm = sqrt(total);
        x[0] = norm;
        x[1] = min(1.0, p.s0 / (norm + 1e-6));
    }
}

// torch.optim.AdamW (single-tensor path), with the gradient scaled by the clip factor b[1].
fn adamw_step(i: u32, decay: bool) {
    let g = a[i] * b[1];
    var param = x[i];
    if (decay) {
        param = param * p.s0;
    }
    let m = p.beta1 * y[i] + p.one_minus_beta1 * g;
    let v = p.beta2 * z[i] + p.one_minus_beta2 * g * g;
    y[i] = m;
    z[i] = v;
    let denom = sqrt(v) * p.s2 + p.s3;
    x[i] = param - p.s1 * m / denom;
}

@compute @workgroup_size(256)
fn adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= arrayLength(&x)) { return; }
    adamw_step(i, true);
}

// The same without weight decay (e.g. for tensors excluded from decay).
@compute @workgroup_size(256)
fn adamw_no_decay(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= arrayLength(&x)) { return; }
    adamw_step(i, false);
}

// AdamW, then the EMA of the updated parameter (ema -= (1 - decay)(ema - param)) in the same
// pass: the same arithmetic as the adamw and ema entry points one after the other, one
// dispatch per tensor instead of two.
fn adamw_ema_step(i: u32, decay: bool) {
    adamw_step(i, decay);
    let old = e[i];
    e[i] = old - p.ema_rate * (old - x[i]);
}

@compute @workgroup_size(256)
fn adamw_ema(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= arrayLength(&x)) { return; }
    adamw_ema_step(i, true);
}

@compute @workgroup_size(256)
fn adamw_ema_no_decay(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= arrayLength(&x)) { return; }
    adamw_ema_step(i, false);
}

// ema -= (1 - decay) * (ema - param), as diffusers' EMAModel.step.
@compute @workgroup_size(256)
fn ema(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= arrayLength(&x)) { return; }
    let e = x[i];
    x[i] = e - p.s0 * (e - a[i]);
}
