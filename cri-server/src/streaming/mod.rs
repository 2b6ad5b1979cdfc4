//! The streaming server's protocols: exec, attach and port-forward sessions.
pub mod spdy;
