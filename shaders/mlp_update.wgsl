// The lab MLP's parameter update (src/lab/mlp.rs), after mlp.wgsl's forward/backward:
//   grad_adamw  one thread per parameter: its gradient from the batch's activations and
//               deltas (∂L/∂W_l = Σ_b d_l[b] a_{l−1}[b]ᵀ, ∂L/∂b_l = Σ_b d_l[b], the class
//               embedding row c collects d_1 of the rows with class c), then AdamW
//               (Loshchilov & Hutter 2019, torch.optim.AdamW's arithmetic) and the EMA of
//               the weights, in place. The optimizer step count lives on the GPU (state[0]),
//               so many steps can be queued in one submission without CPU writes.
//   grads_only  the same gradients written to `m` (tests).
//   grad_adamw_tiled  the same gradients as tiled GEMMs, one 32 × 32 block of one layer's
//               [W | b (| class embedding)] per workgroup, the batch streamed through
//               workgroup memory 32 rows at a time (bias = a column of ones; the class
//               embedding = one-hot columns of the class used); then AdamW + EMA (mode 0)
//               or the gradient into `m` (mode 1).
//   tick        one workgroup: the batch's mean loss into the loss ring, then state[0] += 1.
// The parameter layout is shaders/lib/mlp_layout.wgsl (shared with mlp.wgsl; mlp.rs checks it).

struct Uniforms {
    batch: u32,
    n_params: u32,
    // Slots in the loss ring (state[2 ..]).
    loss_slots: u32,
    // grad_adamw_tiled: 0 = AdamW + EMA, 1 = write the gradient to m (tests).
    mode: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    // The EMA decay's ceiling; the decay used at step s is min(ema_decay, (1 + s)/(10 + s)).
    ema_decay: f32,
    _pad1: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> u: Uniforms;
// acts: (batch, IN + 3H) = (input, a1, a2, a3)
@group(0) @binding(1) var<storage, read> acts: array<f32>;
// deltas: (batch, 3H + 2) = (d1, d2, d3, d_out)
@group(0) @binding(2) var<storage, read> deltas: array<f32>;
// info: (batch, 2) = (squared error, class used)
@group(0) @binding(3) var<storage, read> info: array<f32>;
// params: (n_params)
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
// m: (n_params) AdamW's first moment; grads_only: the gradient
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
// v: (n_params) AdamW's second moment
@group(0) @binding(6) var<storage, read_write> v: array<f32>;
// ema: (n_params) EMA weights
@group(0) @binding(7) var<storage, read_write> ema: array<f32>;
// state: (2 + loss_slots) u32: [steps taken, unused, loss ring as f32 bits]
@group(0) @binding(8) var<storage, read_write> state: array<u32>;

// Sizes (H, IN, AS, DS) and parameter offsets (OFF_*): shaders/lib/mlp_layout.wgsl.

// Σ_b deltas[b, d] · acts[b, a] (a = NONE: Σ_b deltas[b, d]).
const NONE: u32 = 0xffffffffu;
fn batch_dot(d: u32, a: u32) -> f32 {
    var s = 0.0;
    if (a == NONE) {
        for (var b = 0u; b < u.batch; b++) {
            s += deltas[b * DS + d];
        }
    } else {
        for (var b = 0u; b < u.batch; b++) {
            s += deltas[b * DS + d] * acts[b * AS + a];
        }
    }
    return s;
}

fn gradient(p: u32) -> f32 {
    if (p < OFF_B1) {
        return batch_dot(p / IN, p % IN);
    }
    if (p < OFF_W2) {
        return batch_dot(p - OFF_B1, NONE);
    }
    if (p < OFF_B2) {
        let q = p - OFF_W2;
        return batch_dot(H + q / H, IN + q % H);
    }
    if (p < OFF_W3) {
        return batch_dot(H + p - OFF_B2, NONE);
    }
    if (p < OFF_B3) {
        let q = p - OFF_W3;
        return batch_dot(2u * H + q / H, IN + H + q % H);
    }
    if (p < OFF_W4) {
        return batch_dot(2u * H + p - OFF_B3, NONE);
    }
    if (p < OFF_B4) {
        let q = p - OFF_W4;
        return batch_dot(3u * H + q / H, IN + 2u * H + q % H);
    }
    if (p < OFF_EMB) {
        return batch_dot(3u * H + p - OFF_B4, NONE);
    }
    // Class embedding row c: d1 summed over the rows that used class c.
    let q = p - OFF_EMB;
    let c = f32(q / H);
    let j = q % H;
    var s = 0.0;
    for (var b = 0u; b < u.batch; b++) {
        if (info[b * 2u + 1u] == c) {
            s += deltas[b * DS + j];
        }
    }
    return s;
}

fn param_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

@compute @workgroup_size(64)
fn grad_adamw(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let p = param_index(gid, nwg);
    if (p >= u.n_params) {
        return;
    }
    adamw_ema(p, gradient(p));
}

@compute @workgroup_size(64)
fn grads_only(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let p = param_index(gid, nwg);
    if (p >= u.n_params) {
        return;
    }
    m[p] = gradient(p);
}

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn tick(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var b = lid; b < u.batch; b += 256u) {
        s += info[b * 2u];
    }
    red[lid] = s;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k = k >> 1u) {
        if (lid < k) {
            red[lid] += red[lid + k];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let step = state[0];
        // L_simple: the mean over the batch and both coordinates.
        state[2u + step % u.loss_slots] = bitcast<u32>(red[0] / (2.0 * f32(u.batch)));
        state[0] = step + 1u;
    }
}

