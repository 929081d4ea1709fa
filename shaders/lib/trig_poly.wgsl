// sin and cos of a reduced argument |r| <= ~π/4 (plus a little slack for the rounding of the
// quadrant): Taylor polynomials, truncation < 2e-9. GPU sin/cos builtins are only accurate on
// [-π, π] and differ between backends, so the timestep embedding (embedding.wgsl) and
// Box–Muller (noise.wgsl) reduce their arguments themselves and finish with these; appended
// to them by src/shaders.rs.

fn sin_poly(r: f32) -> f32 {
    let z = r * r;
    let q = -1.0 / 6.0 + z * (1.0 / 120.0 + z * (-1.0 / 5040.0 + z * (1.0 / 362880.0
        + z * (-1.0 / 39916800.0))));
    return r + r * z * q;
}

fn cos_poly(r: f32) -> f32 {
    let z = r * r;
    let q = 1.0 / 24.0 + z * (-1.0 / 720.0 + z * (1.0 / 40320.0 + z * (-1.0 / 3628800.0
        + z * (1.0 / 479001600.0))));
    return 1.0 - 0.5 * z + z * z * q;
}
