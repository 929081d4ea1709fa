// Backward of the row softmax (softmax.wgsl), in place on the gradient:
//   dS = P ⊙ (dP − rowsum(dP ⊙ P)),
// P the forward output (the attention probabilities), dP its gradient. One workgroup of WG
// threads per row; each thread strides over the row, then the workgroup sums the dot
// product (shaders/lib/workgroup_sum.wgsl, appended).
//
// Grid: the row index is wg.x + wg.y * num_workgroups.x (see gpu::grid_1d).

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// probs: (rows, cols) — P, the forward softmax output
@group(0) @binding(1) var<storage, read> probs: array<f32>;
// grad: (rows, cols) — in: dP; out: dS (in place)
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(WG)
fn softmax_rows_backward(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup, so returning before the barriers is allowed.
    if (row >= p.rows) { return; }
    let base = row * p.cols;

    var dot = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        dot += grad[base + c] * probs[base + c];
    }
    let total = workgroup_sum(li, dot);

    // Each thread rewrites only the elements it read, so no barrier is needed before this.
    for (var c = li; c < p.cols; c += WG) {
        grad[base + c] = probs[base + c] * (grad[base + c] - total);
    }
}
