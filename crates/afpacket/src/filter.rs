//! User-space capture filters of the default build: ports, port ranges, hosts, networks
//! (IPv4/IPv6 CIDR), VLAN ids and the transport protocol, combined with `and`, `or`, `not`.
//!
//! ```text
//! filter  := conj ("or" conj)*            (empty = everything)
//! conj    := term ("and" term)*
//! term    := "not" term | "(" filter ")" | prim
//! prim    := "port" N | "portrange" N-M | "host" IP | "net" IP/LEN | "vlan" N
//!          | "udp" | "tcp" | "sctp" | "ip" | "ip6"
//! ```
//!
//! `and` binds tighter than `or`: `vlan 100 and port 5060 or port 5080` is
//! `(vlan 100 and port 5060) or port 5080`. Ports match source or destination of UDP, TCP
//! or SCTP; `host`/`net` match source or destination address; `vlan N` matches any tag of
//! the frame's stack. A non-first IP fragment has no ports: it passes every `port`/
//! `portrange` term (dropping it would break reassembly of a large SIP message). The
//! expression is bounded (256 tokens, nesting depth 16). Frames are parsed only as far as
//! needed (Ethernet or SLL2, up to 4 VLAN tags, IPv4/IPv6 with extension headers, the
//! first 4 bytes of the transport header); anything unparsable matches no `port`/`net`
//! term. Hand-written, no dependency: a BPF compiler would need libpcap.

use std::net::IpAddr;

use vcontap_wire::LinkType;

/// Longest accepted expression, in tokens.
const MAX_TOKENS: usize = 256;
/// Deepest nesting of parentheses and `not`.
const MAX_DEPTH: usize = 16;
/// VLAN tags looked at.
const MAX_TAGS: usize = 4;
/// IPv6 extension headers walked before giving up.
const MAX_EXT: usize = 8;

/// Why a filter expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter: {0}")]
pub struct FilterError(pub String);

/// One primitive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prim {
    Ports(u16, u16),
    Net(IpAddr, u8),
    Vlan(u16),
    Proto(u8),
    V4,
    V6,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Prim(Prim),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// A parsed filter. The default (and `Filter::parse("")`) accepts every frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    expr: Option<Expr>,
    text: String,
}

/// What the filter reads from a frame.
#[derive(Debug, Default, Clone)]
struct Facts {
    vlans: [u16; MAX_TAGS],
    nvlans: usize,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    proto: Option<u8>,
    ports: Option<(u16, u16)>,
    later_fragment: bool,
}

impl Filter {
    /// Parses `text` (grammar in the module docs).
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Ok(Filter::default());
        }
        let mut p = Parser { t: &tokens, i: 0 };
        let e = p.or(0)?;
        if let Some(extra) = p.peek() {
            return Err(FilterError(format!("unexpected `{extra}`")));
        }
        Ok(Filter {
            expr: Some(e),
            text: text.trim().to_string(),
        })
    }

    /// Whether the filter accepts everything.
    pub fn is_empty(&self) -> bool {
        self.expr.is_none()
    }

    /// The expression as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `frame` (of link type `link`, VLAN tags in the bytes) passes.
    pub fn matches(&self, link: LinkType, frame: &[u8]) -> bool {
        let Some(e) = &self.expr else { return true };
        let facts = parse_frame(link, frame);
        eval(e, &facts)
    }
}

fn eval(e: &Expr, f: &Facts) -> bool {
    match e {
        Expr::Prim(p) => prim(p, f),
        Expr::Not(x) => !eval(x, f),
        Expr::And(xs) => xs.iter().all(|x| eval(x, f)),
        Expr::Or(xs) => xs.iter().any(|x| eval(x, f)),
    }
}

fn prim(p: &Prim, f: &Facts) -> bool {
    match *p {
        Prim::Ports(lo, hi) => {
            if f.later_fragment {
                return true;
            }
            f.ports
                .is_some_and(|(s, d)| (lo..=hi).contains(&s) || (lo..=hi).contains(&d))
        }
        Prim::Net(net, len) => [f.src, f.dst]
            .into_iter()
            .flatten()
            .any(|a| in_net(a, net, len)),
        Prim::Vlan(id) => f.vlans.iter().take(f.nvlans).any(|&v| v == id),
        Prim::Proto(p) => f.proto == Some(p),
        Prim::V4 => matches!(f.src, Some(IpAddr::V4(_))),
        Prim::V6 => matches!(f.src, Some(IpAddr::V6(_))),
    }
}

