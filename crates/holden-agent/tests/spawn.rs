//! Spawning: exec failures, fd hygiene, stdio, environment, directory, limits, sessions.

mod common;
use common::*;
use std::io::{Read, Write};

fn read_all(mut f: std::fs::File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn missing_program_is_exec_failed_enoent_and_leaves_no_child() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    for prog in ["holden-no-such-program", "/nonexistent/dir/prog"] {
        let err = holden::Command::new(prog).spawn_via(&mut client).unwrap_err();
        assert_eq!(err.exec_errno(), Some(2), "{err}");
        match err {
            holden::Error::Agent(holden::AgentError::ExecFailed { message, .. }) => {
                assert!(message.contains(prog) && message.contains("no such file"), "{message}")
            }
            other => panic!("{other}"),
        }
    }
    assert_no_children(agent.pid());
    // The same program run locally reports the same errno.
    let err = holden::Command::new("holden-no-such-program").spawn().unwrap_err();
    assert_eq!(err.exec_errno(), Some(2), "{err}");
}

#[test]
fn non_executable_file_is_exec_failed_eacces() {
    require_root();
    let agent = TestAgent::start(&[]);
    let file = agent.dir.0.join("not-executable");
    std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
    let mut client = agent.client();
    let err = holden::Command::new(&file).spawn_via(&mut client).unwrap_err();
    assert_eq!(err.exec_errno(), Some(13), "{err}");
    // A directory on PATH holding only a non-executable match gives EACCES too, like execvp.
    let err = holden::Command::new("not-executable").env("PATH", &agent.dir.0).spawn_via(&mut client).unwrap_err();
    assert_eq!(err.exec_errno(), Some(13), "{err}");
    assert_no_children(agent.pid());
}

