//! A running `holden up` (and agents) for the orchestrator's tests: each in its own directory,
//! with a marker in its environment that every service inherits, so a test can prove that
//! nothing it started is left running.
#![allow(dead_code)]

pub mod faults;

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
        let deadline = Instant::now() + scaled(Duration::from_secs(5));
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

/// `d` widened by `HOLDEN_TEST_TIME_SCALE` (default 1), which `make vm-test` sets in an emulated
/// guest, several times slower than the host: every deadline and timing bound of the tests goes
/// through this, so that no test is dropped from the VM for being slow there.
pub fn scaled(d: Duration) -> Duration {
    static SCALE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    d * *SCALE.get_or_init(|| {
        std::env::var("HOLDEN_TEST_TIME_SCALE").ok().and_then(|v| v.parse().ok()).filter(|&n| n >= 1).unwrap_or(1)
    })
}

pub fn wait_for_socket(socket: &Path) {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
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
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
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
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
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

// ---- For fault tests (up_faults.rs): waiting, counting, the orphan reaper, mounts ----------

/// Waits until `cond` holds, polling every 10 ms; fails naming `what` (and what `detail`
/// says then) after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool, detail: impl Fn() -> String) {
    let timeout = scaled(timeout);
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}\n{}", detail());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `f` returns something, polling every 10 ms; fails naming `what` after `timeout`.
pub fn wait_some<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let timeout = scaled(timeout);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The command line of `pid` as `Dir::leftovers` shows it (arguments joined by spaces), or
/// `None` if it is gone.
pub fn cmdline(pid: i32) -> Option<String> {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&cmd).replace('\0', " "))
}

impl Dir {
    /// The marker-carrying processes whose command line is exactly `argv`. (The marker alone
    /// also finds holden up, agents and helpers such as `holden fdholder`.)
    pub fn pids_of(&self, argv: &[&str]) -> Vec<i32> {
        let want: String = argv.iter().map(|a| format!("{a} ")).collect();
        self.leftovers(&[]).into_iter().filter(|(_, c)| *c == want).map(|(pid, _)| pid).collect()
    }

    /// How many marker-carrying processes run exactly `argv`.
    pub fn count(&self, argv: &[&str]) -> usize {
        self.pids_of(argv).len()
    }
}

impl Up {
    /// Runs `holden up` on `services` like `start_with`, without waiting for its control
    /// socket, through `prefix`: the program and arguments before `up -c CONFIG`, `[HOLDEN]`
    /// or a wrapper that execs it (`["sh", "-c", "umask 000; exec \"$0\" \"$@\"", HOLDEN]`).
    /// With `stderr_apart`, stderr goes to a file of its own (`errors()`), so `output()` is
    /// stdout alone.
    pub fn spawn(dir: &Dir, services: &str, prefix: &[&str], stderr_apart: bool) -> Up {
        static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let config = dir.path("holden.toml");
        write_config(dir, services);
        let socket = dir.path("control.sock");
        let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = dir.path(&format!("spawned-{n}.out"));
        let log = std::fs::File::create(&out).unwrap();
        let err = if stderr_apart {
            std::fs::File::create(out.with_extension("err")).unwrap()
        } else {
            log.try_clone().unwrap()
        };
        let (program, args) = prefix.split_first().expect("a program");
        let proc = Command::new(program)
            .args(args)
            .args(["up", "-c"])
            .arg(&config)
            .env(MARKER, &dir.0)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap();
        Up { proc, config, socket, out }
    }

    /// What `holden up` printed on stderr, when it went apart (`Up::spawn`).
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.out.with_extension("err")).unwrap_or_default()
    }

    /// Whether the `holden up` process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.proc.try_wait(), Ok(None))
    }

    /// SIGKILL (no clean shutdown: the services run on), and waits for it.
    pub fn crash(mut self) {
        kill(self.pid(), 9);
        self.proc.wait().unwrap();
    }
}

