// Batched strided GEMM: out[b, m, n] = (alpha * sum_k A[b, m, k] B[b, k, n] + bias + residual)
// * out_scale (+ the old out[b, m, n] when accumulating gradients), f32 accumulate. Every operand is addressed through element strides, so
// transposed views (attention's Q^T, NCHW 1x1 projections) need no copies.
//
// Tiling: shaders/lib/gemm_tile.wgsl (appended; 8x16 register tile per thread, K step 16
// staged as vec4s). Every global load and store is bounds checked, so any size works.
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

// The epilogue for gemm_tile.wgsl: ob = the batch's offset in out.
struct Epilogue {
    ob: u32,
}

fn tile_store1(e: Epilogue, m: u32, n: u32, v: f32) {
    if (n >= p.n) { return; }
    let o = e.ob + m * p.o_sm + n * p.o_sn;
    var r = p.alpha * v;
    if ((p.flags & 1u) != 0u) {
        if ((p.flags & 2u) != 0u) { r += bias[n]; } else { r += bias[m]; }
    }
    if ((p.flags & 4u) != 0u) { r += residual[o]; }
    var old = 0.0;
    if ((p.flags & 8u) != 0u) { old = out[o]; }
    out[o] = r * p.out_scale + old;
}

// The whole tile with wm threads along M (BM = 8 wm rows, 8 wm threads).
fn matmul_tile(wm: u32, wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, li: u32) {
    let n_tile = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup, so returning before the barriers is allowed.
    if (n_tile >= p.n_tiles) { return; }
    let t = tile_threads(wm, lid, li);
    let m_tile = wg.z % p.m_tiles;
    let batch = wg.z / p.m_tiles;
    let m0 = m_tile * 8u * wm;
    let n0 = n_tile * BN;
    let a_base = batch * p.a_sb;
    let b_base = batch * p.b_sb;
    // Zero-initialized (WGSL function variables are).
    var acc: array<vec4<f32>, 32>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // A's vec4 group lc (4 consecutive m), B's group bc (4 consecutive n).
        for (var j = 0u; j < 4u; j++) {
            let kk = t.lr + 4u * j;
            tile_a[kk * t.bm4 + t.lc] = load_a4(a_base, m0 + 4u * t.lc, k0 + kk);
        }
        for (var j = 0u; j < 16u / t.bstep; j++) {
            let kk = t.br + t.bstep * j;
            tile_b[kk * 32u + t.bc] = load_b4(b_base, k0 + kk, n0 + 4u * t.bc);
            if (t.two_groups) {
                tile_b[kk * 32u + t.bc + 16u] = load_b4(b_base, k0 + kk, n0 + 4u * t.bc + 64u);
            }
        }
        mac_staged(&acc, t);
    }
    store_tile(Epilogue(batch * p.o_sb), &acc, t, m0, n0, p.m);
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

// Small-N variant (n <= 64; attention at 7x7, where n = 49 tokens or 32 channels): a 32 x 64
// output tile per workgroup of 8 x 8 threads, each thread a 4 x 8 register block (rows
// 4 ty .. +4, columns 8 tx .. +8). matmul_tile()'s 128-column tile leaves 60-75 % of its
// columns masked at such n and ran at ~2 GFLOP/s on llvmpipe. It reuses the staging arrays
// of gemm_tile.wgsl (A: [BK][8] vec4 groups of rows, B: [BK][16] of columns), and every
// element sums its k terms in matmul_tile()'s order, so both give the same bits.
@compute @workgroup_size(8, 8)
fn matmul_n64(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let n_tile = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup, so returning before the barriers is allowed.
    if (n_tile >= p.n_tiles) { return; }
    let m_tile = wg.z % p.m_tiles;
    let batch = wg.z / p.m_tiles;
    let m0 = m_tile * 32u;
    let n0 = n_tile * 64u;
    let a_base = batch * p.a_sb;
    let b_base = batch * p.b_sb;
    // Zero-initialized; [2 r + h]: row r of the block, columns 4 h .. +4.
    var acc: array<vec4<f32>, 8>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // 128 vec4 groups of A and 256 of B per K step: 2 and 4 per thread.
        for (var j = 0u; j < 2u; j++) {
            let i = li + 64u * j;
            tile_a[i] = load_a4(a_base, m0 + 4u * (i % 8u), k0 + i / 8u);
        }
        for (var j = 0u; j < 4u; j++) {
            let i = li + 64u * j;
            tile_b[i] = load_b4(b_base, k0 + i / 16u, n0 + 4u * (i % 16u));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let av = tile_a[kk * 8u + lid.y];
            let b0 = tile_b[kk * 16u + 2u * lid.x];
            let b1 = tile_b[kk * 16u + 2u * lid.x + 1u];
            acc[0] += av.x * b0;
            acc[1] += av.x * b1;
            acc[2] += av.y * b0;
            acc[3] += av.y * b1;
            acc[4] += av.z * b0;
            acc[5] += av.z * b1;
            acc[6] += av.w * b0;
            acc[7] += av.w * b1;
        }
        workgroupBarrier();
    }
    let e = Epilogue(batch * p.o_sb);
    let m = m0 + 4u * lid.y;
    let n = n0 + 8u * lid.x;
    tile_store_row(e, m, n, p.m, acc[0], acc[1]);
    tile_store_row(e, m + 1u, n, p.m, acc[2], acc[3]);
    tile_store_row(e, m + 2u, n, p.m, acc[4], acc[5]);
    tile_store_row(e, m + 3u, n, p.m, acc[6], acc[7]);
}
