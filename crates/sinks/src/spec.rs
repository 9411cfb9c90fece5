//! How a sink is configured: a [`SinkSpec`] is a URL plus options, from `--sink URL` (options
//! as query parameters, repeatable) or from a `[[sinks]]` table of `vcontap.toml`
//! (`url`, optional `name`, and an `[sinks.options]` table). Both reach the sink's builder
//! as the same [`Options`], which errors on an option the sink does not know, so a typo is a
//! clear start-up error rather than a silently ignored setting.
//!
//! The sink's *name* keys its spool cursor, dead-letter folder and metrics labels. It is the
//! configured `name`, else the URL without credentials and query (secrets never become
//! file names or metric labels).

use std::collections::BTreeMap;

use serde::Deserialize;
use url::Url;

use crate::sink::Built;

/// A bad sink configuration, reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse.
    #[error("sink `{url}`: not a URL ({why})")]
    Url {
        /// What was given (credentials masked).
        url: String,
        /// The parser's reason.
        why: String,
    },
    /// No sink handles this scheme (or its cargo feature is not built).
    #[error("sink `{url}`: unknown scheme `{scheme}` (known: {known})")]
    Scheme {
        /// What was given.
        url: String,
        /// The scheme.
        scheme: String,
        /// The schemes this build knows.
        known: String,
    },
    /// An option is unknown or has a bad value.
    #[error("sink `{sink}`: option `{option}`: {why}")]
    Option {
        /// The sink's name.
        sink: String,
        /// The option.
        option: String,
        /// Why it is wrong.
        why: String,
    },
    /// Anything else about the sink's settings.
    #[error("sink `{sink}`: {why}")]
    Invalid {
        /// The sink's name.
        sink: String,
        /// Why.
        why: String,
    },
}

/// One `[[sinks]]` entry of `vcontap.toml`.
///
/// ```toml
/// [[sinks]]
/// url = "redis://127.0.0.1:6379/0"
/// name = "redis-main"            # optional: keys the spool cursor and metrics
/// [sinks.options]
/// ingress = ["default", "audit"]  # same keys as the URL's query parameters
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkTable {
    /// The sink URL (scheme picks the sink).
    pub url: String,
    /// Optional stable name.
    #[serde(default)]
    pub name: Option<String>,
    /// Options (strings, numbers, booleans or arrays of them).
    #[serde(default)]
    pub options: BTreeMap<String, OptionValue>,
}

/// A value in `[sinks.options]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OptionValue {
    /// `key = "v"`, `key = 3`, `key = true`.
    One(Scalar),
    /// `key = ["a", "b"]` (a repeatable option).
    Many(Vec<Scalar>),
}

/// A scalar option value.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    fn render(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// A sink to build: its URL (query removed), its name, and its options.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// The URL without the query (options moved to [`SinkSpec::options`]).
    pub url: Url,
    /// Stable name (cursor, dead letters, metrics).
    pub name: String,
    /// Options from the query string and/or the TOML table.
    pub options: Options,
}

impl SinkSpec {
    /// Parses `--sink URL`: options are the query parameters (repeatable).
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let mut url = Url::parse(s).map_err(|e| ConfigError::Url {
            url: mask(s),
            why: e.to_string(),
        })?;
        let mut options = Options::default();
        for (k, v) in url.query_pairs() {
            options.push(&k, &v);
        }
        url.set_query(None);
        url.set_fragment(None);
        let name = default_name(&url);
        options.sink = name.clone();
        Ok(SinkSpec { url, name, options })
    }

    /// A `[[sinks]]` table: the URL's query parameters and the options table combine.
    pub fn from_table(t: &SinkTable) -> Result<Self, ConfigError> {
        let mut spec = SinkSpec::parse(&t.url)?;
        for (k, v) in &t.options {
            match v {
                OptionValue::One(s) => spec.options.push(k, &s.render()),
                OptionValue::Many(vs) => {
                    for s in vs {
                        spec.options.push(k, &s.render());
                    }
                }
            }
        }
        if let Some(n) = &t.name {
            if n.is_empty() || n.len() > 100 {
                return Err(ConfigError::Invalid {
                    sink: n.clone(),
                    why: "`name` must be 1 to 100 characters".into(),
                });
            }
            spec.name = n.clone();
            spec.options.sink = n.clone();
        }
        Ok(spec)
    }

    /// The URL scheme (`file`, `redis`, `conserver+http`, …).
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }
}

