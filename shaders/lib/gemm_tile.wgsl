// The register-tiled GEMM core shared by matmul.wgsl, conv2d.wgsl and conv2d_backward.wgsl
// (appended to them by src/shaders.rs; WGSL has no imports).
//
// Tiling: a workgroup of 8 x WM threads (WM = 8, 4 or 2: the shaders' entry points with 64-,
// 32- and 16-row tiles) computes a (8·WM) x 128 output tile; each thread holds an 8x16
// register tile (32 vec4 accumulators). Per K step of 16, the workgroup stages a 16 x (8·WM)
// slice of A and a 16x128 slice of B in workgroup memory as vec4s (4 consecutive rows or
// columns), so that the inner loop is 6 vec4 workgroup loads and 32 vec4 multiply-adds. (On
// llvmpipe this is ~20% faster than an 8x8 register tile; vec4 workgroup loads are much
// cheaper there than scalar ones, and uniform-row variants were slower.) Private arrays are
// indexed only with constants, so that the compiler keeps the accumulators in registers
// (llvmpipe would otherwise spill them).
//
// What the including shader provides: the loaders that fill tile_a / tile_b for one K step
// (its own operands and index math), and the epilogue, as
//   struct Epilogue { ... }  // what its stores need besides the position
//   fn tile_store1(e: Epilogue, m: u32, n: u32, v: f32)  // one element; checks n itself

const BN: u32 = 128u;
const BK: u32 = 16u;

// tile_a: [BK][BM / 4] vec4 groups of A (BM <= 64)
var<workgroup> tile_a: array<vec4<f32>, 256>;
// tile_b: [BK][BN / 4] vec4 groups of B
var<workgroup> tile_b: array<vec4<f32>, 512>;

// Which part of the tiles a thread stages and computes.
struct TileThreads {
    // BM / 4 (A's vec4 groups per K row).
    bm4: u32,
    // A loader: vec4 group lc (4 consecutive rows) of K rows lr, lr + 4, lr + 8, lr + 12
    // (bm4 groups x 16 rows = 4 per thread).
    lc: u32,
    lr: u32,
    // B loader: vec4 group bc (4 consecutive columns) of K rows br, br + bstep, ...; with 16
    // threads (two_groups), groups bc and bc + 16 of every row.
    bc: u32,
    br: u32,
    bstep: u32,
    two_groups: bool,
    // Compute: thread (tx, ty) owns rows 8 ty .. +8 and columns 16 tx .. +16 of the tile.
    tx: u32,
    ty: u32,
}

// wm threads along M (BM = 8 wm rows, 8 wm threads); li = local_invocation_index.
fn tile_threads(wm: u32, lid: vec3<u32>, li: u32) -> TileThreads {
    let bm4 = 2u * wm;
    let threads = 8u * wm;
    return TileThreads(bm4, li % bm4, li / bm4, li % 32u, li / 32u, max(threads / 32u, 1u),
                       threads < 32u, lid.x, lid.y);
}

// floor(k / d) for k < 2^24 without an integer division (which SIMD CPUs such as llvmpipe
// run one lane at a time): a float estimate, then one correction step each way. For the
// implicit GEMMs' index math (~3-4% of a convolution's time saved on llvmpipe).
fn div_small(k: u32, d: u32, inv_d: f32) -> u32 {
    var q = u32(f32(k) * inv_d);
    q = select(q, q - 1u, q * d > k);
    q = select(q, q + 1u, (q + 1u) * d <= k);
    return q;
}

// One K step of the register-tiled product from the staged tiles. Constant indices only,
// so that the accumulators stay in registers.
fn mac_tile(acc: ptr<function, array<vec4<f32>, 32>>, t: TileThreads) {
    for (var kk = 0u; kk < BK; kk++) {
        let a0 = tile_a[kk * t.bm4 + 2u * t.ty];
        let a1 = tile_a[kk * t.bm4 + 2u * t.ty + 1u];
        let b0 = tile_b[kk * 32u + 4u * t.tx];
        let b1 = tile_b[kk * 32u + 4u * t.tx + 1u];
        let b2 = tile_b[kk * 32u + 4u * t.tx + 2u];
        let b3 = tile_b[kk * 32u + 4u * t.tx + 3u];
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

// After the loaders of a K step: wait until the tiles are staged, accumulate, and wait until
// every thread has read them before the next step overwrites them. Uniform control flow only.
fn mac_staged(acc: ptr<function, array<vec4<f32>, 32>>, t: TileThreads) {
    workgroupBarrier();
    mac_tile(acc, t);
    workgroupBarrier();
}

// Row m (skipped when m >= rows), columns n .. n+8 of the thread's register tile.
fn tile_store_row(e: Epilogue, m: u32, n: u32, rows: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (m >= rows) { return; }
    tile_store1(e, m, n, v0.x);
    tile_store1(e, m, n + 1u, v0.y);
    tile_store1(e, m, n + 2u, v0.z);
    tile_store1(e, m, n + 3u, v0.w);
    tile_store1(e, m, n + 4u, v1.x);
    tile_store1(e, m, n + 5u, v1.y);
    tile_store1(e, m, n + 6u, v1.z);
    tile_store1(e, m, n + 7u, v1.w);
}

// The thread's register tile to rows m0 + 8 ty .. +8, columns n0 + 16 tx .. +16 of the output
// (m0, n0: the workgroup tile's origin; rows: the GEMM's M), through the shader's tile_store1.
fn store_tile(e: Epilogue, acc: ptr<function, array<vec4<f32>, 32>>, t: TileThreads, m0: u32,
              n0: u32, rows: u32) {
    let m = m0 + 8u * t.ty;
    let n = n0 + 16u * t.tx;
    tile_store_row(e, m + 0u, n, rows, (*acc)[0], (*acc)[1]);
    tile_store_row(e, m + 0u, n + 8u, rows, (*acc)[2], (*acc)[3]);
    tile_store_row(e, m + 1u, n, rows, (*acc)[4], (*acc)[5]);
    tile_store_row(e, m + 1u, n + 8u, rows, (*acc)[6], (*acc)[7]);
    tile_store_row(e, m + 2u, n, rows, (*acc)[8], (*acc)[9]);
    tile_store_row(e, m + 2u, n + 8u, rows, (*acc)[10], (*acc)[11]);
    tile_store_row(e, m + 3u, n, rows, (*acc)[12], (*acc)[13]);
    tile_store_row(e, m + 3u, n + 8u, rows, (*acc)[14], (*acc)[15]);
    tile_store_row(e, m + 4u, n, rows, (*acc)[16], (*acc)[17]);
    tile_store_row(e, m + 4u, n + 8u, rows, (*acc)[18], (*acc)[19]);
    tile_store_row(e, m + 5u, n, rows, (*acc)[20], (*acc)[21]);
    tile_store_row(e, m + 5u, n + 8u, rows, (*acc)[22], (*acc)[23]);
    tile_store_row(e, m + 6u, n, rows, (*acc)[24], (*acc)[25]);
    tile_store_row(e, m + 6u, n + 8u, rows, (*acc)[26], (*acc)[27]);
    tile_store_row(e, m + 7u, n, rows, (*acc)[28], (*acc)[29]);
    tile_store_row(e, m + 7u, n + 8u, rows, (*acc)[30], (*acc)[31]);
}
