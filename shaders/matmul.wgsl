// Batched strided GEMM: out[b, m, n] = (alpha * sum_k A[b, m, k] B[b, k, n] + bias + residual)
// * out_scale (+ the old out[b, m, n] when accumulating gradients), f32 accumulate. Every operand is addressed through element strides, so
// transposed views (attention's Q^T, NCHW 1x1 projections) need no copies.
//
// Tiling: a workgroup of 8x8 threads computes a 64x128 output tile; each thread holds an 8x16
// register tile (32 vec4 accumulators). Per K step of 16, the workgroup stages a 16x64 slice
// of A and a 16x128 slice of B in workgroup memory as vec4s (4 consecutive m or n), so that
// the inner loop is 6 vec4 workgroup loads and 32 vec4 multiply-adds. (On llvmpipe this is
// ~20% faster than an 8x8 register tile; vec4 workgroup loads are much cheaper there than
// scalar ones, and uniform-row variants were slower.) Every global load and store is bounds
// checked, so any size works. Private arrays are indexed only with constants, so that the
// compiler keeps the accumulators in registers (llvmpipe would otherwise spill them).
//
// Small-M variants: entry points matmul (64 rows, 8x8 threads), matmul_m32 (8x4) and
// matmul_m16 (8x2) share matmul_tile(); same register tile, fewer threads, so a small m (a
// 16- or 32-channel 1x1 projection) wastes fewer masked rows. Literal entry points rather
// than override constants, so workgroup sizes and loop bounds are constants everywhere.
//
// Grid: x/y = the n tile as a linear index (wg.x + wg.y * num_workgroups.x, see gpu::grid_1d),
// z = b * m_tiles + m tile.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    n_tiles: u32,
    a_sb: u32,
    a_sm: u32,
    a_sk: u32,
    m_tiles: u32,
    b_sb: u32,
    b_sk: u32,
    b_sn: u32,
    // bit 0: bias present; bit 1: bias is indexed by n (else by m); bit 2: residual present;
    // bit 3: accumulate (out += result, for gradients of tensors consumed twice).
    flags: u32,
    o_sb: u32,
    o_sm: u32,
    o_sn: u32,
    _pad0: u32,
    alpha: f32,
    out_scale: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// a: A[b, m, k] at b*a_sb + m*a_sm + k*a_sk
@group(0) @binding(1) var<storage, read> a: array<f32>;
// b: B[b, k, n] at b*b_sb + k*b_sk + n*b_sn
@group(0) @binding(2) var<storage, read> b: array<f32>;
// bias: (M) or (N) per flags; any buffer when absent
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// residual: addressed like out; any buffer when absent
@group(0) @binding(4) var<storage, read> residual: array<f32>;
// out: out[b, m, n] at b*o_sb + m*o_sm + n*o_sn (read too when accumulating)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const BN: u32 = 128u;
const BK: u32 = 16u;

// [BK][BM / 4] (BM <= 64) and [BK][BN / 4]
var<workgroup> tile_a: array<vec4<f32>, 256>;
var<workgroup> tile_b: array<vec4<f32>, 512>;

// A[m .. m+4, k], zero outside the matrix. Clamped indices and selects rather than
// branches: on SIMD-over-invocations implementations (llvmpipe) divergent branches around
// loads are expensive.
fn load_a4(base: u32, m: u32, k: u32) -> vec4<f32> {
    let ms = vec4<u32>(m) + vec4<u32>(0u, 1u, 2u, 3u);
    let ok = (ms < vec4<u32>(p.m)) & vec4<bool>(k < p.k);
    let i = select(vec4<u32>(0u), vec4<u32>(base + k * p.a_sk) + ms * p.a_sm, ok);
    return select(vec4<f32>(0.0), vec4<f32>(a[i.x], a[i.y], a[i.z], a[i.w]), ok);
}

