//! The one-shot subcommands (`ls`, `stat`, `upload`, `cache`): library functions that return data,
//! printed by `main`.

pub mod cache;
pub mod ls;
pub mod prefetch;
pub mod upload;