/// The URL without user info, query or fragment: safe as a label and a file name seed.
fn default_name(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string().trim_end_matches('/').to_string()
}

/// Hides `user:password@` in a URL that failed to parse (it may still hold a secret).
fn mask(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}://***@{}", &s[..a], &s[b + 1..]),
        _ => s.to_string(),
    }
}

/// A configuration value, or with `env:NAME` the environment variable NAME (so secrets
/// stay out of files and command lines). The error names the missing variable.
pub fn resolve_env(v: &str) -> Result<String, String> {
    match v.strip_prefix("env:") {
        Some(var) => {
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
        }
        None => Ok(v.to_string()),
    }
}

/// A sink's options: a multi-map that is consumed by the builder. [`Options::finish`]
/// rejects whatever was not consumed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    sink: String,
    entries: Vec<(String, String)>,
}

impl Options {
    /// Adds a value (used by tests and by the parsers above).
    pub fn push(&mut self, key: &str, value: &str) {
        self.entries.push((key.to_string(), value.to_string()));
    }

    fn bad(&self, option: &str, why: impl Into<String>) -> ConfigError {
        ConfigError::Option {
            sink: self.sink.clone(),
            option: option.to_string(),
            why: why.into(),
        }
    }

    /// Takes every value of a repeatable option (also splits on commas: `?ingress=a,b`).
    pub fn take_all(&mut self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.entries.retain(|(k, v)| {
            if k == key {
                out.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
                false
            } else {
                true
            }
        });
        out
    }

    /// Takes a single-valued option (an error if given twice). A value `env:NAME` is read
    /// from the environment variable NAME, so secrets stay out of config files.
    pub fn take(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        let mut found: Vec<String> = Vec::new();
        self.entries.retain(|(k, v)| {
            if k == key {
                found.push(v.clone());
                false
            } else {
                true
            }
        });
        match found.len() {
            0 => Ok(None),
            1 => {
                let v = found.pop().unwrap_or_default();
                resolve_env(&v).map(Some).map_err(|why| self.bad(key, why))
            }
            _ => Err(self.bad(key, "given more than once")),
        }
    }

    /// Takes a boolean (`true/false/1/0/yes/no`).
    pub fn take_bool(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.take(key)?.as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(self.bad(key, format!("`{v}` is not a boolean"))),
        }
    }

    /// Takes an unsigned integer within `range`.
    pub fn take_u64(
        &mut self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        match self.take(key)? {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(self.bad(
                    key,
                    format!(
                        "`{v}` is not a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )),
            },
        }
    }

    /// Errors on any option the builder did not take.
    pub fn finish(self, known: &[&str]) -> Result<(), ConfigError> {
        match self.entries.first() {
            None => Ok(()),
            Some((k, _)) => Err(self.bad(
                k,
                format!("unknown option (this sink knows: {})", known.join(", ")),
            )),
        }
    }
}

/// The schemes this build can deliver to (depends on cargo features).
pub fn known_schemes() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut v = vec!["file"];
    #[cfg(feature = "http")]
    v.extend([
        "conserver+http",
        "conserver+https",
        "webhook+http",
        "webhook+https",
    ]);
    #[cfg(feature = "redis")]
    v.extend(["redis", "rediss"]);
    #[cfg(feature = "postgres")]
    v.extend(["postgres", "postgresql"]);
    #[cfg(feature = "nats")]
    v.extend(["nats", "nats+tls"]);
    #[cfg(feature = "s3")]
    v.extend(["s3"]);
    v
}