/// Runs a short command to its end, holding `SHORT_CHILD` so the orphan reaper leaves it to std.
pub fn run_short(cmd: &mut Command) -> Output {
    short_child(|| cmd.stdin(Stdio::null()).output().unwrap())
}

/// Runs a command for at most `timeout` (then SIGKILLs it), holding `SHORT_CHILD`: its output,
/// `None` if it had to be killed, and how long it ran.
pub fn run_with_deadline(cmd: &mut Command, timeout: Duration) -> (Option<Output>, Duration) {
    short_child(|| {
        let start = Instant::now();
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let drain = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if start.elapsed() >= timeout {
                let _ = child.kill();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = start.elapsed();
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        (status.map(|status| Output { status, stdout, stderr }), took)
    })
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    holden_cli::is_running(pid)
}

/// SIGSTOPs `pid` now and SIGCONTs it after `d`, from a thread of its own (so even a failing
/// test does not leave it stopped); join the handle to wait for the SIGCONT.
pub fn stop_for(pid: i32, d: Duration) -> std::thread::JoinHandle<()> {
    kill(pid, 19);
    std::thread::spawn(move || {
        std::thread::sleep(d);
        kill(pid, 18);
    })
}

/// A stopped process (SIGSTOP), continued (SIGCONT) when this is dropped.
pub struct Stopped(pub i32);

impl Stopped {
    pub fn new(pid: i32) -> Stopped {
        kill(pid, 19);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        kill(self.0, 18);
    }
}

/// A tmpfs mounted for one test, unmounted when dropped (so before a `Dir` declared earlier
/// removes the directory), also when the test fails.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`1m`) at `path`, creating the directory.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out =
            run_short(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path));
        assert!(out.status.success(), "mount a tmpfs at {}: {}", path.display(), stderr(&out));
        Tmpfs(path.into())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !run_short(Command::new("umount").arg(&self.0)).status.success() {
            run_short(Command::new("umount").arg("-l").arg(&self.0));
        }
    }
}

/// Held by tests that count processes machine-wide or measure rates, so they run one at a
/// time even without `--test-threads=1`.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The test process's own orphans' reaper: when `holden up` is
/// SIGKILLed, its services are re-parented to the test process, a child subreaper as systemd
/// or a container's init would be, and this reaps them (this VM's PID 1 does not). It leaves
/// alone the pids given to `protect` (orchestrators and agents that tests wait for themselves)
/// and, through `SHORT_CHILD`, the short commands tests run. Once started, it runs for the
/// rest of the test binary: every child a test waits for must then be protected.
pub fn reaper() {
    static START: std::sync::Once = std::sync::Once::new();
    START.call_once(|| {
        holden_sys::process::set_child_subreaper().unwrap();
        std::thread::spawn(|| loop {
            let reaped = {
                // Not while a short-lived child of a test runs: std must reap that one itself.
                let _guard = SHORT_CHILD.lock().unwrap_or_else(|e| e.into_inner());
                match holden_sys::process::peek_exited_child() {
                    Ok(Some(pid)) if !PROTECTED.lock().unwrap().contains(&pid) => {
                        holden_sys::process::reap_pid(pid).is_ok()
                    }
                    _ => false,
                }
            };
            if !reaped {
                std::thread::sleep(Duration::from_millis(2));
            }
        });
    });
}

static PROTECTED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Keeps the reaper off `pid`, a child the test waits for itself.
pub fn protect(pid: i32) {
    PROTECTED.lock().unwrap().push(pid);
}

/// How the orchestrator reports the exit `status` of a process it is not the parent of and
/// whose agent cannot tell (an adopted process, one whose agent died): as it was where the
/// kernel tells any pidfd holder (PIDFD_INFO_EXIT, 6.15+), as `unknown` on older kernels
/// (`make vm-test` runs 6.1 and 6.12).
pub fn exit_seen_by_a_non_parent(status: &str) -> &str {
    if holden_sys::process::probe_features().pidfd_info_exit {
        status
    } else {
        "unknown"
    }
}
