//! `GET /v1/calls/{uuid}/audio` (WebSocket): a call's live decoded audio from the moment
//! the client joins, for transcription and agent-assist apps.
//!
//! The audio comes from the pipeline's [`AudioTee`] (the PCM written to the recording
//! segments, so `--record stereo|mono` must be on). What goes on the socket:
//!
//! * text `{"type":"header",...}` once, when the first segment's format is known: rate,
//!   channels and which party each channel is (`["caller","callee"]` for stereo, `["mix"]`
//!   for mono), the frame size and the binary layout;
//! * text `{"type":"segment","index":N,"rate":R,"channels":C}` whenever a recording segment
//!   starts (the first one, after hold/resume, at a `--segment-seconds` cut), and
//!   `{"type":"segment_end","index":N}` when it closes;
//! * binary frames of fixed size: a 16-byte little-endian header (`u32` segment index,
//!   `u32` valid sample frames, `u64` offset in sample frames since the segment started,
//!   i.e. the frame's timestamp: `dialog[N].start + offset / rate` in the vCon) and
//!   `FRAME_MS` of interleaved `s16le` PCM, zero-padded after the valid frames (only the
//!   last frame of a segment, or one before a gap, is short);
//! * text `{"type":"gap","index":N,"from":A,"to":B}` when a slow client lost audio (its
//!   queue is bounded, drop-newest; capture is never slowed);
//! * text `{"type":"end"}` and a close frame when the call finishes.
//!
//! [`Reframer`] (the framing) is sans-IO and unit-tested; the handler around it is a thin
//! tokio shell.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vcontap_pipeline::{Polled, SegmentInfo, SubscribeError, TeeItem};

/// Milliseconds of audio per binary frame.
pub const FRAME_MS: u32 = 20;
/// Bytes of a binary frame's header.
pub const FRAME_HEADER: usize = 16;
/// Audio chunks queued per subscriber (the engine hands out about one per RTP packet,
/// 20 ms): about 20 s of audio before the newest is dropped.
pub const QUEUE_CHUNKS: usize = 1024;
/// Audio sockets open at once, over all calls (each holds up to [`QUEUE_CHUNKS`] chunks).
pub const MAX_SOCKETS: usize = 256;
/// Tee items taken per turn of the socket loop.
const BATCH: usize = 64;

/// Turns the tee's variable-size chunks into the socket's messages.
#[derive(Debug, Default)]
pub struct Reframer {
    header_sent: bool,
    seg: Option<SegmentInfo>,
    /// Offset (sample frames into the segment) of `buf`'s first frame.
    buf_offset: u64,
    buf: Vec<i16>,
    /// Audio of the current segment arrived (so the next chunk's offset is known).
    started: bool,
}

/// A message for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A JSON control message.
    Text(String),
    /// One fixed-size audio frame.
    Binary(Vec<u8>),
}

impl Reframer {
    /// Sample frames (per channel) in one binary frame at `rate`.
    pub fn frame_samples(rate: u32) -> usize {
        (rate as usize * FRAME_MS as usize / 1000).max(1)
    }

    fn layout(channels: u16) -> serde_json::Value {
        if channels >= 2 {
            json!(["caller", "callee"])
        } else {
            json!(["mix"])
        }
    }

