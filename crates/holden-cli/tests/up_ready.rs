//! Readiness, health checks and dependency conditions in `holden up`, against real processes:
//! `notify = "fd"`, `log`, `exec`, `tcp` and `http` readiness, locally and through an agent in
//! a network namespace of its own (`unshare -n`); a probe that hangs (killed at its timeout);
//! a service never ready (`ready_timeout`, restart policy); `depends_on` conditions, a start
//! that pulls dependencies in, a stop that stops dependents first, `restart = true`; a health
//! check that restarts an unhealthy service and leaves a healthy neighbour alone; readiness
//! after re-adoption. Needs root. Servers are busybox's `httpd` (in every VM guest too).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A port for this test: distinct per test and per run of the binary.
fn port(n: u16) -> u16 {
    20000 + (std::process::id() % 1000) as u16 * 10 + n
}

/// A document root with an index page, and the command of a busybox httpd serving it on
/// 127.0.0.1:`port` in the foreground.
fn httpd(dir: &Dir, port: u16) -> String {
    let root = dir.path("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "ok\n").unwrap();
    format!(r#"["busybox", "httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "{}"]"#, root.display())
}

/// Milliseconds of the first line of `out` that contains `needle`.
fn at(out: &str, needle: &str) -> u64 {
    events(out, needle).first().unwrap_or_else(|| panic!("no line with {needle:?}:\n{out}")).0
}

#[test]
fn fd_readiness_holds_a_dependent_until_the_newline_and_status_says_so() {
    let dir = Dir::new("ready-fd");
    let flag = dir.path("go");
    let up = Up::start(
        &dir,
        &format!(
            r#"
[services.db]
command = ["sh", "-c", "while [ ! -e {f} ]; do sleep 0.02; done; echo >&3; exec sleep 1000"]
ready = {{ notify = "fd" }}

[services.web]
command = ["sleep", "1001"]
depends_on = {{ db = "ready" }}
"#,
            f = flag.display()
        ),
    );
    up.wait_state("db", "running");
    let web = up.wait_for("web", "held", |s| s["waiting"].is_string());
    assert_eq!((web["state"].as_str(), web["waiting"].as_str()), (Some("starting"), Some("waiting for db: ready")));
    assert_eq!(up.service("db")["ready"], false);
    let table = stdout(&up.cli(&["status"]));
    assert!(table.contains("READY/HEALTH") && table.contains("waiting for db: ready"), "{table}");
    std::thread::sleep(scaled(Duration::from_millis(300)));
    assert_eq!(up.service("web")["state"], "starting", "web must wait for db's newline");
    std::fs::write(&flag, "").unwrap();
    let web = up.wait_state("web", "running");
    assert_eq!((web["ready"].as_bool(), web["waiting"].as_str()), (Some(true), None));
    assert_eq!(up.service("db")["ready"], true);
    let out = up.output();
    assert!(at(&out, "web: running") >= at(&out, "db: ready"), "{out}");
    up.stop(&dir, &[]);
}

#[test]
fn log_tcp_http_and_exec_readiness_locally() {
    let dir = Dir::new("ready-kinds");
    let (p1, p2) = (port(1), port(2));
    let up = Up::start(
        &dir,
        &format!(
            r#"
[services.logger]
command = ["sh", "-c", "sleep 0.2; echo Ready to accept connections; exec sleep 1000"]
ready = {{ log = "Ready to accept" }}

[services.tcp]
command = {tcp}
ready = {{ tcp = "127.0.0.1:{p1}" }}

[services.http]
command = {http}
ready = {{ http = "http://127.0.0.1:{p2}/index.html", interval = "200ms" }}

[services.exec]
command = ["sh", "-c", "sleep 0.3; touch {flag}; exec sleep 1000"]
ready = {{ exec = ["test", "-e", "{flag}"] }}

[services.last]
command = ["sleep", "1002"]
depends_on = {{ logger = "ready", tcp = "ready", http = "ready", exec = "ready" }}
"#,
            tcp = httpd(&dir, p1),
            http = httpd(&dir, p2),
            flag = dir.path("flag").display()
        ),
    );
    let last = up.wait_state("last", "running");
    assert_eq!(last["ready"], true);
    let out = up.output();
    for s in ["logger", "tcp", "http", "exec"] {
        assert_eq!(up.service(s)["ready"], true, "{s}");
        assert!(at(&out, "last: running") >= at(&out, &format!("{s}: ready")), "{s}\n{out}");
    }
    up.stop(&dir, &[]);
}

/// An agent in a network namespace of its own, its loopback up.
fn netns_agent(dir: &Dir) -> (std::process::Child, std::path::PathBuf) {
    let socket = dir.path("netns.sock");
    let proc = Command::new("unshare")
        .args(["-n", "sh", "-c", "busybox ip link set lo up && exec \"$0\" agent --log-level warn --socket \"$1\""])
        .arg(HOLDEN)
        .arg(&socket)
        .env(MARKER, &dir.0)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_socket(&socket);
    (proc, socket)
}

#[test]
fn probes_of_an_agent_service_run_in_its_network_namespace() {
    let dir = Dir::new("ready-netns");
    let (mut agent, socket) = netns_agent(&dir);
    let agent_ns = std::fs::read_link(format!("/proc/{}/ns/net", agent.id())).unwrap();
    assert_ne!(agent_ns, std::fs::read_link("/proc/self/ns/net").unwrap(), "the agent has a namespace of its own");
    let p = port(3);
    let up = Up::start(
        &dir,
        &format!(
            r#"
[agents.box]
socket = "{socket}"

[services.web]
agent = "box"
command = {http}
ready = {{ http = "http://127.0.0.1:{p}/", interval = "200ms" }}
health = {{ tcp = "127.0.0.1:{p}", interval = "200ms" }}

[services.probe]
agent = "box"
command = ["sleep", "1003"]
ready = {{ exec = ["sh", "-c", "test \"$(readlink /proc/self/ns/net)\" = '{ns}'"], interval = "200ms" }}
"#,
            socket = socket.display(),
            http = httpd(&dir, p),
            ns = agent_ns.display()
        ),
    );
    // Nothing listens on the port here: only a probe made in the agent's namespace passes.
    assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
    let web = up.wait_for("web", "healthy", |s| s["health"] == "healthy");
    assert_eq!(web["ready"], true);
    assert_eq!(up.wait_state("probe", "running")["ready"].as_bool(), Some(true));
    up.wait_for("probe", "ready", |s| s["ready"] == true);
    up.stop(&dir, &[agent.id() as i32]);
    kill(agent.id() as i32, 15);
    agent.wait().unwrap();
}

#[test]
fn a_hanging_probe_is_killed_and_a_service_never_ready_restarts_by_policy_then_fails() {
    let dir = Dir::new("ready-hang");
    let up = Up::start(
        &dir,
        r#"
[services.never]
command = ["sleep", "1004"]
ready = { exec = ["sleep", "1005"], timeout = "200ms", interval = "200ms" }
ready_timeout = "1s"
backoff = { initial = "100ms" }
start_limit = { burst = 2, interval = "60s" }
"#,
    );
    let s = up.wait_for("never", "failed", |s| s["state"] == "failed");
    assert_eq!(
        (s["restarts"].as_u64(), s["last_error"].as_str()),
        (Some(1), Some("start limit reached: 2 starts in 60s; last error: not ready within 1s")),
        "{s}"
    );
    let out = up.output();
    assert!(out.contains("never: stopping") && out.contains("not ready within 1s"), "{out}");
    // Every hung probe was killed at its timeout: none is left.
    wait_until(
        "no probe left",
        scaled(Duration::from_secs(3)),
        || !dir.leftovers(&[up.pid()]).iter().any(|(_, c)| c.contains("1005")),
        || format!("{:?}", dir.leftovers(&[up.pid()])),
    );
    up.stop(&dir, &[]);
}

#[test]
fn completed_waits_for_exit_0_and_a_failed_dependency_is_the_reason() {
    let dir = Dir::new("ready-completed");
    let up = Up::start(
        &dir,
        r#"
[services.init]
command = ["sh", "-c", "sleep 0.3"]

[services.app]
command = ["sleep", "1006"]
depends_on = { init = "completed" }

[services.bad]
command = ["sh", "-c", "exit 4"]
restart = "never"

[services.stuck]
command = ["sleep", "1007"]
depends_on = { bad = "completed" }
"#,
    );
    up.wait_state("app", "running");
    let out = up.output();
    assert!(at(&out, "app: running") >= at(&out, "init: exited"), "{out}");
    let stuck =
        up.wait_for("stuck", "told why", |s| s["waiting"].as_str().is_some_and(|w| w.contains("bad is exited")));
    assert_eq!(stuck["waiting"], "waiting for bad: completed (bad is exited: last exit code 4)");
    assert_eq!(stuck["state"], "starting");
    // Stopped while held: it gives up its start, which neither counts nor is an error
    // (regression: it counted a restart and showed "stopped before it started").
    assert!(up.cli(&["stop", "stuck"]).status.success());
    let s = up.wait_state("stuck", "stopped");
    assert_eq!((&s["restarts"], &s["last_error"]), (&serde_json::json!(0), &serde_json::Value::Null), "{s}");
    // A restart of app does not run its completed oneshot again.
    let init_runs = events(&up.output(), "init: running").len();
    assert!(up.cli(&["restart", "app"]).status.success());
    up.wait_for("app", "restarted", |s| s["state"] == "running" && s["restarts"] == 1);
    assert_eq!(events(&up.output(), "init: running").len(), init_runs, "{}", up.output());
    assert_eq!(up.service("init")["state"], "exited");
    up.stop(&dir, &[]);
}

#[test]
fn start_pulls_dependencies_in_stop_stops_dependents_first_and_restart_true_follows() {
    let dir = Dir::new("ready-pull");
    let up = Up::start(
        &dir,
        r#"
[services.db]
command = ["sh", "-c", "sleep 0.2; echo >&3; exec sleep 1008"]
ready = { notify = "fd" }

[services.web]
command = ["sh", "-c", "trap 'sleep 0.3; exit 0' TERM; sleep 1009 & wait"]
depends_on = { db = "ready" }

[services.follower]
command = ["sleep", "1010"]
depends_on = { db = { condition = "ready", restart = true } }
"#,
    );
    for s in ["web", "follower"] {
        up.wait_state(s, "running");
    }
    // Stop db: web and follower stop first, db only once they are down.
    assert!(up.cli(&["stop", "db"]).status.success());
    for s in ["db", "web", "follower"] {
        up.wait_state(s, "stopped");
    }
    let out = up.output();
    assert!(at(&out, "db: stopping") >= at(&out, "web: stopped"), "{out}");
    // Start web: db comes up first, and web once db is ready.
    assert!(up.cli(&["start", "web"]).status.success());
    up.wait_state("web", "running");
    let out = up.output();
    let db_ready = events(&out, "db: ready").last().unwrap().0;
    assert!(events(&out, "web: running").last().unwrap().0 >= db_ready, "{out}");
    assert_eq!(up.service("follower")["state"], "stopped", "only what web depends on is pulled in");
    // restart = true: follower restarts when db is back; web (no restart) keeps its process.
    assert!(up.cli(&["start", "follower"]).status.success());
    let before = up.wait_state("follower", "running")["pid"].clone();
    let web_pid = up.service("web")["pid"].clone();
    assert!(up.cli(&["restart", "db"]).status.success());
    up.wait_for("follower", "restarted", |s| s["state"] == "running" && s["pid"] != before);
    assert_eq!(up.service("web")["pid"], web_pid);
    up.stop(&dir, &[]);
}

#[test]
fn an_unhealthy_service_is_restarted_and_a_healthy_neighbour_is_untouched() {
    let dir = Dir::new("health");
    let sick = dir.path("sick");
    let up = Up::start(
        &dir,
        &format!(
            r#"
[services.flaky]
command = ["sleep", "1011"]
health = {{ exec = ["sh", "-c", "test ! -e {sick}"], interval = "100ms", failures = 3 }}
backoff = {{ initial = "100ms" }}

[services.steady]
command = ["sleep", "1012"]
health = {{ exec = ["true"], interval = "100ms" }}
"#,
            sick = sick.display()
        ),
    );
    let first = up.wait_for("flaky", "healthy", |s| s["health"] == "healthy")["pid"].clone();
    let steady = up.wait_for("steady", "healthy", |s| s["health"] == "healthy");
    let events_client = Command::new(HOLDEN)
        .args(["events", "--json", "--control-socket"])
        .arg(&up.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(scaled(Duration::from_millis(200)));
    std::fs::write(&sick, "").unwrap();
    up.wait_for("flaky", "restarted", |s| s["pid"] != first && s["pid"].is_i64());
    std::fs::remove_file(&sick).unwrap();
    up.wait_for("flaky", "healthy again", |s| s["health"] == "healthy");
    let out = up.output();
    // Three failures in a row stop it (a check of the new process may fail too before the
    // file is gone: only those before the stop count here).
    let before_stop = &out[..out.find("flaky: stopping").expect("stopped")];
    assert_eq!(events(before_stop, "flaky: health check failed").len(), 3, "{out}");
    assert!(out.contains("flaky: stopping") && out.contains("unhealthy: 3 checks failed in a row"), "{out}");
    let now = up.service("steady");
    assert_eq!((&now["pid"], now["restarts"].as_u64()), (&steady["pid"], Some(0)));
    kill(events_client.id() as i32, 15);
    let stream = events_client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&stream.stdout);
    assert!(text.contains("\"change\":\"unhealthy\"") && text.contains("\"change\":\"healthy\""), "{text}");
    up.stop(&dir, &[]);
}

#[test]
fn readiness_survives_readoption() {
    let dir = Dir::new("ready-adopt");
    let p = port(4);
    let services = format!(
        r#"
[services.said]
command = ["sh", "-c", "echo >&3; exec sleep 1013"]
ready = {{ notify = "fd" }}

[services.probed]
command = {http}
ready = {{ http = "http://127.0.0.1:{p}/", interval = "200ms" }}
"#,
        http = httpd(&dir, p)
    );
    let up = Up::start(&dir, &services);
    let said = up.wait_for("said", "ready", |s| s["ready"] == true)["pid"].clone();
    up.wait_for("probed", "ready", |s| s["ready"] == true);
    up.crash();
    let up = Up::start(&dir, &services);
    // The control socket is up before the adoption is done: wait for it.
    wait_until(
        "adoption",
        scaled(Duration::from_secs(5)),
        || up.output().contains("said: adopting pid"),
        || up.output(),
    );
    // Said once, recorded: ready at once. Probed: probed again.
    let s = up.wait_for("said", "ready", |s| s["ready"] == true);
    assert_eq!(s["pid"], said);
    up.wait_for("probed", "ready", |s| s["ready"] == true);
    up.stop(&dir, &[]);
}

/// Run as a service by the test below: once `$HELPER_FLAG` exists, says `READY=1` on
/// `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace), then waits to be stopped.
#[test]
#[ignore = "a helper, run as a service by systemd_readiness_locally_and_through_an_agent"]
fn sd_notify_service() {
    use std::os::linux::net::SocketAddrExt;
    let (Ok(target), Ok(flag)) = (std::env::var("NOTIFY_SOCKET"), std::env::var("HELPER_FLAG")) else { return };
    while !std::path::Path::new(&flag).exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = match target.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap(),
        None => std::os::unix::net::SocketAddr::from_pathname(&target).unwrap(),
    };
    let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sock.send_to_addr(b"STATUS=up\nREADY=1\n", &addr).unwrap();
    std::thread::sleep(Duration::from_secs(1000));
}

#[test]
fn systemd_readiness_locally_and_through_an_agent() {
    let dir = Dir::new("ready-sd");
    let agent = Agent::start(&dir, "box");
    let exe = std::env::current_exe().unwrap();
    let flag = dir.path("flag");
    let service = |name: &str, agent: &str| {
        format!(
            r#"
[services.{name}]
{agent}
command = ["{exe}", "--exact", "sd_notify_service", "--ignored", "--test-threads=1", "-q"]
env = {{ HELPER_FLAG = "{flag}" }}
ready = {{ notify = "systemd" }}
"#,
            exe = exe.display(),
            flag = flag.display()
        )
    };
    let config = format!("[agents.box]\nsocket = \"{}\"\n", agent.socket.display())
        + &service("local", "")
        + &service("remote", "agent = \"box\"");
    let up = Up::start(&dir, &config);
    let local = up.wait_state("local", "running");
    up.wait_state("remote", "running");
    // The agent service's socket is in the agent's directory, the local one abstract.
    let pid = local["pid"].as_i64().unwrap() as i32;
    let target =
        wait_some("NOTIFY_SOCKET", scaled(Duration::from_secs(5)), || holden_cli::env_value(pid, "NOTIFY_SOCKET"));
    assert!(target.starts_with("@holden-notify-"), "{target}");
    let remote_pid = up.service("remote")["pid"].as_i64().unwrap() as i32;
    let remote_target = wait_some("NOTIFY_SOCKET", scaled(Duration::from_secs(5)), || {
        holden_cli::env_value(remote_pid, "NOTIFY_SOCKET")
    });
    assert!(std::path::Path::new(&remote_target).starts_with(&dir.0), "{remote_target}");
    // Someone else's READY=1 is ignored: the kernel says who sent it.
    {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&target[1..]).unwrap();
        std::os::unix::net::UnixDatagram::unbound().unwrap().send_to_addr(b"READY=1", &addr).unwrap();
    }
    wait_until(
        "the impostor is ignored",
        scaled(Duration::from_secs(5)),
        || up.output().contains("not the service's: ignored"),
        || up.output(),
    );
    assert_eq!(up.service("local")["ready"], false);
    std::fs::write(&flag, "").unwrap();
    up.wait_for("local", "ready", |s| s["ready"] == true);
    up.wait_for("remote", "ready", |s| s["ready"] == true);
    up.stop(&dir, &[agent.pid()]);
    assert!(!std::path::Path::new(&remote_target).exists(), "the socket file is removed with the service");
}

