//! The diffusion lab: a 2-D playground where a small MLP learns ε_θ(x_t, t[, y]) on point sets
//! (Ho et al. 2020, Algorithm 1) and is compared with the exact score of the noised data.
//! Everything here is shared between the native CLI and the browser: no files, no threads,
//! no blocking (GPU results come back through async readback).
//!
//! [`data`] presets and validation; [`mlp`] the network's layout, its CPU f64 reference and
//! its fused WGSL kernels; [`train`] the GPU training loop (AdamW + EMA, a few dispatches per
//! step); [`sample`] DDPM / DDIM(η) / probability-flow particles; [`score`] the exact score of
//! q(x_t); [`metrics`] the sliced-Wasserstein fit figure and the variational bound;
//! [`field`] GPU-rendered views (densities, score arrows) and the blit that draws them.

pub mod data;
pub mod field;
pub mod generic;
pub mod metrics;
pub mod mlp;
pub mod sample;
pub mod score;
pub mod train;