    /// Feeds one tee item.
    pub fn push(&mut self, item: TeeItem, out: &mut Vec<Out>) {
        match item {
            TeeItem::SegmentStart(s) => {
                self.flush(out);
                if !self.header_sent {
                    self.header_sent = true;
                    out.push(Out::Text(
                        json!({
                            "type": "header",
                            "rate": s.rate,
                            "channels": s.channels,
                            "channel_parties": Self::layout(s.channels),
                            "format": "s16le",
                            "frame_ms": FRAME_MS,
                            "frame_samples": Self::frame_samples(s.rate),
                            "frame_header": "u32le segment index, u32le valid sample frames, u64le offset in sample frames since the segment start",
                        })
                        .to_string(),
                    ));
                }
                out.push(Out::Text(
                    json!({"type": "segment", "index": s.index, "rate": s.rate, "channels": s.channels, "channel_parties": Self::layout(s.channels)})
                        .to_string(),
                ));
                self.seg = Some(s);
                self.buf_offset = 0;
                self.buf.clear();
                self.started = false;
            }
            TeeItem::Audio {
                index,
                offset,
                samples,
            } => {
                let Some(seg) = self.seg.filter(|s| s.index == index) else {
                    // Audio of a segment whose start was lost: nothing to frame it with.
                    return;
                };
                let ch = u64::from(seg.channels.max(1));
                let expected = self.buf_offset + self.buf.len() as u64 / ch;
                if !self.started {
                    // The first chunk heard of this segment (joining mid-segment: not 0).
                    self.started = true;
                    self.buf_offset = offset;
                } else if offset != expected {
                    self.flush(out);
                    out.push(Out::Text(
                        json!({"type": "gap", "index": index, "from": expected, "to": offset})
                            .to_string(),
                    ));
                    self.buf_offset = offset;
                }
                self.buf.extend_from_slice(&samples);
                let per = Self::frame_samples(seg.rate) * usize::from(seg.channels.max(1));
                while self.buf.len() >= per {
                    let rest = self.buf.split_off(per);
                    let full = std::mem::replace(&mut self.buf, rest);
                    out.push(Out::Binary(frame(seg, self.buf_offset, &full, per)));
                    self.buf_offset += (per / usize::from(seg.channels.max(1))) as u64;
                }
            }
            TeeItem::SegmentEnd { index } => {
                if self.seg.is_some_and(|s| s.index == index) {
                    self.flush(out);
                    self.seg = None;
                    self.started = false;
                    out.push(Out::Text(
                        json!({"type": "segment_end", "index": index}).to_string(),
                    ));
                }
            }
        }
    }

    /// Sends what is buffered as a short (zero-padded) frame.
    fn flush(&mut self, out: &mut Vec<Out>) {
        if let Some(seg) = self.seg {
            if !self.buf.is_empty() {
                let per = Self::frame_samples(seg.rate) * usize::from(seg.channels.max(1));
                out.push(Out::Binary(frame(seg, self.buf_offset, &self.buf, per)));
                self.buf_offset += (self.buf.len() / usize::from(seg.channels.max(1))) as u64;
                self.buf.clear();
            }
        }
    }

    /// The call ended.
    pub fn end(&mut self, out: &mut Vec<Out>) {
        self.flush(out);
        out.push(Out::Text(json!({"type": "end"}).to_string()));
    }
}

/// One binary frame: header, `samples` and zeros up to `per` samples.
fn frame(seg: SegmentInfo, offset: u64, samples: &[i16], per: usize) -> Vec<u8> {
    let ch = usize::from(seg.channels.max(1));
    let mut b = Vec::with_capacity(FRAME_HEADER + per * 2);
    b.extend_from_slice(&seg.index.to_le_bytes());
    b.extend_from_slice(&((samples.len() / ch) as u32).to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    for s in samples.iter().take(per) {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b.resize(FRAME_HEADER + per * 2, 0);
    b
}

/// `GET /v1/calls/{uuid}/audio`.
pub async fn handler(
    State(slots): State<crate::web::WebSlots>,
    Path(uuid): Path<String>,
    Query(q): Query<crate::web::TokenQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Credentials first: a client without them learns nothing, not even the request shape.
    if let Err(r) = slots.authorize(&headers, &q) {
        return r;
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let Some(tee) = slots.audio() else {
        return (
            StatusCode::NOT_FOUND,
            "live audio needs recording on (--record stereo|mono)\n",
        )
            .into_response();
    };
    if tee.subscribers() >= MAX_SOCKETS {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live audio sockets\n",
        )
            .into_response();
    }
    let notify = Arc::new(tokio::sync::Notify::new());
    let n = notify.clone();
    let sub = match tee.subscribe(&uuid, QUEUE_CHUNKS, Arc::new(move || n.notify_one())) {
        Ok(s) => s,
        Err(SubscribeError::NotLive) => {
            return (StatusCode::NOT_FOUND, "no such call in progress\n").into_response()
        }
        Err(SubscribeError::TooMany) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many audio subscribers for this call\n",
            )
                .into_response()
        }
    };
    // The client only ever sends control frames; a small read buffer also keeps tungstenite
    // from zero-filling 128 KiB at every `recv` poll of the pump loop.
    ws.read_buffer_size(4096)
        .on_upgrade(move |socket| pump(socket, sub, notify))
}