#[test]
fn regression_restart_true_dependents_are_not_restarted_by_an_adoption() {
    let dir = Dir::new("ready-adopt-restart");
    // "app" is adopted before "zdb" (name order): zdb is not up yet when app is looked at.
    let services = r#"
[services.app]
command = ["sleep", "1014"]
depends_on = { zdb = { condition = "ready", restart = true } }

[services.zdb]
command = ["sh", "-c", "echo >&3; exec sleep 1015"]
ready = { notify = "fd" }
"#;
    let up = Up::start(&dir, services);
    let app = up.wait_state("app", "running")["pid"].clone();
    up.wait_for("zdb", "ready", |s| s["ready"] == true);
    up.crash();
    let up = Up::start(&dir, services);
    wait_until(
        "adoption",
        scaled(Duration::from_secs(5)),
        || up.output().contains("zdb: adopting pid"),
        || up.output(),
    );
    up.wait_for("zdb", "ready", |s| s["ready"] == true);
    std::thread::sleep(scaled(Duration::from_millis(300)));
    let now = up.service("app");
    assert_eq!((&now["pid"], &now["state"]), (&app, &"running".into()), "app was restarted: {}", up.output());
    assert!(!up.output().contains("app: restarting"), "{}", up.output());
    up.stop(&dir, &[]);
}

