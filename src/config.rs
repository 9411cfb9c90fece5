//! `vcontap.toml`: the configuration file of `vcontap run` (and `--config` of the other
//! commands), documented field by field in `vcontap.example.toml`. Every table rejects
//! unknown keys, so a typo is a start-up error that names the key and its line; values are
//! checked once here (`vcontap validate FILE`), defaults live in these types.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use vcontap_sinks::SinkTable;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Live capture interfaces.
    #[serde(default)]
    pub capture: CaptureTable,
    /// HEP input.
    #[serde(default)]
    pub hep: HepTable,
    /// The SIPREC recording server (absent: not started).
    pub siprec: Option<SiprecTable>,
    /// The HTTP endpoint.
    #[serde(default)]
    pub api: ApiTable,
    /// Where vCons, recordings and events go locally.
    #[serde(default)]
    pub output: OutputTable,
    /// Engine settings.
    #[serde(default)]
    pub engine: EngineTable,
    /// Spool, transforms and drain.
    #[serde(default)]
    pub delivery: DeliveryTable,
    /// Stores finished vCons go to (besides `--out`).
    #[serde(default)]
    pub sinks: Vec<SinkTable>,
}

/// `[capture]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureTable {
    /// Interfaces to capture on (`any` for all); empty for a HEP-only collector.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Capture filter (docs/capture.md).
    pub filter: Option<String>,
    /// Rings per interface joined with PACKET_FANOUT (default 1).
    pub rings: Option<u32>,
    /// Ring size per ring in MiB (default 64).
    pub ring_mib: Option<u32>,
    /// Ring block size in KiB (default 128): a power of two from 64 to 65536, at most the
    /// ring size.
    pub block_kib: Option<u32>,
    /// Block retire timeout in ms (default 2), 1 to 1000.
    pub block_timeout_ms: Option<u32>,
    /// `blocks` (default: TPACKET_V3, throughput) or `frames` (TPACKET_V2: each frame
    /// handed over at once, sub-millisecond latency; frames longer than `frame_size` − 80
    /// are cut, so turn GRO/LRO off).
    pub ring_layout: Option<String>,
    /// Slot size of the `frames` layout in bytes (default 2048): a multiple of 16 from 256
    /// to 65536.
    pub frame_size: Option<u32>,
    /// Bytes kept of each frame (default 65535).
    pub snaplen: Option<u32>,
    /// Promiscuous mode (default true).
    pub promiscuous: Option<bool>,
}

/// `[hep]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HepTable {
    /// `ADDR:PORT` to receive HEP on (UDP and TCP), e.g. `0.0.0.0:9060`.
    pub listen: Option<String>,
    /// Required authentication key (chunk 0x000e); `env:NAME` reads it from the environment.
    pub auth_key: Option<String>,
}

/// `[siprec]`: the SIPREC recording server, an input of `vcontap run` beside capture and
/// HEP (the same flags as `vcontap siprec`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiprecTable {
    /// `ADDR:PORT` for SIP over UDP and TCP, e.g. `0.0.0.0:5060` (required).
    pub listen: Option<String>,
    /// `ADDR:PORT` for SIP over TLS, e.g. `0.0.0.0:5061` (with `tls_cert` and `tls_key`).
    pub tls_listen: Option<String>,
    /// PEM certificate chain of the TLS listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// RTP port range `A-B` (default `40000-49999`; even RTP ports, RTCP above each).
    pub rtp_ports: Option<String>,
    /// Our address in SDP answers (default: the `listen` address, which must then not be
    /// a wildcard).
    pub media_address: Option<String>,
    /// Accept SIP only from these networks (`10.0.0.0/8`, `2001:db8::/32`, or a single
    /// address); default: every source.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Most concurrent recording sessions (default 1000; beyond: 503 + Retry-After).
    pub max_sessions: Option<usize>,
    /// `all` (default: every session) or `marked` (only sessions the SRC marks with
    /// `a=record:on`, a `record_marker_headers` header or a `record_marker_elements`
    /// metadata element). Sessions not recorded are still answered; their vCon says why.
    pub record_policy: Option<String>,
    /// A do-not-record list: one number (E.164 or national), SIP URI, `user@host` or user
    /// name per line, `#` comments. Sessions with a listed participant are not recorded.
    pub do_not_record: Option<PathBuf>,
    /// With `record_policy = "marked"`: INVITE header names that mark a session.
    #[serde(default)]
    pub record_marker_headers: Vec<String>,
    /// With `record_policy = "marked"`: metadata element local names that mark a session.
    #[serde(default)]
    pub record_marker_elements: Vec<String>,
}

