//! One error type for the whole crate. Nothing below the CLI/UI panics on bad input:
//! every failure becomes one of these, with a message a person can act on.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable GPU adapter, or the device could not be created.
    #[error("no usable GPU: {0}")]
    NoGpu(String),
    /// A validation, out-of-memory or device-lost error reported by wgpu.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// Tensors of the wrong shape were given to an op, or a size is over a device limit.
    #[error("shape error: {0}")]
    Shape(String),
    /// A model or scheduler configuration we do not support (names the field).
    #[error("unsupported configuration: {0}")]
    Config(String),
    /// Missing, unexpected or misshapen tensors in a weights file.
    #[error("weights: {0}")]
    Weights(String),
    /// A file that is missing, unreadable or malformed.
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    /// Anything else, with a message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn shape(msg: impl fmt::Display) -> Self {
        Error::Shape(msg.to_string())
    }
    pub fn config(msg: impl fmt::Display) -> Self {
        Error::Config(msg.to_string())
    }
    pub fn weights(msg: impl fmt::Display) -> Self {
        Error::Weights(msg.to_string())
    }
    pub fn file(path: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::File {
            path: path.to_string(),
            msg: msg.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
