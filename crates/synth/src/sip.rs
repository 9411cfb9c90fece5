//! SIP message and SDP text builders for one call's dialog.
//!
//! Messages are described by small [`SipMsg`] values in the call's script and rendered to
//! text only when their packet is written, so an active call holds no message text.

use std::fmt::Write as _;
use std::net::SocketAddr;

use vcontap_sip::Method;

use crate::config::{Codec, SipTransport};
use crate::rng::Rng;
use crate::rtp::TELEPHONE_EVENT_PT;
use crate::scenario::{CallPlan, DOMAIN};

/// User-Agent / Server product token.
pub const USER_AGENT: &str = concat!("vcontap-synth/", env!("CARGO_PKG_VERSION"));

/// Which To tag a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToTag {
    /// None (initial requests, 100 Trying).
    None,
    /// The tag of the 407 challenge (a separate, failed transaction).
    Auth,
    /// The callee's dialog tag.
    Dialog,
}

/// SDP media direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
        }
    }
}

/// Message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    None,
    /// SDP of the caller (`callee == false`) or callee, with direction and o= version.
    Sdp {
        callee: bool,
        dir: Direction,
        version: u32,
    },
    /// `application/dtmf-relay` with one digit.
    DtmfRelay(char),
}

/// One SIP message of the call's script. Requests go caller → callee, responses back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SipMsg {
    Request {
        method: Method<'static>,
        cseq: u32,
        branch: u64,
        to_tag: ToTag,
        body: Body,
        /// Sent to the callee's Contact inside the dialog (otherwise to its AOR).
        in_dialog: bool,
        /// Carries Proxy-Authorization (the INVITE retried after 407).
        credentials: bool,
    },
    Response {
        code: u16,
        method: Method<'static>,
        cseq: u32,
        branch: u64,
        to_tag: ToTag,
        body: Body,
    },
}

impl SipMsg {
    /// True when the caller sends it.
    pub(crate) fn sent_by_caller(&self) -> bool {
        matches!(self, SipMsg::Request { .. })
    }
}

/// Reason phrase of a status code.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        486 => "Busy Here",
        487 => "Request Terminated",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// Per-call identifiers that are not part of the plan (tags, nonce, SDP session ids).
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    pub from_tag: String,
    pub to_tag: String,
    pub auth_tag: String,
    pub nonce: String,
    pub response: String,
    pub caller_sess: u64,
    pub callee_sess: u64,
    pub transport: SipTransport,
    pub ptime_ms: u32,
}

impl Dialog {
    /// Draws the dialog identifiers from the call's wire RNG.
    pub(crate) fn new(rng: &mut Rng, transport: SipTransport, ptime_ms: u32) -> Self {
        Dialog {
            from_tag: rng.hex(5),
            to_tag: rng.hex(5),
            auth_tag: rng.hex(5),
            nonce: rng.hex(16),
            response: rng.hex(16),
            caller_sess: rng.next_u64() >> 20,
            callee_sess: rng.next_u64() >> 20,
            transport,
            ptime_ms,
        }
    }

    fn transport_token(&self) -> (&'static str, &'static str) {
        match self.transport {
            SipTransport::Udp => ("UDP", "udp"),
            SipTransport::Tcp => ("TCP", "tcp"),
        }
    }

