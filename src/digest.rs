//! Content digests: streaming xxh3_128 (the digest adlsfs verifies and exposes), MD5 (the
//! service's Content-MD5), and the metadata-key convention shared with thds.adls.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use xxhash_rust::xxh3::Xxh3Default;

/// User-metadata key holding base64 of the big-endian xxh3_128 digest (thds.adls convention).
pub const XXH3_METADATA_KEY: &str = "hash_xxh3_128_b64";

/// Size of the buffer used when hashing a file: large enough to keep the hash, not the
/// syscalls, the bottleneck.
const HASH_BUF_SIZE: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("not valid base64: {0}")]
    Base64(String),
    #[error("expected a {expected}-byte digest, got {actual} bytes")]
    Length { expected: usize, actual: usize },
}

macro_rules! digest16 {
    ($name:ident, $algo:literal) => {
        #[doc = concat!("A 16-byte ", $algo, " digest in canonical byte order.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// The thds.core `Hash.algo` name, used in `user.hash.<algo>` xattr names.
            pub const ALGO: &'static str = $algo;

            pub fn to_base64(&self) -> String {
                BASE64.encode(self.0)
            }

            pub fn from_base64(text: &str) -> Result<Self, DigestError> {
                let bytes = BASE64
                    .decode(text.trim())
                    .map_err(|e| DigestError::Base64(e.to_string()))?;
                Self::from_slice(&bytes)
            }

            pub fn from_slice(bytes: &[u8]) -> Result<Self, DigestError> {
                let array: [u8; 16] = bytes.try_into().map_err(|_| DigestError::Length {
                    expected: 16,
                    actual: bytes.len(),
                })?;
                Ok(Self(array))
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_base64())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_base64())
            }
        }
    };
}

digest16!(Xxh3Digest, "xxh3_128");
digest16!(Md5Digest, "md5");

/// Incremental xxh3_128 over data that arrives in pieces.
#[derive(Clone, Default)]
pub struct Xxh3Hasher(Xxh3Default);

impl Xxh3Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(&self) -> Xxh3Digest {
        Xxh3Digest(self.0.digest128().to_be_bytes())
    }
}

pub fn xxh3_128(data: &[u8]) -> Xxh3Digest {
    Xxh3Digest(xxhash_rust::xxh3::xxh3_128(data).to_be_bytes())
}

pub fn md5(data: &[u8]) -> Md5Digest {
    use md5::Digest;
    Md5Digest(md5::Md5::digest(data).into())
}

/// What a [`Hasher`] computed: xxh3_128 always, MD5 when it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    pub xxh3: Xxh3Digest,
    pub md5: Option<Md5Digest>,
    /// Bytes hashed.
    pub len: u64,
}

/// The one streaming hasher: xxh3_128 (what adlsfs verifies and exposes) plus, only when
/// verification needs it, MD5 (the service's Content-MD5), fed in one pass.
#[derive(Clone, Default)]
pub struct Hasher {
    xxh3: Xxh3Hasher,
    md5: Option<md5::Md5>,
    len: u64,
}

impl Hasher {
    pub fn new(with_md5: bool) -> Self {
        Self {
            md5: with_md5.then(<md5::Md5 as md5::Digest>::new),
            ..Self::default()
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.xxh3.update(data);
        if let Some(m) = self.md5.as_mut() {
            md5::Digest::update(m, data);
        }
        self.len += data.len() as u64;
    }

    /// Feeds everything `reader` yields.
    pub fn update_from(&mut self, mut reader: impl Read) -> io::Result<()> {
        let mut buf = vec![0u8; HASH_BUF_SIZE];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn finish(self) -> Digests {
        Digests {
            xxh3: self.xxh3.finish(),
            md5: self.md5.map(|m| Md5Digest(md5::Digest::finalize(m).into())),
            len: self.len,
        }
    }

    /// Hashes a whole file.
    pub fn file(path: &Path, with_md5: bool) -> io::Result<Digests> {
        let mut hasher = Self::new(with_md5);
        hasher.update_from(std::fs::File::open(path)?)?;
        Ok(hasher.finish())
    }
}

/// Hashes everything `reader` yields, returning the digest and the byte count.
pub fn xxh3_128_reader(reader: impl Read) -> io::Result<(Xxh3Digest, u64)> {
    let mut hasher = Hasher::new(false);
    hasher.update_from(reader)?;
    let d = hasher.finish();
    Ok((d.xxh3, d.len))
}

pub fn xxh3_128_file(path: &Path) -> io::Result<(Xxh3Digest, u64)> {
    xxh3_128_reader(std::fs::File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values printed by Python: base64.b64encode(xxhash.xxh3_128(data).digest()).
    const PY_EMPTY: &str = "maoG0wFHmNhgAcMkRo1Jfw==";
    const PY_HELLO: &str = "7vrJ2HEAzRM2suczpUhEJQ==";
    const PY_1000_A: &str = "sB2jZe3aopyz569icUfbfA==";

    #[test]
    fn xxh3_matches_python_xxhash() {
        assert_eq!(xxh3_128(b"").to_base64(), PY_EMPTY);
        assert_eq!(xxh3_128(b"hello world\n").to_base64(), PY_HELLO);
        assert_eq!(xxh3_128(&[b'a'; 1000]).to_base64(), PY_1000_A);
    }

    #[test]
    fn hex_form_matches_python_hexdigest() {
        let hex: String = xxh3_128(b"")
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "99aa06d3014798d86001c324468d497f");
    }

    #[test]
    fn streaming_equals_one_shot_for_any_split() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = xxh3_128(&data);
        for split in [0, 1, 239, 240, 241, 1024, 65_536, 299_999, 300_000] {
            let mut h = Xxh3Hasher::new();
            h.update(&data[..split]);
            h.update(&data[split..]);
            assert_eq!(h.finish(), whole, "split at {split}");
        }
        let (from_reader, n) = xxh3_128_reader(&data[..]).unwrap();
        assert_eq!((from_reader, n), (whole, data.len() as u64));
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let d = xxh3_128(b"hello world\n");
        assert_eq!(Xxh3Digest::from_base64(&d.to_base64()).unwrap(), d);
        assert_eq!(
            Xxh3Digest::from_base64("AAAA").unwrap_err(),
            DigestError::Length {
                expected: 16,
                actual: 3
            }
        );
        assert!(matches!(
            Xxh3Digest::from_base64("not base64!"),
            Err(DigestError::Base64(_))
        ));
    }

    #[test]
    fn md5_of_known_input() {
        // `printf 'hello world\n' | md5sum`
        let hex: String = md5(b"hello world\n")
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "6f5902ac237024bdd0c176cb93063dc4");
        let mut both = Hasher::new(true);
        both.update_from(&b"hello world\n"[..]).unwrap();
        let d = both.finish();
        assert_eq!(d.md5, Some(md5(b"hello world\n")));
        assert_eq!((d.xxh3, d.len), (xxh3_128(b"hello world\n"), 12));
        assert_eq!(Hasher::new(false).finish().md5, None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn metadata_digests_decode_or_error_without_panicking(text in ".{0,64}") {
            let _ = Xxh3Digest::from_base64(&text);
        }

        #[test]
        fn digests_round_trip_through_base64(bytes in proptest::array::uniform16(any::<u8>())) {
            let d = Xxh3Digest(bytes);
            prop_assert_eq!(Xxh3Digest::from_base64(&d.to_base64()).unwrap(), d);
        }
    }
}
