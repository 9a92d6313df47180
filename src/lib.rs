//! adlsfs: mount Azure Data Lake Storage / Blob containers read-only, materialising each
//! file into a verified node-local cache on first open.
//!
//! Data path: kernel `open` → [`fuse`] → [`fs::AdlsFs::open`] → [`cache::Cache::get_or_fetch`]
//! (hit, or single-flight + lock → [`fetch`] → verify → rename) → handle → passthrough or pread.

pub mod app;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod fetch;
pub mod fs;
pub mod fuse;
pub mod location;
pub mod metrics;
pub mod mount_options;
pub mod storage;
