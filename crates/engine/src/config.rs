//! Engine configuration: every limit the engine enforces, with its default and reason.

/// What audio to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordMode {
    /// Signalling and RTP statistics only.
    None,
    /// One WAV per segment, caller on the left channel, callee on the right.
    Stereo,
    /// One WAV per segment with both directions mixed.
    Mono,
}

/// Limits and behaviour of one engine shard.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Audio recording mode.
    pub record: RecordMode,
    /// Cut recordings every N seconds (0 = only at hold/resume, codec change and transfer).
    pub segment_seconds: u32,
    /// Host name hashed into every vCon uuid (draft §2.1).
    pub host: String,
    /// Shard number (names threads and segment ids; uuids do not depend on it).
    pub shard: u16,
    /// Open calls per shard. When full, the longest-idle call is finished as `evicted`.
    /// 100k calls × ~20 KiB worst case = 2 GiB: the ceiling for a single shard.
    pub max_calls: usize,
    /// RTP streams (SSRC × direction) tracked per call; more are counted, not tracked.
    /// Guards against SSRC-churn floods.
    pub max_streams_per_call: usize,
    /// Media address routes in the table (about 4 per call).
    pub max_media_routes: usize,
    /// SIP messages kept per call for the `sip-message-trace` attachment.
    pub max_trace_messages: usize,
    /// Bytes of SIP text kept per call for the trace.
    pub max_trace_bytes: usize,
    /// Heuristic RTP flows without SDP remembered at once.
    pub max_orphan_flows: usize,
    /// An orphan flow is forgotten after this much silence.
    pub orphan_idle_ms: i64,
    /// A call with no SIP or RTP for this long is finished as `timeout` (VoIPmonitor's
    /// `rtptimeout` default is 300 s).
    pub idle_timeout_ms: i64,
    /// An unanswered call with no SIP for this long is finished as `timeout`.
    pub ringing_timeout_ms: i64,
    /// After BYE without its 200, or after CANCEL without 487, wait this long; a failure
    /// final response keeps its call this long for the ACK and stragglers (a stray BYE).
    pub linger_ms: i64,
    /// After a 401/407 challenge, wait this long for the re-sent INVITE (same Call-ID,
    /// CSeq+1). No protocol limit bounds a client's wait for credentials (real traces show
    /// 30 s+ when a user types a password), so the default equals the ringing timeout.
    pub auth_wait_ms: i64,
    /// How long decoded audio stays editable for late/reordered packets.
    pub jitter_window_ms: u32,
    /// Audio is handed to the driver in chunks of at least this many milliseconds.
    pub audio_chunk_ms: u32,
    /// A closed segment whose store has not answered after this long (timer time) is
    /// marked failed and left out of the vCon, so a finishing call never waits forever on
    /// a store that hangs. Generous: a replay at full speed runs capture time far ahead of
    /// the disk, and a remote store may retry.
    pub segment_store_timeout_ms: i64,
    /// Live "quality so far": with `Some(n)`, n > 0, every live snapshot carries the RTP
    /// quality report so far (`vcontap.rtp_quality`) and each open call whose RTP counters
    /// moved emits an `updated` event at most every n ms of timer time, so dashboards see
    /// quality between signalling events. `Some(0)` turns it off; `None` leaves the choice
    /// to the driver (`vcontap_pipeline::TapConfig::live` turns it on at
    /// [`DEFAULT_LIVE_QUALITY_INTERVAL_MS`]; the engine itself treats `None` as off, so a
    /// file replay's events stay as they were).
    pub quality_interval_ms: Option<i64>,
}

/// The quality refresh interval live sources use unless configured (10 s): a wallboard
/// sees loss and jitter move within seconds at one small event per call per interval.
pub const DEFAULT_LIVE_QUALITY_INTERVAL_MS: i64 = 10_000;

/// Largest accepted quality refresh interval (1 hour).
pub const MAX_QUALITY_INTERVAL_MS: i64 = 3_600_000;

impl EngineConfig {
    /// The quality refresh interval in force, ms (0: off).
    pub fn quality_interval(&self) -> i64 {
        self.quality_interval_ms
            .filter(|n| *n > 0)
            .map_or(0, |n| n.min(MAX_QUALITY_INTERVAL_MS))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            record: RecordMode::Stereo,
            segment_seconds: 0,
            host: "localhost".to_string(),
            shard: 0,
            max_calls: 100_000,
            max_streams_per_call: 16,
            max_media_routes: 800_000,
            max_trace_messages: 200,
            max_trace_bytes: 256 * 1024,
            max_orphan_flows: 65_536,
            orphan_idle_ms: 60_000,
            idle_timeout_ms: 300_000,
            ringing_timeout_ms: 300_000,
            linger_ms: 5_000,
            auth_wait_ms: 300_000,
            jitter_window_ms: 500,
            audio_chunk_ms: 1000,
            segment_store_timeout_ms: 300_000,
            quality_interval_ms: None,
        }
    }
}
