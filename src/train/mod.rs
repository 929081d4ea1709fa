//! Training (paper Algorithm 1): the backward graph, optimizer and EMA kernels driven by a
//! platform-neutral trainer; files, datasets and progress live in the native CLI.

pub mod graph;
pub mod loss_weight;
pub mod presets;
pub mod schedule;
pub mod trainer;
