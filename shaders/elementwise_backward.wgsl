// Backward kernels for the elementwise ops of elementwise.wgsl: SiLU, channel concat, nearest
// 2x upsample, and scaled copy / accumulate. One thread per OUTPUT (gradient) element; the
// grid may be 2-D when there are more than 65535 workgroups (see gpu::grid_1d).
// With p.accumulate != 0 the kernel adds into out (a tensor consumed twice in the forward
// graph sums its gradients), otherwise it overwrites it.

struct Params {
    // Number of output elements.
    numel: u32,
    // concat_backward: channels of out, channels of dcat, H*W, first channel of out in dcat.
    // upsample_backward: N*C (planes), H, W of the output (the forward input), unused.
    d0: u32,
    d1: u32,
    d2: u32,
    d3: u32,
    // 1: out += value; 0: out = value.
    accumulate: u32,
    // scaled: out (+)= a * scale.
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// a: first input — silu: x (forward input); concat: dcat (N, Ca+Cb, H, W);
//    upsample: dout (N, C, 2H, 2W); scaled: src (numel)
@group(0) @binding(1) var<storage, read> a: array<f32>;
// b: second input — silu: dout (same shape as x); otherwise unused (bound to keep one layout)
@group(0) @binding(2) var<storage, read> b: array<f32>;
// out: (numel) — the gradient being written; read only when accumulating
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

fn store(i: u32, v: f32) {
    if (p.accumulate != 0u) {
        out[i] = out[i] + v;
    } else {
        out[i] = v;
    }
}

// dx = dout * silu'(x), silu'(x) = s (1 + x (1 - s)), s = sigmoid(x)
@compute @workgroup_size(256)
fn silu_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.numel) { return; }
    let x = a[i];
    let s = 1.0 / (1.0 + exp(-x));
    store(i, b[i] * (s * (1.0 + x * (1.0 - s))));
}

// out: (N, d0, H*W) <- dcat: (N, d1, H*W) channels [d3, d3 + d0); d2 = H*W
@compute @workgroup_size(256)
fn concat_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.numel) { return; }
    let hw = p.d2;
    let s = i % hw;
    let c = (i / hw) % p.d0;
    let n = i / (hw * p.d0);
    store(i, a[(n * p.d1 + p.d3 + c) * hw + s]);
}

// out: (N*C, H, W) <- sum of the 2x2 block of dout: (N*C, 2H, 2W); d0 = N*C, d1 = H, d2 = W
@compute @workgroup_size(256)
fn upsample_nearest2x_backward(@builtin(workgroup_id) wg: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.numel) { return; }
    let w = p.d2;
    let h = p.d1;
    let x = i % w;
    let y = (i / w) % h;
    let plane = i / (w * h);
    let wo = 2u * w;
    let top = (plane * 2u * h + 2u * y) * wo + 2u * x;
    let bottom = top + wo;
    store(i, (a[top] + a[top + 1u]) + (a[bottom] + a[bottom + 1u]));
}

// out (+)= a * scale
@compute @workgroup_size(256)
fn scaled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.numel) { return; }
    store(i, a[i] * p.scale);
}
