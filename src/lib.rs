//! adlsfs: mount Azure Data Lake Storage / Blob containers read-only, materialising each
//! file into a verified node-local cache on first open.
//!
//! Data path: kernel `open` → [`fuse`] → [`fs::AdlsFs::open`] → [`materialise::Materialiser::open`]
//! (cache hit, or single-flight + entry lock → [`fetch`] → [`materialise::verify`] → fsync →
//! publish into [`cache`]) → handle → passthrough or pread.

pub mod app;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod fs;
pub mod fuse;
pub mod location;
pub mod materialise;
pub mod metrics;
pub mod mount_options;
pub mod single_flight;
pub mod storage;
