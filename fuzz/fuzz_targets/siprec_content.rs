#![no_main]
//! Fuzzes what a recording session's vCon keeps and the recording policy
//! (`vcontap_siprec::content`, `vcontap_siprec::policy`): the input is split at `0xff`
//! bytes into an INVITE, its metadata, a later metadata version and a do-not-record list.
//! Checks that nothing panics, the attachments stay within what the engine caps, and the
//! INVITE attachment never carries a credential header line.

use vcontap_engine::AttachmentBody;
use vcontap_siprec::content::SessionContent;
use vcontap_siprec::metadata;
use vcontap_siprec::policy::{DoNotRecord, Policy, RecordPolicy};
use vcontap_siprec::session;
use vcontap_siprec::uas::{Opened, Peer, RsId, Transport};
use vcontap_wire::Timestamp;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xff);
    let invite = parts.next().unwrap_or_default();
    let md = parts.next().unwrap_or_default();
    let later = parts.next().unwrap_or_default();
    let list = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let dnr = DoNotRecord::parse(&list).unwrap_or_default();
    let policy = Policy {
        mode: if data.len() % 2 == 0 {
            RecordPolicy::All
        } else {
            RecordPolicy::Marked
        },
        marker_headers: vec!["X-Record".into()],
        marker_elements: vec!["recordMe".into()],
        do_not_record: dnr,
    };
    let opened = Opened {
        rs: RsId(1),
        call_id: "fuzz".into(),
        siprec: true,
        invite: invite.to_vec(),
        metadata: metadata::parse(md).ok(),
        metadata_raw: (!md.is_empty()).then(|| md.to_vec()),
        streams: Vec::new(),
        paused: false,
        peer: Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5060".parse().unwrap(),
            conn: 0,
        },
        at: Timestamp(1_000_000_000),
    };
    let mut plan = session::plan(&opened);
    let mut content = SessionContent::open(&opened, &policy, &mut plan);
    assert!(plan.spec.attachments.len() <= 3);
    if let Some(AttachmentBody::Text(t)) = plan.spec.attachments.first().map(|a| &a.body) {
        let head = t
            .get(..vcontap_siprec::content::head_len(t.as_bytes()))
            .unwrap_or("");
        for line in head.lines() {
            let name = line.split(':').next().unwrap_or("").trim();
            assert!(
                !name.eq_ignore_ascii_case("authorization")
                    && !name.eq_ignore_ascii_case("proxy-authorization"),
                "{line}"
            );
        }
    }
    if let Ok(m) = metadata::parse(later) {
        let u = content.metadata_changed(later, &m, Timestamp(2_000_000_000), &policy);
        assert!(u.attachments.len() <= 2);
    }
    let _ = content.ids();
});
