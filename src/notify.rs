//! systemd's readiness and watchdog protocol (sd_notify(3)) without libsystemd: one
//! `AF_UNIX` datagram of `KEY=VALUE` lines to `$NOTIFY_SOCKET` (a leading `@` is an
//! abstract socket). A no-op when not started by systemd. Written by hand: it is 40 lines
//! and the protocol is stable; the `sd-notify` crate does the same.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where to notify, if systemd asked for it.
pub struct Notifier {
    sock: Option<(UnixDatagram, String)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring `$WATCHDOG_PID`).
    pub fn from_env() -> Self {
        let sock = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|p| !p.is_empty())
            .and_then(|p| UnixDatagram::unbound().ok().map(|s| (s, p)));
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        Notifier { sock, watchdog }
    }

    /// How often to send `WATCHDOG=1` (half of `WatchdogSec=`), if enabled.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends newline-separated `KEY=VALUE` lines (errors are logged, never fatal).
    pub fn send(&self, msg: &str) {
        let Some((s, path)) = &self.sock else { return };
        let res = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|a| s.send_to_addr(msg.as_bytes(), &a))
        } else {
            s.send_to(msg.as_bytes(), path)
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_the_socket_systemd_names() {
        let dir = std::env::temp_dir().join(format!("vcontap-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            sock: Some((UnixDatagram::unbound().unwrap(), path.display().to_string())),
            watchdog: Some(Duration::from_secs(15)),
        };
        n.send("READY=1\nSTATUS=capturing");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=capturing");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
