// The diffusion lab's fused MLP ε_θ(x_t, t, y) (src/lab/mlp.rs): input [x_t (2), sinusoidal
// embedding of t (E)] → 3 hidden SiLU layers of H units (the class embedding row of y is added
// to the first layer's pre-activation; row `null_class` is the "no class" of classifier-free
// guidance) → ε (2).
//
// One workgroup of FT = 32 threads handles a tile of FR = 16 samples: each thread owns a register
// block of 8 rows × 8 hidden units of every layer, reads those units' rows (forward) or columns
// (backward) of each weight matrix once per tile and reuses every weight 8 times and every
// activation 8 times; the tile's activations (then deltas) live transposed in workgroup memory
// (10 KiB, inside WebGPU's 16 KiB). The whole weight set (~150 KiB) does not fit there, so
// weights stream from the storage buffer.
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
    // sample_step: weight of x̂_0 in the step (c_x, c_eps include it), and the range x̂_0 is
    // clipped to (0: none), as diffusers' clip_sample.
    c_x0: f32,
    clip_x0: f32,
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

fn silu(z: vec4<f32>) -> vec4<f32> {
    return z / (1.0 + exp(-z));
}

fn silu_grad(z: vec4<f32>) -> vec4<f32> {
    let s = 1.0 / (1.0 + exp(-z));
    return s * (1.0 + z * (1.0 - s));
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

// ---- The tile: 16 rows, 32 threads, an 8 × 8 register block per thread ----
//
// Each thread's block of every layer is four mat4x4s (columns = units, a column's components =
// 4 rows): per input k it loads 8 activations (two vec4s from workgroup memory) and 8 weights
// and does 64 multiply-adds (an earlier tile of 8 rows with 2 units per thread did 16 per 10
// loads). On CPU adapters (SwiftShader, llvmpipe) every load is a per-lane gather, so
// multiply-adds per load is what counts. The tile's activations live transposed in one
// workgroup buffer, each layer written in place after a barrier (16 rows × 128 units = 8 KiB;
// inputs 2.1 KiB beside it). The training kernels keep no pre-activations in registers: they
// write z_l to the delta buffer (where d_l goes later) and read them back in the backward pass.

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

// Units u0 … u0+7 of column k of W (H × H, row-major) for Wᵀ·d: W[k, u0 …] is contiguous.
fn weights8t(off: u32, u0: u32, k: u32) -> array<vec4<f32>, 2> {
    let p = off + k * H + u0;
    return array<vec4<f32>, 2>(
        vec4<f32>(params[p], params[p + 1u], params[p + 2u], params[p + 3u]),
        vec4<f32>(params[p + 4u], params[p + 5u], params[p + 6u], params[p + 7u]));
}

// Σ_k W[k, u] d[k] (Wᵀ d, W an H × H layer at off) for the thread's block, d from f_act.
fn f_matvec_t(off: u32, rg: u32, u0: u32) -> Block {
    var r = Block(mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>());
    for (var k = 0u; k < H; k++) {
        let x0 = f_act[(FR / 4u) * k + 2u * rg];
        let x1 = f_act[(FR / 4u) * k + 2u * rg + 1u];
        let w = weights8t(off, u0, k);
        r.r0u0 += outer4(x0, w[0]);
        r.r1u0 += outer4(x1, w[0]);
        r.r0u1 += outer4(x0, w[1]);
        r.r1u1 += outer4(x1, w[1]);
    }
    return r;
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
    f_store_raw(Block(silu_cols(b.r0u0), silu_cols(b.r1u0), silu_cols(b.r0u1), silu_cols(b.r1u1)), rg, u0);
}

// The block as it is into f_act (same layout).
fn f_store_raw(b: Block, rg: u32, u0: u32) {
    f_store4(b.r0u0, (FR / 4u) * u0 + 2u * rg);
    f_store4(b.r1u0, (FR / 4u) * u0 + 2u * rg + 1u);
    f_store4(b.r0u1, (FR / 4u) * (u0 + 4u) + 2u * rg);
    f_store4(b.r1u1, (FR / 4u) * (u0 + 4u) + 2u * rg + 1u);
}

// Columns (units) of m at f_act[at], f_act[at + FR/4], … (consecutive units).
fn f_store4(m: mat4x4<f32>, at: u32) {
    f_act[at] = m[0];
    f_act[at + FR / 4u] = m[1];
    f_act[at + 2u * (FR / 4u)] = m[2];
    f_act[at + 3u * (FR / 4u)] = m[3];
}

// Forward pass of the 16-row tile: f_inp and f_y → ε in f_out. Entered by all FT threads after
// a barrier that published f_inp's x and f_t, f_y; ends with a barrier. With `keep` (training),
// each layer's pre-activations z_l go to buf_b and its activations silu(z_l) to buf_a, for the
// valid rows of the tile starting at global row `row0`. Returns the last hidden layer's z.
fn forward16(j: u32, keep: bool, row0: u32) -> Block {
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
    if (keep) {
        g_store_block(l, row0, rg, u0, 0u, true);
    }
    f_store(l, rg, u0);
    workgroupBarrier();
    l = f_matvec(f_bias(OFF_B2, u0), OFF_W2, H, rg, u0, false);
    if (keep) {
        g_store_block(l, row0, rg, u0, H, true);
    }
    workgroupBarrier();
    f_store(l, rg, u0);
    workgroupBarrier();
    l = f_matvec(f_bias(OFF_B3, u0), OFF_W3, H, rg, u0, false);
    if (keep) {
        g_store_block(l, row0, rg, u0, 2u * H, true);
    }
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
    return l;
}

// ---- Training: loss and backward pass on the tile ----

var<workgroup> f_target: array<f32, 32>; // (row, coordinate): the ε the rows were noised with
var<workgroup> f_valid: array<u32, 16>;
var<workgroup> f_sq: array<f32, 32>;
var<workgroup> f_dout: array<vec4<f32>, 8>; // d_out transposed: [FR/4 · coordinate + row/4]

fn f_set_target(i: u32, eps: vec2<f32>, valid: u32) {
    f_target[2u * i] = eps.x;
    f_target[2u * i + 1u] = eps.y;
    f_valid[i] = valid;
}

// Rows i0 … i0+3 of unit u (components of v) to the activations (buf_a, row stride AS, at
// IN + off: silu(v)) and the deltas buffer (buf_b, stride DS, at off: v itself) when `both`,
// else to the deltas buffer only; valid rows only.
fn g_store_col(v: vec4<f32>, row0: u32, i0: u32, u: u32, off: u32, both: bool) {
    let a = silu(v);
    for (var r = 0u; r < 4u; r++) {
        let i = i0 + r;
        if (f_valid[i] != 0u) {
            buf_b[(row0 + i) * DS + off + u] = v[r];
            if (both) {
                buf_a[(row0 + i) * AS + IN + off + u] = a[r];
            }
        }
    }
}

fn g_store_mat(m: mat4x4<f32>, row0: u32, i0: u32, u0: u32, off: u32, both: bool) {
    g_store_col(m[0], row0, i0, u0, off, both);
    g_store_col(m[1], row0, i0, u0 + 1u, off, both);
    g_store_col(m[2], row0, i0, u0 + 2u, off, both);
    g_store_col(m[3], row0, i0, u0 + 3u, off, both);
}

// The thread's block of a layer (units at `off` = (l − 1)·H): z (or d) to buf_b, and with
// `both` silu(z) to buf_a.
fn g_store_block(b: Block, row0: u32, rg: u32, u0: u32, off: u32, both: bool) {
    g_store_mat(b.r0u0, row0, 8u * rg, u0, off, both);
    g_store_mat(b.r1u0, row0, 8u * rg + 4u, u0, off, both);
    g_store_mat(b.r0u1, row0, 8u * rg, u0 + 4u, off, both);
    g_store_mat(b.r1u1, row0, 8u * rg + 4u, u0 + 4u, off, both);
}

// Rows i0 … i0+3 of unit u of buf_b at off (z written by this thread in the forward pass;
// 0 for rows outside the batch).
fn g_load_col(row0: u32, i0: u32, u: u32, off: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var r = 0u; r < 4u; r++) {
        if (f_valid[i0 + r] != 0u) {
            v[r] = buf_b[(row0 + i0 + r) * DS + off + u];
        }
    }
    return v;
}

