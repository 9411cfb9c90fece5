//! Shard routing: which engine shard a datagram belongs to, so that a call's SIP and its
//! media always land on the same shard.
//!
//! - SIP is routed by a hash of its Call-ID. While routing a SIP message, the router peeks at
//!   its SDP and remembers every announced media address (RTP and RTCP) → shard, in a bounded
//!   table (oldest entries are overwritten once full).
//! - RTP/RTCP is routed by looking up its destination, then its source, in that table.
//! - Everything else (orphan RTP, non-SIP TCP) is routed by a symmetric hash of the address
//!   pair, so both directions of a flow meet on one shard.
//!
//! Because the router sees every SIP message before the shard does, the media table is always
//! filled before the first RTP packet of that SDP can arrive.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;

use vcontap_wire::{Datagram, Transport};

/// Media addresses remembered for routing. 4 per call × 250k calls.
pub const MAX_ROUTER_ROUTES: usize = 1_000_000;

/// Decides the shard of each datagram. See the module docs.
pub struct Router {
    shards: usize,
    routes: HashMap<SocketAddr, u16, foldhash::fast::RandomState>,
    hasher: foldhash::fast::FixedState,
}

impl Router {
    /// A router over `shards` shards (at least 1).
    pub fn new(shards: usize) -> Self {
        Router {
            shards: shards.max(1),
            routes: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            hasher: foldhash::fast::FixedState::with_seed(0x7663_6f6e_7461_7021),
        }
    }

    fn hash<T: Hash>(&self, t: T) -> usize {
        self.hasher.hash_one(t) as usize % self.shards
    }

    /// The shard for `d`.
    pub fn route(&mut self, d: &Datagram<'_>) -> usize {
        if self.shards == 1 {
            return 0;
        }
        if d.transport == Transport::Udp {
            if let Some(s) = self.routes.get(&d.dst).or_else(|| self.routes.get(&d.src)) {
                return *s as usize;
            }
        }
        if d.transport != Transport::Udp || vcontap_sip::looks_like_sip(d.payload) {
            if let Ok(msg) = vcontap_sip::Message::parse(d.payload) {
                if let Some(cid) = msg.call_id() {
                    let shard = self.hash(cid);
                    self.learn(&msg, shard as u16);
                    return shard;
                }
            }
        }
        let (a, b) = if d.src <= d.dst {
            (d.src, d.dst)
        } else {
            (d.dst, d.src)
        };
        self.hash((a, b))
    }

    fn learn(&mut self, msg: &vcontap_sip::Message<'_>, shard: u16) {
        let Some(body) = vcontap_sip::sdp_body(msg) else {
            return;
        };
        let Ok(s) = vcontap_sip::sdp::parse(body) else {
            return;
        };
        for m in &s.media {
            let Some(ip) = m.connection_or(&s) else {
                continue;
            };
            if ip.is_unspecified() || m.port == 0 {
                continue;
            }
            if self.routes.len() >= MAX_ROUTER_ROUTES {
                self.routes.clear();
            }
            self.routes.insert(SocketAddr::new(ip, m.port), shard);
            let rtcp = m
                .rtcp
                .map_or(SocketAddr::new(ip, m.port.wrapping_add(1)), |(p, a)| {
                    SocketAddr::new(a.unwrap_or(ip), p)
                });
            self.routes.insert(rtcp, shard);
        }
    }
}
