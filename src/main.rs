//! The `vcontap` command line: `replay` (capture files → vCons, recordings and an event
//! stream) and `synth` (the project's traffic synthesizer).
//!
//! This binary is CLI, configuration and wiring only: the packet pipeline (sources, decoder,
//! router, engine shards, media writers) lives in `vcontap-pipeline`, the engine and parsers
//! in the sans-IO crates. tokio is not used yet: replay is CPU-bound file work on OS threads
//! with bounded crossbeam channels; the async runtime arrives with the live API and the
//! network sinks.

mod api;
mod audio_ws;
mod config;
mod live;
mod live_api;
mod notify;
mod outputs;
mod progress;
mod replay;
mod shards;
mod sink;
mod siprec;
mod sources;
mod spool_cmd;
mod tls;
mod web;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "vcontap",
    version,
    about = "Taps SIP/RTP traffic and turns every call into a live vCon"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay pcap/pcapng files through the engine into vCon files.
    Replay(ReplayArgs),
    /// Write a pcap of synthetic SIP/RTP calls.
    Synth(SynthArgs),
    /// Inspect and repair the delivery spool: list, retry dead letters, drop records.
    Spool(spool_cmd::SpoolArgs),
    /// Capture live traffic (AF_PACKET interfaces and/or HEP) into vCons until SIGTERM.
    Capture(CaptureArgs),
    /// The daemon: everything from a configuration file (see vcontap.example.toml).
    Run(RunArgs),
    /// Check a configuration file: names the bad field and why, exits non-zero.
    Validate(ValidateArgs),
    /// SIPREC recording server (RFC 7866): SBCs fork calls to it, it writes vCons.
    Siprec(siprec::SiprecArgs),
}

#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// Interface to capture on (repeatable; `any` for all).
    #[arg(long = "interface", value_name = "IF")]
    pub interfaces: Vec<String>,
    /// Capture filter (docs/capture.md): ports, port ranges, networks, VLANs.
    #[arg(long)]
    pub filter: Option<String>,
    /// Rings per interface joined with PACKET_FANOUT.
    #[arg(long, default_value_t = 1)]
    pub rings: u32,
    /// Memory per ring, MiB.
    #[arg(long, default_value_t = 64)]
    pub ring_mib: u32,
    /// Ring block size, KiB (the kernel fills one block at a time; docs/capture.md).
    #[arg(long, default_value_t = live::DEFAULT_BLOCK_KIB)]
    pub block_kib: u32,
    /// Longest a partly filled block waits before the kernel hands it over, ms: bounds the
    /// packet → event latency on a quiet link.
    #[arg(long, default_value_t = live::DEFAULT_BLOCK_TIMEOUT_MS)]
    pub block_timeout_ms: u32,
    /// Hand every frame over on its own (TPACKET_V2, fixed slots of --frame-size bytes)
    /// instead of in blocks: sub-millisecond latency, frames longer than the slot are cut
    /// (turn GRO/LRO off on the interface); docs/capture.md.
    #[arg(long)]
    pub frame_ring: bool,
    /// Slot size of --frame-ring, bytes (multiple of 16; holds frames up to size − 80).
    #[arg(long, default_value_t = live::DEFAULT_FRAME_SIZE)]
    pub frame_size: u32,
    /// Bytes kept of each frame.
    #[arg(long, default_value_t = 65535)]
    pub snaplen: u32,
    /// Do not put the interfaces in promiscuous mode.
    #[arg(long)]
    pub no_promiscuous: bool,
    /// Receive HEP v2/v3 on this address (UDP and TCP), e.g. 0.0.0.0:9060.
    #[arg(long, value_name = "ADDR")]
    pub hep_listen: Option<std::net::SocketAddr>,
    /// Required HEP authentication key (`env:NAME` reads the environment).
    #[arg(long, value_name = "KEY")]
    pub hep_auth_key: Option<String>,
    #[command(flatten)]
    pub api: live_api::ApiArgs,
    /// Output directory (file sink `YYYY/MM/DD/<uuid>.vcon.json` and `media/`).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Append every event as a JSON line to this file (flushed per event).
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Audio recording mode.
    #[arg(long, value_enum, default_value_t = RecordArg::Stereo)]
    pub record: RecordArg,
    /// Cut recordings every N seconds.
    #[arg(long, default_value_t = 0)]
    pub segment_seconds: u32,
    /// Live "quality so far": refresh each open call's RTP quality (an `updated` event with
    /// the report so far) at most every N seconds; 0 turns it off (and leaves quality out of
    /// live snapshots). Default: 10 for live sources and `replay --pace realtime`, 0 for a
    /// plain replay.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub quality_interval: Option<u32>,
    /// Public base URL for recordings.
    #[arg(long)]
    pub media_base_url: Option<String>,
    /// Engine shards (threads).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Host name hashed into vCon uuids.
    #[arg(long)]
    pub host: Option<String>,
    #[command(flatten)]
    pub outputs: outputs::OutputArgs,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long, default_value = "/etc/vcontap/vcontap.toml")]
    pub config: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The configuration file.
    pub file: PathBuf,
}

