// The diffusion lab's fused MLP ε_θ(x_t, t, y) (src/lab/mlp.rs): input [x_t (2), sinusoidal
// embedding of t (E)] → 3 hidden SiLU layers of H units (the class embedding row of y is added
// to the first layer's pre-activation; row `null_class` is the "no class" of classifier-free
// guidance) → ε (2).
//
// One workgroup of NT = 64 threads handles a tile of TB = 8 samples: thread t owns hidden units
// t and t + 64 of every layer, reads their rows (forward) or columns (backward) of each weight
// matrix once per tile and reuses them TB times; the tile's activations and deltas live in workgroup memory (9 KiB, inside
// WebGPU's 16 KiB). The whole weight set (~150 KiB) does not fit there, so weights stream from
// the storage buffer (every thread of a tile reads the same rows: cache-friendly).
//
// Entry points:
//   train_fwd_bwd  draws a training batch on the GPU (data index, t, ε, label dropout; paper
//                  Algorithm 1), runs forward and backward of L_simple (eq. 14, the mean over
//                  batch and both coordinates) and writes activations and deltas for
//                  mlp_update.wgsl, which turns them into gradients, AdamW and EMA.
//   given_fwd_bwd  the same on a given batch (tests).
//   eval_forward   ε_θ for given (x_t, t, y) rows.
//   sample_step    one sampler step for every particle: ε (with guidance w), then
//                  x ← c_x·x + c_eps·ε + c_z·z and Tweedie's x̂_0 = (x − √(1−ᾱ)ε)/√ᾱ.
//
// One binding set serves every entry point (a browser may reject two variables on one
// binding); unused slots are bound to small dummies.

struct Uniforms {
    // Rows in the batch (training, eval) or particles (sampling).
    batch: u32,
    // Data points (train_fwd_bwd).
    n_data: u32,
    // Training timesteps T.
    num_t: u32,
    // Row of the null class in the embedding = number of classes (0: unconditional).
    null_class: u32,
    seed: u32,
    // Sampling: index of this sampler step (noise stream).
    sample_step: u32,
    _pad0: u32,
    _pad1: u32,
    // Label dropout probability (train_fwd_bwd, labelled data).
    p_uncond: f32,
    // Guidance scale w: ε = ε_∅ + w(ε_y − ε_∅) (sample_step; 1 = no guidance).
    guidance: f32,
    // sample_step: the step's timestep and coefficients.
    t: f32,
    c_x: f32,
    c_eps: f32,
    c_z: f32,
    sqrt_ab: f32,
    sqrt_one_minus_ab: f32,
}

@group(0) @binding(0) var<uniform> u: Uniforms;
// params: (P) flat weights, layout in mlp.rs (W1, b1, W2, b2, W3, b3, W4, b4, class embedding)
@group(0) @binding(1) var<storage, read> params: array<f32>;
// src: train_fwd_bwd: data (n_data, 3) = (x, y, class); given_fwd_bwd: (batch, 6) =
//      (x_t, x_t, t, class, ε, ε); eval_forward: (batch, 4) = (x_t, x_t, t, class)
@group(0) @binding(2) var<storage, read> src: array<f32>;
// sched: (num_t, 2) = (√ᾱ_t, √(1−ᾱ_t)) (train_fwd_bwd)
@group(0) @binding(3) var<storage, read> sched: array<f32>;
// state: (4) u32, state[0] = optimizer steps taken (train_fwd_bwd's noise stream)
@group(0) @binding(4) var<storage, read> state: array<u32>;
// buf_a: fwd_bwd: activations (batch, IN + 3H) = (input, a1, a2, a3);
//        sample_step: particles (batch, 4) = (x, y, class, unused)
@group(0) @binding(5) var<storage, read_write> buf_a: array<f32>;
// buf_b: fwd_bwd: deltas ∂L/∂z (batch, 3H + 2) = (d1, d2, d3, d_out); sample_step: x̂_0 (batch, 2)
@group(0) @binding(6) var<storage, read_write> buf_b: array<f32>;
// buf_c: fwd_bwd: (batch, 2) = (squared error summed over x and y, class used);
//        eval_forward: ε_θ (batch, 2)
@group(0) @binding(7) var<storage, read_write> buf_c: array<f32>;

