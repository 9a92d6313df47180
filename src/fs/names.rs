//! Which blob-name segments can be POSIX file names. Names that cannot are hidden (with one
//! warning each), never mapped into something that could alias another file or escape.

/// Longest file name Linux accepts (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Why a blob or prefix is not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    Empty,
    Dot,
    TooLong,
    Nul,
}

impl std::fmt::Display for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hidden::Empty => "it has an empty path segment",
            Hidden::Dot => "a '.' or '..' segment cannot be a file name",
            Hidden::TooLong => "a segment is longer than 255 bytes",
            Hidden::Nul => "it contains a NUL byte",
        })
    }
}

/// The POSIX name for one path segment, or why there is none.
pub fn posix_name(segment: &str) -> Result<&str, Hidden> {
    match segment {
        "" => Err(Hidden::Empty),
        "." | ".." => Err(Hidden::Dot),
        s if s.len() > NAME_MAX => Err(Hidden::TooLong),
        s if s.contains('\0') => Err(Hidden::Nul),
        s => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_odd_but_legal_names_are_kept() {
        for s in [
            "a",
            "with space",
            "ünï",
            "100%",
            "#?+",
            "ctl\u{1}",
            "...",
            ".hidden",
            &"x".repeat(255),
        ] {
            assert_eq!(posix_name(s), Ok(s));
        }
    }

    #[test]
    fn impossible_names_are_hidden_with_a_reason() {
        assert_eq!(posix_name(""), Err(Hidden::Empty));
        assert_eq!(posix_name("."), Err(Hidden::Dot));
        assert_eq!(posix_name(".."), Err(Hidden::Dot));
        assert_eq!(posix_name(&"x".repeat(256)), Err(Hidden::TooLong));
        assert_eq!(posix_name("a\0b"), Err(Hidden::Nul));
    }
}
