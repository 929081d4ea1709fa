// Numerically stable softmax over contiguous rows, in place: x[r, :] = exp(x - max) / sum.
// One workgroup of WG threads (64 on GPUs, 8 on CPU adapters) per row; each thread strides
// over the row, then the workgroup reduces (max, then sum) with shaders/lib/workgroup_sum.wgsl
// (appended). The row's max is subtracted before exp, so large-magnitude logits (attention
// scores) cannot overflow.
//
// Grid: the row index is wg.x + wg.y * num_workgroups.x (see gpu::grid_1d).

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (rows, cols), rewritten in place
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WG)
fn softmax_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup, so returning before the barriers is allowed.
    if (row >= p.rows) { return; }
    let base = row * p.cols;

    // Row max.
    var m = bitcast<f32>(0xff7fffffu); // -FLT_MAX, exactly (Tint rejects rounded literals)
    for (var c = li; c < p.cols; c += WG) {
        m = max(m, x[base + c]);
    }
    let row_max = workgroup_max(li, m);

    // Sum of exp(x - max): every term is in (0, 1], and the max's term is exactly 1.
    var sum = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        sum += exp(x[base + c] - row_max);
    }
    let inv = 1.0 / workgroup_sum(li, sum);

    for (var c = li; c < p.cols; c += WG) {
        x[base + c] = exp(x[base + c] - row_max) * inv;
    }
}