fn in_net(a: IpAddr, net: IpAddr, len: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn tokenize(text: &str) -> Result<Vec<String>, FilterError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c == '(' || c == ')' || c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
        } else {
            cur.push(c.to_ascii_lowercase());
        }
        if out.len() > MAX_TOKENS || cur.len() > 64 {
            return Err(FilterError("expression too long".into()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

struct Parser<'a> {
    t: &'a [String],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.t.get(self.i).map(String::as_str)
    }
    fn next(&mut self) -> Option<&str> {
        let t = self.t.get(self.i).map(String::as_str);
        self.i += 1;
        t
    }
    fn word(&mut self, what: &str) -> Result<String, FilterError> {
        self.next()
            .map(str::to_string)
            .ok_or_else(|| FilterError(format!("{what} expected at the end")))
    }

    fn or(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut xs = vec![self.and(depth)?];
        while matches!(self.peek(), Some("or") | Some("||")) {
            self.i += 1;
            xs.push(self.and(depth)?);
        }
        Ok(one_or(xs, Expr::Or))
    }

    fn and(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut xs = vec![self.term(depth)?];
        while matches!(self.peek(), Some("and") | Some("&&")) {
            self.i += 1;
            xs.push(self.term(depth)?);
        }
        Ok(one_or(xs, Expr::And))
    }

    fn term(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(FilterError("nested too deeply".into()));
        }
        let w = self.word("a term")?;
        match w.as_str() {
            "not" | "!" => Ok(Expr::Not(Box::new(self.term(depth + 1)?))),
            "(" => {
                let e = self.or(depth + 1)?;
                match self.next() {
                    Some(")") => Ok(e),
                    _ => Err(FilterError("`)` expected".into())),
                }
            }
            "port" => {
                let p = port(&self.word("a port")?)?;
                Ok(Expr::Prim(Prim::Ports(p, p)))
            }
            "portrange" => {
                let r = self.word("a port range")?;
                let (a, b) = r
                    .split_once('-')
                    .ok_or_else(|| FilterError(format!("port range `{r}` is not N-M")))?;
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(FilterError(format!("port range `{r}` is reversed")));
                }
                Ok(Expr::Prim(Prim::Ports(a, b)))
            }
            "host" => {
                let h = self.word("an address")?;
                let a: IpAddr = h
                    .parse()
                    .map_err(|_| FilterError(format!("`{h}` is not an IP address")))?;
                let len = if a.is_ipv4() { 32 } else { 128 };
                Ok(Expr::Prim(Prim::Net(a, len)))
            }
            "net" => {
                let n = self.word("a network")?;
                let (a, len) = n.split_once('/').unwrap_or((n.as_str(), ""));
                let a: IpAddr = a
                    .parse()
                    .map_err(|_| FilterError(format!("`{n}` is not a network")))?;
                let max = if a.is_ipv4() { 32 } else { 128 };
                let len = if len.is_empty() {
                    max
                } else {
                    len.parse::<u8>()
                        .ok()
                        .filter(|l| *l <= max)
                        .ok_or_else(|| FilterError(format!("`{n}`: bad prefix length")))?
                };
                Ok(Expr::Prim(Prim::Net(a, len)))
            }
            "vlan" => {
                let v = self.word("a VLAN id")?;
                let id = v
                    .parse::<u16>()
                    .ok()
                    .filter(|id| *id <= 4095)
                    .ok_or_else(|| FilterError(format!("`{v}` is not a VLAN id")))?;
                Ok(Expr::Prim(Prim::Vlan(id)))
            }
            "udp" => Ok(Expr::Prim(Prim::Proto(17))),
            "tcp" => Ok(Expr::Prim(Prim::Proto(6))),
            "sctp" => Ok(Expr::Prim(Prim::Proto(132))),
            "ip" => Ok(Expr::Prim(Prim::V4)),
            "ip6" => Ok(Expr::Prim(Prim::V6)),
            other => Err(FilterError(format!("unknown term `{other}`"))),
        }
    }
}

/// A single expression stays itself; several are combined by `join`.
fn one_or(mut xs: Vec<Expr>, join: fn(Vec<Expr>) -> Expr) -> Expr {
    if xs.len() == 1 {
        if let Some(x) = xs.pop() {
            return x;
        }
    }
    join(xs)
}

