//! A running `holden up` (and agents) for the orchestrator's tests: each in its own directory,
//! with a marker in its environment that every service inherits, so a test can prove that
//! nothing it started is left running.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const HOLDEN: &str = env!("CARGO_BIN_EXE_holden");
pub const MARKER: &str = "HOLDEN_TEST_MARKER";

/// Held while a short-lived child (a CLI command, `kill`) runs and is waited for, so that a
/// test that reaps orphans (up_crash.rs) does not reap it first.
pub static SHORT_CHILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn short_child<T>(f: impl FnOnce() -> T) -> T {
    let _guard = SHORT_CHILD.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

pub fn kill(pid: i32, sig: i32) {
    short_child(|| {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
    });
}

/// A directory for one test, removed at the end.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        assert_eq!(holden_sys::fd::geteuid(), 0, "the orchestrator's tests need root");
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("holden-up-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Processes (other than `except`) whose environment carries this directory's marker,
    /// with their command lines.
    pub fn leftovers(&self, except: &[i32]) -> Vec<(i32, String)> {
        holden_cli::processes_with_env(MARKER, &self.0.to_string_lossy())
            .into_iter()
            .filter(|pid| !except.contains(pid) && *pid != std::process::id() as i32)
            .map(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                (pid, String::from_utf8_lossy(&cmd).replace('\0', " "))
            })
            .collect()
    }

    /// Waits until nothing carrying the marker runs (but `except`), or fails.
    pub fn assert_no_leftovers(&self, except: &[i32]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.leftovers(except);
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "processes left behind: {left:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        for (pid, _) in self.leftovers(&[]) {
            kill(pid, 9);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `holden agent` on `dir/NAME.sock`.
pub struct Agent {
    pub proc: Child,
    pub socket: PathBuf,
}

impl Agent {
    pub fn start(dir: &Dir, name: &str) -> Agent {
        let socket = dir.path(&format!("{name}.sock"));
        let proc = Command::new(HOLDEN)
            .args(["agent", "--log-level", "warn", "--socket"])
            .arg(&socket)
            .env(MARKER, &dir.0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_socket(&socket);
        Agent { proc, socket }
    }

    pub fn pid(&self) -> i32 {
        self.proc.id() as i32
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            kill(self.pid(), 15);
            let _ = self.proc.wait();
        }
    }
}

pub fn wait_for_socket(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {}", socket.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running `holden up`.
pub struct Up {
    pub proc: Child,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub out: PathBuf,
}

impl Up {
    /// Writes `services` (TOML, after an [orchestrator] table this harness fills in) and runs
    /// `holden up` on it.
    pub fn start(dir: &Dir, services: &str) -> Up {
        Up::start_with(dir, services, &[], &[])
    }

    /// With more `holden up` arguments and environment; `services` may begin with more keys
    /// of the [orchestrator] table.
    pub fn start_with(dir: &Dir, services: &str, args: &[&str], env: &[(&str, &str)]) -> Up {
        let config = dir.path("holden.toml");
        write_config(dir, services);
        let socket = dir.path("control.sock");
        static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let out = dir.path(&format!("up-{}.out", RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let mut cmd = Command::new(HOLDEN);
        cmd.args(["up", "-c"]).arg(&config).args(args).env(MARKER, &dir.0).env_remove("NOTIFY_SOCKET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log = std::fs::File::create(&out).unwrap();
        let proc = cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        wait_for_socket(&socket);
        Up { proc, config, socket, out }
    }

    pub fn pid(&self) -> i32 {
        self.proc.id() as i32
    }

    /// Runs `holden ARGS --control-socket SOCKET`.
    pub fn cli(&self, args: &[&str]) -> Output {
        short_child(|| Command::new(HOLDEN).args(args).arg("--control-socket").arg(&self.socket).output().unwrap())
    }

    /// `holden status --json` as JSON objects, by name.
    pub fn status(&self) -> Vec<Value> {
        let out = self.cli(&["status", "--json"]);
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    }

    pub fn service(&self, name: &str) -> Value {
        self.status().into_iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no service {name}"))
    }

    /// Waits until `pred` holds for service `name`, returning it.
    pub fn wait_for(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.service(name);
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{name} never became {what}: {s}\n{}", self.output());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_state(&self, name: &str, state: &str) -> Value {
        self.wait_for(name, state, |s| s["state"] == state)
    }

    /// What `holden up` printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit and checks that no service is left.
    pub fn stop(mut self, dir: &Dir, except: &[i32]) {
        kill(self.pid(), 15);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.proc.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "holden up did not exit:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "holden up exited with {status}:\n{}", self.output());
        assert!(!self.socket.exists(), "the control socket was not removed");
        dir.assert_no_leftovers(except);
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            kill(self.pid(), 9);
            let _ = self.proc.wait();
        }
    }
}

/// Writes the configuration: an [orchestrator] table pointing into `dir`, then `services`
/// (whose first lines may add keys to that table).
pub fn write_config(dir: &Dir, services: &str) {
    let text = format!(
        "[orchestrator]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n\n{services}",
        dir.path("control.sock").display(),
        dir.path("state").display()
    );
    let tmp = dir.path("holden.toml.tmp");
    std::fs::File::create(&tmp).unwrap().write_all(text.as_bytes()).unwrap();
    std::fs::rename(&tmp, dir.path("holden.toml")).unwrap();
}

/// Lines of `holden up`'s output that mention `needle`, with their timestamps parsed to
/// milliseconds since the epoch.
pub fn events(output: &str, needle: &str) -> Vec<(u64, String)> {
    output
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let (ts, rest) = l.split_once(' ')?;
            Some((parse_ts(ts)?, rest.to_owned()))
        })
        .collect()
}

/// `2026-11-27T15:04:05.123Z` → milliseconds within the day (enough for differences).
fn parse_ts(ts: &str) -> Option<u64> {
    let t = ts.split_once('T')?.1.strip_suffix('Z')?;
    let mut p = t.split(':');
    let h: u64 = p.next()?.parse().ok()?;
    let m: u64 = p.next()?.parse().ok()?;
    let s: f64 = p.next()?.parse().ok()?;
    Some(h * 3_600_000 + m * 60_000 + (s * 1000.0).round() as u64)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
