//! `cargo bench -p vcontap-siprec`: the cost of the recording server's core per session,
//! so the SIP side of the 500-session target can be judged apart from media: parsing one
//! rs-metadata document, and one whole dialog (INVITE with multipart body → 100/200 →
//! ACK → BYE → 200) through the UAS with the media binding answered at once.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use vcontap_siprec::answer::{Bound, MAX_KEY_MATERIAL};
use vcontap_siprec::metadata;
use vcontap_siprec::uas::{Config, Event, Peer, Transport, Uas};
use vcontap_wire::Timestamp;

const META: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<recording xmlns='urn:ietf:params:xml:ns:recording:1'>\r\n<datamode>complete</datamode>\r\n\
<group group_id='7+OTCyoxTmqmqyA/1weDAg=='><associate-time>2026-01-01T10:00:00Z</associate-time></group>\r\n\
<session session_id='hVpd7YQgRW2nD22h7q60JQ=='><sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>\
<group-ref>7+OTCyoxTmqmqyA/1weDAg==</group-ref><start-time>2026-01-01T10:00:00Z</start-time></session>\r\n\
<participant participant_id='srfBElmCRp2QB23b7Mpk0w=='><nameID aor='sip:+15551230001@pbx.example'><name xml:lang='en'>Ada Lovelace</name></nameID></participant>\r\n\
<participant participant_id='zSfPoSvdSDCmU3A3TRDxAw=='><nameID aor='sip:+15551230002@carrier.example'><name xml:lang='en'>Charles Babbage</name></nameID></participant>\r\n\
<stream stream_id='UAAMm5GRQKSCMVvLyl4rFw==' session_id='hVpd7YQgRW2nD22h7q60JQ=='><label>1</label></stream>\r\n\
<stream stream_id='i1Pz3to5hGk8fuXl+PbwCw==' session_id='hVpd7YQgRW2nD22h7q60JQ=='><label>2</label></stream>\r\n\
<sessionrecordingassoc session_id='hVpd7YQgRW2nD22h7q60JQ=='><associate-time>2026-01-01T10:00:00Z</associate-time></sessionrecordingassoc>\r\n\
<participantsessionassoc participant_id='srfBElmCRp2QB23b7Mpk0w==' session_id='hVpd7YQgRW2nD22h7q60JQ=='><associate-time>2026-01-01T10:00:00Z</associate-time></participantsessionassoc>\r\n\
<participantsessionassoc participant_id='zSfPoSvdSDCmU3A3TRDxAw==' session_id='hVpd7YQgRW2nD22h7q60JQ=='><associate-time>2026-01-01T10:00:00Z</associate-time></participantsessionassoc>\r\n\
<participantstreamassoc participant_id='srfBElmCRp2QB23b7Mpk0w=='><send>UAAMm5GRQKSCMVvLyl4rFw==</send><recv>i1Pz3to5hGk8fuXl+PbwCw==</recv></participantstreamassoc>\r\n\
<participantstreamassoc participant_id='zSfPoSvdSDCmU3A3TRDxAw=='><send>i1Pz3to5hGk8fuXl+PbwCw==</send><recv>UAAMm5GRQKSCMVvLyl4rFw==</recv></participantstreamassoc>\r\n\
</recording>\r\n";

const SDP: &str = "v=0\r\no=src 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=label:1\r\na=sendonly\r\n\
m=audio 6002 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=label:2\r\na=sendonly\r\n";

fn msg(method: &str, call: &str, branch: &str, to_tag: &str, body: &str) -> Vec<u8> {
    let (ct, tag) = if body.is_empty() {
        (String::new(), format!(";tag={to_tag}"))
    } else {
        (
            "Content-Type: multipart/mixed;boundary=OSS-unique-boundary\r\n".to_owned(),
            String::new(),
        )
    };
    format!(
        "{method} sip:srs@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
From: <sip:src@192.0.2.1>;tag=src\r\nTo: <sip:srs@192.0.2.2>{tag}\r\nCall-ID: {call}\r\nCSeq: 1 {method}\r\n\
Contact: <sip:src@192.0.2.1>;+sip.src\r\nRequire: siprec\r\nMax-Forwards: 70\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("siprec");
    g.throughput(Throughput::Bytes(META.len() as u64));
    g.bench_function("metadata_parse", |b| {
        b.iter(|| metadata::parse(black_box(META.as_bytes())).map(|m| m.participants.len()))
    });

    let body = format!(
        "--OSS-unique-boundary\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--OSS-unique-boundary\r\n\
Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{META}\r\n--OSS-unique-boundary--\r\n"
    );
    let peer = Peer {
        transport: Transport::Udp,
        addr: "192.0.2.1:5060".parse().unwrap(),
        conn: 0,
    };
    let mut uas = Uas::new(Config::new(
        "192.0.2.2".parse().unwrap(),
        "<sip:srs@192.0.2.2>".into(),
        "192.0.2.2:5060".into(),
        1,
    ));
    let mut n = 0u64;
    let mut now = Timestamp(1_767_225_600_000_000_000);
    g.throughput(Throughput::Elements(1));
    g.bench_function("dialog_invite_ack_bye", |b| {
        b.iter(|| {
            n += 1;
            now = now.add_millis(1);
            let call = format!("bench-{n}@192.0.2.1");
            uas.handle_datagram(
                now,
                peer,
                &msg("INVITE", &call, &format!("z9hG4bK{n}i"), "", &body),
            );
            let mut tag = String::new();
            while let Some(e) = uas.poll_event() {
                if let Event::MediaRequest { rs, plans, .. } = e {
                    let bound = plans
                        .iter()
                        .map(|p| {
                            p.accepted().then_some(Bound {
                                port: 40000,
                                key: [0; MAX_KEY_MATERIAL],
                            })
                        })
                        .collect();
                    let _used = uas.media_ready(now, rs, bound);
                }
            }
            while let Some(t) = uas.poll_transmit() {
                if let Ok(m) = vcontap_sip::Message::parse(&t.bytes) {
                    if m.status() == Some(200) {
                        tag = m.to().and_then(|t| t.tag).unwrap_or("").to_owned();
                    }
                }
            }
            uas.handle_datagram(
                now,
                peer,
                &msg("ACK", &call, &format!("z9hG4bK{n}a"), &tag, ""),
            );
            uas.handle_datagram(
                now,
                peer,
                &msg("BYE", &call, &format!("z9hG4bK{n}b"), &tag, ""),
            );
            while uas.poll_transmit().is_some() {}
            while uas.poll_event().is_some() {}
            // Transactions expire 32 s later: keep the table at its steady-state size.
            uas.handle_timeout(now);
        })
    });
    g.finish();
    assert_eq!(uas.sessions(), 0, "every benched dialog ended");
}

criterion_group!(siprec, benches);
criterion_main!(siprec);
