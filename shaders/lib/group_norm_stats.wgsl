// The statistics of one group of group normalisation, shared by the forward
// (group_norm.wgsl) and the backward (group_norm_backward.wgsl, which recomputes them with
// the same operations). Appended by src/shaders.rs after workgroup_sum.wgsl, which it uses.
// It reads the including shader's binding `x` (WGSL cannot pass a storage array to a
// function).
//
// Two passes for accuracy when |mean| >> std:
//   pass 1: m1 = mean(x) (in f32, slightly off);
//   pass 2: s1 = sum(x - m1), s2 = sum((x - m1)^2); then mean = m1 + s1/n exactly enough and
//           var = s2/n - (s1/n)^2 (the corrected two-pass algorithm, Chan, Golub & LeVeque 1983).
// Callers normalise as ((x - m1) - m_lo) * rstd, so the f32 mean's rounding does not enter.

struct GroupStats {
    // The first-pass mean.
    m1: f32,
    // mean - m1, from the second pass.
    m_lo: f32,
    // 1 / sqrt(var + eps), var biased (torch.nn.GroupNorm).
    rstd: f32,
}

// Statistics of x[base .. base + n], by the workgroup's WG threads (li = local index).
fn group_stats(li: u32, base: u32, n: u32, eps: f32) -> GroupStats {
    let inv_n = 1.0 / f32(n);
    var s0 = 0.0;
    for (var i = li; i < n; i = i + WG) {
        s0 = s0 + x[base + i];
    }
    let m1 = workgroup_sum(li, s0) * inv_n;
    var s1 = 0.0;
    var s2 = 0.0;
    for (var i = li; i < n; i = i + WG) {
        let d = x[base + i] - m1;
        s1 = s1 + d;
        s2 = s2 + d * d;
    }
    let t = workgroup_sum2(li, s1, s2);
    let m_lo = t.x * inv_n;
    let var_ = max(t.y * inv_n - m_lo * m_lo, 0.0);
    return GroupStats(m1, m_lo, 1.0 / sqrt(var_ + eps));
}
