//! TLS (work in progress).
