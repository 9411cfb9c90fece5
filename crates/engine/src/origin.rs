//! Where a datagram came from when it did not come off a wire the tap sniffed: the HEP
//! capture agent that saw it (capture id, chunk 0x000c, and node name, 0x0013) and whether
//! its timestamp is the agent's or the collector's arrival time. Kept per call so a vCon
//! names the agents that saw its packets (`vcontap.hep`).
//!
//! The per-packet path stays cheap: the driver interns each distinct agent once
//! ([`Engine::register_agent`](crate::Engine::register_agent)) and hands the engine a 4-byte
//! [`Origin`] beside every datagram; a call compares ids against the (at most
//! [`MAX_AGENTS_PER_CALL`]) agents it already saw, newest first, and clones the agent's
//! name only when a new one appears.

use std::sync::Arc;

use serde::Serialize;

/// Distinct agents named per call; packets from further agents are counted only.
pub const MAX_AGENTS_PER_CALL: usize = 8;
/// Agents an engine knows (ids at or above are treated as unknown). The driver interns at
/// most this many.
pub const MAX_AGENTS: usize = 1024;

/// A capture agent interned by the driver (index into the engine's agent table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub u16);

/// What a HEP agent says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentInfo {
    /// Capture agent id (HEP chunk 0x000c), as received.
    pub capture_id: Option<u32>,
    /// Capture agent name (HEP chunk 0x0013).
    pub node_name: Option<Arc<str>>,
}

/// Where one datagram came from: passed by value beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The agent (`None`: the driver's agent table was full).
    pub agent: Option<AgentId>,
    /// The timestamp is the collector's arrival time, not the agent's capture time.
    pub arrival_time: bool,
}

/// The HEP agents of one call, bounded.
#[derive(Debug, Default)]
pub(crate) struct CallOrigins {
    agents: Vec<(AgentId, Arc<AgentInfo>, u64)>,
    /// Packets from agents beyond [`MAX_AGENTS_PER_CALL`] or not in the table.
    other_packets: u64,
    packets: u64,
    arrival_time: u64,
}

impl CallOrigins {
    /// Counts one datagram of `o`; `table` is the engine's agent table.
    #[inline]
    pub(crate) fn note(&mut self, o: Origin, table: &[Option<Arc<AgentInfo>>]) {
        self.packets += 1;
        self.arrival_time += u64::from(o.arrival_time);
        let Some(id) = o.agent else {
            self.other_packets += 1;
            return;
        };
        // Newest first: a call's packets almost always come from the agent of the last one.
        if let Some(a) = self.agents.iter_mut().rev().find(|a| a.0 == id) {
            a.2 += 1;
            return;
        }
        match table.get(usize::from(id.0)).and_then(|a| a.as_ref()) {
            Some(info) if self.agents.len() < MAX_AGENTS_PER_CALL => {
                self.agents.push((id, info.clone(), 1));
            }
            _ => self.other_packets += 1,
        }
    }

    /// The `vcontap.hep` member.
    pub(crate) fn view(&self) -> HepView<'_> {
        HepView {
            agents: self
                .agents
                .iter()
                .map(|(_, info, packets)| AgentView {
                    capture_id: info.capture_id,
                    node_name: info.node_name.as_deref(),
                    packets: *packets,
                })
                .collect(),
            other_agents_packets: (self.other_packets > 0).then_some(self.other_packets),
            packets: self.packets,
            timestamps: match (self.arrival_time, self.packets) {
                (0, _) => "agent",
                (a, p) if a == p => "arrival",
                _ => "mixed",
            },
        }
    }
}

/// `vcontap.hep`: which agents sent the call's packets and whose clock stamped them.
#[derive(Debug, Serialize)]
pub(crate) struct HepView<'a> {
    agents: Vec<AgentView<'a>>,
    /// Packets from agents not named (over the per-call cap or the engine's table).
    #[serde(skip_serializing_if = "Option::is_none")]
    other_agents_packets: Option<u64>,
    /// Packets of the call that arrived over HEP (sniffed ones are not counted).
    packets: u64,
    /// `agent`: every HEP packet carried the agent's capture time (what the vCon's times
    /// are); `arrival`: none did, vcontap's arrival time was used; `mixed`.
    timestamps: &'static str,
}

#[derive(Debug, Serialize)]
struct AgentView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    capture_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_name: Option<&'a str>,
    packets: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<Option<Arc<AgentInfo>>> {
        (0..n)
            .map(|i| {
                Some(Arc::new(AgentInfo {
                    capture_id: Some(i as u32),
                    node_name: (i % 2 == 0).then(|| Arc::from(format!("node{i}").as_str())),
                }))
            })
            .collect()
    }

    fn origin(id: u16, arrival: bool) -> Origin {
        Origin {
            agent: Some(AgentId(id)),
            arrival_time: arrival,
        }
    }

    #[test]
    fn agents_are_bounded_and_counted() {
        let t = table(20);
        let mut c = CallOrigins::default();
        for i in 0..20u16 {
            c.note(origin(i, false), &t);
            c.note(origin(i, false), &t);
        }
        c.note(
            Origin {
                agent: None,
                arrival_time: false,
            },
            &t,
        );
        // An id the table does not hold (never registered) is not trusted.
        c.note(origin(999, false), &t);
        let v = serde_json::to_value(c.view()).unwrap();
        let agents = v["agents"].as_array().unwrap();
        assert_eq!(agents.len(), MAX_AGENTS_PER_CALL);
        assert_eq!(agents[0]["capture_id"], 0);
        assert_eq!(agents[0]["node_name"], "node0");
        assert_eq!(agents[1]["capture_id"], 1);
        assert!(agents[1].get("node_name").is_none());
        assert_eq!(agents[7]["packets"], 2);
        assert_eq!(v["packets"], 42);
        assert_eq!(v["other_agents_packets"], 2 * 12 + 2);
        assert_eq!(v["timestamps"], "agent");
    }

    #[test]
    fn timestamps_say_whose_clock() {
        let t = table(1);
        let mut c = CallOrigins::default();
        c.note(origin(0, true), &t);
        assert_eq!(
            serde_json::to_value(c.view()).unwrap()["timestamps"],
            "arrival"
        );
        c.note(origin(0, false), &t);
        let v = serde_json::to_value(c.view()).unwrap();
        assert_eq!(v["timestamps"], "mixed");
        assert!(v.get("other_agents_packets").is_none());
    }
}
