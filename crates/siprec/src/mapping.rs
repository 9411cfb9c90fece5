//! Which participants speak in which recorded stream: the documented fallback chain of
//! ../shared/docs/siprec.md §6 item 8, applied per SDP `m=` line.
//!
//! 1. `<participantstreamassoc><send>` (RFC 7865) naming the stream whose `<label>`
//!    equals the m-line's `a=label`;
//! 2. `<send>` inline in `<participant>` (draft, BroadWorks);
//! 3. vendor hints: with two unmapped streams, the participant marked calling
//!    (`apkt:callingParty`, `<role>calling`) gets the first, the one marked called the second;
//! 4. labels: unmapped participants in document order take unmapped streams in label
//!    order (numeric when every label is a number, else text order);
//! 5. SDP order: unmapped participants take unmapped m-lines in order.
//!
//! A single m-line (mixed recording: BroadWorks `mode mixed`, Metaswitch, Intrado) gets
//! every participant that no association placed elsewhere. Missing or useless metadata
//! leaves streams without senders; the recording goes on (§6 item 7).

use crate::metadata::{Metadata, SendSource};

/// Which step of the chain decided a stream's senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapSource {
    /// `participantstreamassoc`.
    Assoc,
    /// Inline `<send>` in `<participant>`.
    InlineSend,
    /// Vendor calling/called hints.
    VendorHint,
    /// Label order.
    Label,
    /// m-line order (also: all participants into a single mixed stream).
    SdpOrder,
    /// Nothing to map (no metadata or no participants).
    Unmapped,
}

/// The senders of one m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMap {
    /// The m-line's `a=label`.
    pub label: Option<String>,
    /// The metadata stream id joined through the label.
    pub stream_id: Option<String>,
    /// Indices into [`Metadata::participants`] whose voice is in this stream.
    pub senders: Vec<usize>,
    /// How `senders` was decided.
    pub source: MapSource,
}

/// Maps every m-line (given by its label, in SDP order) to its senders.
pub fn map_streams(md: Option<&Metadata>, labels: &[Option<&str>]) -> Vec<StreamMap> {
    let mut out: Vec<StreamMap> = labels
        .iter()
        .map(|l| StreamMap {
            label: l.map(str::to_owned),
            stream_id: None,
            senders: Vec::new(),
            source: MapSource::Unmapped,
        })
        .collect();
    let Some(md) = md else {
        return out;
    };
    if md.participants.is_empty() {
        return out;
    }
    // Steps 1 and 2.
    for m in &mut out {
        let Some(stream) = m.label.as_deref().and_then(|l| md.stream_by_label(l)) else {
            continue;
        };
        if stream.id.is_empty() {
            continue;
        }
        m.stream_id = Some(stream.id.clone());
        for source in [SendSource::Assoc, SendSource::Inline] {
            let senders: Vec<usize> = md
                .participants
                .iter()
                .enumerate()
                .filter(|(_, p)| p.send_source == Some(source) && p.send.contains(&stream.id))
                .map(|(i, _)| i)
                .collect();
            if !senders.is_empty() {
                m.senders = senders;
                m.source = match source {
                    SendSource::Assoc => MapSource::Assoc,
                    SendSource::Inline => MapSource::InlineSend,
                };
                break;
            }
        }
    }
    let placed = |out: &[StreamMap], i: usize| out.iter().any(|m| m.senders.contains(&i));
    let free_participants: Vec<usize> = (0..md.participants.len())
        .filter(|&i| !placed(&out, i))
        .collect();
    // Mixed: one m-line carries everyone not placed elsewhere (BroadWorks `mode mixed`
    // names a per-participant stream id that has no m-line of its own).
    if let [only] = &mut out[..] {
        if !free_participants.is_empty() {
            if only.senders.is_empty() {
                only.source = MapSource::SdpOrder;
            }
            only.senders.extend(free_participants);
        }
        return out;
    }
    let free_streams: Vec<usize> = (0..out.len())
        .filter(|&k| out.get(k).is_some_and(|m| m.senders.is_empty()))
        .collect();
    if free_participants.is_empty() || free_streams.is_empty() {
        return out;
    }
    // Step 3.
    if let [first, second] = free_streams[..] {
        let caller = free_participants
            .iter()
            .copied()
            .find(|&i| md.participants.get(i).and_then(|p| p.calling) == Some(true));
        let callee = free_participants
            .iter()
            .copied()
            .find(|&i| md.participants.get(i).and_then(|p| p.calling) == Some(false));
        if caller.is_some() || callee.is_some() {
            for (k, p) in [(first, caller), (second, callee)] {
                if let (Some(m), Some(p)) = (out.get_mut(k), p) {
                    m.senders = vec![p];
                    m.source = MapSource::VendorHint;
                }
            }
            return out;
        }
    }
    // Step 4, else 5.
    let all_labelled = free_streams
        .iter()
        .all(|&k| out.get(k).is_some_and(|m| m.label.is_some()));
    let mut order = free_streams.clone();
    let source = if all_labelled {
        let key = |k: &usize| {
            out.get(*k)
                .and_then(|m| m.label.clone())
                .unwrap_or_default()
        };
        let numeric = order.iter().all(|k| key(k).parse::<u64>().is_ok());
        if numeric {
            order.sort_by_key(|k| key(k).parse::<u64>().unwrap_or(u64::MAX));
        } else {
            order.sort_by_key(key);
        }
        MapSource::Label
    } else {
        MapSource::SdpOrder
    };
    for (k, p) in order.into_iter().zip(free_participants) {
        if let Some(m) = out.get_mut(k) {
            m.senders = vec![p];
            m.source = source;
        }
    }
    out
}
