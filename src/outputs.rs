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
    /// Configuration file (`[delivery]` and `[[sinks]]`, see vcontap.example.toml); flags
    /// given on the command line win, and `--sink`s add to its sinks.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Spool bound in MiB (default 4096): beyond it the spool alarms and applies its
    /// full-policy.
    #[arg(long, value_name = "MIB")]
    pub spool_max_mib: Option<u64>,
    /// Transform every finished vCon before it is spooled (repeatable, in order), e.g.
    /// `drop_attachments:sip-message-trace`.
    #[arg(long = "transform", value_name = "SPEC")]
    pub transforms: Vec<String>,
    /// At the end, wait at most this long (default 300 s) for the sinks to deliver what is
    /// spooled (the rest stays in the spool for the next run).
    #[arg(long, value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,
    /// Store recordings in S3-compatible object storage instead of `--out DIR/media`:
    /// s3://BUCKET/PREFIX?endpoint=…, options as for the s3 sink (docs/sinks/s3.md); the
    /// vCon's `url` then points at the object.
    #[arg(long, value_name = "URL")]
    pub media_store: Option<String>,
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
    pub fn start(out: Option<&Path>, a: &OutputArgs, mut when_full: WhenFull) -> Result<Self> {
        let file_cfg = match &a.config {
            Some(p) => crate::config::load(p)?,
            None => crate::config::Config::default(),
        };
        let d = &file_cfg.delivery;
        match d.when_full.as_deref() {
            Some("drop_newest") => when_full = WhenFull::DropNewest,
            Some("block") => when_full = WhenFull::Block,
            _ => {}
        }
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
        for t in &file_cfg.sinks {
            specs.push(SinkSpec::from_table(t)?);
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
        let spool_dir = a
            .spool
            .clone()
            .or_else(|| d.spool.clone())
            .unwrap_or_else(default_spool_dir);
        let mut cfg = DeliveryConfig::new(&spool_dir);
        cfg.when_full = when_full;
        let max_mib = a.spool_max_mib.or(d.spool_max_mib).unwrap_or(4096);
        if max_mib == 0 {
            bail!(
                "the spool bound (--spool-max-mib / delivery.spool_max_mib) must be at least 1 MiB"
            );
        }
        cfg.spool.max_bytes = max_mib.saturating_mul(1 << 20);
        for t in d.transforms.iter().chain(&a.transforms) {
            cfg.transforms
                .push(vcontap_sinks::transform::parse(t).map_err(anyhow::Error::msg)?);
        }
        let delivery = Delivery::start(cfg, sinks, runtime.handle().clone())?;
        Ok(Outputs {
            delivery,
            file_sink,
            spool_dir,
            drain: Duration::from_secs(a.drain_timeout.or(d.drain_timeout_s).unwrap_or(300)),
            runtime,
        })
    }

    /// The runtime the sinks (and the HTTP endpoint) run on.
    pub fn runtime_handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// The recording store `--media-store` names, spilling to `spill` before upload.
    pub fn media_store(
        &self,
        a: &OutputArgs,
        spill: &Path,
    ) -> Result<Option<std::sync::Arc<dyn vcontap_pipeline::MediaStore>>> {
        let Some(url) = &a.media_store else {
            return Ok(None);
        };
        let spec = SinkSpec::parse(url).context("in --media-store")?;
        if spec.scheme() != "s3" {
            bail!("--media-store takes an s3:// URL (local files are the default)");
        }
        let store =
            vcontap_sinks::s3::S3Media::from_spec(spec, spill, self.runtime.handle().clone())?;
        Ok(Some(std::sync::Arc::new(store)))
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

impl Outputs {
    /// Where recordings go: `--media-store`'s (spilling under `OUT/media-spill`), else local
    /// files under `OUT/media`, their vCon `url`s based on `media_base_url`.
    pub fn recordings(
        &self,
        a: &OutputArgs,
        out: &Path,
        media_base_url: Option<&str>,
    ) -> Result<std::sync::Arc<dyn vcontap_pipeline::MediaStore>> {
        Ok(match self.media_store(a, &out.join("media-spill"))? {
            Some(store) => store,
            None => std::sync::Arc::new(vcontap_pipeline::LocalFiles::new(
                &out.join("media"),
                media_base_url,
            )?),
        })
    }
}

/// Where each engine event goes, the same for every driver (`replay`, the daemon), in this
/// order: the event-latency histogram, the live audio tee, the live API's hub, the
/// `--events` file, then delivery (the spool, transforms and sinks).
pub struct EventOutputs {
    /// Observes `vcontap_event_latency_seconds` (live sources only: a replay's events are
    /// stamped with capture time).
    pub latency: Option<std::sync::Arc<crate::api::ApiState>>,
    /// Live audio subscribers (`/v1/calls/{uuid}/audio`).
    pub audio_tee: Option<std::sync::Arc<vcontap_pipeline::AudioTee>>,
    /// Live subscribers.
    pub hub: Option<std::sync::Arc<vcontap_live::Hub>>,
    /// `--events FILE`. Uncontended: only the pipeline's one event thread (or the driver)
    /// writes it; the driver flushes it at the end.
    pub events: std::sync::Arc<std::sync::Mutex<Option<crate::sink::EventsFile>>>,
    /// The spool's submit side.
    pub delivery: vcontap_sinks::Submitter,
}

impl EventOutputs {
    /// The Tap's event handler.
    pub fn handler(self) -> vcontap_pipeline::EventHandler {
        use vcontap_pipeline::PipelineError;
        Box::new(move |e| {
            if let Some(api) = &self.latency {
                crate::api::observe_event(&api.event_latency, e.kind, e.at.nanos());
            }
            if let Some(t) = &self.audio_tee {
                t.on_event(e);
            }
            if let Some(h) = &self.hub {
                h.publish(e);
            }
            if let Some(f) = self
                .events
                .lock()
                .map_err(|_| PipelineError::Handler("events file poisoned".into()))?
                .as_mut()
            {
                f.write(e)
                    .map_err(|err| PipelineError::Handler(format!("{err:#}")))?;
            }
            self.delivery
                .submit(e)
                .map_err(|err| PipelineError::Handler(err.to_string()))
        })
    }
}
