//! Where data lives: `adls://account/container/prefix` and the equivalent abfss:// and
//! https:// forms, normalised to one struct.

use std::fmt;
use std::str::FromStr;
use url::Url;

const ACCEPTED_FORMS: &str = "accepted forms: adls://<account>/<container>[/<prefix>], \
abfss://<container>@<account>.dfs.core.windows.net[/<prefix>], \
https://<account>.blob.core.windows.net/<container>[/<prefix>] \
(or http(s)://<host>:<port>/<account>/<container>[/<prefix>] for an emulator)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid location {input:?}: {reason}; {ACCEPTED_FORMS}")]
pub struct LocationError {
    pub input: String,
    pub reason: String,
}

/// A container, or a prefix inside one, in one storage account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub account: String,
    pub container: String,
    /// Blob-name prefix without leading or trailing `/`; empty for the whole container.
    pub prefix: String,
    /// The account's blob service URL when the location itself names one that differs from
    /// the public-cloud default (sovereign clouds, emulators). An explicit endpoint option wins.
    pub endpoint: Option<Url>,
}

impl Location {
    pub fn new(account: &str, container: &str, prefix: &str) -> Result<Self, LocationError> {
        let input = format!("adls://{account}/{container}/{prefix}");
        let err = |reason: String| LocationError {
            input: input.clone(),
            reason,
        };
        validate_account(account).map_err(err)?;
        validate_container(container).map_err(err)?;
        let prefix = normalize_prefix(prefix).map_err(err)?;
        Ok(Self {
            account: account.to_string(),
            container: container.to_string(),
            prefix,
            endpoint: None,
        })
    }

    /// The blob name under this location's prefix for a path relative to it.
    pub fn blob_name(&self, relative: &str) -> String {
        match (self.prefix.is_empty(), relative.is_empty()) {
            (true, _) => relative.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{}", self.prefix, relative),
        }
    }

    /// The prefix to list the location's top level with: empty, or ending in `/`.
    pub fn dir_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    /// `adls://account/container/<blob name>`, the form of `user.adls.uri`.
    pub fn blob_uri(&self, blob_name: &str) -> String {
        format!("adls://{}/{}/{}", self.account, self.container, blob_name)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "adls://{}/{}", self.account, self.container)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| LocationError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = input.split_once("://").ok_or_else(|| err("no scheme"))?;
        let located = match scheme.to_ascii_lowercase().as_str() {
            "adls" => parse_adls(rest),
            "abfss" | "abfs" => parse_abfss(scheme, rest),
            "https" | "http" => parse_http(input),
            other => Err(format!("unknown scheme {other:?}")),
        };
        located.map_err(|reason| LocationError {
            input: input.to_string(),
            reason,
        })
    }
}

/// `account/container[/prefix]`, taken literally (thds.adls URIs are not percent-encoded).
fn parse_adls(rest: &str) -> Result<Location, String> {
    let mut parts = rest.splitn(3, '/');
    let account = parts.next().unwrap_or_default();
    let container = parts.next().unwrap_or_default();
    let prefix = parts.next().unwrap_or_default();
    build(account, container, prefix, None)
}

/// `container@account.dfs.<suffix>[/prefix]`; the prefix is percent-decoded.
fn parse_abfss(scheme: &str, rest: &str) -> Result<Location, String> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (container, host) = authority
        .split_once('@')
        .ok_or("abfss needs <container>@<account>.dfs.<suffix>")?;
    let (account, suffix) = host
        .split_once(".dfs.")
        .ok_or("abfss host must be <account>.dfs.<suffix>")?;
    let endpoint = sovereign_endpoint(scheme, account, suffix)?;
    build(account, container, &percent_decode(path)?, endpoint)
}

/// Virtual-host style `https://account.blob.<suffix>/container/prefix`, or path style
/// `http://127.0.0.1:10000/account/container/prefix` for emulators and private endpoints
/// addressed by IP or `localhost`.
fn parse_http(input: &str) -> Result<Location, String> {
    let url = Url::parse(input).map_err(|e| e.to_string())?;
    let host = url.host_str().ok_or("no host")?;
    let path = percent_decode(url.path().trim_start_matches('/'))?;
    let path_style = url.domain().is_none() || host == "localhost";
    if path_style {
        let mut parts = path.splitn(3, '/');
        let account = parts.next().unwrap_or_default().to_string();
        let container = parts.next().unwrap_or_default();
        let prefix = parts.next().unwrap_or_default();
        let mut endpoint = url.clone();
        endpoint.set_path(&account);
        endpoint.set_query(None);
        return build(&account, container, prefix, Some(endpoint));
    }
    let (account, suffix) = host
        .split_once(".blob.")
        .ok_or("https host must be <account>.blob.<suffix>")?;
    let (container, prefix) = path.split_once('/').unwrap_or((&path, ""));
    let endpoint = sovereign_endpoint(url.scheme(), account, suffix)?;
    build(account, container, prefix, endpoint)
}