/// Recording mode.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum RecordArg {
    /// No audio; signalling and RTP statistics only.
    None,
    /// Stereo WAV: caller left, callee right.
    Stereo,
    /// Mono WAV with both directions mixed.
    Mono,
}

/// Replay pacing.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Pace {
    /// As fast as possible.
    Max,
    /// Sleep so packets are processed at their capture-time spacing.
    Realtime,
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng).
    #[arg(required = true)]
    pub captures: Vec<PathBuf>,
    /// Output directory: the file sink writes `YYYY/MM/DD/<uuid>.vcon.json` here (dated by
    /// `created_at`, the conserver's layout) and recordings go to `media/`.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Write the real-time event stream (JSON lines) here.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Pacing of the replay.
    #[arg(long, value_enum, default_value_t = Pace::Max)]
    pub pace: Pace,
    /// Audio recording mode.
    #[arg(long, value_enum, default_value_t = RecordArg::Stereo)]
    pub record: RecordArg,
    /// Cut recordings every N seconds (0: only at hold/resume, codec change, transfer).
    #[arg(long, default_value_t = 0)]
    pub segment_seconds: u32,
    /// Live "quality so far": refresh each open call's RTP quality (an `updated` event with
    /// the report so far) at most every N seconds; 0 turns it off (and leaves quality out of
    /// live snapshots). Default: 10 for live sources and `replay --pace realtime`, 0 for a
    /// plain replay.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub quality_interval: Option<u32>,
    /// Public base URL for recordings (default: file:// URL of the media directory).
    #[arg(long)]
    pub media_base_url: Option<String>,
    /// Engine shards (threads). A call's SIP and media always land on the same shard.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Host name hashed into vCon uuids (default: this machine's host name).
    #[arg(long)]
    pub host: Option<String>,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub api: live_api::ApiArgs,
    /// With --listen: wait (at most 60 s) until this many clients subscribed to
    /// /v1/events before reading the captures, so they see every call from `created`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub wait_subscribers: usize,
    /// With --listen: keep serving this many seconds after the replay ended (the event
    /// streams end; finished vCons stay readable).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub linger: u64,
    #[command(flatten)]
    pub outputs: outputs::OutputArgs,
}

#[derive(clap::Args, Debug)]
struct SynthArgs {
    /// Number of calls.
    #[arg(long, default_value_t = 10)]
    calls: u32,
    /// Calls active at the same time.
    #[arg(long, default_value_t = 5)]
    concurrent: u32,
    /// Talk time of each answered call, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Output pcap.
    #[arg(long)]
    out: PathBuf,
    /// Codecs, round-robin per call: pcmu, pcma, g722, opus.
    #[arg(long, value_delimiter = ',', default_value = "pcmu")]
    codecs: Vec<String>,
    /// Digits the caller sends as RFC 4733 DTMF.
    #[arg(long)]
    dtmf: Option<String>,
    /// Also send the digits as SIP INFO.
    #[arg(long)]
    sip_info_dtmf: bool,
    /// Every Nth call fails (busy, no answer, rejected, not found in turn).
    #[arg(long, default_value_t = 0)]
    failure_every: u32,
    /// Answered calls go on hold for a second mid-call.
    #[arg(long)]
    hold: bool,
    /// SIP over TCP.
    #[arg(long)]
    tcp: bool,
    /// 802.1Q VLAN id.
    #[arg(long)]
    vlan: Option<u16>,
    /// IPv6 addresses.
    #[arg(long)]
    ipv6: bool,
    /// 407 challenge before each INVITE.
    #[arg(long)]
    auth: bool,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VCONTAP_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Replay(a) => replay::run(a),
        Cmd::Synth(a) => synth(a),
        Cmd::Spool(a) => spool_cmd::run(a),
        Cmd::Capture(a) => live::run(settings_from_args(a)?),
        Cmd::Run(a) => live::run(settings_from_config(&a.config)?),
        Cmd::Validate(a) => validate(&a.file),
        Cmd::Siprec(a) => siprec::run(a),
    }
}