// silu'(z) ⊙ m for rows i0 … and units u0 … of layer z at off in buf_b.
fn times_silu_grad(m: mat4x4<f32>, row0: u32, i0: u32, u0: u32, off: u32) -> mat4x4<f32> {
    return mat4x4<f32>(
        m[0] * silu_grad(g_load_col(row0, i0, u0, off)),
        m[1] * silu_grad(g_load_col(row0, i0, u0 + 1u, off)),
        m[2] * silu_grad(g_load_col(row0, i0, u0 + 2u, off)),
        m[3] * silu_grad(g_load_col(row0, i0, u0 + 3u, off)));
}

fn block_times_silu_grad(b: Block, row0: u32, rg: u32, u0: u32, off: u32) -> Block {
    return Block(
        times_silu_grad(b.r0u0, row0, 8u * rg, u0, off),
        times_silu_grad(b.r1u0, row0, 8u * rg + 4u, u0, off),
        times_silu_grad(b.r0u1, row0, 8u * rg, u0 + 4u, off),
        times_silu_grad(b.r1u1, row0, 8u * rg + 4u, u0 + 4u, off));
}

// W4ᵀ d_out for units u0 … u0+3 and rows i0 … i0+3 (r = 0: rows 0–3 of the group's vec4s).
fn w4t_dout(u0: u32, r: u32, rg: u32) -> mat4x4<f32> {
    let d0 = f_dout[2u * rg + r]; // coordinate 0
    let d1 = f_dout[FR / 4u + 2u * rg + r]; // coordinate 1
    return mat4x4<f32>(
        params[OFF_W4 + u0] * d0 + params[OFF_W4 + H + u0] * d1,
        params[OFF_W4 + u0 + 1u] * d0 + params[OFF_W4 + H + u0 + 1u] * d1,
        params[OFF_W4 + u0 + 2u] * d0 + params[OFF_W4 + H + u0 + 2u] * d1,
        params[OFF_W4 + u0 + 3u] * d0 + params[OFF_W4 + H + u0 + 3u] * d1);
}