fn port(s: &str) -> Result<u16, FilterError> {
    s.parse()
        .map_err(|_| FilterError(format!("`{s}` is not a port")))
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

/// Reads what the primitives need from a frame; stops quietly where the frame ends.
fn parse_frame(link: LinkType, d: &[u8]) -> Facts {
    let mut f = Facts::default();
    let (mut et, mut rest) = match link {
        LinkType::ETHERNET => match (be16(d, 12), d.get(14..)) {
            (Some(et), Some(r)) => (et, r),
            _ => return f,
        },
        LinkType::LINUX_SLL2 => match (be16(d, 0), d.get(20..)) {
            (Some(et), Some(r)) => (et, r),
            _ => return f,
        },
        LinkType::LINUX_SLL => match (be16(d, 14), d.get(16..)) {
            (Some(et), Some(r)) => (et, r),
            _ => return f,
        },
        LinkType::RAW | LinkType::RAW_12 => match d.first().map(|b| b >> 4) {
            Some(4) => (0x0800, d),
            Some(6) => (0x86dd, d),
            _ => return f,
        },
        _ => return f,
    };
    while matches!(et, 0x8100 | 0x88a8 | 0x9100) {
        let (Some(tci), Some(inner), Some(r)) = (be16(rest, 0), be16(rest, 2), rest.get(4..))
        else {
            return f;
        };
        if let Some(slot) = f.vlans.get_mut(f.nvlans) {
            *slot = tci & 0x0fff;
            f.nvlans += 1;
        } else {
            return f;
        }
        et = inner;
        rest = r;
    }
    let l4 = match et {
        0x0800 => ipv4(&mut f, rest),
        0x86dd => ipv6(&mut f, rest),
        _ => None,
    };
    if let (Some(p), Some(l4)) = (f.proto, l4) {
        if matches!(p, 6 | 17 | 132) {
            if let (Some(s), Some(d)) = (be16(l4, 0), be16(l4, 2)) {
                f.ports = Some((s, d));
            }
        }
    }
    f
}

fn ipv4<'a>(f: &mut Facts, d: &'a [u8]) -> Option<&'a [u8]> {
    let ihl = usize::from(d.first()? & 0x0f) * 4;
    let src: [u8; 4] = d.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = d.get(16..20)?.try_into().ok()?;
    f.src = Some(IpAddr::from(src));
    f.dst = Some(IpAddr::from(dst));
    f.proto = Some(*d.get(9)?);
    let frag = be16(d, 6)?;
    if frag & 0x1fff != 0 {
        f.later_fragment = true;
        return None;
    }
    if ihl < 20 {
        return None;
    }
    d.get(ihl..)
}

fn ipv6<'a>(f: &mut Facts, d: &'a [u8]) -> Option<&'a [u8]> {
    let src: [u8; 16] = d.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = d.get(24..40)?.try_into().ok()?;
    f.src = Some(IpAddr::from(src));
    f.dst = Some(IpAddr::from(dst));
    let mut next = *d.get(6)?;
    let mut rest = d.get(40..)?;
    for _ in 0..MAX_EXT {
        match next {
            0 | 43 | 60 => {
                let len = (usize::from(*rest.get(1)?) + 1) * 8;
                next = *rest.first()?;
                rest = rest.get(len..)?;
            }
            44 => {
                let off = be16(rest, 2)? & 0xfff8;
                next = *rest.first()?;
                if off != 0 {
                    f.proto = Some(next);
                    f.later_fragment = true;
                    return None;
                }
                rest = rest.get(8..)?;
            }
            p => {
                f.proto = Some(p);
                return Some(rest);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth_udp4(vlan: Option<u16>, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 8, 0, 0]);
        f
    }

    #[test]
    fn grammar_and_matching() {
        let f = Filter::parse("port 5060 or portrange 10000-20000 or net 10.0.0.0/8 or vlan 100")
            .unwrap();
        let e = LinkType::ETHERNET;
        assert!(f.matches(
            e,
            &eth_udp4(None, [192, 168, 0, 1], [192, 168, 0, 2], 40000, 5060)
        ));
        assert!(f.matches(
            e,
            &eth_udp4(None, [192, 168, 0, 1], [192, 168, 0, 2], 15000, 1)
        ));
        assert!(f.matches(e, &eth_udp4(None, [10, 9, 0, 1], [192, 168, 0, 2], 1, 1)));
        assert!(f.matches(
            e,
            &eth_udp4(Some(100), [192, 168, 0, 1], [192, 168, 0, 2], 1, 1)
        ));
        assert!(!f.matches(
            e,
            &eth_udp4(Some(101), [192, 168, 0, 1], [192, 168, 0, 2], 1, 1)
        ));
        assert!(!f.matches(e, &[0u8; 3]));
        let g = Filter::parse("vlan 100 and port 5060 or not (udp)").unwrap();
        assert!(g.matches(e, &eth_udp4(Some(100), [1, 1, 1, 1], [2, 2, 2, 2], 5060, 9)));
        assert!(!g.matches(e, &eth_udp4(Some(7), [1, 1, 1, 1], [2, 2, 2, 2], 5060, 9)));
        let h = Filter::parse("net 2001:db8::/32 and udp").unwrap();
        let mut v6 = vec![0u8; 12];
        v6.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 8, 17, 64]);
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6.extend_from_slice(&[0; 12]);
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        assert!(h.matches(e, &v6));
        assert!(Filter::parse("").unwrap().is_empty());
        for bad in [
            "port",
            "port x",
            "portrange 5-1",
            "net 10.0.0.0/33",
            "vlan 5000",
            "bogus",
            "(port 1",
            "port 1 port 2",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
        let deep = "not ".repeat(100) + "udp";
        assert!(Filter::parse(&deep).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let f = Filter::parse("port 1 or net ::/0 or vlan 1").unwrap();
        let mut x: u32 = 12345;
        for len in 0..200 {
            let d: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            for l in [LinkType::ETHERNET, LinkType::LINUX_SLL2, LinkType::RAW] {
                let _ = f.matches(l, &d);
            }
        }
    }
}