/// `None` for the public cloud (the default endpoint), else the blob endpoint of `suffix`.
fn sovereign_endpoint(scheme: &str, account: &str, suffix: &str) -> Result<Option<Url>, String> {
    if suffix == "core.windows.net" {
        return Ok(None);
    }
    let scheme = if scheme == "http" || scheme == "abfs" {
        "http"
    } else {
        "https"
    };
    Url::parse(&format!("{scheme}://{account}.blob.{suffix}"))
        .map(Some)
        .map_err(|e| format!("bad endpoint suffix {suffix:?}: {e}"))
}

fn build(
    account: &str,
    container: &str,
    prefix: &str,
    endpoint: Option<Url>,
) -> Result<Location, String> {
    validate_account(account)?;
    validate_container(container)?;
    Ok(Location {
        account: account.to_string(),
        container: container.to_string(),
        prefix: normalize_prefix(prefix)?,
        endpoint,
    })
}

fn percent_decode(text: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "the path is not UTF-8 after percent-decoding".to_string())
}

/// Azure account names: 3–24 lowercase letters and digits.
fn validate_account(account: &str) -> Result<(), String> {
    let ok = (3..=24).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "account {account:?} must be 3-24 lowercase letters or digits"
        ))
    }
}

/// Azure container names: 3–63 of lowercase letters, digits and single inner hyphens.
fn validate_container(container: &str) -> Result<(), String> {
    let bytes = container.as_bytes();
    let ok = (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !container.contains("--");
    if ok || container == "$root" {
        Ok(())
    } else {
        Err(format!(
            "container {container:?} must be 3-63 lowercase letters, digits or inner single hyphens"
        ))
    }
}

/// Strips surrounding slashes; refuses segments that could never name a directory.
fn normalize_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for segment in trimmed.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "prefix {prefix:?} has an empty, '.' or '..' segment"
            ));
        }
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Location {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn adls_form_with_and_without_prefix() {
        let l = loc("adls://acct/data");
        assert_eq!(
            (l.account.as_str(), l.container.as_str(), l.prefix.as_str()),
            ("acct", "data", "")
        );
        let l = loc("adls://acct/data/a/b c/");
        assert_eq!(l.prefix, "a/b c");
        assert_eq!(l.to_string(), "adls://acct/data/a/b c");
        assert_eq!(l.endpoint, None);
        assert_eq!(l.blob_name("x.txt"), "a/b c/x.txt");
        assert_eq!(l.dir_prefix(), "a/b c/");
        assert_eq!(l.blob_uri("a/b c/x.txt"), "adls://acct/data/a/b c/x.txt");
    }

    #[test]
    fn abfss_and_https_forms_agree_with_adls() {
        let expected = loc("adls://acct/data/some dir/x");
        assert_eq!(
            loc("abfss://data@acct.dfs.core.windows.net/some%20dir/x"),
            expected
        );
        assert_eq!(
            loc("https://acct.blob.core.windows.net/data/some%20dir/x"),
            expected
        );
    }

    #[test]
    fn sovereign_cloud_sets_endpoint() {
        let l = loc("abfss://data@acct.dfs.core.chinacloudapi.cn/p");
        assert_eq!(
            l.endpoint.unwrap().as_str(),
            "https://acct.blob.core.chinacloudapi.cn/"
        );
    }

    #[test]
    fn emulator_path_style_url() {
        let l = loc("http://127.0.0.1:10000/devstoreaccount1/box/deep/er");
        assert_eq!(l.account, "devstoreaccount1");
        assert_eq!(l.container, "box");
        assert_eq!(l.prefix, "deep/er");
        assert_eq!(
            l.endpoint.unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
    }

    #[test]
    fn malformed_locations_name_the_accepted_forms() {
        for bad in [
            "acct/data",
            "s3://bucket/x",
            "adls://acct",
            "adls://Acct/data",
            "adls://acct/Data",
            "adls://acct/da",
            "adls://acct/data/a//b",
            "adls://acct/data/../x",
            "abfss://acct.dfs.core.windows.net/x",
            "https://example.com/data",
        ] {
            let e = bad.parse::<Location>().unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("adls://<account>/<container>"),
                "{bad}: {text}"
            );
            assert!(text.contains("abfss://"), "{bad}: {text}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_input_parses_or_errors_without_panicking(input in ".{0,200}") {
            let _ = input.parse::<Location>();
        }

        #[test]
        fn valid_locations_round_trip_through_display(
            account in "[a-z0-9]{3,24}",
            container in "[a-z0-9]{3,20}",
            prefix in proptest::collection::vec("[A-Za-z0-9 _.%#+-]{1,12}", 0..4),
        ) {
            let prefix: Vec<String> = prefix.into_iter().filter(|s| s != "." && s != "..").collect();
            let text = format!("adls://{account}/{container}/{}", prefix.join("/"));
            let parsed: Location = text.parse().unwrap();
            prop_assert_eq!(parsed.to_string().parse::<Location>().unwrap(), parsed.clone());
            prop_assert_eq!(parsed.prefix, prefix.join("/"));
        }
    }
}