// B[k, n .. n+4], zero outside the matrix.
fn load_b4(base: u32, k: u32, n: u32) -> vec4<f32> {
    let ns = vec4<u32>(n) + vec4<u32>(0u, 1u, 2u, 3u);
    let ok = (ns < vec4<u32>(p.n)) & vec4<bool>(k < p.k);
    let i = select(vec4<u32>(0u), vec4<u32>(base + k * p.b_sk) + ns * p.b_sn, ok);
    return select(vec4<f32>(0.0), vec4<f32>(b[i.x], b[i.y], b[i.z], b[i.w]), ok);
}

fn store1(ob: u32, m: u32, n: u32, v: f32) {
    if (n >= p.n) { return; }
    let o = ob + m * p.o_sm + n * p.o_sn;
    var r = p.alpha * v;
    if ((p.flags & 1u) != 0u) {
        if ((p.flags & 2u) != 0u) { r += bias[n]; } else { r += bias[m]; }
    }
    if ((p.flags & 4u) != 0u) { r += residual[o]; }
    var old = 0.0;
    if ((p.flags & 8u) != 0u) { old = out[o]; }
    out[o] = r * p.out_scale + old;
}

// Row m, columns n .. n+8 of the thread's register tile.
fn store_row(ob: u32, m: u32, n: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (m >= p.m) { return; }
    store1(ob, m, n, v0.x);
    store1(ob, m, n + 1u, v0.y);
    store1(ob, m, n + 2u, v0.z);
    store1(ob, m, n + 3u, v0.w);
    store1(ob, m, n + 4u, v1.x);
    store1(ob, m, n + 5u, v1.y);
    store1(ob, m, n + 6u, v1.z);
    store1(ob, m, n + 7u, v1.w);
}


// One K step of the register-tiled product: thread (tx, ty) owns rows 8 ty .. +8 and
// columns 16 tx .. +16 of the tile; bm4 = BM / 4.
fn mac_tile(acc: ptr<function, array<vec4<f32>, 32>>, tx: u32, ty: u32, bm4: u32) {
    for (var kk = 0u; kk < BK; kk++) {
        let a0 = tile_a[kk * bm4 + 2u * ty];
        let a1 = tile_a[kk * bm4 + 2u * ty + 1u];
        let b0 = tile_b[kk * 32u + 4u * tx];
        let b1 = tile_b[kk * 32u + 4u * tx + 1u];
        let b2 = tile_b[kk * 32u + 4u * tx + 2u];
        let b3 = tile_b[kk * 32u + 4u * tx + 3u];
        (*acc)[0] += a0.x * b0;
        (*acc)[1] += a0.x * b1;
        (*acc)[2] += a0.x * b2;
        (*acc)[3] += a0.x * b3;
        (*acc)[4] += a0.y * b0;
        (*acc)[5] += a0.y * b1;
        (*acc)[6] += a0.y * b2;
        (*acc)[7] += a0.y * b3;
        (*acc)[8] += a0.z * b0;
        (*acc)[9] += a0.z * b1;
        (*acc)[10] += a0.z * b2;
        (*acc)[11] += a0.z * b3;
        (*acc)[12] += a0.w * b0;
        (*acc)[13] += a0.w * b1;
        (*acc)[14] += a0.w * b2;
        (*acc)[15] += a0.w * b3;
        (*acc)[16] += a1.x * b0;
        (*acc)[17] += a1.x * b1;
        (*acc)[18] += a1.x * b2;
        (*acc)[19] += a1.x * b3;
        (*acc)[20] += a1.y * b0;
        (*acc)[21] += a1.y * b1;
        (*acc)[22] += a1.y * b2;
        (*acc)[23] += a1.y * b3;
        (*acc)[24] += a1.z * b0;
        (*acc)[25] += a1.z * b1;
        (*acc)[26] += a1.z * b2;
        (*acc)[27] += a1.z * b3;
        (*acc)[28] += a1.w * b0;
        (*acc)[29] += a1.w * b1;
        (*acc)[30] += a1.w * b2;
        (*acc)[31] += a1.w * b3;
    }
}