async fn pump(
    mut socket: WebSocket,
    sub: vcontap_pipeline::AudioSubscription,
    notify: Arc<tokio::sync::Notify>,
) {
    let mut rf = Reframer::default();
    let mut out = Vec::new();
    loop {
        let ended = match sub.poll(BATCH) {
            Polled::Items(items) => {
                for it in items {
                    rf.push(it, &mut out);
                }
                false
            }
            Polled::Ended => {
                rf.end(&mut out);
                true
            }
            Polled::Empty => {
                tokio::select! {
                    _ = notify.notified() => {}
                    m = socket.recv() => match m {
                        // The client closed or the connection broke.
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                        Some(Ok(_)) => {}
                    },
                }
                continue;
            }
        };
        for m in out.drain(..) {
            let msg = match m {
                Out::Text(t) => Message::Text(t.into()),
                Out::Binary(b) => Message::Binary(b.into()),
            };
            if socket.send(msg).await.is_err() {
                return;
            }
        }
        if ended {
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::Mutex;

    fn seg(index: u32, channels: u16) -> SegmentInfo {
        SegmentInfo {
            index,
            rate: 8000,
            channels,
        }
    }

    fn audio(index: u32, offset: u64, n: usize, ch: usize) -> TeeItem {
        TeeItem::Audio {
            index,
            offset,
            samples: (0..n * ch)
                .map(|i| (offset as usize * ch + i) as i16)
                .collect::<Vec<_>>()
                .into(),
        }
    }

    fn parse(b: &[u8]) -> (u32, u32, u64, Vec<i16>) {
        let u32at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let off = u64::from_le_bytes(b[8..16].try_into().unwrap());
        let pcm = b[16..]
            .chunks(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        (u32at(0), u32at(4), off, pcm)
    }

    #[test]
    fn fixed_frames_with_offsets_and_padding() {
        let mut r = Reframer::default();
        let mut out = Vec::new();
        r.push(TeeItem::SegmentStart(seg(0, 2)), &mut out);
        // 100 + 250 sample frames: two full 160-frame frames, 30 left.
        r.push(audio(0, 0, 100, 2), &mut out);
        r.push(audio(0, 100, 250, 2), &mut out);
        r.push(TeeItem::SegmentEnd { index: 0 }, &mut out);
        r.end(&mut out);
        let texts: Vec<&String> = out
            .iter()
            .filter_map(|o| match o {
                Out::Text(t) => Some(t),
                _ => None,
            })
            .collect();
        assert!(texts[0].contains("\"type\":\"header\"") && texts[0].contains("\"caller\""));
        assert!(texts[1].contains("\"type\":\"segment\""));
        assert!(texts[2].contains("segment_end"));
        assert!(texts[3].contains("\"end\""));
        let bins: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Out::Binary(b) => Some(parse(b)),
                _ => None,
            })
            .collect();
        assert_eq!(bins.len(), 3);
        for (i, (idx, valid, off, pcm)) in bins.iter().enumerate() {
            assert_eq!(*idx, 0);
            assert_eq!(pcm.len(), 320, "fixed size");
            assert_eq!(*off, i as u64 * 160);
            let v = *valid as usize;
            assert_eq!(v, if i < 2 { 160 } else { 30 });
            let want: Vec<i16> = (0..v * 2).map(|k| (*off as usize * 2 + k) as i16).collect();
            assert_eq!(&pcm[..v * 2], &want[..]);
            assert!(pcm[v * 2..].iter().all(|&s| s == 0), "zero padding");
        }
    }

    #[test]
    fn gaps_and_joins_mid_segment() {
        let mut r = Reframer::default();
        let mut out = Vec::new();
        // Audio before any segment start is ignored (nothing says its format).
        r.push(audio(3, 0, 10, 1), &mut out);
        assert!(out.is_empty());
        r.push(TeeItem::SegmentStart(seg(3, 1)), &mut out);
        r.push(audio(3, 500, 100, 1), &mut out);
        r.push(audio(3, 900, 200, 1), &mut out);
        r.push(TeeItem::SegmentEnd { index: 3 }, &mut out);
        let gap = out
            .iter()
            .find_map(|o| match o {
                Out::Text(t) if t.contains("gap") => Some(t.clone()),
                _ => None,
            })
            .unwrap();
        assert!(
            gap.contains("\"from\":600") && gap.contains("\"to\":900"),
            "{gap}"
        );
        let offs: Vec<(u64, u32)> = out
            .iter()
            .filter_map(|o| match o {
                Out::Binary(b) => {
                    let p = parse(b);
                    Some((p.2, p.1))
                }
                _ => None,
            })
            .collect();
        assert_eq!(offs, vec![(500, 100), (900, 160), (1060, 40)]);
        assert!(out
            .iter()
            .any(|o| matches!(o, Out::Text(t) if t.contains("\"mix\""))));
    }

    #[test]
    fn a_chunk_lost_between_whole_frames_is_a_gap() {
        let mut r = Reframer::default();
        let mut out = Vec::new();
        r.push(TeeItem::SegmentStart(seg(0, 1)), &mut out);
        r.push(audio(0, 0, 160, 1), &mut out);
        r.push(audio(0, 320, 160, 1), &mut out);
        let gaps: Vec<_> = out
            .iter()
            .filter(|o| matches!(o, Out::Text(t) if t.contains("gap")))
            .collect();
        assert_eq!(gaps.len(), 1, "{out:?}");
        let offs: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                Out::Binary(b) => Some(parse(b).2),
                _ => None,
            })
            .collect();
        assert_eq!(offs, vec![0, 320]);
    }

    /// A minimal WebSocket client (RFC 6455): handshake, then every message until the
    /// server's close frame. Server frames are unmasked and, from axum, unfragmented.
    fn ws_connect(addr: SocketAddr, path: &str) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        s
    }

    enum Msg {
        Text(String),
        Bin(Vec<u8>),
    }

    fn ws_read_all(mut s: TcpStream) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 2];
            s.read_exact(&mut h).unwrap();
            let op = h[0] & 0x0f;
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).unwrap();
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).unwrap();
                len = u64::from_be_bytes(b);
            }
            let mut p = vec![0u8; len as usize];
            s.read_exact(&mut p).unwrap();
            match op {
                1 => out.push(Msg::Text(String::from_utf8(p).unwrap())),
                2 => out.push(Msg::Bin(p)),
                8 => return out,
                _ => {}
            }
        }
    }

    #[test]
    fn websocket_audio_reassembles_to_the_wav_segments() {
        use vcontap_engine::{EngineConfig, EventKind, RecordMode};
        use vcontap_pipeline::{AudioTee, Clock, LocalFiles, Tap, TapConfig};

        let synth = vcontap_synth::SynthConfig {
            calls: 3,
            concurrent: 3,
            seconds: 4.0,
            seed: 17,
            hold: true,
            failure_every: 0,
            ..vcontap_synth::SynthConfig::default()
        };
        let mut pcap = Vec::new();
        vcontap_synth::generate(&synth, &mut pcap).unwrap();
        let dir = std::env::temp_dir().join(format!("vcontap-audio-ws-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tee = AudioTee::wrap(Arc::new(LocalFiles::new(&dir, None).unwrap()));
        let slots = crate::web::WebSlots::default();
        slots.set_audio(tee.clone());
        let (_rt, addr) = crate::web::testing::server(slots);

        let mut cfg = TapConfig::replay(EngineConfig {
            record: RecordMode::Stereo,
            segment_seconds: 1,
            host: "ws.test".into(),
            ..EngineConfig::default()
        });
        cfg.media = Some(tee.clone());
        // The first call is joined at `created` (from the event handler, before any of its
        // audio exists); the others mid-call, halfway through the capture.
        type Reader = std::thread::JoinHandle<Vec<Msg>>;
        let readers: Arc<Mutex<Vec<(String, bool, Reader)>>> = Arc::default();
        let uuids: Arc<Mutex<Vec<String>>> = Arc::default();
        let (t, r, u) = (tee.clone(), readers.clone(), uuids.clone());
        let join = move |uuid: &str, at_created: bool, r: &Mutex<Vec<(String, bool, Reader)>>| {
            let s = ws_connect(addr, &format!("/v1/calls/{uuid}/audio"));
            r.lock().unwrap().push((
                uuid.to_string(),
                at_created,
                std::thread::spawn(move || ws_read_all(s)),
            ));
        };
        let mut tap = Tap::new(
            cfg,
            Box::new(move |e| {
                t.on_event(e);
                if e.kind == EventKind::Created {
                    let mut u = u.lock().unwrap();
                    u.push(e.uuid.to_string());
                    if u.len() == 1 {
                        join(&e.uuid, true, &r);
                    }
                }
                Ok(())
            }),
        )
        .unwrap();
        let mut clock = Clock::capture();
        let mut rd = vcontap_wire::PcapReader::new(&pcap[..]).unwrap();
        let mut packets = Vec::new();
        while let Some(p) = rd.next_packet().unwrap() {
            packets.push((p.ts, p.link, p.data.to_vec(), p.orig_len));
        }
        for (i, (ts, link, data, orig_len)) in packets.iter().enumerate() {
            if i == packets.len() / 2 {
                // Let the media writer catch up, then join the other calls mid-call.
                std::thread::sleep(std::time::Duration::from_millis(300));
                let live: Vec<String> = uuids.lock().unwrap().iter().skip(1).cloned().collect();
                for uuid in live {
                    join(&uuid, false, &readers);
                }
            }
            let p = vcontap_wire::RawPacket {
                ts: *ts,
                link: *link,
                data,
                orig_len: *orig_len,
            };
            let now = clock.on_packet(p.ts);
            tap.handle_packet(&p, now).unwrap();
        }
        tap.finish(clock.now()).unwrap();

        let readers = std::mem::take(&mut *readers.lock().unwrap());
        let tee_first_uuid = readers[0].0.clone();
        assert_eq!(readers.len(), 3);
        let mut segments_compared = 0;
        let mut joined_mid_audio = 0;
        for (uuid, at_created, h) in readers {
            let msgs = h.join().unwrap();
            let Some(Msg::Text(first)) = msgs.first() else {
                panic!("{uuid}: no header")
            };
            let header: serde_json::Value = serde_json::from_str(first).unwrap();
            assert_eq!(header["type"], "header");
            assert_eq!(header["channels"], 2);
            assert_eq!(header["channel_parties"], json!(["caller", "callee"]));
            let rate = header["rate"].as_u64().unwrap();
            let per = Reframer::frame_samples(rate as u32) * 2;
            let Some(Msg::Text(last)) = msgs.last() else {
                panic!("{uuid}: no end")
            };
            assert!(last.contains("\"end\""), "{last}");
            // Reassemble: segment → (first offset, samples), frames contiguous.
            let mut heard: BTreeMap<u32, (u64, Vec<i16>)> = BTreeMap::new();
            for m in &msgs {
                if let Msg::Bin(b) = m {
                    assert_eq!(b.len(), FRAME_HEADER + per * 2, "fixed-size frames");
                    let (idx, valid, off, pcm) = parse(b);
                    let e = heard.entry(idx).or_insert((off, Vec::new()));
                    assert_eq!(e.0 + e.1.len() as u64 / 2, off, "contiguous");
                    e.1.extend_from_slice(&pcm[..valid as usize * 2]);
                }
                if let Msg::Text(t) = m {
                    assert!(!t.contains("\"gap\""), "nothing lost: {t}");
                }
            }
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with(&uuid))
                .collect();
            files.sort();
            assert!(files.len() >= 2, "{uuid}: hold and 1 s cuts make segments");
            let first_heard = *heard.keys().next().unwrap();
            if at_created {
                assert_eq!(first_heard, 0);
                assert_eq!(heard.len(), files.len());
            } else {
                // Joined while ringing (heard from the start) or mid-call.
                let (off, _) = &heard[&first_heard];
                joined_mid_audio += usize::from(first_heard > 0 || *off > 0);
            }
            for (i, name) in files.iter().enumerate() {
                let i = i as u32;
                let Some((off, samples)) = heard.get(&i) else {
                    assert!(i < first_heard, "{name} not heard");
                    continue;
                };
                let wav: Vec<i16> = hound::WavReader::open(dir.join(name))
                    .unwrap()
                    .samples::<i16>()
                    .map(Result::unwrap)
                    .collect();
                if at_created || i > first_heard {
                    assert_eq!(*off, 0, "{name} from its start");
                }
                let skip = *off as usize * 2;
                assert_eq!(samples.len() + skip, wav.len(), "{name}");
                assert!(samples[..] == wav[skip..], "{name}: PCM differs");
                segments_compared += 1;
            }
        }
        assert!(segments_compared >= 5, "{segments_compared}");
        assert!(
            joined_mid_audio >= 1,
            "a client joined while audio was flowing"
        );
        // A finished (or unknown) call has no audio to join.
        let mut c = TcpStream::connect(addr).unwrap();
        write!(
            c,
            "GET /v1/calls/{}/audio HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            tee_first_uuid
        )
        .unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 404");
    }
}
