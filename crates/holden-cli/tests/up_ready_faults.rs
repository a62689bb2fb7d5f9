//! Regressions of readiness, health checks and dependency conditions under faults, against
//! real processes: an agent that stops answering is not the service's failure, a dependency
//! that exited 0 comes back for what needs it up, a service stopped for a failed check is no
//! completion. Needs root.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn regression_an_agent_that_does_not_answer_makes_no_service_unhealthy() {
    let dir = Dir::new("probe-agent-stopped");
    let agent = Agent::start(&dir, "box");
    let services = format!(
        r#"[agents.box]
socket = "{socket}"

[services.web]
agent = "box"
command = ["sleep", "1031"]
health = {{ exec = ["true"], interval = "100ms", timeout = "{timeout}ms", failures = 2 }}
"#,
        socket = agent.socket.display(),
        timeout = scaled(Duration::from_millis(300)).as_millis()
    );
    let up = Up::start(&dir, &services);
    let first = up.wait_for("web", "healthy", |s| s["health"] == "healthy")["pid"].clone();
    // The agent is SIGSTOPped: its socket still takes connections, and answers nothing.
    let stopped = Stopped::new(agent.pid());
    wait_until(
        "probes without an answer",
        scaled(Duration::from_secs(10)),
        || up.output().matches("health check not run (not counted)").count() >= 3,
        || up.output(),
    );
    drop(stopped);
    // Before: each probe that got no answer counted as failed, and web was restarted.
    let s = up.wait_for("web", "healthy again", |s| s["health"] == "healthy");
    assert_eq!((&s["pid"], &s["restarts"]), (&first, &serde_json::json!(0)), "{}", up.output());
    assert!(!up.output().contains("unhealthy"), "{}", up.output());
    up.stop(&dir, &[agent.pid()]);
}

#[test]
fn regression_a_start_brings_back_a_dependency_that_exited_0_for_what_needs_it_ready() {
    let dir = Dir::new("dep-exited-0");
    let up = Up::start(
        &dir,
        r#"
[services.db]
command = ["sh", "-c", "trap 'exit 0' TERM; echo >&3; while :; do sleep 0.05; done"]
ready = { notify = "fd" }

[services.web]
command = ["sleep", "1032"]
depends_on = { db = "ready" }
"#,
    );
    up.wait_state("web", "running");
    // db ends with status 0: on-failure does not restart it.
    assert!(up.cli(&["kill", "db"]).status.success());
    up.wait_for("db", "exited 0", |s| s["state"] == "exited" && s["last_exit"] == "code 0");
    // Before: web was held for ever ("waiting for db: ready (db is exited: last exit code 0)").
    assert!(up.cli(&["restart", "web"]).status.success());
    let s = up.wait_for("web", "running again", |s| s["state"] == "running" && s["restarts"] == 1);
    assert_eq!(up.service("db")["ready"], true, "{s}");
    up.stop(&dir, &[]);
}

#[test]
fn regression_a_service_stopped_for_a_failed_check_is_no_completion() {
    let dir = Dir::new("dep-failed-check");
    let flag = dir.path("sick");
    let services = format!(
        r#"
[services.db]
command = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]
restart = "never"
health = {{ exec = ["sh", "-c", "! [ -e {flag} ]"], interval = "100ms", failures = 1 }}

[services.after]
command = ["sleep", "1033"]
depends_on = {{ db = "completed" }}
"#,
        flag = flag.display()
    );
    let up = Up::start(&dir, &services);
    up.wait_for("db", "healthy", |s| s["health"] == "healthy");
    std::fs::write(&flag, "").unwrap();
    // Unhealthy: stopped (SIGTERM, exit 0) and, restart = "never", left exited.
    let db = up.wait_for("db", "stopped for its check", |s| s["state"] == "exited");
    assert_eq!(db["last_exit"], "code 0", "{db}");
    // Before: that exit 0 counted as completed, and `after` started.
    let after = up.wait_for("after", "told why", |s| {
        s["waiting"].as_str().is_some_and(|w| w.contains("db is exited") && w.contains("unhealthy"))
    });
    assert_eq!(after["state"], "starting", "{after}");
    std::thread::sleep(scaled(Duration::from_millis(300)));
    assert_eq!(up.service("after")["state"], "starting", "{}", up.output());
    up.stop(&dir, &[]);
}

#[test]
fn regression_a_restart_does_not_run_a_oneshot_again_for_a_dependency_already_up() {
    // Before the fix of the fix: a dependency that exited 0 was started again for any
    // dependent in the start's closure, also one already running (db here), so `init` ran
    // again at every restart of app.
    let dir = Dir::new("dep-oneshot-chain");
    let up = Up::start(
        &dir,
        r#"
[services.init]
command = ["true"]

[services.db]
command = ["sleep", "1037"]
depends_on = ["init"]

[services.app]
command = ["sleep", "1038"]
depends_on = { db = "ready" }
"#,
    );
    up.wait_state("app", "running");
    up.wait_state("init", "exited");
    let runs = events(&up.output(), "init: running").len();
    assert!(up.cli(&["restart", "app"]).status.success());
    up.wait_for("app", "restarted", |s| s["state"] == "running" && s["restarts"] == 1);
    std::thread::sleep(scaled(Duration::from_millis(200)));
    assert_eq!(events(&up.output(), "init: running").len(), runs, "{}", up.output());
    assert_eq!(up.service("init")["state"], "exited");
    up.stop(&dir, &[]);
}
