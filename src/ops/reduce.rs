//! Deterministic reductions (`shaders/reduce.wgsl`).
