//! Validated, plain configuration structs, built from the CLI in one place.

use crate::location::Location;
use crate::storage::azure::{AzureConfig, AzureStore};
use crate::storage::{credentials, Result, RetryPolicy};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// How to reach and authorise against storage (credentials themselves come from the
/// environment or the credentials file, never from here).
#[derive(Debug, Clone, Default)]
pub struct StorageConfig {
    pub endpoint: Option<Url>,
    pub credentials_file: Option<PathBuf>,
    pub anonymous: bool,
    pub retry: RetryPolicy,
}

impl StorageConfig {
    /// Resolves credentials and builds the store for `location`'s container.
    pub fn connect(&self, location: &Location) -> Result<AzureStore> {
        let vars = credentials::load_vars(self.credentials_file.as_deref())?;
        let access = credentials::resolve(&vars, self.anonymous)?;
        tracing::debug!(
            credential = access.credential.kind(),
            "resolved credentials"
        );
        AzureStore::new(AzureConfig::new(
            location,
            self.endpoint.clone(),
            access,
            self.retry,
        )?)
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 5m or 2h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").is_err());
    }
}