fn resolve_secret(v: Option<String>) -> Result<Option<String>> {
    v.map(|s| vcontap_sinks::spec::resolve_env(&s).map_err(anyhow::Error::msg))
        .transpose()
}

fn settings_from_args(a: CaptureArgs) -> Result<live::LiveSettings> {
    Ok(live::LiveSettings {
        interfaces: a.interfaces,
        filter: a.filter,
        rings: a.rings,
        ring_mib: a.ring_mib,
        block_kib: a.block_kib,
        block_timeout_ms: a.block_timeout_ms,
        frame_ring: a.frame_ring,
        frame_size: a.frame_size,
        snaplen: a.snaplen,
        promiscuous: !a.no_promiscuous,
        hep_listen: a.hep_listen,
        hep_auth_key: resolve_secret(a.hep_auth_key).context("--hep-auth-key")?,
        api: live_api::ApiSettings::from_args(&a.api)?,
        out: a.out,
        events: a.events,
        record: a.record,
        segment_seconds: a.segment_seconds,
        quality_interval_s: a.quality_interval,
        shards: a.shards,
        host: a.host,
        media_base_url: a.media_base_url,
        outputs: a.outputs,
        siprec: None,
    })
}

fn settings_from_config(path: &std::path::Path) -> Result<live::LiveSettings> {
    let c = config::load(path)?;
    let record = match c.engine.record.as_deref() {
        None | Some("stereo") => RecordArg::Stereo,
        Some("mono") => RecordArg::Mono,
        _ => RecordArg::None,
    };
    let parse = |v: &Option<String>| v.as_deref().map(str::parse).transpose();
    Ok(live::LiveSettings {
        interfaces: c.capture.interfaces.clone(),
        filter: c.capture.filter.clone(),
        rings: c.capture.rings.unwrap_or(1),
        ring_mib: c.capture.ring_mib.unwrap_or(64),
        block_kib: c.capture.block_kib.unwrap_or(live::DEFAULT_BLOCK_KIB),
        block_timeout_ms: c
            .capture
            .block_timeout_ms
            .unwrap_or(live::DEFAULT_BLOCK_TIMEOUT_MS),
        frame_ring: c.capture.ring_layout.as_deref() == Some("frames"),
        frame_size: c.capture.frame_size.unwrap_or(live::DEFAULT_FRAME_SIZE),
        snaplen: c.capture.snaplen.unwrap_or(65535),
        promiscuous: c.capture.promiscuous.unwrap_or(true),
        hep_listen: parse(&c.hep.listen).context("hep.listen")?,
        hep_auth_key: resolve_secret(c.hep.auth_key.clone()).context("hep.auth_key")?,
        api: api_settings(&c.api, parse(&c.api.listen).context("api.listen")?)?,
        out: c
            .output
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/vcontap/vcons")),
        events: c.output.events.clone(),
        record,
        segment_seconds: c.engine.segment_seconds.unwrap_or(0),
        quality_interval_s: c.engine.quality_interval_s,
        shards: c.engine.shards.unwrap_or(1),
        host: c.engine.host.clone(),
        media_base_url: c.output.media_base_url.clone(),
        outputs: outputs::OutputArgs {
            config: Some(path.to_path_buf()),
            sinks: Vec::new(),
            spool: None,
            spool_max_mib: None,
            transforms: Vec::new(),
            drain_timeout: None,
            media_store: c.output.media_store.clone(),
        },
        siprec: config::siprec_settings(&c.siprec).context("siprec")?,
    })
}

/// `[api]` resolved: tokens (`env:NAME` read), the token file, hub bounds.
fn api_settings(
    t: &config::ApiTable,
    listen: Option<std::net::SocketAddr>,
) -> Result<live_api::ApiSettings> {
    let mut tokens = Vec::new();
    for v in &t.tokens {
        tokens.push(
            vcontap_sinks::spec::resolve_env(v)
                .map_err(anyhow::Error::msg)
                .context("api.tokens")?,
        );
    }
    if let Some(p) = &t.token_file {
        tokens.extend(live_api::read_token_file(p).context("api.token_file")?);
    }
    let mut hub = vcontap_live::HubConfig {
        egress_lists: t.egress_lists.clone(),
        ..Default::default()
    };
    if let Some(n) = t.max_subscribers {
        hub.max_subscribers = n;
    }
    if let Some(n) = t.subscriber_queue {
        hub.channel = n;
    }
    if let Some(n) = t.recent_events {
        hub.recent_events = n;
    }
    if let Some(n) = t.finished_vcons {
        hub.finished_vcons = n;
    }
    if let Some(n) = t.full_every {
        hub.full_every = n;
    }
    let s = live_api::ApiSettings {
        listen,
        tokens,
        hub,
        tls_cert: t.tls_cert.clone(),
        tls_key: t.tls_key.clone(),
    };
    s.check()?;
    Ok(s)
}

