//! Test access to the vendor messages in `../shared/siprec` (never copied into the
//! repository; tests skip with a message when the folder is absent): provenance line
//! stripped, SIPp scenarios turned into wire messages, CRLF and bare-LF-body variants.

use std::path::PathBuf;

/// The shared folder: `$VCONTAP_SHARED`, else `../shared` beside the workspace root.
pub fn shared_siprec() -> Option<PathBuf> {
    let base = match std::env::var_os("VCONTAP_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let dir = base.join("siprec");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: {} absent (set VCONTAP_SHARED)", dir.display());
        None
    }
}

/// A vendor file without its `# SOURCE:` line; `None` (after a skip message) when absent.
pub fn vendor(name: &str) -> Option<String> {
    let path = shared_siprec()?.join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path).ok()?;
    Some(match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("# SOURCE:") => rest.to_owned(),
        _ => text,
    })
}

/// Every vendor file name (without `.txt`), sorted.
pub fn vendor_names() -> Vec<String> {
    let Some(dir) = shared_siprec() else {
        return Vec::new();
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_suffix(".txt").map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Line ending of the body in a generated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// CRLF everywhere (what SIPp sends).
    Crlf,
    /// CRLF headers, bare-LF body (AudioCodes and friends).
    BareLf,
}

/// Substitutes SIPp keywords with fixed test values (`[len]` is fixed up afterwards).
fn substitute(line: &str, call_id: &str, msg_index: usize) -> String {
    let mut s = line
        .replace("[branch]", &format!("z9hG4bK-vendor-{msg_index}"))
        .replace("[remote_ip]", "192.0.2.2")
        .replace("[remote_port]", "5060")
        .replace("[local_ip]", "192.0.2.1")
        .replace("[local_port]", "5070")
        .replace("[transport]", "UDP")
        .replace("[call_id]", call_id)
        .replace("[pid]", "42")
        .replace("[call_number]", "1")
        .replace("[peer_tag_param]", ";tag=srs-peer")
        .replace("[media_ip]", "192.0.2.1")
        .replace("[media_ip_type]", "4")
        .replace("[local_ip_type]", "4")
        .replace("[service]", "sipp")
        .replace("[cseq]", "1");
    // [media_port], [auto_media_port] and their `+N` forms.
    while let Some(start) = s.find("[media_port").or_else(|| s.find("[auto_media_port")) {
        let Some(end) = s[start..].find(']').map(|e| start + e) else {
            break;
        };
        let inner = &s[start + 1..end];
        let add: u32 = inner
            .split_once('+')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        s.replace_range(start..=end, &(6000 + add).to_string());
    }
    s
}

/// Wire bytes of a message written as text lines: headers joined with CRLF, the body with
/// CRLF or bare LF, `Content-Length` (`[len]` or a number) set to the body length.
pub fn wire(lines: &[String], body_nl: Body) -> Vec<u8> {
    let blank = lines
        .iter()
        .position(|l| l.is_empty())
        .unwrap_or(lines.len());
    let head = &lines[..blank];
    let body_lines = lines.get(blank + 1..).unwrap_or(&[]);
    let nl = match body_nl {
        Body::Crlf => "\r\n",
        Body::BareLf => "\n",
    };
    let mut body = body_lines.join(nl);
    if !body.is_empty() {
        body.push_str(nl);
    }
    let mut out = String::new();
    for h in head {
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("content-length:") || lower.starts_with("l:") {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        } else {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// The messages a SIPp scenario sends (`<send><![CDATA[...]]>`), keywords substituted,
/// indentation stripped, as wire bytes.
pub fn scenario_messages(xml: &str, body_nl: Body) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<send") {
        rest = &rest[i + 5..];
        // `<sendCmd>` (3PCC) is not a message to the peer.
        if !rest.starts_with(|c: char| c == '>' || c.is_ascii_whitespace()) {
            continue;
        }
        let Some(c) = rest.find("<![CDATA[") else {
            break;
        };
        let Some(e) = rest[c..].find("]]>") else {
            break;
        };
        let raw = &rest[c + 9..c + e];
        rest = &rest[c + e..];
        let lines: Vec<String> = raw
            .lines()
            .map(|l| substitute(l.trim_start(), "vendor-call-1@192.0.2.1", out.len()))
            .skip_while(|l| l.is_empty())
            .collect();
        let mut lines = lines;
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        out.push(wire(&lines, body_nl));
    }
    out
}

/// Turns a body-only vendor file (multipart with no SIP headers) into an INVITE.
pub fn invite_around_body(body: &str, body_nl: Body) -> Vec<u8> {
    let boundary = body
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("--"))
        .unwrap_or("b")
        .trim_end_matches("--")
        .to_owned();
    let mut lines: Vec<String> = [
        "INVITE sip:srs@192.0.2.2 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-body-1",
        "From: <sip:src@192.0.2.1>;tag=src-1",
        "To: <sip:srs@192.0.2.2>",
        "Call-ID: body-call-1@192.0.2.1",
        "CSeq: 1 INVITE",
        "Contact: <sip:src@192.0.2.1:5070>;+sip.src",
        "Require: siprec",
        "Max-Forwards: 70",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    lines.push(format!("Content-Type: multipart/mixed;boundary={boundary}"));
    lines.push("Content-Length: 0".to_owned());
    lines.push(String::new());
    lines.extend(body.lines().map(str::to_owned));
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    wire(&lines, body_nl)
}

/// Every INVITE-like request a vendor file yields (scenario: every message it sends).
pub fn vendor_messages(name: &str, body_nl: Body) -> Option<Vec<Vec<u8>>> {
    let text = vendor(name)?;
    let t = text.trim_start();
    Some(if t.starts_with("<?xml") && t.contains("<scenario") {
        scenario_messages(&text, body_nl)
    } else if t.starts_with("INVITE ") {
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        // The Intrado file has two blank lines before the body: keep the first as the
        // separator, the second is body preamble.
        vec![wire(&lines, body_nl)]
    } else if t.starts_with("<?xml") || t.starts_with("<recording") {
        Vec::new()
    } else {
        vec![invite_around_body(&text, body_nl)]
    })
}