// Loss and backward pass of the tile after forward16(j, true, row0) (f_target, f_valid set;
// z3 = the block it returned). With L = (1/2B) Σ_b ‖ε_θ − ε‖², d_out = (ε_θ − ε)/B;
// d_l = silu'(z_l) ⊙ W_{l+1}ᵀ d_{l+1}. Writes the inputs to buf_a (activations were written by
// the forward pass), the deltas over the z's in buf_b, and (squared error, class) to buf_c.
fn backward16(j: u32, row0: u32, z3: Block) {
    let rg = j / 16u;
    let u0 = 8u * (j % 16u);
    let inv_b = 1.0 / f32(u.batch);
    // Inputs (x_t, embedding) to the activation buffer.
    for (var q = j; q < FR * IN; q += FT) {
        let i = q / IN;
        let k = q % IN;
        if (f_valid[i] != 0u) {
            buf_a[(row0 + i) * AS + k] = f_inp[(FR / 4u) * k + i / 4u][i % 4u];
        }
    }
    {
        let i = j / 2u;
        let o = j % 2u;
        var d = 0.0;
        var err = 0.0;
        if (f_valid[i] != 0u) {
            err = f_out[j] - f_target[j];
            d = err * inv_b;
            buf_b[(row0 + i) * DS + 3u * H + o] = d;
        }
        f_sq[j] = err * err;
        f_dout[(FR / 4u) * o + i / 4u][i % 4u] = d;
    }
    workgroupBarrier();
    if (j < FR && f_valid[j] != 0u) {
        buf_c[(row0 + j) * 2u] = f_sq[2u * j] + f_sq[2u * j + 1u];
        buf_c[(row0 + j) * 2u + 1u] = f32(f_y[j]);
    }
    // d3 = silu'(z3) ⊙ W4ᵀ d_out (z3 still in registers).
    let d3 = Block(
        w4t_dout(u0, 0u, rg),
        w4t_dout(u0, 1u, rg),
        w4t_dout(u0 + 4u, 0u, rg),
        w4t_dout(u0 + 4u, 1u, rg));
    let d3s = Block(
        mat_times_silu_grad(d3.r0u0, z3.r0u0),
        mat_times_silu_grad(d3.r1u0, z3.r1u0),
        mat_times_silu_grad(d3.r0u1, z3.r0u1),
        mat_times_silu_grad(d3.r1u1, z3.r1u1));
    g_store_block(d3s, row0, rg, u0, 2u * H, false);
    // f_act (a3) was last read by the output layer, before forward16's last barrier.
    f_store_raw(d3s, rg, u0);
    workgroupBarrier();
    // d2 = silu'(z2) ⊙ W3ᵀ d3.
    let d2 = block_times_silu_grad(f_matvec_t(OFF_W3, rg, u0), row0, rg, u0, H);
    g_store_block(d2, row0, rg, u0, H, false);
    workgroupBarrier();
    f_store_raw(d2, rg, u0);
    workgroupBarrier();
    // d1 = silu'(z1) ⊙ W2ᵀ d2.
    let d1 = block_times_silu_grad(f_matvec_t(OFF_W2, rg, u0), row0, rg, u0, 0u);
    g_store_block(d1, row0, rg, u0, 0u, false);
}

