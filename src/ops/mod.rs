//! One module per kernel family. Each holds the launcher (shape checks, dispatch math,
//! pipeline key), and under `#[cfg(test)]` its CPU f64 reference and tests against it.

pub mod conv2d;
pub mod conv2d_backward;
pub mod conv2d_direct;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod elementwise_backward;
pub mod embedding;
pub mod embedding_backward;
pub mod group_norm;
pub mod group_norm_backward;
pub mod loss;
pub mod matmul;
pub mod noise;
pub mod optim;
pub mod reduce;
pub mod sampler;
pub mod softmax;
pub mod softmax_backward;
