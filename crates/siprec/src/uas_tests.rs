//! The UAS driven in virtual time: vendor INVITEs and scenarios, our own hand-written
//! SRC messages for every answer code, retransmissions and timers.

use crate::answer::{Bound, MAX_KEY_MATERIAL};
use crate::mapping::MapSource;
use crate::testdata::{vendor_messages, vendor_names, Body};
use crate::uas::{Config, EndReason, Event, Peer, RsId, Transmit, Transport, Uas};
use vcontap_sip::{sdp, Message};
use vcontap_wire::Timestamp;

const UDP: Peer = Peer {
    transport: Transport::Udp,
    addr: std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(192, 0, 2, 1),
        5070,
    )),
    conn: 0,
};

fn tcp(conn: u64) -> Peer {
    Peer {
        transport: Transport::Tcp,
        conn,
        ..UDP
    }
}

fn cfg() -> Config {
    Config::new(
        "192.0.2.2".parse().unwrap(),
        "<sip:srs@192.0.2.2:5060>".into(),
        "192.0.2.2:5060".into(),
        0xabc,
    )
}

fn ms(n: i64) -> Timestamp {
    Timestamp(1_700_000_000_000_000_000).add_millis(n)
}

/// A test SRS: the UAS plus a shell that binds ports P, P+2... for every request.
struct Srs {
    uas: Uas,
    next_port: u16,
    sent: Vec<Transmit>,
    events: Vec<Event>,
}