// Sizes (H, E, IN, AS, DS) and parameter offsets (OFF_*): shaders/lib/mlp_layout.wgsl.
// Rows per tile.
const TB: u32 = 8u;

// The tile's rows are packed 4 to a vec4 (index 2·unit + half, half 0 = rows 0–3, 1 = rows
// 4–7), so each thread accumulates two vec4s instead of indexing a private array (which
// llvmpipe and many GPUs spill to memory).
var<workgroup> inp: array<vec4<f32>, 68>; // 2 * IN
var<workgroup> act_a: array<vec4<f32>, 256>; // 2 * H
var<workgroup> act_b: array<vec4<f32>, 256>;
var<workgroup> outv: array<f32, 16>; // TB * 2, row-major (row, coordinate)
var<workgroup> dout: array<vec4<f32>, 4>; // 2 * 2: (coordinate, half)
var<workgroup> target_eps: array<f32, 16>;
var<workgroup> sq_err: array<f32, 16>;
var<workgroup> tile_t: array<f32, 8>;
var<workgroup> tile_y: array<u32, 8>;
var<workgroup> tile_valid: array<u32, 8>;

// Threads per workgroup: each owns hidden units t and t + NT (llvmpipe runs a workgroup as one
// coroutine per 8 lanes, switched at every barrier: fewer threads doing more work each is
// faster there; see docs/notes.md).
const NT: u32 = 64u;

// Pre-activations of the thread's two units: z[4·layer + 2·unit + half] (half 0 = rows 0–3).
// Only ever indexed by constants, so they stay in registers.
var<private> z: array<vec4<f32>, 12>;

fn silu(z: vec4<f32>) -> vec4<f32> {
    return z / (1.0 + exp(-z));
}

fn silu_grad(z: vec4<f32>) -> vec4<f32> {
    let s = 1.0 / (1.0 + exp(-z));
    return s * (1.0 + z * (1.0 - s));
}

fn set_input(row: u32, k: u32, v: f32) {
    inp[2u * k + row / 4u][row % 4u] = v;
}

// Row j of the tile: its x_t, timestep and class (the embedding follows from the timestep).
fn set_row(j: u32, x: vec2<f32>, t: f32, y: u32) {
    set_input(j, 0u, x.x);
    set_input(j, 1u, x.y);
    tile_t[j] = t;
    tile_y[j] = y;
}

// Row j's training target ε and whether the row is in the batch.
fn set_target(j: u32, eps: vec2<f32>, valid: u32) {
    target_eps[2u * j] = eps.x;
    target_eps[2u * j + 1u] = eps.y;
    tile_valid[j] = valid;
}

