//! Shard routing: which engine shard a datagram belongs to, so that a call's SIP and its
//! media always land on the same shard, and `--shards N` gives the same calls as one shard.
//!
//! - SIP is routed by a hash of its Call-ID. While routing a SIP message, the router peeks at
//!   its SDP and remembers every announced media address → shard: the RTP port, and the
//!   RTCP port (`a=rtcp`, else port + 1) unless the m-line says `a=rtcp-mux` (then port + 1
//!   may be another call's RTP). Keys are the engine's [`MediaKey`] (IPv4 as v4-mapped
//!   IPv6), so dual-stack SDP and packets meet exactly as in the engine.
//! - RTP/RTCP is routed by its destination, then its source, in that table. The SSRC of
//!   every RTP packet routed by address is remembered too, so a packet from an address no
//!   SDP announced (NAT, a relay moving ports) follows its SSRC to the shard that knows the
//!   call — the engine's own SSRC fallback then finds the call exactly as with one shard.
//! - Everything else (orphan RTP, non-SIP TCP) is routed by a symmetric hash of the address
//!   pair, so both directions of a flow meet on one shard.
//!
//! - A media address announced by dialogs on several shards within [`SHARE_WINDOW_S`] of
//!   each other (the legs of a B2BUA re-INVITEd onto direct media carry different Call-IDs)
//!   is delivered to each of those shards, as the engine delivers it to each call sharing it;
//!   an older announcement is taken over instead (a later call reusing the port).
//!
//! Both tables are bounded; when full the oldest entry is evicted (never a global clear,
//! which would scatter every live call's media). A call's media routes are removed when
//! the router sees its dialog end (2xx to BYE, CANCEL, or a failure final response to an
//! INVITE of a dialog never answered).
//!
//! Because the router sees every SIP message before the shard does, the media table is
//! always filled before the first RTP packet of that SDP can arrive.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};

use vcontap_wire::{Datagram, Transport};

use crate::MediaKey;

/// Media addresses remembered for routing. 4 per call × 250k calls.
pub const MAX_ROUTER_ROUTES: usize = 1_000_000;
/// SSRCs remembered for routing (about 2 per call).
pub const MAX_ROUTER_SSRCS: usize = 500_000;
/// Dialogs whose media routes are remembered for removal at their end.
pub const MAX_ROUTER_DIALOGS: usize = 250_000;
/// Media keys remembered per dialog (re-INVITE churn guard).
const MAX_KEYS_PER_DIALOG: usize = 16;
/// Shards one media address is delivered to at most: the legs of a B2BUA moved onto direct
/// media announce the same address pair in different dialogs, which may hash to different
/// shards; each leg's call must see the packets (as the engine's shared routes do).
pub const MAX_SHARDS_PER_ROUTE: usize = 4;
/// Another dialog announcing an address shares it when the previous announcement is at most
/// this old (capture seconds); older ones are taken over (port reuse by a later call).
const SHARE_WINDOW_S: u32 = 10;

/// The shards a datagram goes to: usually one, more for a shared media address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shards {
    n: u8,
    list: [u16; MAX_SHARDS_PER_ROUTE],
}

impl Shards {
    fn one(s: u16) -> Self {
        Shards {
            n: 1,
            list: [s, 0, 0, 0],
        }
    }

    /// The shard indices.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.list
            .iter()
            .take(usize::from(self.n))
            .map(|s| usize::from(*s))
    }

    /// The first (or only) shard.
    pub fn first(&self) -> usize {
        self.iter().next().unwrap_or(0)
    }
}

/// A media address's route: the shards whose dialogs announced it (with the capture second
/// of their latest announcement, most recent last) and the last SSRC seen on it.
#[derive(Debug, Clone, Copy)]
struct MediaRoute {
    shards: [(u16, u32); MAX_SHARDS_PER_ROUTE],
    n: u8,
    last_ssrc: u32,
}

impl MediaRoute {
    fn new(shard: u16, at: u32) -> Self {
        MediaRoute {
            shards: [(shard, at); MAX_SHARDS_PER_ROUTE],
            n: 1,
            last_ssrc: 0,
        }
    }

