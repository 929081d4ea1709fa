// The optimizer over packed buffers (src/gpu PackLayout): every parameter tensor of the model
// is a view into a few packs, and the gradients, Adam moments and EMA weights use the same
// layout, so a whole step is a few dispatches instead of a few per tensor. Per-tensor facts
// come from small u32 tables: the gradient-norm chunks (so the partial sums are exactly those
// of shaders/optim.wgsl's per-tensor sumsq_partials, bit for bit) and the weight-decay mask.
// The arithmetic of AdamW and the EMA is optim.wgsl's, term for term. The final reduce into
// [norm, clip factor] is optim.wgsl's grad_norm_finalize.
//
// All entry points share one set of bindings; each binds what it uses, padding unused
// read-only slots with a repeat.

struct Params {
    // sumsq_packed: index of this pack's first partial.
    offset: u32,
    // adamw_ema_packed: 1 - EMA decay.
    ema_rate: f32,
    _pad1: u32,
    _pad2: u32,
    // adamw: 1 - lr * weight_decay.
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
// a: the gradient pack (floats of the pack)
@group(0) @binding(1) var<storage, read> a: array<f32>;
// b: adamw: grad-norm stats (2) = [norm, clip factor]; sumsq: a repeat of a (unused)
@group(0) @binding(2) var<storage, read> b: array<f32>;
// t: sumsq: chunk table (2 * chunks) = [first element, end of its tensor] per chunk;
//    adamw: decay mask (ceil(floats / 64 / 32)), bit k set = 64-element block k decays
@group(0) @binding(3) var<storage, read> t: array<u32>;
// x: sumsq: partials (P); adamw: the parameter pack (floats)
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
// y: adamw: first-moment pack m (floats)
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
// z: adamw: second-moment pack v (floats)
@group(0) @binding(6) var<storage, read_write> z: array<f32>;
// e: adamw_ema_packed: EMA pack (floats)
@group(0) @binding(7) var<storage, read_write> e: array<f32>;

// Elements per chunk, as CHUNK in optim.wgsl (must match optim.rs).
const CHUNK: u32 = 2048u;
// Elements per decay-mask bit: tensors start at multiples of 64 floats (256 bytes).
const BLOCK: u32 = 64u;

// partials[offset + w] = sum of g^2 over the chunk [t[2w], min(t[2w] + CHUNK, t[2w + 1])):
// the same lanes add the same elements in the same order as sumsq_partials on the tensor
// alone. Padded workgroups (w past the table) still reach the barriers.
@compute @workgroup_size(64)
fn sumsq_packed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let w = wg.x + wg.y * nwg.x;
    let valid = w < arrayLength(&t) / 2u;
    let base = select(0u, t[2u * w], valid);
    let end = select(0u, t[2u * w + 1u], valid);
    var acc = 0.0;
    for (var k = 0u; k < CHUNK / WG; k = k + 1u) {
        let i = base + k * WG + lid;
        if (i < end) {
            let g = a[i];
            acc = acc + g * g;
        }
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u && valid) {
        x[p.offset + w] = total;
    }
}

fn decays(i: u32) -> bool {
    let block = i / BLOCK;
    return ((t[block / 32u] >> (block % 32u)) & 1u) == 1u;
}

// torch.optim.AdamW (single-tensor path), with the gradient scaled by the clip factor b[1];
// optim.wgsl's adamw_step.
fn adamw_step(i: u32) {
    let g = a[i] * b[1];
    var param = x[i];
    if (decays(i)) {
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
fn adamw_packed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= arrayLength(&x)) { return; }
    adamw_step(i);
}

// AdamW, then the EMA of the updated parameter (ema -= (1 - decay)(ema - param)).
@compute @workgroup_size(256)
fn adamw_ema_packed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= arrayLength(&x)) { return; }
    adamw_step(i);
    let old = e[i];
    e[i] = old - p.ema_rate * (old - x[i]);
}