fn mat_times_silu_grad(m: mat4x4<f32>, z: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(m[0] * silu_grad(z[0]), m[1] * silu_grad(z[1]), m[2] * silu_grad(z[2]), m[3] * silu_grad(z[3]));
}

@compute @workgroup_size(32)
fn train_fwd_bwd(
    @builtin(local_invocation_index) j: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row0 = tile_index(wg, nwg) * FR;
    if (j < FR) {
        let b = row0 + j;
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
        f_set_row(j, x, f32(t), y);
        f_set_target(j, e, valid);
    }
    workgroupBarrier();
    let z3 = forward16(j, true, row0);
    backward16(j, row0, z3);
}

@compute @workgroup_size(32)
fn given_fwd_bwd(
    @builtin(local_invocation_index) j: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row0 = tile_index(wg, nwg) * FR;
    if (j < FR) {
        let b = row0 + j;
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
        f_set_row(j, vec2<f32>(r[0], r[1]), r[2], u32(r[3]));
        f_set_target(j, vec2<f32>(r[4], r[5]), valid);
    }
    workgroupBarrier();
    let z3 = forward16(j, true, row0);
    backward16(j, row0, z3);
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
    _ = forward16(j, false, 0u);
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
    _ = forward16(j, false, 0u);
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
        _ = forward16(j, false, 0u);
    }
    if (j < FR && b < end) {
        var eps = eps_cond;
        if (any_class && guided) {
            let eps_null = vec2<f32>(f_out[2u * j], f_out[2u * j + 1u]);
            eps = eps_null + u.guidance * (eps_cond - eps_null);
        }
        let z = gauss2(pcg(u.seed ^ pcg(u.sample_step ^ pcg(b + 0x85ebca6bu))),
                       pcg(u.seed ^ pcg(u.sample_step ^ pcg(b + 0xc2b2ae35u))));
        // Tweedie: E[x_0 | x_t] = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t (eq. 15).
        let x0 = (x - u.sqrt_one_minus_ab * eps) / u.sqrt_ab;
        var x_next = u.c_x * x + u.c_eps * eps + u.c_z * z;
        if (u.clip_x0 > 0.0) {
            // The step with x̂_0 replaced by its clip (c_x, c_eps hold the unclipped x̂_0).
            let r = vec2<f32>(u.clip_x0);
            x_next += u.c_x0 * (clamp(x0, -r, r) - x0);
        }
        buf_a[b * 4u] = x_next.x;
        buf_a[b * 4u + 1u] = x_next.y;
        buf_b[b * 2u] = x0.x;
        buf_b[b * 2u + 1u] = x0.y;
    }
}