// The whole tile with wm threads along M (BM = 8 wm rows, 8 wm threads).
fn matmul_tile(wm: u32, wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, li: u32) {
    let n_tile = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup, so returning before the barriers is allowed.
    if (n_tile >= p.n_tiles) { return; }
    let bm = 8u * wm;
    let bm4 = 2u * wm;
    let threads = 8u * wm;
    let m_tile = wg.z % p.m_tiles;
    let batch = wg.z / p.m_tiles;
    let m0 = m_tile * bm;
    let n0 = n_tile * BN;
    let a_base = batch * p.a_sb;
    let b_base = batch * p.b_sb;
    // Loaders: thread li stages A's vec4 column group lc (4 consecutive m) of K rows lr,
    // lr+4, ... (bm4 groups x 16 rows = 4 per thread), and B's vec4 group bc (4 consecutive
    // n) of K rows br, br+bstep, ...; with 16 threads, groups bc and bc + 16 of every row.
    let lc = li % bm4;
    let lr = li / bm4;
    let bc = li % 32u;
    let br = li / 32u;
    let bstep = max(threads / 32u, 1u);
    let two_groups = threads < 32u;
    // Compute: thread (tx, ty) owns rows m0 + 8 ty .. +8, columns n0 + 16 tx .. +16.
    let tx = lid.x;
    let ty = lid.y;
    // Zero-initialized (WGSL function variables are).
    var acc: array<vec4<f32>, 32>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var j = 0u; j < 4u; j++) {
            let kk = lr + 4u * j;
            tile_a[kk * bm4 + lc] = load_a4(a_base, m0 + 4u * lc, k0 + kk);
        }
        for (var j = 0u; j < 16u / bstep; j++) {
            let kk = br + bstep * j;
            tile_b[kk * 32u + bc] = load_b4(b_base, k0 + kk, n0 + 4u * bc);
            if (two_groups) {
                tile_b[kk * 32u + bc + 16u] = load_b4(b_base, k0 + kk, n0 + 4u * bc + 64u);
            }
        }
        workgroupBarrier();
        mac_tile(&acc, tx, ty, bm4);
        workgroupBarrier();
    }
    let ob = batch * p.o_sb;
    let m = m0 + 8u * ty;
    let n = n0 + 16u * tx;
    store_row(ob, m + 0u, n, acc[0], acc[1]);
    store_row(ob, m + 0u, n + 8u, acc[2], acc[3]);
    store_row(ob, m + 1u, n, acc[4], acc[5]);
    store_row(ob, m + 1u, n + 8u, acc[6], acc[7]);
    store_row(ob, m + 2u, n, acc[8], acc[9]);
    store_row(ob, m + 2u, n + 8u, acc[10], acc[11]);
    store_row(ob, m + 3u, n, acc[12], acc[13]);
    store_row(ob, m + 3u, n + 8u, acc[14], acc[15]);
    store_row(ob, m + 4u, n, acc[16], acc[17]);
    store_row(ob, m + 4u, n + 8u, acc[18], acc[19]);
    store_row(ob, m + 5u, n, acc[20], acc[21]);
    store_row(ob, m + 5u, n + 8u, acc[22], acc[23]);
    store_row(ob, m + 6u, n, acc[24], acc[25]);
    store_row(ob, m + 6u, n + 8u, acc[26], acc[27]);
    store_row(ob, m + 7u, n, acc[28], acc[29]);
    store_row(ob, m + 7u, n + 8u, acc[30], acc[31]);
}

@compute @workgroup_size(8, 8)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    matmul_tile(8u, wg, nwg, lid, li);
}

@compute @workgroup_size(8, 4)
fn matmul_m32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    matmul_tile(4u, wg, nwg, lid, li);
}

@compute @workgroup_size(8, 2)
fn matmul_m16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    matmul_tile(2u, wg, nwg, lid, li);
}
