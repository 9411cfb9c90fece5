//! Pieces of the vCon built from SIP: parties from From/To/P-Asserted-Identity/
//! Remote-Party-ID/Identity, and `sip-message-trace` entries.
//!
//! Party rules (shared digest §3, conserver checklist §3.8): `tel` only for global E.164
//! numbers, without the `tel:` prefix; `sip` is the addr-spec with its scheme; a display name
//! goes to `name` with `validation: "none"` because SIP display names are unverified.

use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use vcontap_sip::{parse_name_addr, parse_uri, Message, NameAddr};
use vcontap_vcon::{format_time, Party};
use vcontap_wire::Transport;

/// Headers never copied into the trace: credentials (sip-signaling draft: MUST NOT).
const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
];
/// Longest header value copied into the trace.
const MAX_TRACE_VALUE: usize = 4096;
/// Longest body copied into the trace.
const MAX_TRACE_BODY: usize = 16 * 1024;

fn clean_uri(uri: &str) -> Option<String> {
    let u = parse_uri(uri)?;
    let scheme = u.scheme.to_ascii_lowercase();
    if scheme != "sip" && scheme != "sips" {
        return None;
    }
    // addr-spec without URI headers; parameters such as user=phone are kept.
    Some(uri.split('?').next().unwrap_or(uri).trim().to_string())
}

fn fill_from(p: &mut Party, na: &NameAddr<'_>, overwrite_tel: bool) {
    if let Some(u) = parse_uri(na.uri) {
        if overwrite_tel || p.tel.is_none() {
            if let Some(t) = vcontap_sip::e164(&u) {
                p.tel = Some(t);
            }
        }
    }
    if p.sip.is_none() {
        p.sip = clean_uri(na.uri);
    }
    if p.name.is_none() {
        if let Some(n) = na
            .display
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            p.name = Some(n.to_string());
            p.validation = Some("none".into());
            p.sip_display_name = Some(n.to_string());
        }
    }
}

/// A party from a name-addr header value (Refer-To, P-Asserted-Identity…).
pub(crate) fn party_from_header(value: &str) -> Option<Party> {
    let na = parse_name_addr(value)?;
    let mut p = Party::default();
    fill_from(&mut p, &na, true);
    (p.sip.is_some() || p.tel.is_some()).then_some(p)
}

/// Caller and callee from the initial INVITE.
pub(crate) fn parties(msg: &Message<'_>) -> (Party, Party) {
    let mut caller = Party {
        role: Some("caller".into()),
        ..Default::default()
    };
    // Network-asserted identity first: it is what the carrier vouches for.
    for h in ["P-Asserted-Identity", "Remote-Party-ID"] {
        for v in msg.headers_named(h) {
            for item in vcontap_sip::split_comma_list(v) {
                if let Some(na) = parse_name_addr(item) {
                    fill_from(&mut caller, &na, false);
                }
            }
        }
    }
    if let Some(f) = msg.from() {
        fill_from(&mut caller, &f, false);
    }
    if let Some(id) = msg.header("Identity") {
        // PASSporT in compact form: strip ;info=…;alg=…;ppt=… parameters.
        let tok = id.split(';').next().unwrap_or("").trim().trim_matches('"');
        if tok.split('.').count() == 3 && !tok.is_empty() {
            caller.stir = Some(tok.to_string());
        }
    }
    caller.sip_user_agent = msg.header("User-Agent").map(str::to_string);
    let mut callee = Party {
        role: Some("callee".into()),
        ..Default::default()
    };
    if let Some(t) = msg.to() {
        fill_from(&mut callee, &t, false);
    }
    (caller, callee)
}

/// Caller and callee of a call joined mid-way on `msg` (see `Call::joined`): the requester
/// of its transaction is the caller. A request's asserted identity and User-Agent are the
/// requester's, as on an initial INVITE; a response's are the responder's (the callee).
pub(crate) fn parties_joined(msg: &Message<'_>) -> (Party, Party) {
    if msg.is_request() {
        return parties(msg);
    }
    let mut caller = Party {
        role: Some("caller".into()),
        ..Default::default()
    };
    if let Some(f) = msg.from() {
        fill_from(&mut caller, &f, false);
    }
    let mut callee = Party {
        role: Some("callee".into()),
        ..Default::default()
    };
    update_callee(&mut callee, msg);
    if let Some(t) = msg.to() {
        fill_from(&mut callee, &t, false);
    }
    (caller, callee)
}

/// Fills the callee from the answer: connected identity and Server/User-Agent.
pub(crate) fn update_callee(p: &mut Party, msg: &Message<'_>) {
    for h in ["P-Asserted-Identity", "Remote-Party-ID"] {
        for v in msg.headers_named(h) {
            for item in vcontap_sip::split_comma_list(v) {
                if let Some(na) = parse_name_addr(item) {
                    fill_from(p, &na, false);
                }
            }
        }
    }
    if p.sip_user_agent.is_none() {
        p.sip_user_agent = msg
            .header("Server")
            .or_else(|| msg.header("User-Agent"))
            .map(str::to_string);
    }
}

