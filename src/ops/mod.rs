//! One module per kernel family. Each holds the launcher (shape checks, dispatch math,
//! pipeline key), and under `#[cfg(test)]` its CPU f64 reference and tests against it.

pub mod conv2d;
pub mod conv2d_backward;
pub mod elementwise;
pub mod embedding;
pub mod group_norm;
pub mod matmul;
pub mod noise;
pub mod reduce;
pub mod sampler;
pub mod softmax;
