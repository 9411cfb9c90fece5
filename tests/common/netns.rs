//! Two network namespaces made by the test and joined by a veth pair, deleted on drop: the
//! fixture of every live-capture test (tests/live.rs, tests/sipp.rs). Traffic stays inside
//! these namespaces; nothing is sent to the host's interfaces.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`; the error is `ip`'s stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).to_string())
    }
}

/// Two namespaces and a veth pair; deleted on drop.
pub struct Veth {
    /// The sending side's namespace and its end of the pair.
    pub ns_send: String,
    pub if_send: String,
    /// The capturing side's namespace and its end of the pair.
    pub ns_cap: String,
    pub if_cap: String,
}

impl Veth {
    /// Makes the namespaces and the link (up, IPv6 off so only the test's frames cross it),
    /// or prints why not (not root) and returns `None`.
    pub fn new() -> Option<Veth> {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let v = Veth {
            ns_send: format!("vcl-{id}-s"),
            ns_cap: format!("vcl-{id}-c"),
            if_send: format!("vls{id}"),
            if_cap: format!("vlc{id}"),
        };
        if let Err(e) = ip(&["netns", "add", &v.ns_send]) {
            eprintln!("skipped: cannot create a network namespace (root needed): {e}");
            return None;
        }
        ip(&["netns", "add", &v.ns_cap]).unwrap();
        for ns in [&v.ns_send, &v.ns_cap] {
            // Only our frames on the link: no IPv6 router solicitations or MLD reports.
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ])
                .status();
            ip(&["-n", ns, "link", "set", "lo", "up"]).unwrap();
        }
        ip(&[
            "link", "add", &v.if_send, "netns", &v.ns_send, "type", "veth", "peer", "name",
            &v.if_cap, "netns", &v.ns_cap,
        ])
        .unwrap();
        ip(&["-n", &v.ns_send, "link", "set", &v.if_send, "up"]).unwrap();
        ip(&["-n", &v.ns_cap, "link", "set", &v.if_cap, "up"]).unwrap();
        Some(v)
    }

    /// Gives each end an IPv4 address (`CIDR` form, e.g. `10.0.0.1/24`) so the two
    /// namespaces can talk to each other over the pair.
    pub fn address(&self, send: &str, cap: &str) {
        ip(&[
            "-n",
            &self.ns_send,
            "addr",
            "add",
            send,
            "dev",
            &self.if_send,
        ])
        .unwrap();
        ip(&["-n", &self.ns_cap, "addr", "add", cap, "dev", &self.if_cap]).unwrap();
    }

    /// `ip netns exec NS PROGRAM`: a command run inside one of the namespaces.
    pub fn exec(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns_send]);
        let _ = ip(&["netns", "del", &self.ns_cap]);
    }
}
