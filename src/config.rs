//! `vcontap.toml`: the configuration file. Today it holds the delivery part (`[delivery]`
//! and `[[sinks]]`, see `vcontap.example.toml`); capture, HEP and the API join it with the
//! live-capture issue. Every table rejects unknown keys, so a typo is a start-up error
//! that names the key and its line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use vcontap_sinks::SinkTable;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Spool, transforms and drain.
    #[serde(default)]
    pub delivery: DeliveryTable,
    /// Stores finished vCons go to (besides `--out`).
    #[serde(default)]
    pub sinks: Vec<SinkTable>,
}

/// `[delivery]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryTable {
    /// Spool directory (default: see `--spool`).
    pub spool: Option<PathBuf>,
    /// Spool bound in MiB (default 4096).
    pub spool_max_mib: Option<u64>,
    /// `block` (wait for the sinks; replay's default) or `drop_newest` (refuse new vCons,
    /// counted and logged; the live default).
    pub when_full: Option<String>,
    /// Seconds to wait at exit for the sinks to deliver what is spooled (default 300).
    pub drain_timeout_s: Option<u64>,
    /// Transforms applied to every finished vCon, in order (e.g.
    /// `"drop_attachments:sip-message-trace"`).
    #[serde(default)]
    pub transforms: Vec<String>,
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: Config = toml::from_str(&text)
        .with_context(|| format!("{}: invalid configuration", path.display()))?;
    if let Some(w) = &cfg.delivery.when_full {
        if w != "block" && w != "drop_newest" {
            anyhow::bail!(
                "{}: delivery.when_full = {w:?}: must be \"block\" or \"drop_newest\"",
                path.display()
            );
        }
    }
    for (i, s) in cfg.sinks.iter().enumerate() {
        vcontap_sinks::SinkSpec::from_table(s)
            .with_context(|| format!("{}: sinks[{i}]", path.display()))?;
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("vcontap.example.toml");
        let c = load(&p).unwrap();
        assert!(!c.sinks.is_empty());
        assert_eq!(c.delivery.when_full.as_deref(), Some("block"));
    }

    #[test]
    fn typos_are_named() {
        let d = std::env::temp_dir().join(format!("vcontap-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("bad.toml");
        std::fs::write(&p, "[delivery]\nspool_max_mb = 3\n").unwrap();
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(e.contains("spool_max_mb"), "{e}");
        std::fs::write(
            &p,
            "[[sinks]]\nurl = \"redis://h/0\"\n[sinks.options]\nttl = \"x\"\n",
        )
        .unwrap();
        assert!(
            load(&p).is_ok(),
            "option values are checked when the sink is built"
        );
        std::fs::write(&p, "[[sinks]]\nurl = \"not a url\"\n").unwrap();
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(e.contains("sinks[0]"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