fn adamw_ema(p: u32, g: f32) {
    let s = f32(state[0] + 1u); // torch's 1-based step
    let bc1 = 1.0 - pow(u.beta1, s);
    let bc2 = 1.0 - pow(u.beta2, s);
    var w = params[p] * (1.0 - u.lr * u.weight_decay);
    let mm = u.beta1 * m[p] + (1.0 - u.beta1) * g;
    let vv = u.beta2 * v[p] + (1.0 - u.beta2) * g * g;
    m[p] = mm;
    v[p] = vv;
    w -= (u.lr / bc1) * mm / (sqrt(vv) / sqrt(bc2) + u.eps);
    params[p] = w;
    let decay = min(u.ema_decay, (1.0 + s) / (10.0 + s));
    ema[p] -= (1.0 - decay) * (ema[p] - w);
}

// 32 threads, each owning an 8 × 8 register block (four mat4x4s) of a 64 × 32 output tile (64
// output units × 32 columns), so every value loaded from workgroup memory feeds 8
// multiply-adds (4 with the earlier 4 × 4 blocks of a 32 × 32 tile): on CPU adapters every
// workgroup-memory load is a per-lane gather, and loads per multiply-add is what counts.
const CHUNK_ROWS: u32 = 32u;
var<workgroup> tile_d: array<vec4<f32>, 512>; // (32 rows of the batch, 64 output units)
var<workgroup> tile_a: array<vec4<f32>, 256>; // (32 rows of the batch, 32 input columns)

// Layer l's gradient block as a GEMM: rows (output units), k (inputs), cols (k + bias + class
// one-hots), and where its deltas, activations and parameters are.
struct LayerGemm {
    rows: u32,
    k: u32,
    cols: u32,
    d_off: u32,
    a_off: u32,
    w_off: u32,
    b_off: u32,
}

fn layer_gemm(l: u32) -> LayerGemm {
    let classes = (u.n_params - OFF_EMB) / H; // null class included
    if (l == 0u) {
        return LayerGemm(H, IN, IN + 1u + classes, 0u, 0u, 0u, OFF_B1);
    }
    if (l == 1u) {
        return LayerGemm(H, H, H + 1u, H, IN, OFF_W2, OFF_B2);
    }
    if (l == 2u) {
        return LayerGemm(H, H, H + 1u, 2u * H, IN + H, OFF_W3, OFF_B3);
    }
    return LayerGemm(2u, H, H + 1u, 3u * H, IN + 2u * H, OFF_W4, OFF_B4);
}