/// The party named by an in-dialog P-Asserted-Identity when it is a different person than
/// `current`: it must name a user (a `tel`, or a SIP URI with a user part; host-only URIs such
/// as `sip:invalid.unknown.domain` are privacy placeholders) that differs from the current one.
pub(crate) fn connected_party(current: &Party, msg: &Message<'_>) -> Option<Party> {
    let na = msg
        .header("P-Asserted-Identity")
        .and_then(|v| vcontap_sip::split_comma_list(v).next())
        .and_then(parse_name_addr)?;
    let uri = parse_uri(na.uri)?;
    let has_user =
        uri.user.is_some_and(|u| !u.is_empty()) || uri.scheme.eq_ignore_ascii_case("tel");
    if !has_user {
        return None;
    }
    let mut fresh = Party {
        role: current.role.clone(),
        ..Default::default()
    };
    fill_from(&mut fresh, &na, true);
    let same = match (&fresh.tel, &current.tel) {
        (Some(a), Some(b)) => a == b,
        _ => fresh.sip.is_some() && fresh.sip == current.sip,
    };
    (!same).then_some(fresh)
}

/// The `sip-message-trace` body (draft-howe-vcon-sip-signaling) of a finished call, written
/// straight to JSON text: each kept message is parsed again from its bytes (the trace is held
/// as raw bytes until the final snapshot, so memory accounting counts exactly what is held)
/// and serialized from borrowed slices, with no `Value` tree in between. Credentials are
/// removed; members are in sorted order, as a `serde_json` map would write them.
pub(crate) fn render_trace_body(
    call_id: &str,
    records: &[crate::call::TraceRecord],
    dropped: u64,
) -> Option<vcontap_vcon::Json> {
    #[derive(Serialize)]
    struct Body<'a> {
        call_id: &'a str,
        messages: Messages<'a>,
        messages_dropped: u64,
        version: &'static str,
    }
    serde_json::value::to_raw_value(&Body {
        call_id,
        messages: Messages(records),
        messages_dropped: dropped,
        version: "1.0",
    })
    .ok()
    .map(vcontap_vcon::Json::Text)
}

/// The kept messages; one that no longer parses is left out.
struct Messages<'a>(&'a [crate::call::TraceRecord]);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for rec in self.0 {
            if let Ok(msg) = Message::parse(&rec.raw) {
                seq.serialize_element(&trace_entry(&msg, rec))?;
            }
        }
        seq.end()
    }
}

/// One trace entry, borrowed from the message (field order = sorted member names).
#[derive(Serialize)]
struct TraceEntry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_encoding: Option<&'static str>,
    direction: &'static str,
    dst: std::net::SocketAddr,
    headers: Headers<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    party: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_uri: Option<&'a str>,
    src: std::net::SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_text: Option<&'a str>,
    timestamp: String,
    transport: &'static str,
}

/// `[name, value]` pairs: keeps order and repeated headers (Via, Record-Route); secrets
/// left out, long values cut.
struct Headers<'a>(&'a Message<'a>);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for h in self.0.headers().iter().filter(|h| {
            !SECRET_HEADERS
                .iter()
                .any(|x| h.name.eq_ignore_ascii_case(x))
        }) {
            let v = if h.value.len() > MAX_TRACE_VALUE {
                cut(h.value, MAX_TRACE_VALUE)
            } else {
                h.value
            };
            seq.serialize_element(&(h.name, v))?;
        }
        seq.end()
    }
}

fn trace_entry<'a>(msg: &'a Message<'a>, rec: &crate::call::TraceRecord) -> TraceEntry<'a> {
    let body = msg.body();
    let body = body.get(..MAX_TRACE_BODY).unwrap_or(body);
    let (method, request_uri, status_code, status_text) = match msg.kind() {
        vcontap_sip::Kind::Request { method, uri } => {
            (Some(method.as_str()), Some(uri), None, None)
        }
        vcontap_sip::Kind::Response { code, reason } => (None, None, Some(code), Some(reason)),
    };
    TraceEntry {
        body: (!body.is_empty()).then(|| String::from_utf8_lossy(body)),
        body_encoding: (!body.is_empty()).then_some("none"),
        direction: if rec.side == crate::Side::Caller {
            "sent"
        } else {
            "received"
        },
        dst: rec.dst,
        headers: Headers(msg),
        method,
        party: rec.side.index(),
        request_uri,
        src: rec.src,
        status_code,
        status_text,
        timestamp: format_time(rec.ts.nanos()),
        transport: match rec.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Sctp => "sctp",
        },
    }
}

fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or(s)
}

/// The sender's UUID of an RFC 7989 `Session-ID` header value (`<uuid>[;remote=<uuid>]`):
/// 32 hex characters, lower-cased; the nil UUID and anything malformed give `None`.
pub(crate) fn session_uuid(value: &str) -> Option<String> {
    let u = value.split(';').next()?.trim();
    let ok =
        u.len() == 32 && u.bytes().all(|c| c.is_ascii_hexdigit()) && u.bytes().any(|c| c != b'0');
    ok.then(|| u.to_ascii_lowercase())
}