    /// Renders `msg` into `out` (cleared first). `body_buf` is scratch space.
    pub(crate) fn render(
        &self,
        plan: &CallPlan,
        msg: &SipMsg,
        out: &mut String,
        body_buf: &mut String,
    ) {
        out.clear();
        body_buf.clear();
        let (via_proto, param) = self.transport_token();
        let (body, to_tag, branch) = match *msg {
            SipMsg::Request {
                body,
                to_tag,
                branch,
                ..
            } => (body, to_tag, branch),
            SipMsg::Response {
                body,
                to_tag,
                branch,
                ..
            } => (body, to_tag, branch),
        };
        let content_type = match body {
            Body::None => None,
            Body::Sdp {
                callee,
                dir,
                version,
            } => {
                self.sdp(plan, callee, dir, version, body_buf);
                Some("application/sdp")
            }
            Body::DtmfRelay(digit) => {
                let _ = write!(body_buf, "Signal={digit}\r\nDuration=100\r\n");
                Some("application/dtmf-relay")
            }
        };
        let callee_contact = contact(&plan.callee.number, plan.callee_sip, param);
        // Writing to a String cannot fail; the results are ignored on purpose.
        match *msg {
            SipMsg::Request {
                method,
                cseq,
                in_dialog,
                credentials,
                ..
            } => {
                let target = if in_dialog {
                    callee_contact.as_str()
                } else {
                    plan.callee.uri.as_str()
                };
                let _ = write!(out, "{} {target} SIP/2.0\r\n", method.as_str());
                self.common(plan, via_proto, branch, to_tag, out);
                let _ = write!(out, "CSeq: {cseq} {}\r\n", method.as_str());
                if method == Method::Invite || method == Method::Bye || method == Method::Info {
                    let _ = write!(
                        out,
                        "Contact: <{}>\r\n",
                        contact(&plan.caller.number, plan.caller_sip, param)
                    );
                }
                if method == Method::Invite && !in_dialog {
                    let _ = write!(
                        out,
                        "P-Asserted-Identity: \"{}\" <{}>\r\n",
                        plan.caller.display, plan.caller.uri
                    );
                }
                if credentials {
                    let _ = write!(
                        out,
                        "Proxy-Authorization: Digest username=\"{}\", realm=\"{DOMAIN}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm=MD5\r\n",
                        plan.caller.number, self.nonce, plan.callee.uri, self.response
                    );
                }
                if method == Method::Invite {
                    out.push_str("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n");
                    out.push_str("Supported: replaces, timer\r\n");
                }
                let _ = write!(out, "User-Agent: {USER_AGENT}\r\n");
            }
            SipMsg::Response {
                code, method, cseq, ..
            } => {
                let _ = write!(out, "SIP/2.0 {code} {}\r\n", reason(code));
                self.common(plan, via_proto, branch, to_tag, out);
                let _ = write!(out, "CSeq: {cseq} {}\r\n", method.as_str());
                if method == Method::Invite && (code == 180 || code == 183 || code == 200) {
                    let _ = write!(out, "Contact: <{callee_contact}>\r\n");
                }
                if code == 407 {
                    let _ = write!(
                        out,
                        "Proxy-Authenticate: Digest realm=\"{DOMAIN}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"\r\n",
                        self.nonce
                    );
                }
                if method == Method::Invite && code == 200 {
                    out.push_str("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n");
                    out.push_str("Supported: replaces, timer\r\n");
                }
                let _ = write!(out, "Server: {USER_AGENT}\r\n");
            }
        }
        if let Some(ct) = content_type {
            let _ = write!(out, "Content-Type: {ct}\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", body_buf.len());
        out.push_str(body_buf);
    }

    fn common(
        &self,
        plan: &CallPlan,
        via_proto: &str,
        branch: u64,
        to_tag: ToTag,
        out: &mut String,
    ) {
        let _ = write!(
            out,
            "Via: SIP/2.0/{via_proto} {};branch=z9hG4bK{branch:016x}\r\n",
            plan.caller_sip
        );
        out.push_str("Max-Forwards: 70\r\n");
        let _ = write!(
            out,
            "From: \"{}\" <{}>;tag={}\r\n",
            plan.caller.display, plan.caller.uri, self.from_tag
        );
        let _ = write!(out, "To: \"{}\" <{}>", plan.callee.display, plan.callee.uri);
        match to_tag {
            ToTag::None => {}
            ToTag::Auth => {
                let _ = write!(out, ";tag={}", self.auth_tag);
            }
            ToTag::Dialog => {
                let _ = write!(out, ";tag={}", self.to_tag);
            }
        }
        let _ = write!(out, "\r\nCall-ID: {}\r\n", plan.call_id);
    }

    fn sdp(&self, plan: &CallPlan, callee: bool, dir: Direction, version: u32, out: &mut String) {
        let (addr, sess) = if callee {
            (plan.callee_rtp, self.callee_sess)
        } else {
            (plan.caller_rtp, self.caller_sess)
        };
        let ip_ver = if addr.is_ipv6() { "IP6" } else { "IP4" };
        let ip = addr.ip();
        let codec = plan.codec;
        let pt = codec.payload_type();
        let _ = write!(
            out,
            "v=0\r\no=- {sess} {version} IN {ip_ver} {ip}\r\ns=vcontap-synth\r\nc=IN {ip_ver} {ip}\r\nt=0 0\r\n\
             m=audio {} RTP/AVP {pt} {TELEPHONE_EVENT_PT}\r\na=rtpmap:{pt} {}\r\n",
            addr.port(),
            codec.rtpmap()
        );
        if codec == Codec::Opus {
            let _ = write!(out, "a=fmtp:{pt} minptime=10;useinbandfec=1\r\n");
        }
        let _ = write!(
            out,
            "a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/{}\r\na=fmtp:{TELEPHONE_EVENT_PT} 0-16\r\n\
             a=ptime:{}\r\na=rtcp:{}\r\na={}\r\n",
            codec.clock_rate(),
            self.ptime_ms,
            addr.port().saturating_add(1),
            dir.as_str()
        );
    }
}

/// `sip:<number>@<addr>;transport=<t>` (IPv6 addresses bracketed by `SocketAddr`'s Display).
fn contact(number: &str, addr: SocketAddr, transport: &str) -> String {
    format!("sip:{number}@{addr};transport={transport}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{plan, SynthConfig};

    fn setup(ipv6: bool) -> (CallPlan, Dialog) {
        let cfg = SynthConfig {
            calls: 1,
            ipv6,
            ..Default::default()
        };
        let p = plan(&cfg).remove(0);
        (p, Dialog::new(&mut Rng::new(1), SipTransport::Udp, 20))
    }

    fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
        msg.split("\r\n")
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
    }

    #[test]
    fn invite_with_sdp() {
        let (p, d) = setup(false);
        let msg = SipMsg::Request {
            method: Method::Invite,
            cseq: 1,
            branch: 0xabc,
            to_tag: ToTag::None,
            body: Body::Sdp {
                callee: false,
                dir: Direction::SendRecv,
                version: 1,
            },
            in_dialog: false,
            credentials: false,
        };
        let (mut out, mut body) = (String::new(), String::new());
        d.render(&p, &msg, &mut out, &mut body);
        assert!(out.starts_with(&format!("INVITE {} SIP/2.0\r\n", p.callee.uri)));
        assert_eq!(header(&out, "Call-ID"), Some(p.call_id.as_str()));
        assert_eq!(header(&out, "CSeq"), Some("1 INVITE"));
        assert!(header(&out, "P-Asserted-Identity").is_some());
        assert!(header(&out, "To").is_some_and(|t| !t.contains("tag=")));
        let (head, sdp) = out.split_once("\r\n\r\n").expect("body separator");
        assert!(head.contains(&format!("Content-Length: {}", sdp.len())));
        assert!(sdp.contains("m=audio 20000 RTP/AVP 0 101\r\n"));
        assert!(sdp.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(sdp.contains("a=fmtp:101 0-16\r\n"));
        assert!(sdp.contains("c=IN IP4 10.1.0.1\r\n"));
        assert!(sdp.ends_with("a=sendrecv\r\n"));
    }

    #[test]
    fn responses_and_info_v6() {
        let (p, d) = setup(true);
        let (mut out, mut body) = (String::new(), String::new());
        let ok = SipMsg::Response {
            code: 200,
            method: Method::Invite,
            cseq: 2,
            branch: 1,
            to_tag: ToTag::Dialog,
            body: Body::Sdp {
                callee: true,
                dir: Direction::RecvOnly,
                version: 2,
            },
        };
        d.render(&p, &ok, &mut out, &mut body);
        assert!(out.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(out.contains(&format!(";tag={}\r\n", d.to_tag)));
        assert!(out.contains("c=IN IP6 fd00:0:0:2::1\r\n"));
        assert!(out.contains("Contact: <sip:+15552000000@[fd00:0:0:2::1]:5060;transport=udp>"));
        assert!(out.ends_with("a=recvonly\r\n"));
        let info = SipMsg::Request {
            method: Method::Info,
            cseq: 3,
            branch: 2,
            to_tag: ToTag::Dialog,
            body: Body::DtmfRelay('#'),
            in_dialog: true,
            credentials: false,
        };
        d.render(&p, &info, &mut out, &mut body);
        assert!(out.starts_with("INFO sip:+15552000000@[fd00:0:0:2::1]:5060;transport=udp SIP/2.0"));
        assert!(out.ends_with("Content-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\nSignal=#\r\nDuration=100\r\n"));
        assert_eq!(reason(999), "Unknown");
    }
}