/// `vcontap validate FILE`: the file parses, every value is in range, every sink builds,
/// every interface exists, the SIP TLS certificate and key load.
fn validate(path: &std::path::Path) -> Result<()> {
    let s = settings_from_config(path)?;
    for i in &s.interfaces {
        if i != "any" && !std::path::Path::new("/sys/class/net").join(i).exists() {
            bail!(
                "{}: capture.interfaces: no interface {i:?} on this machine",
                path.display()
            );
        }
    }
    let c = config::load(path)?;
    for (n, t) in c.sinks.iter().enumerate() {
        let spec = vcontap_sinks::SinkSpec::from_table(t)
            .with_context(|| format!("{}: sinks[{n}]", path.display()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _g = rt.enter();
        vcontap_sinks::spec::build(spec)
            .with_context(|| format!("{}: sinks[{n}]", path.display()))?;
    }
    for t in &c.delivery.transforms {
        vcontap_sinks::transform::parse(t)
            .map_err(|e| anyhow::anyhow!("{}: delivery.transforms: {e}", path.display()))?;
    }
    if let Some(sr) = &s.siprec {
        // The certificate and key must load and match, as at start-up.
        if let (Some(c), Some(k)) = (&sr.tls_cert, &sr.tls_key) {
            crate::tls::server_config(c, k)
                .with_context(|| format!("{}: siprec.tls_cert / siprec.tls_key", path.display()))?;
        }
    }
    if let Some(f) = &s.filter {
        crate::sources::check_filter(f)
            .with_context(|| format!("{}: capture.filter", path.display()))?;
    }
    println!("{}: OK", path.display());
    Ok(())
}

fn synth(a: SynthArgs) -> Result<()> {
    use vcontap_synth::{Codec, SipTransport, SynthConfig};
    if a.calls == 0 || a.concurrent == 0 {
        bail!("--calls and --concurrent must be at least 1");
    }
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds <= 86_400.0) {
        bail!("--seconds must be between 0 and 86400");
    }
    let mut codecs = Vec::new();
    for c in &a.codecs {
        codecs.push(match c.to_ascii_lowercase().as_str() {
            "pcmu" | "g711u" => Codec::Pcmu,
            "pcma" | "g711a" => Codec::Pcma,
            "g722" => Codec::G722,
            "opus" => Codec::Opus,
            other => bail!("unknown codec {other:?} (pcmu, pcma, g722, opus)"),
        });
    }
    if codecs.contains(&Codec::Opus) && !cfg!(feature = "opus") {
        bail!("this build has no Opus support; rebuild with --features opus");
    }
    if let Some(d) = &a.dtmf {
        if !d
            .chars()
            .all(|c| c.is_ascii_digit() || "*#ABCD".contains(c))
        {
            bail!("--dtmf digits must be 0-9, *, #, A-D");
        }
    }
    let cfg = SynthConfig {
        calls: a.calls,
        concurrent: a.concurrent,
        seconds: a.seconds,
        seed: a.seed,
        codecs,
        dtmf: a.dtmf,
        sip_info_dtmf: a.sip_info_dtmf,
        failure_every: a.failure_every,
        hold: a.hold,
        transport: if a.tcp {
            SipTransport::Tcp
        } else {
            SipTransport::Udp
        },
        vlan: a.vlan,
        ipv6: a.ipv6,
        auth_challenge: a.auth,
        ..SynthConfig::default()
    };
    let f =
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let s = vcontap_synth::generate(&cfg, std::io::BufWriter::with_capacity(1 << 20, f))
        .context("generating traffic")?;
    eprintln!(
        "wrote {}: {} calls, {} packets ({} RTP, {} SIP), {} bytes",
        a.out.display(),
        s.calls.len(),
        s.packets,
        s.rtp_packets,
        s.sip_messages,
        s.bytes
    );
    Ok(())
}
