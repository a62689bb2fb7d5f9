//! Constraints applied at spawn, locally and through the agent: user, group, nice,
//! oom_score_adj and rlimits, read back from `/proc` while the process runs; bad values and
//! callers that may not choose a user get named errors.

mod common;
use common::*;

/// What `/proc/PID` says about a running process: uid, gid, groups, nice, oom_score_adj, and
/// the `Max core file size` and `Max open files` lines of `limits`.
fn observed(pid: i32) -> (String, String, String, i64, i64, String, String) {
    let first = |field: &str| proc_status(pid, field).unwrap().split_whitespace().next().unwrap_or("").to_owned();
    let groups = proc_status(pid, "Groups").unwrap_or_default().trim().to_owned();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis: state is field 3, nice field 19.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let nice: i64 = after.split(' ').nth(16).unwrap().parse().unwrap();
    let oom: i64 = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap().trim().parse().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let limit = |name: &str| {
        let l = limits.lines().find(|l| l.starts_with(name)).unwrap();
        l[name.len()..].split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    };
    (first("Uid"), first("Gid"), groups, nice, oom, limit("Max core file size"), limit("Max open files"))
}

fn constrained(cmd: &mut holden::Command) -> &mut holden::Command {
    cmd.user("nobody").group("65533").nice(7).oom_score_adj(321).rlimit("core", Some(0), Some(0)).rlimit(
        "nofile",
        Some(100),
        Some(200),
    )
}

#[test]
fn user_group_nice_oom_score_adj_and_rlimits_are_applied_locally_and_through_the_agent() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    let want =
        |uid: &str| (uid.to_owned(), "65533".to_owned(), "65533".to_owned(), 7, 321, "0 0".into(), "100 200".into());
    // Locally, `nobody` from this system's /etc/passwd.
    let mut local = constrained(holden::Command::new("sleep").arg("30")).spawn().unwrap();
    let pid = local.pid().unwrap();
    assert_eq!(observed(pid), want("65534"), "local");
    local.kill().unwrap();
    local.wait().unwrap();
    // Through the agent, resolved in the agent's /etc/passwd.
    let mut remote = constrained(holden::Command::new("sleep").arg("30")).spawn_via(&mut client).unwrap();
    let pid = remote.pid().unwrap();
    assert_eq!(observed(pid), want("65534"), "through the agent");
    remote.kill().unwrap();
    remote.wait().unwrap();
    // A user alone brings its primary group; a number that names no one is taken as is.
    let mut c = holden::Command::new("sleep").arg("30").user("4242").spawn_via(&mut client).unwrap();
    let o = observed(c.pid().unwrap());
    assert_eq!((o.0.as_str(), o.1.as_str(), o.2.as_str()), ("4242", "4242", "4242"));
    c.kill().unwrap();
    c.wait().unwrap();
    assert_no_children(agent.pid());
}

#[test]
fn bad_constraints_are_named_errors() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    let invalid = |cmd: &mut holden::Command, client: &mut holden::Agent| match cmd.spawn_via(client).unwrap_err() {
        holden::Error::Agent(holden::AgentError::InvalidParameter { parameter, reason }) => (parameter, reason),
        other => panic!("{other}"),
    };
    let (p, r) = invalid(holden::Command::new("true").user("holden-no-such-user"), &mut client);
    assert_eq!(p, "user");
    assert!(r.contains("holden-no-such-user") && r.contains("/etc/passwd"), "{r}");
    let (p, _) = invalid(holden::Command::new("true").group("holden-no-such-group"), &mut client);
    assert_eq!(p, "group");
    // The library checks ranges before anything is sent; the agent checks them too.
    assert!(matches!(
        holden::Command::new("true").nice(20).spawn_via(&mut client),
        Err(holden::Error::InvalidCommand(_))
    ));
    for (param, value) in
        [("nice", "-21"), ("oom_score_adj", "1001"), ("user", "\"a:b\""), ("group", "\"\""), ("cgroup", "0")]
    {
        let call = format!(
            "{{\"method\":\"io.holden.Agent.Spawn\",\"parameters\":{{\"argv\":[\"true\"],\"{param}\":{value}}}}}\0"
        );
        let reply = String::from_utf8(raw_exchange(&agent.socket, call.as_bytes()).unwrap()).unwrap();
        assert!(reply.contains("io.holden.Agent.InvalidParameter") && reply.contains(param), "{param}: {reply}");
    }
    // Locally, an unknown user is an error before anything runs.
    let err = holden::Command::new("true").user("holden-no-such-user").spawn().unwrap_err();
    assert!(err.to_string().contains("holden-no-such-user"), "{err}");
    assert_no_children(agent.pid());
}