    fn live(&self) -> impl Iterator<Item = &(u16, u32)> {
        self.shards.iter().take(usize::from(self.n))
    }

    /// `shard` announced the address at `at`: refreshed if present; else added beside the
    /// announcements of the last [`SHARE_WINDOW_S`] (older ones are dropped), the oldest
    /// leaving when full.
    fn announce(mut self, shard: u16, at: u32) -> Self {
        let mut kept: Vec<(u16, u32)> = self
            .live()
            .copied()
            .filter(|(s, t)| *s != shard && at.saturating_sub(*t) <= SHARE_WINDOW_S)
            .collect();
        if kept.len() >= MAX_SHARDS_PER_ROUTE {
            kept.remove(0);
        }
        kept.push((shard, at));
        for (slot, v) in self.shards.iter_mut().zip(kept.iter()) {
            *slot = *v;
        }
        self.n = kept.len() as u8;
        self
    }

    /// Without `shard`; `None` when nobody is left.
    fn without(mut self, shard: u16) -> Option<Self> {
        let kept: Vec<(u16, u32)> = self.live().copied().filter(|(s, _)| *s != shard).collect();
        if kept.is_empty() {
            return None;
        }
        for (slot, v) in self.shards.iter_mut().zip(kept.iter()) {
            *slot = *v;
        }
        self.n = kept.len() as u8;
        Some(self)
    }

    fn targets(&self) -> Shards {
        let mut out = Shards::default();
        for (i, (s, _)) in self.live().enumerate() {
            if let Some(slot) = out.list.get_mut(i) {
                *slot = *s;
                out.n += 1;
            }
        }
        out
    }
}

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A bounded map that evicts its oldest insertion when full.
struct Lru<K: Hash + Eq + Copy, V: Copy> {
    map: Map<K, (V, u64)>,
    order: VecDeque<(K, u64)>,
    stamp: u64,
    cap: usize,
}

impl<K: Hash + Eq + Copy, V: Copy> Lru<K, V> {
    fn new(cap: usize) -> Self {
        Lru {
            map: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            order: VecDeque::new(),
            stamp: 0,
            cap: cap.max(1),
        }
    }

    fn get(&self, k: &K) -> Option<V> {
        self.map.get(k).map(|(v, _)| *v)
    }

    fn insert(&mut self, k: K, v: V) {
        self.stamp += 1;
        if self.map.len() >= self.cap && !self.map.contains_key(&k) {
            // Evict the oldest live entry; stale order entries (re-inserted or removed
            // keys) are skipped.
            while let Some((old, st)) = self.order.pop_front() {
                if self.map.get(&old).is_some_and(|(_, s)| *s == st) {
                    self.map.remove(&old);
                    break;
                }
            }
        }
        self.map.insert(k, (v, self.stamp));
        self.order.push_back((k, self.stamp));
        if self.order.len() > 2 * self.cap {
            let map = &self.map;
            self.order
                .retain(|(k, st)| map.get(k).is_some_and(|(_, s)| s == st));
        }
    }

