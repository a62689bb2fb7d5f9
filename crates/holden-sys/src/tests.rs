//! The wrappers on real processes and sockets (no root needed).

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::event::poll_readable;
use crate::process::{self, exec_candidates, Exit, SpawnError, SpawnSpec, Stage};
use crate::socket::{peer_cred, recv_with_fds, send_with_fds};

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn spawn(argv: &[&str]) -> Result<process::Spawned, SpawnError> {
    let argv: Vec<CString> = argv.iter().map(|a| c(a)).collect();
    let candidates = exec_candidates(argv[0].as_bytes(), Some(b"/usr/bin:/bin"));
    let spec = SpawnSpec {
        candidates: &candidates,
        argv: &argv,
        envp: &[],
        cwd: None,
        stdio: [None, None, None],
        setsid: false,
        umask: None,
        rlimits: &[],
        nice: None,
        oom_score_adj: None,
        user: None,
        cgroup: None,
        extra_fds: &[],
        limits_as_user: false,
    };
    process::spawn(&spec)
}

#[test]
fn spawn_wait_and_exit_codes() {
    let child = spawn(&["sh", "-c", "exit 7"]).unwrap();
    assert!(child.pid > 0);
    assert_eq!(process::wait_pidfd(child.pidfd.as_fd(), false).unwrap(), Some(Exit::Exited(7)));
}

#[test]
fn signal_through_the_pidfd() {
    let child = spawn(&["sleep", "30"]).unwrap();
    assert_eq!(process::wait_pidfd(child.pidfd.as_fd(), true).unwrap(), None);
    process::pidfd_send_signal(&child.pidfd, 9).unwrap();
    assert!(poll_readable(child.pidfd.as_fd(), Some(Duration::from_secs(5))).unwrap());
    let exit = process::wait_pidfd(child.pidfd.as_fd(), false).unwrap();
    assert_eq!(exit, Some(Exit::Signaled { signal: 9, core_dumped: false }));
}

#[test]
fn exec_failure_is_reported_with_its_stage_and_errno() {
    match spawn(&["holden-no-such-program"]) {
        Err(SpawnError::Child { stage: Stage::Exec, errno }) => assert_eq!(errno, libc::ENOENT),
        other => panic!("{other:?}"),
    }
}

#[test]
fn exec_candidates_follow_execvp() {
    let v = |p: &[u8], path: Option<&[u8]>| {
        exec_candidates(p, path).into_iter().map(|c| c.into_string().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(v(b"/bin/sh", Some(b"/x")), ["/bin/sh"]);
    assert_eq!(v(b"./run", None), ["./run"]);
    assert_eq!(v(b"ls", Some(b"/a::/b")), ["/a/ls", "./ls", "/b/ls"]);
    assert_eq!(v(b"ls", None), ["/usr/local/bin/ls", "/usr/bin/ls", "/bin/ls"]);
}

#[test]
fn descriptors_travel_with_their_message() {
    let (a, b) = UnixStream::pair().unwrap();
    let (r, _w) = std::io::pipe().unwrap();
    send_with_fds(a.as_fd(), b"hello", &[r.as_fd(), r.as_fd()]).unwrap();
    let mut buf = [0u8; 16];
    let mut fds = Vec::new();
    let got = recv_with_fds(b.as_fd(), &mut buf, &mut fds).unwrap();
    assert_eq!((&buf[..got.len], fds.len(), got.truncated), (&b"hello"[..], 2, false));
    // Received descriptors are close-on-exec.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&fds[0]);
    // SAFETY: F_GETFD only reads the flags of a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    let cred = peer_cred(&b).unwrap();
    assert_eq!(cred.pid as u32, std::process::id());
}

#[test]
fn features_are_probed() {
    let f = process::probe_features();
    assert!(f.clone_pidfd, "the minimum kernel has CLONE_PIDFD");
}

#[test]
fn merge_env_sets_replaces_and_removes_in_order() {
    let base: Vec<Vec<u8>> = ["A=1", "B=2", "A=3", "C=4"].iter().map(|s| s.as_bytes().to_vec()).collect();
    let out = holden_sys_merge(base, &[(b"A", Some(b"9")), (b"C", None), (b"D", Some(b"x=y"))]);
    assert_eq!(out, ["B=2", "A=9", "D=x=y"]);
}

fn holden_sys_merge(base: Vec<Vec<u8>>, updates: &[(&[u8], Option<&[u8]>)]) -> Vec<String> {
    crate::process::merge_env(base, updates).into_iter().map(|e| String::from_utf8(e).unwrap()).collect()
}
