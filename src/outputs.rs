//! Where finished vCons and events go, for every command that makes them: the `--out` file
//! sink, `--sink URL`s, the `--spool` directory, `--transform`s, and the tokio runtime the
//! store clients run on. Wiring only: delivery itself is `vcontap-sinks`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vcontap_sinks::delivery::WhenFull;
use vcontap_sinks::{Delivery, DeliveryConfig, NamedSink, SinkSpec};

/// Delivery options shared by `replay` (and later `capture`, `siprec`, `run`).
#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// Deliver finished vCons to this store too (repeatable): file:///DIR, redis://,
    /// postgres://, nats://, conserver+http(s)://, webhook+http(s)://, s3://BUCKET/PREFIX;
    /// options as query parameters (docs/sinks/).
    #[arg(long = "sink", value_name = "URL")]
    pub sinks: Vec<String>,
    /// Spool directory (write-ahead log between the engine and the sinks). Default:
    /// $STATE_DIRECTORY/spool, else $XDG_DATA_HOME/vcontap/spool, else
    /// ~/.local/share/vcontap/spool.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Spool bound in MiB: beyond it the spool alarms and applies its full-policy.
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    pub spool_max_mib: u64,
    /// Transform every finished vCon before it is spooled (repeatable, in order), e.g.
    /// `drop_attachments:sip-message-trace`.
    #[arg(long = "transform", value_name = "SPEC")]
    pub transforms: Vec<String>,
    /// At the end, wait at most this long for the sinks to deliver what is spooled
    /// (the rest stays in the spool for the next run).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub drain_timeout: u64,
}

/// The default spool directory (see [`OutputArgs::spool`]).
pub fn default_spool_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("STATE_DIRECTORY") {
        // systemd's StateDirectory= may list several, colon-separated: take the first.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return PathBuf::from(first).join("spool");
    }
    if let Some(d) = env("XDG_DATA_HOME") {
        return d.join("vcontap/spool");
    }
    if let Some(h) = env("HOME") {
        return h.join(".local/share/vcontap/spool");
    }
    PathBuf::from("/var/lib/vcontap/spool")
}

/// The running outputs: the delivery core and the runtime its sinks run on.
pub struct Outputs {
    pub delivery: Delivery,
    /// The file sink's name (for the summary), if `--out` was given.
    pub file_sink: Option<String>,
    pub spool_dir: PathBuf,
    drain: Duration,
    runtime: tokio::runtime::Runtime,
}

impl Outputs {
    /// Builds every sink (config errors surface here, before any packet is read), opens
    /// the spool and starts delivery.
    pub fn start(out: Option<&Path>, a: &OutputArgs, when_full: WhenFull) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vcontap-sink")
            .enable_all()
            .build()
            .context("starting the sink runtime")?;
        let mut specs = Vec::new();
        let mut file_sink = None;
        if let Some(out) = out {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let abs = std::fs::canonicalize(out)?;
            let url = url_for_dir(&abs)?;
            let spec = SinkSpec::parse(&url)?;
            file_sink = Some(spec.name.clone());
            specs.push(spec);
        }
        for s in &a.sinks {
            specs.push(SinkSpec::parse(s).with_context(|| "in --sink".to_string())?);
        }
        if specs.is_empty() {
            bail!("nothing to deliver to: give --out DIR and/or --sink URL");
        }
        let mut sinks = Vec::new();
        {
            // Builders may create clients that need a runtime context (no I/O happens).
            let _guard = runtime.enter();
            for spec in specs {
                let name = spec.name.clone();
                let built = vcontap_sinks::spec::build(spec)?;
                sinks.push(NamedSink { name, built });
            }
        }
        let spool_dir = a.spool.clone().unwrap_or_else(default_spool_dir);
        let mut cfg = DeliveryConfig::new(&spool_dir);
        cfg.when_full = when_full;
        if a.spool_max_mib == 0 {
            bail!("--spool-max-mib must be at least 1");
        }
        cfg.spool.max_bytes = a.spool_max_mib.saturating_mul(1 << 20);
        for t in &a.transforms {
            cfg.transforms
                .push(vcontap_sinks::transform::parse(t).map_err(anyhow::Error::msg)?);
        }
        let delivery = Delivery::start(cfg, sinks, runtime.handle().clone())?;
        Ok(Outputs {
            delivery,
            file_sink,
            spool_dir,
            drain: Duration::from_secs(a.drain_timeout),
            runtime,
        })
    }

    /// Commits what is queued, drains the sinks (at most `--drain-timeout`) and reports.
    pub fn finish(self) -> vcontap_sinks::DeliveryReport {
        let pending: u64 = self
            .delivery
            .metrics()
            .sinks
            .iter()
            .map(|s| s.pending.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        if pending > 100 {
            eprintln!(
                "delivering {pending} spooled vCons to the sinks (up to {} s; interrupting leaves them in the spool)",
                self.drain.as_secs()
            );
        }
        let report = self.delivery.finish(self.drain);
        self.runtime.shutdown_timeout(Duration::from_secs(2));
        report
    }
}

/// `file://` URL of an absolute directory (percent-encoding what a URL cannot carry).
fn url_for_dir(abs: &Path) -> Result<String> {
    let u = url::Url::from_directory_path(abs)
        .map_err(|()| anyhow::anyhow!("{} is not an absolute path", abs.display()))?;
    Ok(u.to_string())
}

/// Prints the delivery part of a summary.
pub fn print_report(r: &vcontap_sinks::DeliveryReport, spool_dir: &Path) {
    for s in &r.sinks {
        let mut line = format!(
            "  sink {:<40} {} delivered",
            truncate(&s.name, 40),
            s.delivered
        );
        if s.dead_lettered > 0 {
            line.push_str(&format!(", {} dead-lettered", s.dead_lettered));
        }
        if s.failed > 0 {
            line.push_str(&format!(", {} failed attempts", s.failed));
        }
        if s.pending > 0 {
            line.push_str(&format!(", {} LEFT IN THE SPOOL", s.pending));
        }
        eprintln!("{line}");
    }
    if r.rejected_full > 0 {
        eprintln!("  spool full          {} vCons refused", r.rejected_full);
    }
    if r.transform_failed > 0 {
        eprintln!(
            "  transform refused   {} vCons (dead-lettered)",
            r.transform_failed
        );
    }
    if !r.stale_sinks.is_empty() || r.sinks.iter().any(|s| s.pending > 0 || s.dead_lettered > 0) {
        eprintln!(
            "  spool               {} (see `vcontap spool list --spool {}`)",
            spool_dir.display(),
            spool_dir.display()
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}
