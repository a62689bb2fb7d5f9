//! systemd's notification protocol (`sd_notify(3)`): datagrams such as `READY=1` sent to the
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace), and the
//! watchdog interval from `$WATCHDOG_USEC` (for this process when `$WATCHDOG_PID` is unset or
//! names it).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go; does nothing when not started by a service manager.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// How often to send `WATCHDOG=1` (half the manager's interval), if asked for.
    pub watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads the environment. A `NOTIFY_SOCKET` that cannot be used is reported once.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(&path),
            };
            // Non-blocking: a manager with a full queue loses a notification, never stalls us.
            match (UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)), addr) {
                (Ok(s), Ok(a)) => Some((s, a)),
                (Err(e), _) | (_, Err(e)) => {
                    crate::supervisor::say(&format!("NOTIFY_SOCKET={path}: {e}; not notifying"));
                    None
                }
            }
        });
        let for_us = std::env::var("WATCHDOG_PID").map_or(true, |p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us > 0 && for_us)
            .map(|us| Duration::from_micros(us / 2));
        Notifier { target, watchdog }
    }

    /// Whether a service manager listens.
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification (lines such as `READY=1\nSTATUS=...`). Failures are ignored:
    /// supervision must not depend on the manager listening.
    pub fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target {
            let _ = sock.send_to_addr(msg.as_bytes(), addr);
        }
    }
}
