//! The one-shot subcommands (`ls`, `stat`, `upload`): library functions that return data,
//! printed by `main`.

pub mod ls;
pub mod upload;
