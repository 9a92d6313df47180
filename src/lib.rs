//! adlsfs: mount Azure Data Lake Storage / Blob containers read-only, materialising each
//! file into a verified node-local cache on first open.

pub mod cli;
pub mod commands;
pub mod config;
pub mod digest;
pub mod location;
pub mod storage;