#[test]
fn regression_a_readiness_pipe_outlives_an_orchestrator_crash() {
    let dir = Dir::new("ready-fd-crash");
    let flag = dir.path("go");
    let services = format!(
        r#"
[services.db]
command = ["sh", "-c", "while [ ! -e {f} ]; do sleep 0.02; done; echo >&3; exec sleep 1016"]
ready = {{ notify = "fd" }}

[services.web]
command = ["sleep", "1017"]
depends_on = {{ db = "ready" }}
"#,
        f = flag.display()
    );
    let up = Up::start(&dir, &services);
    let db = up.wait_state("db", "running")["pid"].clone();
    up.crash();
    // The newline comes while no orchestrator runs: it used to meet no reader (SIGPIPE), and
    // db died; the fd holder keeps the pipe's read end as it keeps the log pipes.
    std::fs::write(&flag, "").unwrap();
    std::thread::sleep(scaled(Duration::from_millis(200)));
    let up = Up::start(&dir, &services);
    let now = up.wait_for("db", "ready", |s| s["ready"] == true);
    assert_eq!(now["pid"], db, "db survived and was adopted: {}", up.output());
    up.wait_state("web", "running");
    up.stop(&dir, &[]);
}

#[test]
fn regression_a_crash_leaves_no_dead_notify_socket_in_the_agent_directory() {
    let dir = Dir::new("ready-sd-crash");
    let agent = Agent::start(&dir, "box");
    // Not ready before the crash: its socket file is still there when the orchestrator dies.
    let flag = dir.path("flag");
    let config = format!(
        r#"[agents.box]
socket = "{socket}"

[services.remote]
agent = "box"
command = ["{exe}", "--exact", "sd_notify_service", "--ignored", "--test-threads=1", "-q"]
env = {{ HELPER_FLAG = "{flag}" }}
ready = {{ notify = "systemd" }}
restart = "always"
"#,
        socket = agent.socket.display(),
        exe = std::env::current_exe().unwrap().display(),
        flag = flag.display()
    );
    let sockets = || {
        std::fs::read_dir(agent.socket.parent().unwrap())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("holden-notify-"))
            .count()
    };
    let up = Up::start(&dir, &config);
    let first = up.wait_state("remote", "running")["pid"].clone();
    wait_until("its socket", scaled(Duration::from_secs(5)), || sockets() == 1, String::new);
    up.crash();
    let up = Up::start(&dir, &config);
    up.wait_for("remote", "adopted", |s| s["state"] == "running" && s["pid"] == first);
    // The next process gets a socket of its own; the killed orchestrator's is dead.
    kill(first.as_i64().unwrap() as i32, 9);
    up.wait_for("remote", "running again", |s| s["state"] == "running" && s["pid"] != first);
    std::fs::write(&flag, "").unwrap();
    up.wait_for("remote", "ready", |s| s["ready"] == true);
    // The new process's socket is removed once it said READY=1. Before: the dead socket file
    // of the killed orchestrator stayed for good.
    assert_eq!(sockets(), 0, "no socket file left\n{}", up.output());
    up.stop(&dir, &[agent.pid()]);
}