/// `[siprec]` resolved, or `None` without the table. Errors name the field
/// (`siprec.rtp_ports: …`).
pub fn siprec_settings(t: &Option<SiprecTable>) -> Result<Option<crate::siprec::SiprecSettings>> {
    let Some(t) = t else { return Ok(None) };
    let addr = |field: &str, v: &Option<String>| -> Result<Option<std::net::SocketAddr>> {
        v.as_deref()
            .map(|a| {
                a.parse().map_err(|_| {
                    anyhow::anyhow!("siprec.{field}: {a:?} is not ADDR:PORT (e.g. 0.0.0.0:5060)")
                })
            })
            .transpose()
    };
    let listen = addr("listen", &t.listen)?.ok_or_else(|| {
        anyhow::anyhow!("siprec.listen: required (the SIP address, e.g. 0.0.0.0:5060)")
    })?;
    let media_address = t
        .media_address
        .as_deref()
        .map(|a| {
            a.parse()
                .map_err(|_| anyhow::anyhow!("siprec.media_address: {a:?} is not an IP address"))
        })
        .transpose()?;
    use crate::siprec::policy::{PolicyArgs, RecordPolicyArg};
    let record_policy = match t.record_policy.as_deref() {
        None | Some("all") => RecordPolicyArg::All,
        Some("marked") => RecordPolicyArg::Marked,
        Some(other) => {
            anyhow::bail!("siprec.record_policy: {other:?}: must be \"all\" or \"marked\"")
        }
    };
    let s = crate::siprec::SiprecSettings {
        listen,
        tls_listen: addr("tls_listen", &t.tls_listen)?,
        tls_cert: t.tls_cert.clone(),
        tls_key: t.tls_key.clone(),
        rtp_ports: t
            .rtp_ports
            .clone()
            .unwrap_or_else(|| crate::siprec::DEFAULT_RTP_PORTS.to_owned()),
        media_address,
        allow: t.allow.clone(),
        max_sessions: t
            .max_sessions
            .unwrap_or(crate::siprec::DEFAULT_MAX_SESSIONS),
        policy: PolicyArgs {
            record_policy,
            do_not_record: t.do_not_record.clone(),
            record_marker_headers: t.record_marker_headers.clone(),
            record_marker_elements: t.record_marker_elements.clone(),
        },
    };
    crate::siprec::check(&s, |f| format!("siprec.{f}"))?;
    Ok(Some(s))
}

/// `[api]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTable {
    /// `ADDR:PORT` of `/metrics`, `/healthz`, `/readyz` and the live API.
    pub listen: Option<String>,
    /// Accepted API tokens (`env:NAME` reads the environment); none: loopback only.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// A file of tokens, one per line.
    pub token_file: Option<PathBuf>,
    /// Conserver egress lists served at `/vcon/egress` (finished uuids).
    #[serde(default)]
    pub egress_lists: Vec<String>,
    /// Most concurrent event subscribers (default 256).
    pub max_subscribers: Option<usize>,
    /// Events a subscriber may fall behind before it gets a `gap` (default 4096).
    pub subscriber_queue: Option<usize>,
    /// Recent events kept for `Last-Event-ID` resume (default 10000).
    pub recent_events: Option<usize>,
    /// Finished vCons kept in memory for `GET /v1/vcons/{uuid}` (default 1000).
    pub finished_vcons: Option<usize>,
    /// `delta=json-patch`: a full snapshot at least every N events of a call (default 16).
    pub full_every: Option<u32>,
    /// PEM certificate chain: serve HTTPS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// `[output]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputTable {
    /// The file sink's directory (`YYYY/MM/DD/<uuid>.vcon.json`) and `media/`.
    pub dir: Option<PathBuf>,
    /// Append every event as a JSON line to this file.
    pub events: Option<PathBuf>,
    /// Recordings in S3-compatible storage instead of `dir/media` (an `s3://` URL).
    pub media_store: Option<String>,
    /// Public base URL of recordings in `dir/media`.
    pub media_base_url: Option<String>,
}

