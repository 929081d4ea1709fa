// Softmax cross-entropy over contiguous rows of logits, forward and backward in one pass
// (the digit classifier's loss, src/eval): for row r with label y = labels[r],
//   loss[r] = logsumexp(z_r) − z_r[y]
//   dlogits[r, c] = scale · (softmax(z_r)[c] − [c = y])
// where scale is the upstream gradient of each row's loss (1 / rows for a mean). The row's
// max is subtracted before exp, so large logits cannot overflow.
//
// One thread per row: the classifier has 10 classes, far too few to share a row across a
// workgroup. Labels must be < cols (the launcher's caller checks them on the CPU).
//
// Grid: the row index is (wg.x + wg.y * num_workgroups.x) * 64 + local index (gpu::grid_1d).

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
    scale: f32,
    _pad2: u32,
    _pad3: u32,
    _pad4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// logits: (rows, cols)
@group(0) @binding(1) var<storage, read> logits: array<f32>;
// labels: (rows), u32 class indices
@group(0) @binding(2) var<storage, read> labels: array<u32>;
// loss: (rows)
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
// dlogits: (rows, cols)
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

@compute @workgroup_size(64)
fn softmax_cross_entropy(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nwg.x) * 64u + li;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let y = labels[row];

    var m = bitcast<f32>(0xff7fffffu); // -FLT_MAX
    for (var c = 0u; c < p.cols; c++) {
        m = max(m, logits[base + c]);
    }
    var sum = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        sum += exp(logits[base + c] - m);
    }
    loss[row] = log(sum) + m - logits[base + y];
    let inv = 1.0 / sum;
    for (var c = 0u; c < p.cols; c++) {
        let prob = exp(logits[base + c] - m) * inv;
        dlogits[base + c] = p.scale * (prob - select(0.0, 1.0, c == y));
    }
}