impl Srs {
    fn new(cfg: Config) -> Srs {
        Srs {
            uas: Uas::new(cfg),
            next_port: 40000,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Drains outputs; answers media requests at once (binding fresh even ports).
    fn drain(&mut self, now: Timestamp) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.uas.poll_transmit() {
                self.sent.push(t);
                progressed = true;
            }
            while let Some(e) = self.uas.poll_event() {
                progressed = true;
                if let Event::MediaRequest {
                    rs,
                    plans,
                    existing,
                } = &e
                {
                    let bound: Vec<Option<Bound>> = plans
                        .iter()
                        .zip(existing)
                        .map(|(p, e)| {
                            e.or_else(|| {
                                p.accepted().then(|| {
                                    let port = self.next_port;
                                    self.next_port += 2;
                                    Bound {
                                        port,
                                        key: [port as u8; MAX_KEY_MATERIAL],
                                    }
                                })
                            })
                        })
                        .collect();
                    let rs = *rs;
                    self.events.push(e);
                    let _used = self.uas.media_ready(now, rs, bound);
                } else {
                    self.events.push(e);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn recv(&mut self, now: Timestamp, from: Peer, bytes: &[u8]) {
        if from.transport == Transport::Udp {
            self.uas.handle_datagram(now, from, bytes);
        } else {
            self.uas.handle_stream(now, from, bytes);
        }
        self.drain(now);
    }

    fn timeout(&mut self, now: Timestamp) {
        self.uas.handle_timeout(now);
        self.drain(now);
    }

    /// Status codes of the responses sent since the last call, in order.
    fn codes(&mut self) -> Vec<u16> {
        let out = self
            .sent
            .iter()
            .filter_map(|t| Message::parse(&t.bytes).ok().and_then(|m| m.status()))
            .collect();
        self.sent.clear();
        out
    }

    fn take_sent(&mut self) -> Vec<Transmit> {
        std::mem::take(&mut self.sent)
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

fn last_response(sent: &[Transmit], code: u16) -> Message<'_> {
    sent.iter()
        .rev()
        .filter_map(|t| Message::parse(&t.bytes).ok())
        .find(|m| m.status() == Some(code))
        .unwrap_or_else(|| panic!("no {code} among {} messages", sent.len()))
}

/// Our own SRC messages (written for these tests, not copied from any vendor).
fn invite(call: &str, branch: &str, extra: &str, body_ct: &str, body: &str) -> Vec<u8> {
    format!(
        "INVITE sip:srs@192.0.2.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5070;branch={branch}\r\n\
From: <sip:src@192.0.2.1>;tag=src1\r\n\
To: <sip:srs@192.0.2.2>\r\n\
Call-ID: {call}\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:src@192.0.2.1:5070>;+sip.src\r\n\
Max-Forwards: 70\r\n\
{extra}Content-Type: {body_ct}\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[allow(clippy::too_many_arguments)] // A test message template, read at call sites.
fn in_dialog(
    method: &str,
    call: &str,
    branch: &str,
    cseq: u32,
    to_tag: &str,
    extra: &str,
    body_ct: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let ct = body_ct
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} sip:srs@192.0.2.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5070;branch={branch}\r\n\
From: <sip:src@192.0.2.1>;tag=src1\r\n\
To: <sip:srs@192.0.2.2>;tag={to_tag}\r\n\
Call-ID: {call}\r\n\
CSeq: {cseq} {method}\r\n\
{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn offer(dir: &str, conn: &str, labels: &[&str]) -> String {
    let mut s = format!("v=0\r\no=src 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 {conn}\r\nt=0 0\r\n");
    for (i, l) in labels.iter().enumerate() {
        s.push_str(&format!(
            "m=audio {} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=label:{l}\r\na={dir}\r\n",
            6000 + 2 * i
        ));
    }
    s
}

const META: &str = "<?xml version=\"1.0\"?><recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>complete</datamode>\
<session session_id='s1'/><participant participant_id='a'><nameID aor='sip:+15551230001@x'/></participant>\
<participant participant_id='b'><nameID aor='sip:+15551230002@x'/></participant>\
<stream stream_id='st1' session_id='s1'><label>1</label></stream><stream stream_id='st2' session_id='s1'><label>2</label></stream>\
<participantstreamassoc participant_id='a'><send>st1</send></participantstreamassoc>\
<participantstreamassoc participant_id='b'><send>st2</send></participantstreamassoc></recording>";

fn multipart(sdp: &str, meta: &str) -> (String, String) {
    (
        "multipart/mixed;boundary=xyz".into(),
        format!(
            "--xyz\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--xyz\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{meta}\r\n--xyz--\r\n"
        ),
    )
}

/// Opens a two-stream session; returns the SRS, our To tag and the session id.
fn open() -> (Srs, String, RsId) {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1", "2"]), META);
    srs.recv(
        ms(0),
        UDP,
        &invite("c1@src", "z9hG4bK1", "Require: siprec\r\n", &ct, &body),
    );
    let sent = srs.take_sent();
    let ok = last_response(&sent, 200);
    let tag = ok.to().unwrap().tag.unwrap().to_owned();
    let rs = srs
        .take_events()
        .iter()
        .find_map(|e| match e {
            Event::Opened(o) => Some(o.rs),
            _ => None,
        })
        .unwrap();
    srs.recv(
        ms(10),
        UDP,
        &in_dialog("ACK", "c1@src", "z9hG4bK1a", 10, &tag, "", None, ""),
    );
    assert!(srs.take_sent().is_empty(), "ACK is never answered");
    (srs, tag, rs)
}

#[test]
fn happy_path_answer_events_and_bye() {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1", "2"]), META);
    srs.recv(
        ms(0),
        UDP,
        &invite(
            "c1@src",
            "z9hG4bK1",
            "Require: siprec, 100rel, timer\r\n",
            &ct,
            &body,
        ),
    );
    assert_eq!(srs.codes(), [100, 200]);
    let ev = srs.take_events();
    assert!(matches!(ev[0], Event::MediaRequest { .. }));
    let Event::Opened(o) = &ev[1] else {
        panic!("{ev:?}")
    };
    assert!(o.siprec);
    assert_eq!(o.call_id, "c1@src");
    let md = o.metadata.as_ref().unwrap();
    assert_eq!(md.participants.len(), 2);
    assert_eq!(o.streams.len(), 2);
    assert_eq!(o.streams[0].port, Some(40000));
    assert_eq!(o.streams[1].port, Some(40002));
    assert_eq!(
        (o.streams[1].senders.clone(), o.streams[1].source),
        (vec![1], MapSource::Assoc)
    );
    assert_eq!(o.streams[0].formats[0].encoding, "PCMU");
    assert!(String::from_utf8_lossy(&o.invite).starts_with("INVITE sip:srs"));
    assert!(!o.paused);
}

#[test]
fn ok_is_plain_sdp_with_labels_contact_and_retransmitted_until_ack() {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1", "2"]), META);
    let inv = invite("c1@src", "z9hG4bK1", "", &ct, &body);
    srs.recv(ms(0), UDP, &inv);
    let sent = srs.take_sent();
    let ok = last_response(&sent, 200);
    assert_eq!(ok.content_type(), Some("application/sdp"));
    assert_eq!(ok.header("Contact"), Some("<sip:srs@192.0.2.2:5060>"));
    assert!(ok.header("Allow").unwrap().contains("UPDATE"));
    assert_eq!(ok.call_id(), Some("c1@src"));
    let tag = ok.to().unwrap().tag.unwrap().to_owned();
    let ans = sdp::parse(ok.body()).unwrap();
    let labels: Vec<_> = ans.media.iter().map(|m| m.label.unwrap()).collect();
    assert_eq!(labels, ["1", "2"]);
    assert!(ans
        .media
        .iter()
        .all(|m| m.direction == Some(sdp::Direction::RecvOnly)));
    let ok_bytes = sent.last().unwrap().bytes.clone();

    // The INVITE retransmitted: the same 200.
    srs.recv(ms(100), UDP, &inv);
    assert_eq!(srs.take_sent()[0].bytes, ok_bytes);
    // T1 backoff: 500 ms, then 1 s later, then 2 s later.
    assert_eq!(srs.uas.poll_timeout(), Some(ms(500)));
    srs.timeout(ms(500));
    assert_eq!(srs.take_sent()[0].bytes, ok_bytes);
    srs.timeout(ms(1000));
    assert!(srs.take_sent().is_empty());
    srs.timeout(ms(1500));
    assert_eq!(srs.take_sent().len(), 1);
    assert_eq!(srs.uas.poll_timeout(), Some(ms(3500)));
    // The ACK stops it.
    srs.recv(
        ms(2000),
        UDP,
        &in_dialog("ACK", "c1@src", "z9hG4bK9", 10, &tag, "", None, ""),
    );
    srs.timeout(ms(10_000));
    assert!(srs.take_sent().is_empty());
    assert_eq!(srs.uas.stats().timer_retransmits, 2);
}

#[test]
fn no_ack_ends_with_bye_and_tcp_does_not_retransmit() {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1"]), META);
    let inv = invite("c2@src", "z9hG4bK2", "", &ct, &body);
    srs.recv(ms(0), tcp(7), &inv);
    assert_eq!(srs.codes(), [100, 200]);
    srs.timeout(ms(31_000));
    assert!(srs.take_sent().is_empty(), "no retransmission over TCP");
    srs.timeout(ms(32_000));
    let sent = srs.take_sent();
    let bye = Message::parse(&sent[0].bytes).unwrap();
    assert_eq!(bye.method(), Some(vcontap_sip::Method::Bye));
    assert_eq!(bye.request_uri(), Some("sip:src@192.0.2.1:5070"));
    assert_eq!(bye.to().unwrap().tag, Some("src1"));
    assert!(bye.from().unwrap().tag.is_some());
    assert!(bye
        .header("Via")
        .unwrap()
        .starts_with("SIP/2.0/TCP 192.0.2.2:5060"));
    assert_eq!(sent[0].to.conn, 7);
    assert!(srs.take_events().iter().any(|e| matches!(
        e,
        Event::Ended {
            reason: EndReason::AckTimeout,
            ..
        }
    )));
    assert_eq!(srs.uas.sessions(), 0);
}

#[test]
fn bye_ends_and_unknown_dialogs_get_481() {
    let (mut srs, tag, rs) = open();
    srs.recv(
        ms(20),
        UDP,
        &in_dialog("BYE", "c1@src", "z9hG4bKb", 11, "wrong", "", None, ""),
    );
    assert_eq!(srs.codes(), [481]);
    srs.recv(
        ms(20),
        UDP,
        &in_dialog("INVITE", "nope@src", "z9hG4bKc", 11, &tag, "", None, ""),
    );
    assert_eq!(srs.codes(), [481]);
    let bye = in_dialog("BYE", "c1@src", "z9hG4bKd", 12, &tag, "", None, "");
    srs.recv(ms(30), UDP, &bye);
    assert_eq!(srs.codes(), [200]);
    let ev = srs.take_events();
    assert!(matches!(ev[..], [Event::Ended { rs: r, reason: EndReason::Bye, .. }] if r == rs));
    // Its retransmission gets the same 200 and no second Ended.
    srs.recv(ms(40), UDP, &bye);
    assert_eq!(srs.codes(), [200]);
    assert!(srs.take_events().is_empty());
    assert_eq!(srs.uas.sessions(), 0);
}

#[test]
fn cancel_before_answer_gives_487_and_releases() {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1", "2"]), META);
    let inv = invite("c3@src", "z9hG4bK3", "", &ct, &body);
    // The shell has not bound media yet: feed the UAS directly.
    srs.uas.handle_datagram(ms(0), UDP, &inv);
    let trying = srs.uas.poll_transmit().unwrap();
    assert_eq!(Message::parse(&trying.bytes).unwrap().status(), Some(100));
    let Some(Event::MediaRequest { rs, .. }) = srs.uas.poll_event() else {
        panic!()
    };
    let cancel = String::from(
        "CANCEL sip:srs@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK3\r\n\
From: <sip:src@192.0.2.1>;tag=src1\r\nTo: <sip:srs@192.0.2.2>\r\nCall-ID: c3@src\r\nCSeq: 10 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    srs.recv(ms(50), UDP, cancel.as_bytes());
    assert_eq!(srs.codes(), [200, 487]);
    assert!(srs.take_events().iter().any(|e| matches!(
        e,
        Event::Ended {
            reason: EndReason::Cancelled,
            ..
        }
    )));
    // Late media from the shell is ignored.
    assert!(!srs.uas.media_ready(ms(60), rs, vec![None, None]));
    srs.drain(ms(60));
    assert!(srs.take_sent().is_empty());
    // 487 retransmitted (timer G) until its ACK, which is absorbed.
    srs.timeout(ms(550));
    assert_eq!(srs.codes(), [487]);
    let ack = "ACK sip:srs@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK3\r\n\
From: <sip:src@192.0.2.1>;tag=src1\r\nTo: <sip:srs@192.0.2.2>;tag=x\r\nCall-ID: c3@src\r\nCSeq: 10 ACK\r\nContent-Length: 0\r\n\r\n";
    srs.recv(ms(600), UDP, ack.as_bytes());
    srs.timeout(ms(5_000));
    assert!(srs.take_sent().is_empty());
    // CANCEL for nothing: 481.
    srs.recv(
        ms(700),
        UDP,
        cancel.replace("z9hG4bK3", "z9hG4bKzz").as_bytes(),
    );
    assert_eq!(srs.codes(), [481]);
}

#[test]
fn options_and_draining() {
    let mut srs = Srs::new(cfg());
    let opt = "OPTIONS sip:srs@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKo\r\n\
From: <sip:ping@192.0.2.1>;tag=p\r\nTo: <sip:srs@192.0.2.2>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    srs.recv(ms(0), UDP, opt.as_bytes());
    let sent = srs.take_sent();
    let r = last_response(&sent, 200);
    assert!(r.header("Allow").unwrap().contains("INVITE"));
    assert!(r
        .header("Accept")
        .unwrap()
        .contains("application/rs-metadata+xml"));
    assert!(r.header("Supported").unwrap().contains("siprec"));
    srs.uas.set_draining(true);
    srs.recv(ms(1), UDP, opt.replace("bKo", "bKo2").as_bytes());
    let sent = srs.take_sent();
    assert_eq!(last_response(&sent, 503).header("Retry-After"), Some("5"));
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1"]), META);
    srs.recv(ms(2), UDP, &invite("c4@src", "z9hG4bK4", "", &ct, &body));
    assert_eq!(srs.codes(), [503]);
    assert!(srs.take_events().is_empty());
}

#[test]
fn error_codes_per_checklist() {
    let mut srs = Srs::new(Config {
        max_sessions: 1,
        ..cfg()
    });
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1"]), META);
    // 420 for an unknown required extension, naming it.
    srs.recv(
        ms(0),
        UDP,
        &invite("e1", "z9hG4bKe1", "Require: siprec, foo\r\n", &ct, &body),
    );
    let sent = srs.take_sent();
    assert_eq!(last_response(&sent, 420).header("Unsupported"), Some("foo"));
    // 415 for a required part we cannot read.
    let b415 = body.replace(
        "--xyz--\r\n",
        "--xyz\r\nContent-Type: application/isup\r\nContent-Disposition: signal;handling=required\r\n\r\nxx\r\n--xyz--\r\n",
    );
    srs.recv(ms(1), UDP, &invite("e2", "z9hG4bKe2", "", &ct, &b415));
    let sent = srs.take_sent();
    assert!(last_response(&sent, 415).header("Accept").is_some());
    // 400 for multipart without parts.
    srs.recv(ms(2), UDP, &invite("e3", "z9hG4bKe3", "", &ct, "garbage"));
    assert_eq!(srs.codes(), [400]);
    // 488 when no codec fits.
    let g729 = offer("sendonly", "192.0.2.1", &["1"]).replace("RTP/AVP 0 101", "RTP/AVP 18");
    srs.recv(
        ms(3),
        UDP,
        &invite("e4", "z9hG4bKe4", "", "application/sdp", &g729),
    );
    assert_eq!(srs.codes(), [488]);
    // 422 for a too short session interval.
    srs.recv(
        ms(4),
        UDP,
        &invite("e5", "z9hG4bKe5", "Session-Expires: 30\r\n", &ct, &body),
    );
    let sent = srs.take_sent();
    assert_eq!(last_response(&sent, 422).header("Min-SE"), Some("90"));
    // No events for any of them, and the server still serves.
    assert!(srs.take_events().is_empty());
    srs.recv(ms(5), UDP, &invite("ok1", "z9hG4bKok", "", &ct, &body));
    assert_eq!(srs.codes(), [100, 200]);
    // max_sessions = 1: the next one gets 503 + Retry-After.
    srs.recv(ms(6), UDP, &invite("ok2", "z9hG4bKok2", "", &ct, &body));
    let sent = srs.take_sent();
    assert_eq!(last_response(&sent, 503).header("Retry-After"), Some("5"));
    // A second initial INVITE for a live Call-ID.
    srs.uas.set_draining(false);
    let mut srs2 = Srs::new(cfg());
    srs2.recv(ms(0), UDP, &invite("dup", "z9hG4bKd1", "", &ct, &body));
    srs2.recv(ms(1), UDP, &invite("dup", "z9hG4bKd2", "", &ct, &body));
    assert_eq!(srs2.codes(), [100, 200, 482]);
    // Garbage is dropped (no Via, no answer) and counted.
    srs2.recv(ms(2), UDP, b"\x16\x03\x01 not sip");
    srs2.recv(ms(2), UDP, b"INVITE sip:x SIP/2.0\r\n\r\n");
    assert!(srs2.take_sent().is_empty());
    assert_eq!(srs2.uas.stats().malformed, 2);
    // A request missing Call-ID gets 400.
    srs2.recv(
        ms(3),
        UDP,
        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKq\r\nCSeq: 1 OPTIONS\r\n\r\n",
    );
    assert_eq!(srs2.codes(), [400]);
}

#[test]
fn reinvite_pause_resume_keeps_ports_labels_and_version() {
    let (mut srs, tag, rs) = open();
    let first_answer = {
        // What we answered to the INVITE, for comparison.
        let md = offer("sendonly", "192.0.2.1", &["1", "2"]);
        let re = in_dialog(
            "INVITE",
            "c1@src",
            "z9hG4bKr1",
            11,
            &tag,
            "",
            Some("application/sdp"),
            &md,
        );
        srs.recv(ms(1000), UDP, &re);
        let sent = srs.take_sent();
        last_response(&sent, 200).body().to_vec()
    };
    assert!(
        srs.take_events().is_empty(),
        "an unchanged refresh changes nothing"
    );
    srs.recv(
        ms(1001),
        UDP,
        &in_dialog("ACK", "c1@src", "z9hG4bKr1a", 11, &tag, "", None, ""),
    );

    // Pause with a=inactive: full answer, same ports and labels, Paused.
    let pause = in_dialog(
        "INVITE",
        "c1@src",
        "z9hG4bKr2",
        12,
        &tag,
        "",
        Some("application/sdp"),
        &offer("inactive", "192.0.2.1", &["1", "2"]),
    );
    srs.recv(ms(2000), UDP, &pause);
    let sent = srs.take_sent();
    let ans = last_response(&sent, 200);
    let a = sdp::parse(ans.body()).unwrap();
    assert_eq!(
        a.media.iter().map(|m| m.port).collect::<Vec<_>>(),
        [40000, 40002]
    );
    assert_eq!(
        a.media.iter().map(|m| m.label.unwrap()).collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert!(a
        .media
        .iter()
        .all(|m| m.direction == Some(sdp::Direction::Inactive)));
    let v1 = sdp::parse(&first_answer)
        .unwrap()
        .origin
        .unwrap()
        .version
        .to_owned();
    assert_ne!(
        a.origin.unwrap().version,
        v1,
        "changed answer, new o= version"
    );
    assert!(matches!(srs.take_events()[..], [Event::Paused { rs: r, .. }] if r == rs));
    srs.recv(
        ms(2001),
        UDP,
        &in_dialog("ACK", "c1@src", "z9hG4bKr2a", 12, &tag, "", None, ""),
    );

    // Resume by c=0.0.0.0 hold then sendonly: hold is a pause too.
    let hold = in_dialog(
        "INVITE",
        "c1@src",
        "z9hG4bKr3",
        13,
        &tag,
        "",
        Some("application/sdp"),
        &offer("sendonly", "0.0.0.0", &["1", "2"]),
    );
    srs.recv(ms(3000), UDP, &hold);
    assert!(srs.take_events().is_empty(), "still paused");
    srs.recv(
        ms(3001),
        UDP,
        &in_dialog("ACK", "c1@src", "z9hG4bKr3a", 13, &tag, "", None, ""),
    );
    let resume = in_dialog(
        "INVITE",
        "c1@src",
        "z9hG4bKr4",
        14,
        &tag,
        "",
        Some("application/sdp"),
        &offer("sendonly", "192.0.2.1", &["1", "2"]),
    );
    srs.recv(ms(4000), UDP, &resume);
    let sent = srs.take_sent();
    assert!(last_response(&sent, 200)
        .body()
        .windows(8)
        .any(|w| w == b"recvonly"));
    assert!(matches!(srs.take_events()[..], [Event::Resumed { .. }]));
    // A re-INVITE before the ACK of the previous one: 500 + Retry-After.
    let early = in_dialog(
        "INVITE",
        "c1@src",
        "z9hG4bKr5",
        15,
        &tag,
        "",
        Some("application/sdp"),
        &offer("sendonly", "192.0.2.1", &["1", "2"]),
    );
    srs.recv(ms(4001), UDP, &early);
    let sent = srs.take_sent();
    assert_eq!(last_response(&sent, 500).header("Retry-After"), Some("5"));
}

#[test]
fn reinvite_with_new_label_binds_only_the_new_stream() {
    let (mut srs, tag, rs) = open();
    let re = in_dialog(
        "INVITE",
        "c1@src",
        "z9hG4bKn1",
        11,
        &tag,
        "",
        Some("application/sdp"),
        &offer("sendonly", "192.0.2.1", &["2", "1", "3"]),
    );
    srs.recv(ms(1000), UDP, &re);
    let ev = srs.take_events();
    let Event::MediaRequest { existing, .. } = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        existing
            .iter()
            .map(|e| e.map(|b| b.port))
            .collect::<Vec<_>>(),
        [Some(40002), Some(40000), None]
    );
    let Event::StreamsChanged { rs: r, streams, .. } = &ev[1] else {
        panic!("{ev:?}")
    };
    assert_eq!(*r, rs);
    assert_eq!(
        streams.iter().map(|s| s.port).collect::<Vec<_>>(),
        [Some(40002), Some(40000), Some(40004)]
    );
    // Senders follow the labels, not the positions.
    assert_eq!(streams[0].senders, [1]);
    let sent = srs.take_sent();
    let a = sdp::parse(last_response(&sent, 200).body()).unwrap();
    assert_eq!(
        a.media.iter().map(|m| m.label.unwrap()).collect::<Vec<_>>(),
        ["2", "1", "3"]
    );
}

#[test]
fn metadata_only_update_and_partial_merge() {
    let (mut srs, tag, rs) = open();
    let partial =
        "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode>\
<participant participant_id='c'><nameID aor='sip:+15551230003@x'/></participant>\
<participantstreamassoc participant_id='c'><send>st2</send></participantstreamassoc></recording>";
    let up = in_dialog(
        "UPDATE",
        "c1@src",
        "z9hG4bKu1",
        11,
        &tag,
        "Content-Disposition: recording-session\r\n",
        Some("application/rs-metadata"),
        partial,
    );
    srs.recv(ms(1000), UDP, &up);
    let sent = srs.take_sent();
    let ok = last_response(&sent, 200);
    assert!(ok.body().is_empty(), "no offer, no answer");
    let ev = srs.take_events();
    let Event::MetadataChanged {
        rs: r,
        metadata,
        streams,
        raw,
        unknown_ids,
        ..
    } = &ev[0]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(*r, rs);
    assert_eq!(metadata.participants.len(), 3);
    assert_eq!(
        streams[1].senders,
        [1, 2],
        "the new participant joins stream 2"
    );
    assert_eq!(raw.as_slice(), partial.as_bytes());
    assert!(unknown_ids.is_empty());
    // An UPDATE with SDP is answered in its 200.
    let up = in_dialog(
        "UPDATE",
        "c1@src",
        "z9hG4bKu2",
        12,
        &tag,
        "",
        Some("application/sdp"),
        &offer("inactive", "192.0.2.1", &["1", "2"]),
    );
    srs.recv(ms(2000), UDP, &up);
    let sent = srs.take_sent();
    assert_eq!(
        sdp::parse(last_response(&sent, 200).body())
            .unwrap()
            .media
            .len(),
        2
    );
    assert!(matches!(srs.take_events()[..], [Event::Paused { .. }]));
}

#[test]
fn session_timer_negotiated_refreshed_and_expiring() {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1"]), META);
    srs.recv(
        ms(0),
        UDP,
        &invite(
            "t1",
            "z9hG4bKt",
            "Supported: timer\r\nSession-Expires: 1800\r\n",
            &ct,
            &body,
        ),
    );
    let sent = srs.take_sent();
    let ok = last_response(&sent, 200);
    assert_eq!(ok.header("Session-Expires"), Some("1800;refresher=uac"));
    assert_eq!(ok.header("Require"), Some("timer"));
    let tag = ok.to().unwrap().tag.unwrap().to_owned();
    srs.recv(
        ms(10),
        UDP,
        &in_dialog("ACK", "t1", "z9hG4bKta", 10, &tag, "", None, ""),
    );
    // A refresh by UPDATE without body at 1000 s moves the expiry to 2800 s.
    srs.recv(
        ms(1_000_000),
        UDP,
        &in_dialog("UPDATE", "t1", "z9hG4bKt2", 11, &tag, "", None, ""),
    );
    assert_eq!(srs.codes(), [200]);
    srs.timeout(ms(1_900_000));
    assert!(srs
        .take_events()
        .iter()
        .all(|e| !matches!(e, Event::Ended { .. })));
    srs.timeout(ms(2_800_000));
    assert!(srs.take_events().iter().any(|e| matches!(
        e,
        Event::Ended {
            reason: EndReason::SessionExpired,
            ..
        }
    )));
    let sent = srs.take_sent();
    assert!(sent.iter().any(|t| t.bytes.starts_with(b"BYE ")));
    // Our BYE's 200 completes it; the session is then dropped.
    let bye = Message::parse(
        &sent
            .iter()
            .find(|t| t.bytes.starts_with(b"BYE "))
            .unwrap()
            .bytes,
    )
    .unwrap();
    let resp = vcontap_sip::ResponseBuilder::new(&bye, 200, None).finish();
    srs.recv(ms(2_800_100), UDP, &resp);
    srs.timeout(ms(2_800_200));
    assert_eq!(srs.uas.sessions(), 0);
    srs.timeout(ms(2_900_000));
    assert!(
        srs.take_sent().is_empty(),
        "no BYE retransmission after its 200"
    );
}

#[test]
fn ports_exhausted_is_503_and_no_session() {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1"]), META);
    srs.uas
        .handle_datagram(ms(0), UDP, &invite("p1", "z9hG4bKp", "", &ct, &body));
    let _trying = srs.uas.poll_transmit();
    let Some(Event::MediaRequest { rs, .. }) = srs.uas.poll_event() else {
        panic!()
    };
    assert!(!srs.uas.media_ready(ms(1), rs, vec![None]));
    srs.drain(ms(1));
    let sent = srs.take_sent();
    assert_eq!(last_response(&sent, 503).header("Retry-After"), Some("5"));
    assert!(matches!(
        srs.take_events()[..],
        [Event::Ended {
            reason: EndReason::Rejected,
            ..
        }]
    ));
    assert_eq!(srs.uas.sessions(), 0);
}

#[test]
fn tcp_framing_split_and_non_sip_closed() {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1", "2"]), META);
    let inv = invite("k1", "z9hG4bKk", "", &ct, &body);
    let (a, b) = inv.split_at(inv.len() / 3);
    srs.recv(ms(0), tcp(3), a);
    assert!(srs.take_sent().is_empty());
    srs.recv(ms(1), tcp(3), b);
    assert_eq!(srs.codes(), [100, 200]);
    srs.recv(ms(2), tcp(4), b"GET / HTTP/1.1\r\n\r\n");
    let sent = srs.take_sent();
    assert!(sent[0].close && sent[0].to.conn == 4);
}

/// Every vendor INVITE (CRLF and bare-LF body) is answered 200 with the same m-line
/// count and labels, and every scenario plays through (re-INVITEs, UPDATEs, BYE).
#[test]
fn every_vendor_dialog_is_answered() {
    for name in vendor_names() {
        for nl in [Body::Crlf, Body::BareLf] {
            let Some(msgs) = vendor_messages(&name, nl) else {
                return;
            };
            if msgs.is_empty() {
                continue;
            }
            let mut srs = Srs::new(cfg());
            let mut tag = String::new();
            let mut opened = false;
            for (i, raw) in msgs.iter().enumerate() {
                let raw =
                    String::from_utf8_lossy(raw).replace("tag=srs-peer", &format!("tag={tag}"));
                let req = Message::parse(raw.as_bytes()).unwrap();
                let method = req.method().unwrap();
                srs.recv(ms(i as i64 * 1000), UDP, raw.as_bytes());
                let sent = srs.take_sent();
                let finals: Vec<Message<'_>> = sent
                    .iter()
                    .filter_map(|t| Message::parse(&t.bytes).ok())
                    .filter(|m| m.status().is_some_and(|c| c >= 200))
                    .collect();
                match method {
                    vcontap_sip::Method::Ack => assert!(finals.is_empty(), "{name}"),
                    vcontap_sip::Method::Invite if req.body().is_empty() => {
                        // Delayed offer (CUCM BIB): not a SIPREC form we record.
                        assert_eq!(finals[0].status(), Some(488), "{name}");
                    }
                    vcontap_sip::Method::Bye if !opened => {
                        assert_eq!(finals[0].status(), Some(481), "{name}");
                    }
                    _ => {
                        assert_eq!(finals.len(), 1, "{name} #{i} {method}");
                        let f = &finals[0];
                        assert_eq!(
                            f.status(),
                            Some(200),
                            "{name} #{i} {method}: {}",
                            String::from_utf8_lossy(f.raw())
                        );
                        if method == vcontap_sip::Method::Invite && tag.is_empty() {
                            tag = f.to().unwrap().tag.unwrap().to_owned();
                        }
                        if let Some(off) = vcontap_sip::sdp_body(&req) {
                            let off = sdp::parse(off).unwrap();
                            let ans = sdp::parse(f.body()).unwrap();
                            assert_eq!(f.content_type(), Some("application/sdp"));
                            assert_eq!(ans.media.len(), off.media.len(), "{name}");
                            let l = |s: &sdp::Sdp<'_>| {
                                s.media
                                    .iter()
                                    .map(|m| m.label.map(str::to_owned))
                                    .collect::<Vec<_>>()
                            };
                            assert_eq!(l(&ans), l(&off), "{name}: labels echoed");
                            assert!(
                                ans.media.iter().all(|m| m.port != 0),
                                "{name}: every stream accepted"
                            );
                        }
                    }
                }
                for e in srs.take_events() {
                    match e {
                        Event::Opened(o) => {
                            opened = true;
                            assert_eq!(
                                o.call_id,
                                "vendor-call-1@192.0.2.1"
                                    .replace("vendor-call-1@192.0.2.1", req.call_id().unwrap())
                            );
                            let siprec_file =
                                name != "cisco-cube-nbr-1" && name != "cisco-cucm-bib-1";
                            assert_eq!(o.siprec, siprec_file, "{name}");
                        }
                        Event::Ended { reason, .. } => assert_eq!(reason, EndReason::Bye, "{name}"),
                        _ => {}
                    }
                }
            }
            assert!(opened || name == "cisco-cucm-bib-1", "{name}");
        }
    }
}

#[test]
fn shell_never_binding_media_gives_503_after_64_t1() {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1"]), META);
    srs.uas
        .handle_datagram(ms(0), UDP, &invite("m1", "z9hG4bKm", "", &ct, &body));
    let _ = srs.uas.poll_transmit();
    assert!(matches!(
        srs.uas.poll_event(),
        Some(Event::MediaRequest { .. })
    ));
    assert_eq!(srs.uas.poll_timeout(), Some(ms(32_000)));
    srs.uas.handle_timeout(ms(32_000));
    let t = srs.uas.poll_transmit().unwrap();
    assert_eq!(Message::parse(&t.bytes).unwrap().status(), Some(503));
    assert!(matches!(
        srs.uas.poll_event(),
        Some(Event::Ended {
            reason: EndReason::Rejected,
            ..
        })
    ));
}

#[test]
fn session_expires_without_timer_support_never_expires() {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1"]), META);
    srs.recv(
        ms(0),
        UDP,
        &invite("t2", "z9hG4bKt2", "Session-Expires: 90\r\n", &ct, &body),
    );
    let sent = srs.take_sent();
    let ok = last_response(&sent, 200);
    assert_eq!(ok.header("Session-Expires"), None);
    let tag = ok.to().unwrap().tag.unwrap().to_owned();
    srs.recv(
        ms(10),
        UDP,
        &in_dialog("ACK", "t2", "z9hG4bKt2a", 10, &tag, "", None, ""),
    );
    assert_eq!(srs.take_events().len(), 2, "MediaRequest, Opened");
    srs.timeout(ms(10_000_000));
    assert!(srs.take_events().is_empty());
    assert_eq!(srs.uas.sessions(), 1);
    assert_eq!(srs.uas.poll_timeout(), None);
}

#[test]
fn policy_decline_and_local_terminate() {
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1"]), META);
    srs.uas
        .handle_datagram(ms(0), UDP, &invite("d1", "z9hG4bKd", "", &ct, &body));
    let _trying = srs.uas.poll_transmit();
    let Some(Event::MediaRequest { rs, .. }) = srs.uas.poll_event() else {
        panic!()
    };
    srs.uas.decline(ms(1), rs, 480);
    srs.drain(ms(1));
    assert_eq!(srs.codes(), [480]);
    assert!(matches!(
        srs.take_events()[..],
        [Event::Ended {
            reason: EndReason::Rejected,
            ..
        }]
    ));
    // A live session ended by us: BYE, retransmitted over UDP until answered.
    let (mut srs, _tag, rs) = open();
    srs.take_events();
    srs.uas.terminate(ms(100), rs);
    srs.drain(ms(100));
    let sent = srs.take_sent();
    assert!(sent[0]
        .bytes
        .starts_with(b"BYE sip:src@192.0.2.1:5070 SIP/2.0\r\n"));
    assert!(matches!(
        srs.take_events()[..],
        [Event::Ended {
            reason: EndReason::Local,
            ..
        }]
    ));
    srs.timeout(ms(600));
    assert!(srs.take_sent()[0].bytes.starts_with(b"BYE "));
    srs.timeout(ms(100 + 32_000));
    srs.timeout(ms(100 + 33_000));
    assert_eq!(srs.uas.poll_timeout(), None, "given up and forgotten");
}

#[test]
fn srtp_offer_answered_with_our_key_and_rekeyed_by_reinvite() {
    let key1 = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let key2 = "NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj";
    let savp = |k: &str| {
        format!(
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 6000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{k}\r\na=label:1\r\na=sendonly\r\n"
        )
    };
    let mut srs = Srs::new(cfg());
    srs.recv(
        ms(0),
        UDP,
        &invite("sr1", "z9hG4bKs", "", "application/sdp", &savp(key1)),
    );
    let sent = srs.take_sent();
    let ok = last_response(&sent, 200);
    let tag = ok.to().unwrap().tag.unwrap().to_owned();
    let ans = sdp::parse(ok.body()).unwrap();
    assert_eq!(ans.media[0].proto, "RTP/SAVP");
    let ours = ans.media[0].crypto[0].to_owned();
    assert!(ours.starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"));
    assert!(!ours.contains(key1), "our own key, not the offerer's");
    let ev = srs.take_events();
    let Event::Opened(o) = &ev[1] else { panic!() };
    let k1 = o.streams[0].srtp.clone().unwrap().remote_key;
    srs.recv(
        ms(10),
        UDP,
        &in_dialog("ACK", "sr1", "z9hG4bKsa", 10, &tag, "", None, ""),
    );
    srs.recv(
        ms(20),
        UDP,
        &in_dialog(
            "INVITE",
            "sr1",
            "z9hG4bKs2",
            11,
            &tag,
            "",
            Some("application/sdp"),
            &savp(key2),
        ),
    );
    let sent = srs.take_sent();
    let ans = sdp::parse(last_response(&sent, 200).body()).unwrap();
    assert_eq!(ans.media[0].crypto[0], ours, "same port, same key of ours");
    let ev = srs.take_events();
    let Event::StreamsChanged { streams, .. } = &ev[0] else {
        panic!("{ev:?}")
    };
    let k2 = streams[0].srtp.clone().unwrap().remote_key;
    assert_ne!(k1, k2, "decrypt with the new key");
    assert_eq!(streams[0].port, Some(40000));
}

/// Dialect features no shared file shows (../shared/siprec/README.md), written here.
#[test]
fn dialects_without_a_shared_example() {
    // CUBE: every stream inactive at first; Contact with +sip.src inside the URI and no
    // Require: still SIPREC, answered inactive, opened paused.
    let mut srs = Srs::new(cfg());
    let inactive = offer("inactive", "192.0.2.1", &["1", "2"]);
    let inv = String::from_utf8(invite(
        "cube",
        "z9hG4bKcu",
        "",
        "application/sdp",
        &inactive,
    ))
    .unwrap()
    .replace(
        "Contact: <sip:src@192.0.2.1:5070>;+sip.src",
        "Contact: <sip:src@192.0.2.1:5070;transport=tcp;+sip.src>",
    );
    srs.recv(ms(0), UDP, inv.as_bytes());
    let sent = srs.take_sent();
    let ans = sdp::parse(last_response(&sent, 200).body()).unwrap();
    assert!(ans
        .media
        .iter()
        .all(|m| m.direction == Some(sdp::Direction::Inactive)));
    let ev = srs.take_events();
    let Event::Opened(o) = &ev[1] else { panic!() };
    assert!(o.siprec && o.paused && o.metadata.is_none());

    // Sonus: no close delimiter and a Content-Length larger than what arrived.
    let mut srs = Srs::new(cfg());
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1", "2"]), META);
    let cut = body.trim_end_matches("\r\n--xyz--\r\n").to_owned();
    let inv = String::from_utf8(invite("sonus", "z9hG4bKso", "", &ct, &cut))
        .unwrap()
        .replace(
            &format!("Content-Length: {}", cut.len()),
            &format!("Content-Length:  {}", cut.len() + 40),
        );
    srs.recv(ms(0), UDP, inv.as_bytes());
    let ev = srs.take_events();
    let Event::Opened(o) = &ev[1] else {
        panic!("{ev:?}")
    };
    assert_eq!(o.metadata.as_ref().unwrap().participants.len(), 2);

    // FreeSWITCH mod_siprec: no labels, no metadata: SDP order, no labels in the answer.
    let mut srs = Srs::new(cfg());
    let nolabel = offer("sendonly", "192.0.2.1", &["x", "y"])
        .replace("a=label:x\r\n", "")
        .replace("a=label:y\r\n", "");
    srs.recv(
        ms(0),
        UDP,
        &invite(
            "fs",
            "z9hG4bKfs",
            "Require: siprec\r\n",
            "application/sdp",
            &nolabel,
        ),
    );
    let sent = srs.take_sent();
    let ans = sdp::parse(last_response(&sent, 200).body()).unwrap();
    assert_eq!(ans.media.len(), 2);
    assert!(ans.media.iter().all(|m| m.label.is_none() && m.port != 0));
    let ev = srs.take_events();
    let Event::Opened(o) = &ev[1] else { panic!() };
    assert!(o.streams.iter().all(|s| s.source == MapSource::Unmapped));

    // Avaya SBCE: a dummy participant and a stream with an empty id and no m-line in the
    // INVITE; the real party arrives in a complete, metadata-only UPDATE.
    let dummy =
        "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><dataMode>complete</dataMode>\
<participant participant_id='d'><nameID aor='sip:SBCE@sbce.example'/></participant>\
<stream stream_id='' session_id='s'><label>30</label></stream></recording>";
    let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["10", "20"]), dummy);
    let mut srs = Srs::new(cfg());
    srs.recv(
        ms(0),
        UDP,
        &invite("avaya", "z9hG4bKav", "Require: siprec\r\n", &ct, &body),
    );
    let sent = srs.take_sent();
    let tag = last_response(&sent, 200)
        .to()
        .unwrap()
        .tag
        .unwrap()
        .to_owned();
    srs.take_events();
    srs.recv(
        ms(5),
        UDP,
        &in_dialog("ACK", "avaya", "z9hG4bKava", 10, &tag, "", None, ""),
    );
    let real = META
        .replace("<label>1</label>", "<label>10</label>")
        .replace("<label>2</label>", "<label>20</label>");
    srs.recv(
        ms(900),
        UDP,
        &in_dialog(
            "UPDATE",
            "avaya",
            "z9hG4bKav2",
            11,
            &tag,
            "",
            Some("application/rs-metadata"),
            &real,
        ),
    );
    assert_eq!(srs.codes(), [200]);
    let ev = srs.take_events();
    let Event::MetadataChanged {
        metadata, streams, ..
    } = &ev[0]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(
        metadata.participants.len(),
        2,
        "complete replaces the dummy"
    );
    assert_eq!(
        (streams[0].senders.clone(), streams[0].source),
        (vec![0], MapSource::Assoc)
    );
}

#[test]
fn hostile_metadata_never_costs_the_recording() {
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]>\
<recording><participant participant_id='p'><nameID aor='sip:a@b'><name>&b;</name></nameID></participant></recording>";
    let huge = format!(
        "<recording>{}</recording>",
        "<x/>".repeat(crate::metadata::MAX_METADATA_BYTES / 4 + 1)
    );
    let deep = format!("<recording>{}", "<x>".repeat(10_000));
    let mut srs = Srs::new(cfg());
    for (i, doc) in [bomb, huge.as_str(), deep.as_str(), "<<<>>>", ""]
        .into_iter()
        .enumerate()
    {
        let (ct, body) = multipart(&offer("sendonly", "192.0.2.1", &["1"]), doc);
        let call = format!("h{i}");
        srs.recv(
            ms(i as i64),
            UDP,
            &invite(&call, &format!("z9hG4bKh{i}"), "", &ct, &body),
        );
        assert_eq!(srs.codes(), [100, 200], "doc {i}");
        let ev = srs.take_events();
        let Event::Opened(o) = &ev[1] else { panic!() };
        match i {
            0 => assert_eq!(
                o.metadata.as_ref().unwrap().participants[0].name.as_deref(),
                Some("&b;"),
                "entities are not expanded"
            ),
            1 => assert!(o.metadata.is_none(), "too large: recorded without metadata"),
            2 => assert!(o.metadata.as_ref().unwrap().malformed),
            _ => {}
        }
        assert!(o.metadata_raw.is_some() || i == 4);
    }
    assert_eq!(srs.uas.sessions(), 5);
}
