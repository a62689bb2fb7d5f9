//! The helpers of the fault tests (up_faults.rs, up_state.rs): one test at a time, the orphan
//! reaper running, and every `holden up` and agent a test waits for itself kept from it.

use std::path::Path;
use std::sync::MutexGuard;
use std::time::Duration;

use serde_json::Value;

use super::*;

pub const SECOND: Duration = Duration::from_secs(1);

/// One test at a time, the orphan reaper running, and a directory.
pub fn setup(tag: &str) -> (MutexGuard<'static, ()>, Dir) {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    reaper();
    (serial, Dir::new(tag))
}

/// `holden up` on `services`, once its control socket answers; kept from the reaper.
pub fn start(dir: &Dir, services: &str) -> Up {
    let up = Up::start(dir, services);
    protect(up.pid());
    up
}

/// `holden up` on `services`, returning at once; kept from the reaper.
pub fn spawn(dir: &Dir, services: &str) -> Up {
    let up = Up::spawn(dir, services, &[HOLDEN], false);
    protect(up.pid());
    up
}

/// The agent `qm`, kept from the reaper.
pub fn agent(dir: &Dir) -> Agent {
    let agent = Agent::start(dir, "qm");
    protect(agent.pid());
    agent
}

/// `services` after an `[agents.qm]` table for `agent`.
pub fn with_agent(agent: &Agent, services: &str) -> String {
    format!("[agents.qm]\nsocket = \"{}\"\n\n{services}", agent.socket.display())
}

pub fn pid_of(s: &Value) -> Option<i32> {
    s["pid"].as_i64().map(|p| p as i32)
}

pub fn restarts(s: &Value) -> u64 {
    s["restarts"].as_u64().unwrap_or_else(|| panic!("no restarts in {s}"))
}

/// The number of lines of `file` (0 if it does not exist).
pub fn lines(file: &Path) -> usize {
    std::fs::read_to_string(file).map(|t| t.lines().count()).unwrap_or(0)
}
