// Deterministic reductions across a workgroup of WG threads (appended by src/shaders.rs to
// group_norm, group_norm_backward, reduce, softmax, softmax_backward, loss, optim and
// optim_packed; WGSL has no imports).
//
// WG is 64 on GPUs and 8 on CPU adapters (GpuContext::reduction_workgroup, passed by the
// launchers as an override constant). A CPU adapter (llvmpipe) runs a workgroup as one coroutine per 8 lanes, and all
// of them switch at every barrier: with 256 threads the barriers cost more than the
// arithmetic (group norm backward went 1284 → 355 ms per training step of the MNIST preset
// at 64), and with 8 threads — one coroutine, nothing to switch — it went 250 → 80 ms
// (docs/training.md, "session 9"). On GPUs 64 keeps lanes busy. The sums run in two levels
// (runs of 8 in index order, then the WG / 8 partials) with two barriers, in a fixed order,
// so results are bit-identical from run to run (no float atomics) for a given WG.
//
// Every invocation of the workgroup must call these (uniform control flow). Consecutive calls
// need no barrier in between: wg_red is last read before a call's second barrier, and wg_red8
// is next written after the next call's first one.

// Threads per workgroup of the kernels that reduce: 8, 16, 32 or 64 (a multiple of 8, at
// most 64: the arrays below are sized for 64). Kernels that take it from the launcher declare
// @workgroup_size(WG); the others keep @workgroup_size(64) and the default.
override WG: u32 = 64u;

var<workgroup> wg_red: array<vec2<f32>, 64>;
var<workgroup> wg_red8: array<vec2<f32>, 8>;

fn wg_combine(a: vec2<f32>, b: vec2<f32>, is_max: bool) -> vec2<f32> {
    return select(a + b, max(a, b), is_max);
}

// Sum (or max, when is_max) of v over the workgroup, per component; every thread gets it.
// Sums start from 0 and maxima from -FLT_MAX, then take the WG values in index order.
fn workgroup_reduce(li: u32, v: vec2<f32>, is_max: bool) -> vec2<f32> {
    // -FLT_MAX, exactly (Tint rejects literals that round past FLT_MAX).
    let identity = select(vec2<f32>(0.0), vec2<f32>(bitcast<f32>(0xff7fffffu)), is_max);
    wg_red[li] = v;
    workgroupBarrier();
    if (li < WG / 8u) {
        var a = identity;
        for (var k = 0u; k < 8u; k++) {
            a = wg_combine(a, wg_red[li * 8u + k], is_max);
        }
        wg_red8[li] = a;
    }
    workgroupBarrier();
    var t = identity;
    for (var k = 0u; k < WG / 8u; k++) {
        t = wg_combine(t, wg_red8[k], is_max);
    }
    return t;
}

// Σ a and Σ b over the workgroup, together (one pair of barriers).
fn workgroup_sum2(li: u32, a: f32, b: f32) -> vec2<f32> {
    return workgroup_reduce(li, vec2<f32>(a, b), false);
}

fn workgroup_sum(li: u32, v: f32) -> f32 {
    return workgroup_reduce(li, vec2<f32>(v, 0.0), false).x;
}

fn workgroup_max(li: u32, v: f32) -> f32 {
    return workgroup_reduce(li, vec2<f32>(v, 0.0), true).x;
}

// Up to 8 pairs of sums with one pair of barriers (the group-norm backward's per-channel Σdz
// and Σdz·x̂; one workgroup_sum2 per channel cost two barriers each). Each thread li stores
// its pair for slot k (< 8) in wg_slots[k * WG + li], then calls workgroup_slots_reduce(li,
// count) (uniform control flow), after which workgroup_slot_sum(k) is slot k's total. The
// sums run in workgroup_reduce's order (runs of 8 in index order, then the WG / 8 partials),
// so each slot's total has the same bits as workgroup_sum2 of the same values. Consecutive
// rounds need no barrier in between, for the same reason as workgroup_reduce's.
var<workgroup> wg_slots: array<vec2<f32>, 512>;
var<workgroup> wg_slots8: array<vec2<f32>, 64>;

fn workgroup_slots_reduce(li: u32, count: u32) {
    workgroupBarrier();
    // WG / 8 threads per slot, each summing a run of 8.
    let runs = WG / 8u;
    if (li < runs * count) {
        let base = (li / runs) * WG + (li % runs) * 8u;
        var a = vec2<f32>(0.0);
        for (var k = 0u; k < 8u; k++) {
            a = a + wg_slots[base + k];
        }
        wg_slots8[(li / runs) * 8u + li % runs] = a;
    }
    workgroupBarrier();
}

fn workgroup_slot_sum(k: u32) -> vec2<f32> {
    var t = vec2<f32>(0.0);
    for (var j = 0u; j < WG / 8u; j++) {
        t = t + wg_slots8[k * 8u + j];
    }
    return t;
}