fn outer4(a: vec4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(a * d.x, a * d.y, a * d.z, a * d.w);
}

// The gradient of unit j, column k: AdamW + EMA on its parameter (mode 0) or into m (mode 1).
fn put_gradient(g: LayerGemm, j: u32, k: u32, v: f32) {
    if (j >= g.rows || k >= g.cols) {
        return;
    }
    var p = g.b_off + j;
    if (k < g.k) {
        p = g.w_off + j * g.k + k;
    } else if (k > g.k) {
        p = OFF_EMB + (k - g.k - 1u) * H + j;
    }
    if (u.mode == 1u) {
        m[p] = v;
    } else {
        adamw_ema(p, v);
    }
}

// Units j, j+1, j+2, j+3 (the matrix's columns) × columns k … k+3 (their components).
fn put_block(g: LayerGemm, j: u32, k: u32, acc: mat4x4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        let col = acc[i];
        put_gradient(g, j + i, k, col.x);
        put_gradient(g, j + i, k + 1u, col.y);
        put_gradient(g, j + i, k + 2u, col.z);
        put_gradient(g, j + i, k + 3u, col.w);
    }
}

@compute @workgroup_size(8, 4)
fn grad_adamw_tiled(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    let g = layer_gemm(wg.z);
    let j0 = wg.y * 64u;
    let k0 = wg.x * 32u;
    if (j0 >= g.rows || k0 >= g.cols) {
        return; // the whole workgroup: uniform
    }
    // acc_uc: units 8·lid.x + 4u …, columns 8·lid.y + 4c ….
    var acc00 = mat4x4<f32>();
    var acc01 = mat4x4<f32>();
    var acc10 = mat4x4<f32>();
    var acc11 = mat4x4<f32>();
    for (var b0 = 0u; b0 < u.batch; b0 += CHUNK_ROWS) {
        // 32 rows × 64 deltas and 32 rows × 32 columns, 96 values per thread.
        for (var r = 0u; r < 64u; r++) {
            let idx = r * 32u + li;
            let row = idx / 64u;
            let unit = idx % 64u;
            let b = b0 + row;
            var dv = 0.0;
            if (b < u.batch && j0 + unit < g.rows) {
                dv = deltas[b * DS + g.d_off + j0 + unit];
            }
            tile_d[row * 16u + unit / 4u][unit % 4u] = dv;
        }
        for (var r = 0u; r < 32u; r++) {
            let idx = r * 32u + li;
            let row = idx / 32u;
            let col = idx % 32u;
            let b = b0 + row;
            var av = 0.0;
            if (b < u.batch) {
                let k = k0 + col;
                if (k < g.k) {
                    av = acts[b * AS + g.a_off + k];
                } else if (k == g.k) {
                    av = 1.0;
                } else if (k < g.cols && info[b * 2u + 1u] == f32(k - g.k - 1u)) {
                    av = 1.0;
                }
            }
            tile_a[row * 8u + col / 4u][col % 4u] = av;
        }
        workgroupBarrier();
        for (var bb = 0u; bb < CHUNK_ROWS; bb++) {
            let d0 = tile_d[bb * 16u + 2u * lid.x];
            let d1 = tile_d[bb * 16u + 2u * lid.x + 1u];
            let a0 = tile_a[bb * 8u + 2u * lid.y];
            let a1 = tile_a[bb * 8u + 2u * lid.y + 1u];
            acc00 += outer4(a0, d0);
            acc01 += outer4(a1, d0);
            acc10 += outer4(a0, d1);
            acc11 += outer4(a1, d1);
        }
        workgroupBarrier();
    }
    let j = j0 + 8u * lid.x;
    let k = k0 + 8u * lid.y;
    put_block(g, j, k, acc00);
    put_block(g, j, k + 4u, acc01);
    put_block(g, j + 4u, k, acc10);
    put_block(g, j + 4u, k + 4u, acc11);
}
