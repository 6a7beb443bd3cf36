//! peng3dnet on std (work in progress).
pub mod tls;
