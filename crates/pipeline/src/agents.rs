//! Interning of HEP capture agents for the [`Tap`](crate::Tap): each distinct (capture id,
//! node name) pair gets a small [`AgentId`] once, registered with every engine shard, so
//! the per-datagram path hands the engine a 4-byte `Origin` instead of a name. Bounded at
//! [`MAX_AGENTS`]; agents beyond are passed on unnamed (the vCon counts their packets).

use std::collections::HashMap;
use std::sync::Arc;

use vcontap_engine::{AgentId, AgentInfo, MAX_AGENTS};

type Key = (Option<u32>, Option<Arc<str>>);

/// The driver-side table of agents seen so far.
#[derive(Debug, Default)]
pub(crate) struct AgentTable {
    ids: HashMap<Key, AgentId>,
    /// The last agent looked up: HEP usually comes from one agent at a time, and this skips
    /// hashing its name.
    last: Option<(Key, AgentId)>,
    /// Lookups refused because the table was full.
    pub(crate) overflow: u64,
}

impl AgentTable {
    /// The id of this agent, and its description when it is new (to register with the
    /// engines before the datagram that names it). `None` when the table is full.
    pub(crate) fn intern(
        &mut self,
        capture_id: Option<u32>,
        node_name: Option<&Arc<str>>,
    ) -> (Option<AgentId>, Option<Arc<AgentInfo>>) {
        if let Some(((c, n), id)) = &self.last {
            if *c == capture_id && n.as_deref() == node_name.map(|n| &**n) {
                return (Some(*id), None);
            }
        }
        let key = (capture_id, node_name.cloned());
        if let Some(id) = self.ids.get(&key) {
            let id = *id;
            self.last = Some((key, id));
            return (Some(id), None);
        }
        if self.ids.len() >= MAX_AGENTS {
            self.overflow += 1;
            return (None, None);
        }
        // Below MAX_AGENTS (1024), so it fits a u16.
        let id = AgentId(self.ids.len() as u16);
        self.ids.insert(key.clone(), id);
        self.last = Some((key, id));
        let info = Arc::new(AgentInfo {
            capture_id,
            node_name: node_name.cloned(),
        });
        (Some(id), Some(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agent_is_interned_once_and_the_table_is_bounded() {
        let mut t = AgentTable::default();
        let a: Arc<str> = Arc::from("sbc-a");
        let (id_a, new) = t.intern(Some(7), Some(&a));
        assert_eq!(new.unwrap().node_name.as_deref(), Some("sbc-a"));
        let (id_b, new) = t.intern(Some(7), None);
        assert!(new.is_some());
        assert_ne!(id_a, id_b);
        // A different Arc with the same name is the same agent.
        let a2: Arc<str> = Arc::from("sbc-a");
        assert_eq!(t.intern(Some(7), Some(&a2)), (id_a, None));
        assert_eq!(t.intern(Some(7), None), (id_b, None));
        for i in 0..(MAX_AGENTS as u32 + 10) {
            t.intern(Some(1000 + i), None);
        }
        assert_eq!(t.ids.len(), MAX_AGENTS);
        assert_eq!(t.overflow, 12);
        assert_eq!(t.intern(Some(u32::MAX), None), (None, None));
        assert_eq!(t.intern(Some(7), Some(&a)), (id_a, None));
    }
}
