// Deterministic reductions: every sum has a fixed order (per-thread strided partial sums,
// then the WG-thread workgroup sum of shaders/lib/workgroup_sum.wgsl, appended), so results
// are bit-identical from run to run. No float atomics.
//
// sum_axes: view x as (A, B, C); out[b] = scale · Σ_{a, c} x[a, b, c] (+ old out[b]).
//   One workgroup per b (linear index wg.x + wg.y · num_workgroups.x, see gpu::grid_1d).
//   Bias gradients: (N, C, H·W) -> C; (1, N·C, H·W) -> N·C; (N, F, 1) -> F.
// sum_squares_partial: partial[g] = Σ x[i]² over the chunk g · chunk .. (g + 1) · chunk;
//   a second sum_axes pass (A = 1, B = 1, C = groups) adds the partials.

// Terms per thread summed on their own before joining the thread's running sum.
const BLOCK: u32 = 64u;

struct Params {
    a: u32,
    b: u32,
    c: u32,
    // bit 0: accumulate (out += result).
    flags: u32,
    scale: f32,
    // sum_squares_partial: element count and elements per workgroup.
    n: u32,
    chunk: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (A, B, C) for sum_axes; (n) for sum_squares_partial
@group(0) @binding(1) var<storage, read> x: array<f32>;
// out: (B) for sum_axes; (groups) partial sums for sum_squares_partial
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn sum_axes(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let bi = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup, so returning before the barriers is allowed.
    if (bi >= p.b) { return; }
    // Each thread's strided terms are summed in blocks (a row, or BLOCK terms) that are then
    // added to s: with 8-thread workgroups (CPU adapters) a thread can own 40 k terms of a
    // long reduction, and one running f32 sum of them would err ~sqrt(8)× more.
    var s = 0.0;
    if (p.c >= WG) {
        // Long contiguous rows: threads stride along c (coalesced), rows in order.
        for (var ai = 0u; ai < p.a; ai++) {
            let base = (ai * p.b + bi) * p.c;
            var r = 0.0;
            for (var ci = li; ci < p.c; ci += WG) {
                r += x[base + ci];
            }
            s += r;
        }
    } else {
        // Short rows (e.g. C = 1 for linear biases): stride over the flattened (a, c).
        let ac = p.a * p.c;
        for (var j0 = li; j0 < ac; j0 += WG * BLOCK) {
            var r = 0.0;
            for (var j = j0; j < min(ac, j0 + WG * BLOCK); j += WG) {
                let ai = j / p.c;
                r += x[(ai * p.b + bi) * p.c + (j - ai * p.c)];
            }
            s += r;
        }
    }
    let total = workgroup_sum(li, s);
    if (li == 0u) {
        var old = 0.0;
        if ((p.flags & 1u) != 0u) { old = out[bi]; }
        out[bi] = total * p.scale + old;
    }
}

@compute @workgroup_size(WG)
fn sum_squares_partial(@builtin(workgroup_id) wg: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let g = wg.x + wg.y * nwg.x;
    let begin = g * p.chunk;
    if (begin >= p.n) { return; }
    let end = min(p.n, begin + p.chunk);
    var s = 0.0;
    for (var i0 = begin + li; i0 < end; i0 += WG * BLOCK) {
        var r = 0.0;
        for (var i = i0; i < min(end, i0 + WG * BLOCK); i += WG) {
            let v = x[i];
            r += v * v;
        }
        s += r;
    }
    let total = workgroup_sum(li, s);
    if (li == 0u) {
        out[g] = total;
    }
}
