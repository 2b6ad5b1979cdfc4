//! Pod networking through CNI.

pub mod conf;