/// A caller whose processes run as itself may not choose another user: nobody asking for root
/// would otherwise get it.
#[test]
fn a_caller_running_as_itself_may_not_choose_a_user() {
    require_root();
    let agent = TestAgent::start(&["--socket-mode", "0666", "--allow-uid", "65534"]);
    let reply = spawn_as_nobody(&agent, "\"user\":\"root\"");
    assert!(reply.contains("io.holden.Agent.PermissionDenied"), "{reply}");
    assert_no_children(agent.pid());
}

/// A caller whose processes run as itself used to get its `rlimits` applied while the child
/// still had the agent's privileges, so that it could raise its hard limits; `nice` and
/// `oom_score_adj` would have done the same. They are now applied after the child has become
/// the caller: lowering the nice value is refused (stage nice), raising it works.
#[test]
fn regression_a_caller_running_as_itself_sets_limits_with_its_own_privileges() {
    require_root();
    let agent = TestAgent::start(&["--socket-mode", "0666", "--allow-uid", "65534"]);
    let as_nobody = |params: &str| spawn_as_nobody(&agent, params);
    let reply = as_nobody("\"nice\":-5");
    assert!(reply.contains("io.holden.Agent.SpawnFailed") && reply.contains("\"stage\":\"nice\""), "{reply}");
    let reply = as_nobody("\"oom_score_adj\":-500");
    assert!(reply.contains("io.holden.Agent.SpawnFailed") && reply.contains("\"stage\":\"oom_score_adj\""), "{reply}");
    let reply = as_nobody("\"rlimits\":[{\"resource\":\"nofile\",\"soft\":1048576,\"hard\":1048576}]");
    assert!(reply.contains("io.holden.Agent.SpawnFailed") && reply.contains("\"stage\":\"rlimit\""), "{reply}");
    let reply = as_nobody("\"nice\":5,\"oom_score_adj\":500");
    assert!(reply.contains("\"pid\""), "raising them is the caller's right: {reply}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_no_children(agent.pid());
}

/// A `Spawn` of `true` with `params` (JSON members) sent by uid 65534 (this binary's
/// [`raw_client_role`], copied where that uid may run it); the agent's reply.
fn spawn_as_nobody(agent: &TestAgent, params: &str) -> String {
    let exe = agent.dir.0.join("client");
    if !exe.exists() {
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
        std::fs::set_permissions(&exe, mode).unwrap();
    }
    let call = format!("{{\"method\":\"io.holden.Agent.Spawn\",\"parameters\":{{\"argv\":[\"true\"],{params}}}}}");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .arg(&exe)
        .args(["--exact", "raw_client_role", "--nocapture", "--test-threads=1"])
        .env("HOLDEN_TEST_RAW_CLIENT", &agent.socket)
        .env("HOLDEN_TEST_RAW_CALL", call)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The client of [`spawn_as_nobody`]: this binary, started as
/// uid 65534 with `HOLDEN_TEST_RAW_CLIENT` naming the socket. In a normal run it does nothing.
#[test]
fn raw_client_role() {
    let Ok(socket) = std::env::var("HOLDEN_TEST_RAW_CLIENT") else { return };
    let mut call = std::env::var("HOLDEN_TEST_RAW_CALL").unwrap().into_bytes();
    call.push(0);
    let reply = raw_exchange(std::path::Path::new(&socket), &call).expect("a reply");
    println!("REPLY: {}", String::from_utf8_lossy(&reply));
}
