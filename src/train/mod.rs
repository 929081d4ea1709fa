//! Training: learning-rate and EMA schedules (more modules follow).

pub mod schedule;