#[test]
fn bad_cwd_is_spawn_failed_at_cwd() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    let err = holden::Command::new("true").current_dir("/nonexistent-holden").spawn_via(&mut client).unwrap_err();
    match err {
        holden::Error::Agent(holden::AgentError::SpawnFailed { stage, errno, message }) => {
            assert_eq!((stage.as_str(), errno), ("cwd", 2));
            assert!(message.contains("/nonexistent-holden"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert_no_children(agent.pid());
}

/// Runs `cmd` (spawned by `spawn`) with stdout on a pipe; returns what it wrote, once it has
/// ended successfully.
fn stdout_of(cmd: &mut holden::Command, spawn: impl FnOnce(&mut holden::Command) -> holden::Child) -> String {
    let (r, w) = pipe();
    cmd.stdout(w);
    let mut child = spawn(cmd);
    // Drop our copy of the write end, or reading would never see the end.
    cmd.stdout(holden::Stdio::null());
    let out = read_all(r);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {out}");
    out
}

fn fd_listing(spawn: impl FnOnce(&mut holden::Command) -> holden::Child) -> Vec<String> {
    stdout_of(holden::Command::new("ls").arg("/proc/self/fd"), spawn).lines().map(str::to_owned).collect()
}

#[test]
fn spawned_children_get_only_fds_0_1_2() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    // ls's own directory descriptor for /proc/self/fd is the fourth entry.
    let expected = ["0", "1", "2", "3"];
    assert_eq!(fd_listing(|c| c.spawn_via(&mut client).unwrap()), expected);
    assert_eq!(fd_listing(|c| c.spawn().unwrap()), expected);
    // Even with many connections open in the agent.
    let _extra: Vec<_> = (0..20).map(|_| agent.client()).collect();
    assert_eq!(fd_listing(|c| c.spawn_via(&mut client).unwrap()), expected);
}

#[test]
fn pipes_carry_stdin_and_stdout() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    let (in_r, mut in_w) = {
        let (r, w) = std::io::pipe().unwrap();
        (std::os::fd::OwnedFd::from(r), std::fs::File::from(std::os::fd::OwnedFd::from(w)))
    };
    let (out_r, out_w) = pipe();
    let mut cmd = holden::Command::new("tr");
    cmd.args(["a-z", "A-Z"]).stdin(in_r).stdout(out_w);
    let mut child = cmd.spawn_via(&mut client).unwrap();
    drop(cmd);
    in_w.write_all(b"hello through the agent\n").unwrap();
    drop(in_w);
    assert_eq!(read_all(out_r), "HELLO THROUGH THE AGENT\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn default_stdin_is_dev_null_and_null_stdout_discards() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    let mut cmd = holden::Command::new("sh");
    let out = stdout_of(cmd.args(["-c", "cat; readlink /proc/self/fd/0"]), |c| c.spawn_via(&mut client).unwrap());
    assert_eq!(out, "/dev/null\n");
    let mut child =
        holden::Command::new("echo").arg("gone").stdout(holden::Stdio::null()).spawn_via(&mut client).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn environment_directory_umask_limits_and_session() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    let script = "echo \"$A|$B|${HOME-unset}\"; pwd; umask; ulimit -n; cut -d' ' -f6 /proc/$$/stat; echo $$";
    let run = |cmd: &mut holden::Command, client: &mut holden::Agent| {
        stdout_of(cmd, |c| c.spawn_via(client).unwrap()).lines().map(str::to_owned).collect::<Vec<_>>()
    };
    let mut cmd = holden::Command::new("sh");
    cmd.args(["-c", script])
        .env_clear()
        .env("A", "1")
        .env("B", "two words")
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/tmp")
        .umask(0o027)
        .rlimit("nofile", Some(77), Some(77))
        .setsid(true);
    let lines = run(&mut cmd, &mut client);
    assert_eq!(lines[0], "1|two words|unset");
    assert_eq!(lines[1], "/tmp");
    assert_eq!(lines[2], "0027");
    assert_eq!(lines[3], "77");
    assert_eq!(lines[4], lines[5], "a new session is led by the child");

    // Without env_clear, changes apply on top of the agent's environment.
    let mut cmd = holden::Command::new("sh");
    cmd.args(["-c", "echo \"$A|${HOME-unset}|${PATH:+path}\""]).env("A", "x").env_remove("HOME");
    assert_eq!(run(&mut cmd, &mut client)[0], "x|unset|path");
}

#[test]
fn children_keep_the_agents_original_descriptor_limit() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    let out = stdout_of(holden::Command::new("sh").args(["-c", "ulimit -Sn"]), |c| c.spawn_via(&mut client).unwrap());
    let nofile = holden_sys::process::rlimit_resource("nofile").unwrap();
    let ours = holden_sys::fd::getrlimit(nofile).unwrap().0;
    assert_eq!(out.trim(), ours.to_string());
}

#[test]
fn signal_dispositions_and_mask_are_reset() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    let mut cmd = holden::Command::new("grep");
    cmd.args(["-E", "^Sig(Blk|Ign)", "/proc/self/status"]);
    let out = stdout_of(&mut cmd, |c| c.spawn_via(&mut client).unwrap());
    assert_eq!(out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

#[test]
fn pid_is_read_from_fdinfo() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    let mut child = holden::Command::new("sleep").arg("5").spawn_via(&mut client).unwrap();
    let pid = child.pid().expect("visible in our pid namespace");
    assert_eq!(pid, child.spawner_pid(), "same namespace, same pid");
    assert!(children_of(agent.pid()).iter().any(|(p, _)| *p == pid));
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
}

#[test]
fn an_agent_started_with_closed_stdio_does_not_leak_its_sockets_into_children() {
    require_root();
    let dir = TempDir::new("closedstdio");
    let socket = dir.0.join("agent.sock");
    let launcher = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {AGENT} --socket {} <&- >&- 2>&-", socket.display()))
        .spawn()
        .unwrap();
    // The guard stops the agent (sh exec'd into it) even if an assertion below fails.
    let agent = TestAgent { proc: Some(launcher), socket: socket.clone(), dir };
    agent.wait_ready();
    let mut client = holden::Agent::connect(&socket).unwrap();
    let mut child = holden::Command::new("sleep").arg("5").spawn_via(&mut client).unwrap();
    let pid = child.pid().unwrap();
    let link = |n: i32| std::fs::read_link(format!("/proc/{pid}/fd/{n}")).unwrap().to_string_lossy().into_owned();
    // Closed stdio is filled with /dev/null (Rust's runtime does it before main), so none of the
    // agent's sockets lands on 0-2 and leaks into children.
    assert_eq!([link(0), link(1), link(2)], ["/dev/null", "/dev/null", "/dev/null"]);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(agent);
}