// PCG hash (O'Neill 2014, the RXS-M-XS output of one LCG step).
fn pcg(v: u32) -> u32 {
    let s = v * 747796405u + 2891336453u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

fn unit_float(h: u32) -> f32 {
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

// Two standard normals by Box–Muller from two hashes.
fn gauss2(h1: u32, h2: u32) -> vec2<f32> {
    let u1 = 1.0 - unit_float(h1); // (0, 1]
    let u2 = unit_float(h2);
    let r = sqrt(-2.0 * log(u1));
    let a = 6.283185307179586 * u2;
    return vec2<f32>(r * cos(a), r * sin(a));
}

// The linear workgroup index (grids wider than 65535 wrap into y).
fn tile_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// Fill the sinusoidal time embedding of the tile (inputs 2..IN of each row) from tile_t:
// emb_k = sin(t·f_k), emb_{E/2+k} = cos(t·f_k), f_k = 10000^(−k/(E/2)) (Vaswani et al. 2017).
fn fill_embedding(j: u32) {
    for (var q = j; q < TB * E; q += NT) {
        let i = q / E;
        let k = q % E;
        let kk = k % (E / 2u);
        let f = exp(-9.210340371976184 * f32(kk) / f32(E / 2u));
        let a = tile_t[i] * f;
        var v = sin(a);
        if (k >= E / 2u) {
            v = cos(a);
        }
        set_input(i, 2u + k, v);
    }
}

fn class_rows(j: u32, first: u32) -> vec4<f32> {
    return vec4<f32>(
        params[OFF_EMB + tile_y[first] * H + j], params[OFF_EMB + tile_y[first + 1u] * H + j],
        params[OFF_EMB + tile_y[first + 2u] * H + j], params[OFF_EMB + tile_y[first + 3u] * H + j]);
}

// The tile's values of a thread's two units j0 and j1: (unit, half) with half 0 = rows 0–3.
struct Units {
    a0: vec4<f32>,
    b0: vec4<f32>,
    a1: vec4<f32>,
    b1: vec4<f32>,
}

// Where matvec_tile reads the tile's input vectors: inp (IN per row), act_a or act_b (H).
const FROM_INP: u32 = 0u;
const FROM_ACT_A: u32 = 1u;
const FROM_ACT_B: u32 = 2u;

fn tile_vector(input_kind: u32, k: u32, half: u32) -> vec4<f32> {
    if (input_kind == FROM_INP) {
        return inp[2u * k + half];
    }
    if (input_kind == FROM_ACT_A) {
        return act_a[2u * k + half];
    }
    return act_b[2u * k + half];
}

// acc + Σ_k W[j, k] x[k] for units j0, j1 and every row of the tile, k = 0 … n−1 in order,
// with W[j, k] = params[off + j·sj + k·sk]: (sj, sk) = (n, 1) is a layer's W (forward), (1, H)
// its transpose (backward). Called with a constant `input_kind`, so the selection folds away.
fn matvec_tile(acc: Units, j0: u32, j1: u32, off: u32, sj: u32, sk: u32, n: u32, input_kind: u32) -> Units {
    var r = acc;
    for (var k = 0u; k < n; k++) {
        let x0 = tile_vector(input_kind, k, 0u);
        let x1 = tile_vector(input_kind, k, 1u);
        let w0 = params[off + j0 * sj + k * sk];
        let w1 = params[off + j1 * sj + k * sk];
        r.a0 += w0 * x0;
        r.b0 += w0 * x1;
        r.a1 += w1 * x0;
        r.b1 += w1 * x1;
    }
    return r;
}

// A layer's bias b[j] broadcast over the tile's rows.
fn bias_units(off: u32, j0: u32, j1: u32) -> Units {
    let c0 = vec4<f32>(params[off + j0]);
    let c1 = vec4<f32>(params[off + j1]);
    return Units(c0, c0, c1, c1);
}

// act_a[i] = v (to_a) or act_b[i] = v.
fn set_tile_vector(to_a: bool, i: u32, v: vec4<f32>) {
    if (to_a) {
        act_a[i] = v;
    } else {
        act_b[i] = v;
    }
}

// silu(z) of units j0, j1 into act_a (to_a) or act_b.
fn put_activations(u: Units, j0: u32, j1: u32, to_a: bool) {
    set_tile_vector(to_a, 2u * j0, silu(u.a0));
    set_tile_vector(to_a, 2u * j0 + 1u, silu(u.b0));
    set_tile_vector(to_a, 2u * j1, silu(u.a1));
    set_tile_vector(to_a, 2u * j1 + 1u, silu(u.b1));
}

// Forward pass of the tile: inputs and tile_y → z (private, units t and t + NT), a3 in act_a,
// ε in outv. Must be entered by all NT threads after a barrier that published inp and tile_y.
fn forward_tile(t: u32) {
    let j0 = t;
    let j1 = t + NT;
    // Layer 1: z1 = W1·[x, emb] + b1 + E[y].
    let b1 = bias_units(OFF_B1, j0, j1);
    let e = Units(class_rows(j0, 0u), class_rows(j0, 4u), class_rows(j1, 0u), class_rows(j1, 4u));
    var l = matvec_tile(
        Units(b1.a0 + e.a0, b1.b0 + e.b0, b1.a1 + e.a1, b1.b1 + e.b1), j0, j1, OFF_W1, IN, 1u, IN, FROM_INP);
    z[0] = l.a0;
    z[1] = l.b0;
    z[2] = l.a1;
    z[3] = l.b1;
    put_activations(l, j0, j1, true);
    workgroupBarrier();
    // Layer 2.
    l = matvec_tile(bias_units(OFF_B2, j0, j1), j0, j1, OFF_W2, H, 1u, H, FROM_ACT_A);
    z[4] = l.a0;
    z[5] = l.b0;
    z[6] = l.a1;
    z[7] = l.b1;
    put_activations(l, j0, j1, false);
    workgroupBarrier();
    // Layer 3 (act_a's readers all passed the barrier above).
    l = matvec_tile(bias_units(OFF_B3, j0, j1), j0, j1, OFF_W3, H, 1u, H, FROM_ACT_B);
    z[8] = l.a0;
    z[9] = l.b0;
    z[10] = l.a1;
    z[11] = l.b1;
    put_activations(l, j0, j1, true);
    workgroupBarrier();
    // Output layer: 2·TB threads, one (row, coordinate) each.
    if (t < 2u * TB) {
        let i = t / 2u;
        let o = t % 2u;
        var s = params[OFF_B4 + o];
        for (var k = 0u; k < H; k++) {
            s += params[OFF_W4 + o * H + k] * act_a[2u * k + i / 4u][i % 4u];
        }
        outv[t] = s;
    }
    workgroupBarrier();
}

// The time embedding of the tile (from tile_t), then the forward pass; entered by all NT
// threads once the entry point has set inp's first two inputs, tile_t and tile_y.
fn embed_and_forward(t: u32) {
    workgroupBarrier();
    fill_embedding(t);
    workgroupBarrier();
    forward_tile(t);
}

fn lane(a: vec4<f32>, b: vec4<f32>, i: u32) -> f32 {
    if (i < 4u) {
        return a[i];
    }
    return b[i - 4u];
}

// Write unit j's values of the tile's valid rows to buf at (row · stride + offset + j).
fn store_rows(tile: u32, stride: u32, offset: u32, j: u32, a: vec4<f32>, b: vec4<f32>, is_acts: bool) {
    for (var i = 0u; i < TB; i++) {
        if (tile_valid[i] != 0u) {
            let r = (tile * TB + i) * stride + offset + j;
            if (is_acts) {
                buf_a[r] = lane(a, b, i);
            } else {
                buf_b[r] = lane(a, b, i);
            }
        }
    }
}

// Loss and backward pass of the tile after forward_tile (target_eps, tile_valid set). With
// L = (1/2B) Σ_b ‖ε_θ − ε‖², d_out = (ε_θ − ε)/B; d_l = silu'(z_l) ⊙ W_{l+1}ᵀ d_{l+1}. Writes the
// activations and deltas of valid rows to buf_a/buf_b and (squared error, class) to buf_c.
fn backward_tile(t: u32, tile: u32) {
    let inv_b = 1.0 / f32(u.batch);
    let j0 = t;
    let j1 = t + NT;
    // Activations to global memory (the weight gradients need them).
    for (var l = 0u; l < 3u; l++) {
        var za0 = z[0];
        var zb0 = z[1];
        var za1 = z[2];
        var zb1 = z[3];
        if (l == 1u) {
            za0 = z[4];
            zb0 = z[5];
            za1 = z[6];
            zb1 = z[7];
        } else if (l == 2u) {
            za0 = z[8];
            zb0 = z[9];
            za1 = z[10];
            zb1 = z[11];
        }
        store_rows(tile, AS, IN + l * H, j0, silu(za0), silu(zb0), true);
        store_rows(tile, AS, IN + l * H, j1, silu(za1), silu(zb1), true);
    }
    for (var q = t; q < TB * IN; q += NT) {
        let i = q / IN;
        let k = q % IN;
        if (tile_valid[i] != 0u) {
            buf_a[(tile * TB + i) * AS + k] = inp[2u * k + i / 4u][i % 4u];
        }
    }
    if (t < 2u * TB) {
        let i = t / 2u;
        let o = t % 2u;
        var d = 0.0;
        var err = 0.0;
        if (tile_valid[i] != 0u) {
            err = outv[t] - target_eps[t];
            d = err * inv_b;
            buf_b[(tile * TB + i) * DS + 3u * H + o] = d;
        }
        sq_err[t] = err * err;
        dout[2u * o + i / 4u][i % 4u] = d;
    }
    workgroupBarrier();
    if (t < TB && tile_valid[t] != 0u) {
        buf_c[(tile * TB + t) * 2u] = sq_err[2u * t] + sq_err[2u * t + 1u];
        buf_c[(tile * TB + t) * 2u + 1u] = f32(tile_y[t]);
    }
    // d3 = silu'(z3) ⊙ W4ᵀ d_out.
    let d3a0 = silu_grad(z[8]) * (params[OFF_W4 + j0] * dout[0] + params[OFF_W4 + H + j0] * dout[2]);
    let d3b0 = silu_grad(z[9]) * (params[OFF_W4 + j0] * dout[1] + params[OFF_W4 + H + j0] * dout[3]);
    let d3a1 = silu_grad(z[10]) * (params[OFF_W4 + j1] * dout[0] + params[OFF_W4 + H + j1] * dout[2]);
    let d3b1 = silu_grad(z[11]) * (params[OFF_W4 + j1] * dout[1] + params[OFF_W4 + H + j1] * dout[3]);
    act_b[2u * j0] = d3a0;
    act_b[2u * j0 + 1u] = d3b0;
    act_b[2u * j1] = d3a1;
    act_b[2u * j1 + 1u] = d3b1;
    store_rows(tile, DS, 2u * H, j0, d3a0, d3b0, false);
    store_rows(tile, DS, 2u * H, j1, d3a1, d3b1, false);
    workgroupBarrier();
    // d2 = silu'(z2) ⊙ W3ᵀ d3 (thread t reads columns t and t + NT of W3).
    let zero = Units(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    let w3d = matvec_tile(zero, j0, j1, OFF_W3, 1u, H, H, FROM_ACT_B);
    let d2 = Units(w3d.a0 * silu_grad(z[4]), w3d.b0 * silu_grad(z[5]),
                   w3d.a1 * silu_grad(z[6]), w3d.b1 * silu_grad(z[7]));
    act_a[2u * j0] = d2.a0;
    act_a[2u * j0 + 1u] = d2.b0;
    act_a[2u * j1] = d2.a1;
    act_a[2u * j1 + 1u] = d2.b1;
    store_rows(tile, DS, H, j0, d2.a0, d2.b0, false);
    store_rows(tile, DS, H, j1, d2.a1, d2.b1, false);
    workgroupBarrier();
    // d1 = silu'(z1) ⊙ W2ᵀ d2.
    let w2d = matvec_tile(zero, j0, j1, OFF_W2, 1u, H, H, FROM_ACT_A);
    store_rows(tile, DS, 0u, j0, w2d.a0 * silu_grad(z[0]), w2d.b0 * silu_grad(z[1]), false);
    store_rows(tile, DS, 0u, j1, w2d.a1 * silu_grad(z[2]), w2d.b1 * silu_grad(z[3]), false);
}

@compute @workgroup_size(64)
fn train_fwd_bwd(
    @builtin(local_invocation_index) j: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = tile_index(wg, nwg);
    if (j < TB) {
        let b = tile * TB + j;
        var x = vec2<f32>(0.0, 0.0);
        var e = vec2<f32>(0.0, 0.0);
        var t = 0u;
        var y = u.null_class;
        var valid = 0u;
        if (b < u.batch) {
            valid = 1u;
            // One hash chain per (seed, step, row).
            let h0 = pcg(u.seed ^ pcg(state[0] ^ pcg(b + 0x9e3779b9u)));
            let h1 = pcg(h0);
            let h2 = pcg(h1);
            let h3 = pcg(h2);
            let h4 = pcg(h3);
            let idx = h0 % u.n_data;
            t = h1 % u.num_t;
            e = gauss2(h2, h3);
            if (u.null_class > 0u && unit_float(h4) >= u.p_uncond) {
                y = u32(src[idx * 3u + 2u]);
            }
            let x0 = vec2<f32>(src[idx * 3u], src[idx * 3u + 1u]);
            // x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (eq. 4).
            x = sched[2u * t] * x0 + sched[2u * t + 1u] * e;
        }
        set_row(j, x, f32(t), y);
        set_target(j, e, valid);
    }
    embed_and_forward(j);
    backward_tile(j, tile);
}

@compute @workgroup_size(64)
fn given_fwd_bwd(
    @builtin(local_invocation_index) j: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = tile_index(wg, nwg);
    if (j < TB) {
        let b = tile * TB + j;
        var r: array<f32, 6>;
        var valid = 0u;
        if (b < u.batch) {
            valid = 1u;
            for (var k = 0u; k < 6u; k++) {
                r[k] = src[b * 6u + k];
            }
        } else {
            r[3] = f32(u.null_class);
        }
        set_row(j, vec2<f32>(r[0], r[1]), r[2], u32(r[3]));
        set_target(j, vec2<f32>(r[4], r[5]), valid);
    }
    embed_and_forward(j);
    backward_tile(j, tile);
}

// ---- The forward-only kernels (eval_forward, sample_step): 16 rows per tile, 32 threads ----
//
// No backward pass needs the pre-activations, so each thread owns a register block of 8 rows ×
// 8 units of every layer as four mat4x4s (columns = units, a column's components = 4 rows):
// per input k it loads 8 activations (two vec4s from workgroup memory) and 8 weights and does
// 64 multiply-adds, against 10 loads for 16 in the training tile above. On CPU adapters
// (SwiftShader, llvmpipe) every load is a per-lane gather, so multiply-adds per load is what
// counts. The tile's activations live transposed in one workgroup buffer, each layer written
// in place after a barrier (16 rows × 128 units = 8 KiB; inputs 2.1 KiB beside it).

// Rows per forward tile and threads per forward workgroup.
const FR: u32 = 16u;
const FT: u32 = 32u;

// Inputs (IN per row) and activations (H per row) of the tile, transposed: element (row i,
// input k) at [FR/4 · k + i/4][i % 4].
var<workgroup> f_inp: array<vec4<f32>, 136>; // IN * FR / 4
var<workgroup> f_act: array<vec4<f32>, 512>; // H * FR / 4
var<workgroup> f_out: array<f32, 32>; // FR * 2, row-major (row, coordinate)
var<workgroup> f_t: array<f32, 16>;
var<workgroup> f_y: array<u32, 16>;

// A thread's 8 rows × 8 units: r0u0 = rows 0–3 × units 0–3 of its block, etc.
struct Block {
    r0u0: mat4x4<f32>,
    r1u0: mat4x4<f32>,
    r0u1: mat4x4<f32>,
    r1u1: mat4x4<f32>,
}

// Row i of the forward tile: x_t, timestep and class.
fn f_set_row(i: u32, x: vec2<f32>, t: f32, y: u32) {
    f_inp[i / 4u][i % 4u] = x.x;
    f_inp[FR / 4u + i / 4u][i % 4u] = x.y;
    f_t[i] = t;
    f_y[i] = y;
}

// The sinusoidal embedding (as fill_embedding) of the forward tile's rows into f_inp.
fn f_fill_embedding(j: u32) {
    for (var q = j; q < FR * E; q += FT) {
        let i = q / E;
        let k = q % E;
        let kk = k % (E / 2u);
        let f = exp(-9.210340371976184 * f32(kk) / f32(E / 2u));
        let a = f_t[i] * f;
        var v = sin(a);
        if (k >= E / 2u) {
            v = cos(a);
        }
        f_inp[(FR / 4u) * (2u + k) + i / 4u][i % 4u] = v;
    }
}

fn outer4(x: vec4<f32>, w: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(x * w.x, x * w.y, x * w.z, x * w.w);
}

// Units u0 … u0+7 of W[j, k] = params[off + j·n + k] as two vec4s.
fn weights8(off: u32, n: u32, u0: u32, k: u32) -> array<vec4<f32>, 2> {
    let p = off + u0 * n + k;
    return array<vec4<f32>, 2>(
        vec4<f32>(params[p], params[p + n], params[p + 2u * n], params[p + 3u * n]),
        vec4<f32>(params[p + 4u * n], params[p + 5u * n], params[p + 6u * n], params[p + 7u * n]));
}

// acc + Σ_k W[u, k] x[k] for the thread's block (rows of row group rg, units u0 …), k < n in
// order; x from f_inp (from_inp) or f_act.
fn f_matvec(acc: Block, off: u32, n: u32, rg: u32, u0: u32, from_inp: bool) -> Block {
    var r = acc;
    for (var k = 0u; k < n; k++) {
        var x0: vec4<f32>;
        var x1: vec4<f32>;
        if (from_inp) {
            x0 = f_inp[(FR / 4u) * k + 2u * rg];
            x1 = f_inp[(FR / 4u) * k + 2u * rg + 1u];
        } else {
            x0 = f_act[(FR / 4u) * k + 2u * rg];
            x1 = f_act[(FR / 4u) * k + 2u * rg + 1u];
        }
        let w = weights8(off, n, u0, k);
        r.r0u0 += outer4(x0, w[0]);
        r.r1u0 += outer4(x1, w[0]);
        r.r0u1 += outer4(x0, w[1]);
        r.r1u1 += outer4(x1, w[1]);
    }
    return r;
}

fn bias4(off: u32, u0: u32) -> mat4x4<f32> {
    return mat4x4<f32>(vec4<f32>(params[off + u0]), vec4<f32>(params[off + u0 + 1u]),
                       vec4<f32>(params[off + u0 + 2u]), vec4<f32>(params[off + u0 + 3u]));
}

fn f_bias(off: u32, u0: u32) -> Block {
    let a = bias4(off, u0);
    let b = bias4(off, u0 + 4u);
    return Block(a, a, b, b);
}

// Class embedding rows E[y_i][u0 + c] for rows i0 … i0+3: column c = unit, component = row.
fn class4(i0: u32, u0: u32) -> mat4x4<f32> {
    let r0 = OFF_EMB + f_y[i0] * H + u0;
    let r1 = OFF_EMB + f_y[i0 + 1u] * H + u0;
    let r2 = OFF_EMB + f_y[i0 + 2u] * H + u0;
    let r3 = OFF_EMB + f_y[i0 + 3u] * H + u0;
    return mat4x4<f32>(
        vec4<f32>(params[r0], params[r1], params[r2], params[r3]),
        vec4<f32>(params[r0 + 1u], params[r1 + 1u], params[r2 + 1u], params[r3 + 1u]),
        vec4<f32>(params[r0 + 2u], params[r1 + 2u], params[r2 + 2u], params[r3 + 2u]),
        vec4<f32>(params[r0 + 3u], params[r1 + 3u], params[r2 + 3u], params[r3 + 3u]));
}

fn silu_cols(m: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(silu(m[0]), silu(m[1]), silu(m[2]), silu(m[3]));
}

// silu of the block into f_act (in place: every thread must have finished reading the layer's
// input, so this is entered after a barrier).
fn f_store(b: Block, rg: u32, u0: u32) {
    f_store4(silu_cols(b.r0u0), (FR / 4u) * u0 + 2u * rg);
    f_store4(silu_cols(b.r1u0), (FR / 4u) * u0 + 2u * rg + 1u);
    f_store4(silu_cols(b.r0u1), (FR / 4u) * (u0 + 4u) + 2u * rg);
    f_store4(silu_cols(b.r1u1), (FR / 4u) * (u0 + 4u) + 2u * rg + 1u);
}

// Columns (units) of m at f_act[at], f_act[at + FR/4], … (consecutive units).
fn f_store4(m: mat4x4<f32>, at: u32) {
    f_act[at] = m[0];
    f_act[at + FR / 4u] = m[1];
    f_act[at + 2u * (FR / 4u)] = m[2];
    f_act[at + 3u * (FR / 4u)] = m[3];
}

// Forward pass of the 16-row tile: f_inp and f_y → ε in f_out. Entered by all FT threads after
// a barrier that published f_inp's x and f_t, f_y; ends with a barrier.
fn forward16(j: u32) {
    f_fill_embedding(j);
    workgroupBarrier();
    let rg = j / 16u; // rows 8·rg … 8·rg + 7
    let u0 = 8u * (j % 16u);
    // Layer 1: z1 = W1·[x, emb] + b1 + E[y].
    var l = f_bias(OFF_B1, u0);
    let i0 = 8u * rg;
    l.r0u0 += class4(i0, u0);
    l.r1u0 += class4(i0 + 4u, u0);
    l.r0u1 += class4(i0, u0 + 4u);
    l.r1u1 += class4(i0 + 4u, u0 + 4u);
    l = f_matvec(l, OFF_W1, IN, rg, u0, true);
    f_store(l, rg, u0);
    workgroupBarrier();
    l = f_matvec(f_bias(OFF_B2, u0), OFF_W2, H, rg, u0, false);
    workgroupBarrier();
    f_store(l, rg, u0);
    workgroupBarrier();
    l = f_matvec(f_bias(OFF_B3, u0), OFF_W3, H, rg, u0, false);
    workgroupBarrier();
    f_store(l, rg, u0);
    workgroupBarrier();
    // Output layer: one (row, coordinate) per thread.
    let i = j / 2u;
    let o = j % 2u;
    var s = params[OFF_B4 + o];
    for (var k = 0u; k < H; k++) {
        s += params[OFF_W4 + o * H + k] * f_act[(FR / 4u) * k + i / 4u][i % 4u];
    }
    f_out[j] = s;
    workgroupBarrier();
}

@compute @workgroup_size(32)
fn eval_forward(
    @builtin(local_invocation_index) j: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = tile_index(wg, nwg);
    if (j < FR) {
        let b = tile * FR + j;
        var r = vec4<f32>(0.0, 0.0, 0.0, f32(u.null_class));
        if (b < u.batch) {
            r = vec4<f32>(src[b * 4u], src[b * 4u + 1u], src[b * 4u + 2u], src[b * 4u + 3u]);
        }
        f_set_row(j, r.xy, r.z, u32(r.w));
    }
    workgroupBarrier();
    forward16(j);
    if (tile * FR + j / 2u < u.batch) {
        buf_c[tile * FR * 2u + j] = f_out[j];
    }
}

// state (sample_step): (4) u32 = (first row, end row, -, -) of this dispatch, so the page can
// run a step over the particles in chunks (one dispatch per chunk); tile 0 starts at the first
// row.
@compute @workgroup_size(32)
fn sample_step(
    @builtin(local_invocation_index) j: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = tile_index(wg, nwg);
    let end = min(state[1], u.batch);
    let b = state[0] + tile * FR + j;
    var x = vec2<f32>(0.0, 0.0);
    if (j < FR) {
        var y = u.null_class;
        if (b < end) {
            x = vec2<f32>(buf_a[b * 4u], buf_a[b * 4u + 1u]);
            let c = u32(buf_a[b * 4u + 2u]);
            if (c < u.null_class) {
                y = c;
            }
        }
        f_set_row(j, x, u.t, y);
    }
    workgroupBarrier();
    forward16(j);
    // Classifier-free guidance (Ho & Salimans 2022): a second pass with the null class for
    // the rows that have a class.
    var eps_cond = vec2<f32>(0.0, 0.0);
    var guided = false;
    if (j < FR) {
        eps_cond = vec2<f32>(f_out[2u * j], f_out[2u * j + 1u]);
        guided = f_y[j] != u.null_class;
    }
    let any_class = u.null_class > 0u && u.guidance != 1.0;
    if (any_class) {
        if (j < FR) {
            f_y[j] = u.null_class;
        }
        workgroupBarrier();
        forward16(j);
    }
    if (j < FR && b < end) {
        var eps = eps_cond;
        if (any_class && guided) {
            let eps_null = vec2<f32>(f_out[2u * j], f_out[2u * j + 1u]);
            eps = eps_null + u.guidance * (eps_cond - eps_null);
        }
        let z = gauss2(pcg(u.seed ^ pcg(u.sample_step ^ pcg(b + 0x85ebca6bu))),
                       pcg(u.seed ^ pcg(u.sample_step ^ pcg(b + 0xc2b2ae35u))));
        let x_next = u.c_x * x + u.c_eps * eps + u.c_z * z;
        buf_a[b * 4u] = x_next.x;
        buf_a[b * 4u + 1u] = x_next.y;
        // Tweedie: E[x_0 | x_t] = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t (eq. 15).
        let x0 = (x - u.sqrt_one_minus_ab * eps) / u.sqrt_ab;
        buf_b[b * 2u] = x0.x;
        buf_b[b * 2u + 1u] = x0.y;
    }
}