/// `[engine]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineTable {
    /// `none`, `stereo` (default) or `mono`.
    pub record: Option<String>,
    /// Cut recordings every N seconds (0: only at hold/resume, codec change, transfer).
    pub segment_seconds: Option<u32>,
    /// Engine shards (threads; default 1).
    pub shards: Option<usize>,
    /// Live "quality so far" refresh interval, seconds (0: off; default 10).
    pub quality_interval_s: Option<u32>,
    /// Host name hashed into vCon uuids (default: this machine's).
    pub host: Option<String>,
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

/// A file that configures a daemon (any input or output table beyond delivery).
fn path_is_run_config(c: &Config) -> bool {
    c.api.listen.is_some() || c.output.dir.is_some() || c.output.events.is_some()
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: Config = toml::from_str(&text)
        .with_context(|| format!("{}: invalid configuration", path.display()))?;
    let bad = |field: &str, why: String| anyhow::anyhow!("{}: {field}: {why}", path.display());
    for (field, v) in [
        ("hep.listen", &cfg.hep.listen),
        ("api.listen", &cfg.api.listen),
    ] {
        if let Some(a) = v {
            a.parse::<std::net::SocketAddr>()
                .map_err(|_| bad(field, format!("{a:?} is not ADDR:PORT (e.g. 0.0.0.0:9060)")))?;
        }
    }
    if let Some(r) = &cfg.engine.record {
        if !matches!(r.as_str(), "none" | "stereo" | "mono") {
            return Err(bad(
                "engine.record",
                format!("{r:?}: must be none, stereo or mono"),
            ));
        }
    }
    if let Some(n) = cfg.engine.shards {
        if n == 0 || n > vcontap_pipeline::tap::MAX_SHARDS {
            return Err(bad(
                "engine.shards",
                format!("{n}: must be 1 to {}", vcontap_pipeline::tap::MAX_SHARDS),
            ));
        }
    }
    if let Some(q) = cfg.engine.quality_interval_s {
        if q > 3600 {
            return Err(bad(
                "engine.quality_interval_s",
                format!("{q}: must be 0 (off) to 3600 seconds"),
            ));
        }
    }
    for i in &cfg.capture.interfaces {
        if i.is_empty() || i.len() > 15 || i.contains('/') {
            return Err(bad(
                "capture.interfaces",
                format!("{i:?} is not an interface name"),
            ));
        }
    }
    if let Some(r) = cfg.capture.rings {
        if r == 0 || r > 64 {
            return Err(bad("capture.rings", format!("{r}: must be 1 to 64")));
        }
    }
    if let Some(m) = cfg.capture.ring_mib {
        if !(1..=4096).contains(&m) {
            return Err(bad("capture.ring_mib", format!("{m}: must be 1 to 4096")));
        }
    }
    if let Some(b) = cfg.capture.block_kib {
        let ring_kib = cfg.capture.ring_mib.unwrap_or(64).saturating_mul(1024);
        if !b.is_power_of_two() || !(64..=65536).contains(&b) || b > ring_kib {
            return Err(bad(
                "capture.block_kib",
                format!("{b}: must be a power of two from 64 to 65536, at most ring_mib × 1024"),
            ));
        }
    }
    if let Some(l) = &cfg.capture.ring_layout {
        if l != "blocks" && l != "frames" {
            return Err(bad(
                "capture.ring_layout",
                format!("`{l}`: must be `blocks` or `frames`"),
            ));
        }
    }
    if let Some(f) = cfg.capture.frame_size {
        if !crate::live::frame_size_ok(f) {
            return Err(bad(
                "capture.frame_size",
                format!("{f}: must be a multiple of 16 from 256 to 65536"),
            ));
        }
    }
    if let Some(t) = cfg.capture.block_timeout_ms {
        if !(1..=1000).contains(&t) {
            return Err(bad(
                "capture.block_timeout_ms",
                format!("{t}: must be 1 to 1000"),
            ));
        }
    }
    if cfg.capture.interfaces.is_empty()
        && cfg.hep.listen.is_none()
        && cfg.siprec.is_none()
        && path_is_run_config(&cfg)
    {
        return Err(bad(
            "capture.interfaces / hep.listen / [siprec]",
            "nothing to listen to: give capture interfaces, a HEP address, a [siprec] table, \
             or several"
                .into(),
        ));
    }
    siprec_settings(&cfg.siprec).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
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
        assert_eq!(c.delivery.when_full.as_deref(), Some("drop_newest"));
        assert_eq!(c.capture.interfaces, vec!["eth1".to_string()]);
        assert_eq!(c.api.listen.as_deref(), Some("127.0.0.1:9100"));
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

    #[test]
    fn quality_interval_is_range_checked() {
        let d = std::env::temp_dir().join(format!("vcontap-cfg-q-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("q.toml");
        std::fs::write(&p, "[engine]\nquality_interval_s = 3601\n").unwrap();
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(e.contains("engine.quality_interval_s"), "{e}");
        std::fs::write(&p, "[engine]\nquality_interval_s = 0\n").unwrap();
        assert_eq!(load(&p).unwrap().engine.quality_interval_s, Some(0));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn siprec_table_is_checked_field_by_field() {
        let d = std::env::temp_dir().join(format!("vcontap-cfg-siprec-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("s.toml");
        let load_with = |table: &str| {
            std::fs::write(
                &p,
                format!("[siprec]\n{table}\n[output]\ndir = \"/tmp/x\"\n"),
            )
            .unwrap();
            load(&p).map(|c| siprec_settings(&c.siprec).unwrap().unwrap())
        };
        // A SIPREC-only daemon is a complete configuration.
        let s = load_with("listen = \"127.0.0.1:5060\"").unwrap();
        assert_eq!(s.rtp_ports, crate::siprec::DEFAULT_RTP_PORTS);
        assert_eq!(s.max_sessions, crate::siprec::DEFAULT_MAX_SESSIONS);
        let s = load_with(
            "listen = \"0.0.0.0:5060\"\nmedia_address = \"192.0.2.10\"\nallow = [\"10.0.0.0/8\"]\n\
             tls_listen = \"0.0.0.0:5061\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
             rtp_ports = \"30000-30099\"\nmax_sessions = 5",
        )
        .unwrap();
        assert_eq!(s.max_sessions, 5);
        assert!(s.tls_listen.is_some());
        for (table, field) in [
            ("rtp_ports = \"1-2\"", "siprec.listen"),
            ("listen = \"nope\"", "siprec.listen"),
            ("listen = \"0.0.0.0:5060\"", "siprec.media_address"),
            (
                "listen = \"127.0.0.1:5060\"\nmedia_address = \"x\"",
                "siprec.media_address",
            ),
            (
                "listen = \"127.0.0.1:5060\"\nrtp_ports = \"40000\"",
                "siprec.rtp_ports",
            ),
            (
                "listen = \"127.0.0.1:5060\"\nrtp_ports = \"5-5\"",
                "siprec.rtp_ports",
            ),
            (
                "listen = \"127.0.0.1:5060\"\nallow = [\"10.0.0.0/40\"]",
                "siprec.allow",
            ),
            (
                "listen = \"127.0.0.1:5060\"\nmax_sessions = 0",
                "siprec.max_sessions",
            ),
            (
                "listen = \"127.0.0.1:5060\"\ntls_listen = \"127.0.0.1:5061\"",
                "siprec.tls_listen",
            ),
            (
                "listen = \"127.0.0.1:5060\"\ntls_cert = \"c.pem\"",
                "siprec.tls_cert",
            ),
            (
                "listen = \"127.0.0.1:5060\"\nlisten_api = \"x\"",
                "listen_api",
            ),
        ] {
            let e = format!("{:#}", load_with(table).unwrap_err());
            assert!(e.contains(field), "{table}: {e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
