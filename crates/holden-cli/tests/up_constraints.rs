//! Constraints in `holden up`: a local service and an agent service with `user`, `group`,
//! `nice`, `oom_score_adj` and `rlimits`, read back from `/proc`; configuration errors name the
//! key. Needs root.

mod common;

use std::process::Command;

use common::*;

const CONSTRAINTS: &str = r#"user = "nobody"
group = "65533"
nice = 5
oom_score_adj = 500
rlimits = { nofile = 1024, core = 0, stack = "8388608:infinity" }
"#;

/// uid, gid, groups, nice, oom_score_adj and three limits of `pid`, as `/proc` shows them.
fn observed(pid: i64) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |f: &str| {
        status.lines().find_map(|l| l.strip_prefix(f)).unwrap_or("").split_whitespace().next().unwrap_or("").to_owned()
    };
    let groups = status.lines().find_map(|l| l.strip_prefix("Groups:")).unwrap_or("").trim().to_owned();
    let nice = holden_cli::stat_fields(pid as i32).unwrap()[16].clone();
    let oom = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let limit = |name: &str| {
        let l = limits.lines().find(|l| l.starts_with(name)).unwrap();
        l[name.len()..].split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    };
    format!(
        "uid {} gid {} groups {groups} nice {nice} oom {} nofile {} core {} stack {}",
        field("Uid:"),
        field("Gid:"),
        oom.trim(),
        limit("Max open files"),
        limit("Max core file size"),
        limit("Max stack size")
    )
}

#[test]
fn services_run_with_their_constraints_locally_and_through_an_agent() {
    let dir = Dir::new("constraints");
    let agent = Agent::start(&dir, "qm");
    let config = format!(
        "[agents.qm]\nsocket = \"{}\"\n\n[services.here]\ncommand = [\"sleep\", \"1000\"]\n{CONSTRAINTS}\n\
         [services.there]\ncommand = [\"sleep\", \"1001\"]\nagent = \"qm\"\n{CONSTRAINTS}",
        agent.socket.display()
    );
    let up = Up::start(&dir, &config);
    let want = "uid 65534 gid 65533 groups 65533 nice 5 oom 500 nofile 1024 1024 core 0 0 stack 8388608 unlimited";
    for name in ["here", "there"] {
        let pid = up.wait_state(name, "running")["pid"].as_i64().unwrap();
        assert_eq!(observed(pid), want, "{name}");
    }
    up.stop(&dir, &[agent.pid()]);
}

#[test]
fn constraint_errors_name_the_key_and_a_missing_local_user_is_caught_at_check() {
    let dir = Dir::new("constraints-bad");
    let check = |extra: &str| {
        write_config(&dir, &format!("[services.s]\ncommand = [\"true\"]\n{extra}\n"));
        let out = Command::new(HOLDEN).args(["check", "-c"]).arg(dir.path("holden.toml")).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{extra}: {}", stdout(&out));
        stderr(&out)
    };
    for (extra, needle) in [
        ("nice = 20", "nice must be from -20 to 19"),
        ("oom_score_adj = -1001", "oom_score_adj must be from -1000 to 1000"),
        ("rlimits = { files = 1 }", "rlimits.files: unknown resource"),
        ("rlimits = { nofile = \"2:1\" }", "soft limit is above the hard limit"),
        ("rlimits = { nofile = \"lots\" }", "\"lots\" is not a number"),
        ("user = \"a:b\"", "user must be a name or a number"),
        ("user = \"holden-no-such-user\"", "no user \"holden-no-such-user\" in /etc/passwd"),
        ("group = \"holden-no-such-group\"", "no group \"holden-no-such-group\" in /etc/group"),
    ] {
        let err = check(extra);
        assert!(err.contains(needle) && err.contains("holden.toml"), "{extra}: {err}");
    }
    // An agent service's user is the agent's to resolve (in its container): not checked here.
    write_config(
        &dir,
        "[agents.qm]\nsocket = \"/run/qm.sock\"\n[services.s]\ncommand = [\"true\"]\nagent = \"qm\"\nuser = \"holden-no-such-user\"\n",
    );
    let out = Command::new(HOLDEN).args(["check", "-c"]).arg(dir.path("holden.toml")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