/// Builds the sink a spec names. Builders check options and may prepare clients, but do no
/// network I/O: sinks connect on their first delivery and reconnect after errors, so
/// vcontap starts (and spools) while a store is down.
pub fn build(spec: SinkSpec) -> Result<Built, ConfigError> {
    match spec.scheme() {
        "file" => crate::file::build(spec),
        #[cfg(feature = "http")]
        "conserver+http" | "conserver+https" => crate::http::build_conserver(spec),
        #[cfg(feature = "http")]
        "webhook+http" | "webhook+https" => crate::http::build_webhook(spec),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => crate::redis::build(spec),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => crate::postgres::build(spec),
        #[cfg(feature = "nats")]
        "nats" | "nats+tls" => crate::nats::build(spec),
        #[cfg(feature = "s3")]
        "s3" => crate::s3::build(spec),
        other => Err(ConfigError::Scheme {
            url: spec.name.clone(),
            scheme: other.to_string(),
            known: known_schemes().join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_becomes_options_and_name_drops_secrets() {
        let mut s = SinkSpec::parse(
            "conserver+http://user:pw@127.0.0.1:8000/api?ingress=a&ingress=b,c&token=T",
        )
        .unwrap();
        assert_eq!(s.scheme(), "conserver+http");
        assert_eq!(s.name, "conserver+http://127.0.0.1:8000/api");
        assert_eq!(s.options.take_all("ingress"), vec!["a", "b", "c"]);
        assert_eq!(s.options.take("token").unwrap().as_deref(), Some("T"));
        s.options.finish(&["ingress", "token"]).unwrap();
        assert!(s.url.query().is_none());
    }

    #[test]
    fn unknown_and_repeated_options_are_errors() {
        let s = SinkSpec::parse("file:///tmp/x?gzipp=true").unwrap();
        let e = s.options.finish(&["gzip"]).unwrap_err().to_string();
        assert!(e.contains("gzipp") && e.contains("gzip"), "{e}");
        let mut s = SinkSpec::parse("file:///tmp/x?gzip=true&gzip=false").unwrap();
        assert!(s.options.take_bool("gzip", false).is_err());
        let mut s = SinkSpec::parse("file:///tmp/x?gzip=maybe").unwrap();
        assert!(s.options.take_bool("gzip", false).is_err());
        let mut s = SinkSpec::parse("redis://h/0?ttl=-1").unwrap();
        assert!(s.options.take_u64("ttl", 0, 0..=10).is_err());
    }

    #[test]
    fn env_values() {
        let mut s =
            SinkSpec::parse("webhook+http://h/x?secret=env:VCONTAP_TEST_UNSET_SECRET").unwrap();
        let e = s.options.take("secret").unwrap_err().to_string();
        assert!(e.contains("VCONTAP_TEST_UNSET_SECRET"), "{e}");
    }

    #[test]
    fn bad_urls_mask_credentials() {
        let e = SinkSpec::parse("redis://user:secret@[bad/0")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
        let e = build(SinkSpec::parse("gopher://h/x").unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("unknown scheme `gopher`") && e.contains("file"),
            "{e}"
        );
    }

    #[test]
    fn toml_table_options_merge() {
        let t: SinkTable = serde_json::from_value(serde_json::json!({
            "url": "redis://127.0.0.1:6379/0?ingress=a",
            "name": "main",
            "options": {"ingress": ["b", "c"], "ttl": 60, "events": true}
        }))
        .unwrap();
        let mut s = SinkSpec::from_table(&t).unwrap();
        assert_eq!(s.name, "main");
        assert_eq!(s.options.take_all("ingress"), vec!["a", "b", "c"]);
        assert_eq!(s.options.take_u64("ttl", 0, 0..=100).unwrap(), 60);
        assert!(s.options.take_bool("events", false).unwrap());
    }
}
