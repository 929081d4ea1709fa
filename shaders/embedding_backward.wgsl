// Backward of add_class_embedding (embedding.wgsl): dtable[k, :] = Σ_{n: label_n = k} demb[n, :].
// One thread per (k, d) loops over the batch in order, so the sum is deterministic (no
// atomics). Labels are clamped to K − 1 exactly as the forward clamps them, so the gradient
// goes to the row the forward actually read.

struct Params {
    // K * D: elements of dtable.
    numel: u32,
    // D.
    dim: u32,
    // K.
    classes: u32,
    // N.
    batch: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// labels: (N) u32
@group(0) @binding(1) var<storage, read> labels: array<u32>;
// demb: (N, D) — gradient of the embedding output
@group(0) @binding(2) var<storage, read> demb: array<f32>;
// dtable: (K, D), overwritten
@group(0) @binding(3) var<storage, read_write> dtable: array<f32>;

@compute @workgroup_size(256)
fn class_embedding_backward(@builtin(workgroup_id) wg: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.numel) { return; }
    let k = i / p.dim;
    let j = i % p.dim;
    var s = 0.0;
    for (var n = 0u; n < p.batch; n = n + 1u) {
        if (min(labels[n], p.classes - 1u) == k) {
            s = s + demb[n * p.dim + j];
        }
    }
    dtable[i] = s;
}
