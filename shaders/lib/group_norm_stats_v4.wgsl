// group_norm_stats.wgsl for groups read as vec4 (group_norm_v4.wgsl and
// group_norm_backward_v4.wgsl, whose binding `x` is an array<vec4<f32>>; H·W is a multiple of
// 4, so a group starts on a vec4). The same two passes; each thread sums its vec4s
// component-wise and adds the four components before the workgroup sum. Appended by
// src/shaders.rs after workgroup_sum.wgsl, which it uses.

struct GroupStats4 {
    // The first-pass mean.
    m1: f32,
    // mean - m1, from the second pass.
    m_lo: f32,
    // 1 / sqrt(var + eps), var biased (torch.nn.GroupNorm).
    rstd: f32,
}

fn hsum4(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// Statistics of the 4·n4 values x[base4 .. base4 + n4] (vec4 indices), by the workgroup's WG
// threads (li = local index).
fn group_stats_v4(li: u32, base4: u32, n4: u32, eps: f32) -> GroupStats4 {
    let inv_n = 1.0 / f32(4u * n4);
    var s0 = vec4<f32>(0.0);
    for (var i = li; i < n4; i = i + WG) {
        s0 = s0 + x[base4 + i];
    }
    let m1 = workgroup_sum(li, hsum4(s0)) * inv_n;
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    for (var i = li; i < n4; i = i + WG) {
        let d = x[base4 + i] - m1;
        s1 = s1 + d;
        s2 = s2 + d * d;
    }
    let t = workgroup_sum2(li, hsum4(s1), hsum4(s2));
    let m_lo = t.x * inv_n;
    let var_ = max(t.y * inv_n - m_lo * m_lo, 0.0);
    return GroupStats4(m1, m_lo, 1.0 / sqrt(var_ + eps));
}
