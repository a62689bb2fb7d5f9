//! Test harness: a real agent process on a real socket in a private directory, and checks that
//! nothing leaked. These tests need root (they spawn across namespaces and uids).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_holden-agent");

pub fn require_root() {
    assert_eq!(holden_sys::fd::geteuid(), 0, "these tests need root: run them as root (CI does)");
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "holden-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running agent. Dropping it sends SIGTERM and waits for it.
pub struct TestAgent {
    pub proc: Option<Child>,
    pub socket: PathBuf,
    pub dir: TempDir,
}

impl TestAgent {
    pub fn start(extra: &[&str]) -> TestAgent {
        let dir = TempDir::new("agent");
        let socket = dir.0.join("agent.sock");
        Self::start_at(dir, socket, extra)
    }

    pub fn start_at(dir: TempDir, socket: PathBuf, extra: &[&str]) -> TestAgent {
        let proc = Command::new(AGENT)
            .arg("--socket")
            .arg(&socket)
            .args(["--log-level", "warn"])
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("start holden-agent");
        let agent = TestAgent { proc: Some(proc), socket, dir };
        agent.wait_ready();
        agent
    }

    pub fn wait_ready(&self) {
        wait_for_socket(&self.socket);
    }

    pub fn pid(&self) -> i32 {
        self.proc.as_ref().unwrap().id() as i32
    }

    pub fn client(&self) -> holden::Agent {
        holden::Agent::connect(&self.socket).expect("connect to agent")
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut p = self.proc.take().unwrap();
        signal(p.id() as i32, 15);
        wait_timeout(&mut p, Duration::from_secs(10)).expect("agent exits after SIGTERM")
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            signal(p.id() as i32, 15);
            if wait_timeout(&mut p, Duration::from_secs(5)).is_none() {
                let _ = p.kill();
                let _ = p.wait();
            }
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

pub fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    while Instant::now() < deadline {
        if UnixStream::connect(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("agent socket {} did not appear", path.display());
}

pub fn wait_timeout(p: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + scaled(limit);
    while Instant::now() < deadline {
        if let Some(s) = p.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// kill(2) through the `kill` command, so tests stay free of unsafe code.
pub fn signal(pid: i32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// (pid, state) of every process whose parent is `ppid`.
pub fn children_of(ppid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name is in parentheses and may hold spaces: parse after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let parent: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if parent == ppid {
            out.push((pid, state));
        }
    }
    out
}

/// Waits up to 5 s for `ppid` to have no children at all (so no zombie either).
pub fn assert_no_children(ppid: i32) {
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    loop {
        let c = children_of(ppid);
        if c.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "process {ppid} still has children (pid, state): {c:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Sends raw bytes on a new connection and returns what came back before EOF or a NUL.
/// `None` means the agent closed the connection without a reply.
pub fn raw_exchange(socket: &Path, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(bytes);
    read_reply(&mut s)
}

pub fn read_reply(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return if out.is_empty() { None } else { Some(out) },
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.contains(&0) {
                    return Some(out);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading reply: {e}"),
        }
    }
}

/// A pipe, as (read end, write end).
pub fn pipe() -> (std::fs::File, std::os::fd::OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (std::fs::File::from(std::os::fd::OwnedFd::from(r)), std::os::fd::OwnedFd::from(w))
}

impl TestAgent {
    /// Starts an agent from a prepared command (the agent itself, or a wrapper such as
    /// `setpriv` or `prlimit` that execs it, so that the child's pid is the agent's) and waits
    /// for its socket.
    pub fn start_command(mut cmd: Command, dir: TempDir, socket: PathBuf) -> TestAgent {
        let proc = cmd.stdin(Stdio::null()).spawn().expect("start holden-agent");
        let agent = TestAgent { proc: Some(proc), socket, dir };
        agent.wait_ready();
        agent
    }

    /// The no-leak check that ends a test: the agent has no child left (no zombie either), it
    /// exits 0 on SIGTERM, and its process is gone.
    pub fn finish(mut self) {
        let pid = self.pid();
        assert_no_children(pid);
        let status = self.stop();
        assert!(status.success(), "agent exit status after SIGTERM: {status:?}");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "agent process {pid} is still there");
    }
}

/// The program a process runs (`/proc/PID/exe`).
pub fn exe_of(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

/// A process's arguments (`/proc/PID/cmdline`); empty if it is gone or a zombie.
pub fn cmdline(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// A field of `/proc/PID/status` (such as `VmRSS` or `Uid`), its value trimmed.
pub fn proc_status(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_owned()))
}

/// A memory figure of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...) in KiB.
pub fn proc_status_kib(pid: i32, field: &str) -> Option<u64> {
    proc_status(pid, field)?.strip_suffix(" kB")?.trim().parse().ok()
}

/// Reads NUL-terminated Varlink messages, each with the descriptors that came with it
/// (`SCM_RIGHTS`, attached by the sender to a message's first byte).
pub struct FdReader {
    pub stream: UnixStream,
    buf: Vec<u8>,
    /// Descriptors received, each with the offset in `buf` of the message they came with.
    fds: Vec<(usize, std::os::fd::OwnedFd)>,
    ready: std::collections::VecDeque<(Vec<u8>, Vec<std::os::fd::OwnedFd>)>,
}

impl FdReader {
    pub fn new(stream: UnixStream) -> FdReader {
        FdReader { stream, buf: Vec::new(), fds: Vec::new(), ready: Default::default() }
    }

    /// The next message (without its NUL) and its descriptors; `Ok(None)` at end of stream.
    /// A read timeout set on the stream is an error of kind `WouldBlock`.
    pub fn next(&mut self) -> std::io::Result<Option<(Vec<u8>, Vec<std::os::fd::OwnedFd>)>> {
        use std::os::fd::AsFd;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Ok(Some(m));
            }
            let mut fds = Vec::new();
            let got = holden_sys::socket::recv_with_fds(self.stream.as_fd(), &mut chunk, &mut fds)?;
            if got.len == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..got.len]);
            // The kernel ends a read after the data that carried descriptors, so they belong
            // to the message holding the last byte read.
            let end = self.buf.len() - 1;
            let start = self.buf[..end].iter().rposition(|&b| b == 0).map_or(0, |p| p + 1);
            self.fds.extend(fds.into_iter().map(|fd| (start, fd)));
            while let Some(nul) = self.buf.iter().position(|&b| b == 0) {
                let mut msg: Vec<u8> = self.buf.drain(..=nul).collect();
                msg.pop();
                let (mine, rest): (Vec<_>, Vec<_>) = self.fds.drain(..).partition(|(off, _)| *off <= nul);
                self.fds = rest.into_iter().map(|(off, fd)| (off - nul - 1, fd)).collect();
                self.ready.push_back((msg, mine.into_iter().map(|(_, fd)| fd).collect()));
            }
        }
    }
}

/// CPU time a process has used (user + system), in clock ticks (`/proc/PID/stat`).
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    // After the command name: state is field 3, utime field 14, stime field 15.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}