    /// The value of `k`, to change in place (its age is not refreshed).
    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(v, _)| v)
    }

    fn remove(&mut self, k: &K) {
        self.map.remove(k);
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// What the router remembers of one dialog.
#[derive(Clone, Copy)]
struct Dialog {
    keys: [Option<MediaKey>; MAX_KEYS_PER_DIALOG],
    answered: bool,
    shard: u16,
}

/// Decides the shard of each datagram. See the module docs.
pub struct Router {
    shards: usize,
    /// Media address → shards and the last SSRC learned on it (the SSRC cache keeps the
    /// SSRC table off the per-packet path: one compare unless the SSRC changes).
    routes: Lru<MediaKey, MediaRoute>,
    ssrcs: Lru<u32, u16>,
    dialogs: Lru<u64, Dialog>,
    hasher: foldhash::fast::FixedState,
}

impl Router {
    /// A router over `shards` shards (at least 1).
    pub fn new(shards: usize) -> Self {
        Router {
            shards: shards.max(1),
            routes: Lru::new(MAX_ROUTER_ROUTES),
            ssrcs: Lru::new(MAX_ROUTER_SSRCS),
            dialogs: Lru::new(MAX_ROUTER_DIALOGS),
            hasher: foldhash::fast::FixedState::with_seed(0x7663_6f6e_7461_7021),
        }
    }

    fn hash<T: Hash>(&self, t: T) -> usize {
        self.hasher.hash_one(t) as usize % self.shards
    }

    /// Media routes remembered (for tests and metrics).
    pub fn routes(&self) -> usize {
        self.routes.len()
    }

    /// The shard for `d` (the first one when a shared media address goes to several).
    pub fn route(&mut self, d: &Datagram<'_>) -> usize {
        self.route_all(d).first()
    }

    /// Every shard `d` must go to: one, or each shard whose dialogs share its media
    /// address (a datagram is then handed to each of them).
    pub fn route_all(&mut self, d: &Datagram<'_>) -> Shards {
        if self.shards == 1 {
            return Shards::one(0);
        }
        if d.transport == Transport::Udp {
            let ssrc = rtp_ssrc(d.payload);
            let (dst, src) = (MediaKey::of(&d.dst), MediaKey::of(&d.src));
            if let Some(s) = self
                .via_address(dst, ssrc)
                .or_else(|| self.via_address(src, ssrc))
            {
                return s;
            }
            if let Some(s) = ssrc.and_then(|x| self.ssrcs.get(&x)) {
                return Shards::one(s);
            }
        }
        if d.transport != Transport::Udp || vcontap_sip::looks_like_sip(d.payload) {
            if let Ok(msg) = vcontap_sip::Message::parse(d.payload) {
                if let Some(cid) = msg.call_id() {
                    let shard = self.hash(cid);
                    let at = u32::try_from(d.ts.secs().max(0)).unwrap_or(u32::MAX);
                    self.learn(&msg, cid, shard as u16, at);
                    return Shards::one(shard as u16);
                }
            }
        }
        let (a, b) = if d.src <= d.dst {
            (d.src, d.dst)
        } else {
            (d.dst, d.src)
        };
        Shards::one(self.hash((a, b)) as u16)
    }

    /// The shards of a known media address; remembers the packet's SSRC for the (first)
    /// shard when it differs from the last one seen on the address.
    fn via_address(&mut self, key: MediaKey, ssrc: Option<u32>) -> Option<Shards> {
        let r = self.routes.get_mut(&key)?;
        let targets = r.targets();
        if let Some(x) = ssrc.filter(|x| *x != r.last_ssrc) {
            r.last_ssrc = x;
            let shard = targets.first() as u16;
            if self.ssrcs.get(&x) != Some(shard) {
                self.ssrcs.insert(x, shard);
            }
        }
        Some(targets)
    }

    fn learn(&mut self, msg: &vcontap_sip::Message<'_>, cid: &str, shard: u16, at: u32) {
        use vcontap_sip::Method;
        let key = self.hasher.hash_one(cid);
        let method = msg.method();
        if let Some(code) = msg.status() {
            let mut dlg = self.dialogs.get(&key);
            let ended = match method {
                Some(Method::Invite) if (200..300).contains(&code) => {
                    if let Some(d) = dlg.as_mut() {
                        d.answered = true;
                        self.dialogs.insert(key, *d);
                    }
                    false
                }
                Some(Method::Invite) => code >= 300 && dlg.is_some_and(|d| !d.answered),
                Some(Method::Bye) => (200..300).contains(&code),
                _ => false,
            };
            if ended {
                self.forget(key);
                return;
            }
        } else if method == Some(Method::Cancel) {
            self.forget(key);
            return;
        }
        let Some(body) = vcontap_sip::sdp_body(msg) else {
            return;
        };
        let Ok(s) = vcontap_sip::sdp::parse(body) else {
            return;
        };
        let mut dlg = self.dialogs.get(&key).unwrap_or(Dialog {
            keys: [None; MAX_KEYS_PER_DIALOG],
            answered: false,
            shard,
        });
        for m in &s.media {
            let Some(ip) = m.connection_or(&s) else {
                continue;
            };
            if ip.is_unspecified() || m.port == 0 {
                continue;
            }
            let rtp = MediaKey::of(&std::net::SocketAddr::new(ip, m.port));
            let rtcp = match m.rtcp {
                Some((p, a)) => Some(MediaKey::of(&std::net::SocketAddr::new(a.unwrap_or(ip), p))),
                None if m.rtcp_mux => None,
                None => Some(MediaKey::of(&std::net::SocketAddr::new(
                    ip,
                    m.port.wrapping_add(1),
                ))),
            };
            for k in std::iter::once(rtp).chain(rtcp) {
                let route = match self.routes.get(&k) {
                    Some(r) => r.announce(shard, at),
                    // SSRC 0 as "none learned yet": a real SSRC 0 is merely learned again.
                    None => MediaRoute::new(shard, at),
                };
                self.routes.insert(k, route);
                if !dlg.keys.contains(&Some(k)) {
                    if let Some(slot) = dlg.keys.iter_mut().find(|s| s.is_none()) {
                        *slot = Some(k);
                    }
                }
            }
        }
        self.dialogs.insert(key, dlg);
    }

    /// Removes a finished dialog's shard from its media routes (a route nobody else
    /// shares leaves).
    fn forget(&mut self, key: u64) {
        if let Some(d) = self.dialogs.get(&key) {
            for k in d.keys.iter().flatten() {
                match self.routes.get(k).and_then(|r| r.without(d.shard)) {
                    Some(r) => {
                        if let Some(x) = self.routes.get_mut(k) {
                            *x = r;
                        }
                    }
                    None => self.routes.remove(k),
                }
            }
            self.dialogs.remove(&key);
        }
    }
}

/// The SSRC of a plausible RTP packet (version 2, not an RTCP packet type).
fn rtp_ssrc(p: &[u8]) -> Option<u32> {
    let b: [u8; 12] = p.get(..12)?.try_into().ok()?;
    if b[0] >> 6 != 2 || (72..=76).contains(&(b[1] & 0x7f)) {
        return None;
    }
    Some(u32::from_be_bytes([b[8], b[9], b[10], b[11]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use vcontap_wire::Timestamp;

    fn dg<'a>(src: &str, dst: &str, payload: &'a [u8]) -> Datagram<'a> {
        Datagram {
            ts: Timestamp(0),
            src: src.parse::<SocketAddr>().unwrap(),
            dst: dst.parse::<SocketAddr>().unwrap(),
            transport: Transport::Udp,
            vlan: None,
            payload,
        }
    }

    fn invite(cid: &str, sdp_extra: &str, port: u16) -> Vec<u8> {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n{sdp_extra}"
        );
        format!(
            "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .into_bytes()
    }

    fn rtp(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 1];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    #[test]
    fn rtcp_mux_does_not_claim_the_next_port() {
        let mut r = Router::new(4);
        let inv = invite("mux-call", "a=rtcp-mux\r\n", 4000);
        let s = r.route(&dg("10.0.0.1:5060", "10.0.0.2:5060", &inv));
        assert_eq!(r.route(&dg("10.0.0.9:9", "10.0.0.1:4000", &rtp(1))), s);
        assert_eq!(r.routes(), 1, "only the RTP port is a route with rtcp-mux");
        let inv = invite("plain-call", "", 6000);
        r.route(&dg("10.0.0.1:5060", "10.0.0.2:5060", &inv));
        assert_eq!(r.routes(), 3, "without rtcp-mux, port + 1 carries RTCP");
    }

    #[test]
    fn v4_mapped_sdp_meets_v4_packets() {
        let mut r = Router::new(8);
        let sdp = "v=0\r\no=- 1 1 IN IP6 ::ffff:10.0.0.1\r\ns=-\r\nc=IN IP6 ::ffff:10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let msg = format!("INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: v6\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len());
        let s = r.route(&dg("10.0.0.1:5060", "10.0.0.2:5060", msg.as_bytes()));
        for ssrc in 0..16 {
            assert_eq!(r.route(&dg("10.9.9.9:1", "10.0.0.1:4000", &rtp(ssrc))), s);
        }
    }

    #[test]
    fn routes_leave_with_the_dialog_and_the_table_evicts_oldest() {
        let mut r = Router::new(4);
        let inv = invite("gone", "", 4000);
        r.route(&dg("10.0.0.1:5060", "10.0.0.2:5060", &inv));
        assert_eq!(r.routes(), 2);
        let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: gone\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        r.route(&dg("10.0.0.2:5060", "10.0.0.1:5060", ok));
        assert_eq!(r.routes(), 0, "2xx to BYE removes the call's routes");

        let mut l: Lru<u32, u16> = Lru::new(3);
        for k in 0..10u32 {
            l.insert(k, k as u16);
            assert!(l.len() <= 3);
        }
        assert_eq!(l.get(&9), Some(9));
        assert_eq!(l.get(&6), None, "oldest evicted first");
        assert!(l.order.len() <= 6);
    }

    #[test]
    fn an_address_announced_by_dialogs_on_two_shards_goes_to_both() {
        let mut r = Router::new(8);
        // Two Call-IDs on different shards (the hash decides; find two that differ).
        let mut cids = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..100 {
            let cid = format!("leg-{i}");
            let s = r.route(&dg(
                "10.0.0.1:5060",
                "10.0.0.2:5060",
                &invite(&cid, "", 9000 + i),
            ));
            if seen.insert(s) {
                cids.push((cid, s));
            }
            if cids.len() == 2 {
                break;
            }
        }
        let [(a, sa), (b, sb)] = [cids[0].clone(), cids[1].clone()];
        // Both dialogs now announce the same media address (direct media).
        r.route(&dg("10.0.0.1:5060", "10.0.0.2:5060", &invite(&a, "", 4000)));
        r.route(&dg("10.0.0.1:5060", "10.0.0.2:5060", &invite(&b, "", 4000)));
        let to: Vec<usize> = r
            .route_all(&dg("10.0.0.9:7000", "10.0.0.1:4000", &rtp(5)))
            .iter()
            .collect();
        assert_eq!(to, vec![sa, sb], "both legs' shards get the packet");
        assert_eq!(r.route(&dg("10.0.0.9:7000", "10.0.0.1:4000", &rtp(5))), sa);
        // One leg ends: the other keeps the address alone.
        let ok = format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: {a}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
        r.route(&dg("10.0.0.2:5060", "10.0.0.1:5060", ok.as_bytes()));
        let to: Vec<usize> = r
            .route_all(&dg("10.0.0.9:7000", "10.0.0.1:4000", &rtp(5)))
            .iter()
            .collect();
        assert_eq!(to, vec![sb]);
    }

    #[test]
    fn a_stale_announcement_is_taken_over_not_shared() {
        let mut r = Router::new(8);
        let mut t = Timestamp(0);
        let mut shards = std::collections::BTreeSet::new();
        for i in 0..40 {
            let mut d = dg("10.0.0.1:5060", "10.0.0.2:5060", &[]);
            let inv = invite(&format!("reuse-{i}"), "", 4000);
            d.payload = &inv;
            d.ts = t;
            shards.insert(r.route(&d));
            // Each later call reuses the port a minute after the previous one.
            t = Timestamp(t.0 + 60_000_000_000);
            let n = r
                .route_all(&dg("10.0.0.9:7000", "10.0.0.1:4000", &rtp(5)))
                .iter()
                .count();
            assert_eq!(n, 1, "port reuse after the share window is not sharing");
        }
        assert!(shards.len() > 1);
    }

    #[test]
    fn ssrc_follows_its_call_to_an_unknown_address() {
        let mut r = Router::new(8);
        let inv = invite("nat", "", 4000);
        let s = r.route(&dg("10.0.0.1:5060", "10.0.0.2:5060", &inv));
        assert_eq!(
            r.route(&dg("10.0.0.2:7000", "10.0.0.1:4000", &rtp(0xabcd))),
            s
        );
        // The same SSRC later arrives between two addresses no SDP announced.
        for port in 1..50u16 {
            let src = format!("203.0.113.7:{port}");
            assert_eq!(r.route(&dg(&src, "198.51.100.2:9", &rtp(0xabcd))), s);
        }
    }
}
