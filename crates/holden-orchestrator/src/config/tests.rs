//! Tests of the configuration parser.

use super::*;

fn p(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new("holden.toml"), text)
}

#[test]
fn the_full_example_parses_with_defaults_filled_in() {
    let c = p(r#"
[orchestrator]
control_socket = "/run/holden/orchestrator.sock"

[agents.qm]
socket = "/run/holden/qm.sock"

[services.db]
command = ["sleep", "1000"]

[services.web]
command = ["/usr/bin/python3", "-m", "http.server", "8080"]
agent = "qm"
restart = "on-failure"
env = { LANG = "C.UTF-8" }
cwd = "/srv"
depends_on = ["db"]
stop_signal = "SIGTERM"
stop_timeout = "5s"
backoff = { initial = "100ms", max = "30s", factor = 2.0, reset_after = "10s" }
start_limit = { burst = 5, interval = "60s" }
stdout = "log"
stderr = "/var/log/web.err"
kill_mode = "group"
"#)
    .unwrap();
    let web = &c.services["web"];
    assert_eq!(web.agent.as_deref(), Some("qm"));
    assert_eq!(web.stderr, Output::File("/var/log/web.err".into()));
    assert_eq!(web.kill_mode, KillMode::Group);
    let db = &c.services["db"];
    assert_eq!((db.restart, db.stop_signal, db.stop_timeout), (Restart::OnFailure, 15, Duration::from_secs(5)));
    assert_eq!(start_order(&c.services), ["db", "web"]);
}

#[test]
fn errors_name_file_line_and_column() {
    let cases = [
        ("[services.a]\ncommand = [\"x\"]\nbogus = 1\n", 3, 1, "unknown field"),
        ("[services.a]\ncommand = \"x\"\n", 2, 11, "invalid type"),
        ("[services.a]\ncommand = []\n", 2, 11, "command is empty"),
        ("[services.a]\ncommand = [\"x\"]\nagent = \"nope\"\n", 3, 9, "unknown agent"),
        ("[services.a]\ncommand = [\"x\"]\nstop_timeout = \"5\"\n", 3, 16, "needs a unit"),
        ("[services.a]\ncommand = [\"x\"]\nstop_signal = \"SIGNOPE\"\n", 3, 15, "unknown signal"),
        ("[services.a]\ncommand = [\"x\"]\nrestart = \"sometimes\"\n", 3, 11, "unknown variant"),
        ("[services.a]\ncommand = [\"x\"]\ndepends_on = [\"ghost\"]\n", 3, 15, "unknown service"),
        (
            "[services.a]\ncommand = [\"x\"]\ndepends_on = [\"b\"]\n[services.b]\ncommand = [\"y\"]\ndepends_on = [\"a\"]\n",
            3,
            15,
            "dependency cycle: a -> b -> a",
        ),
        ("[services.a]\ncommand = [\"x\"]\nbackoff = { factor = 0.5 }\n", 3, 22, "factor"),
        ("[services.a]\ncommand = [\"x\"]\n[services.a]\n", 3, 11, "duplicate"),
        ("this is not toml", 1, 6, ""),
        ("[orchestrator]\nlog_max_size = 10\n", 2, 16, "at least 1024"),
        ("[services.a]\ncommand = [\"x\"]\nenv = { \"A=B\" = \"1\" }\n", 1, 11, "holds '='"),
        ("[services.a]\ncommand = [\"x\\u0000\"]\n", 2, 11, "NUL"),
    ];
    for (text, line, column, needle) in cases {
        let e = p(text).unwrap_err();
        assert_eq!((e.line, e.column), (line, column), "{text:?}: {e}");
        assert!(e.message.contains(needle), "{text:?}: {e}");
        assert!(e.to_string().starts_with(&format!("holden.toml:{line}:{column}: ")));
    }
}

#[test]
fn durations_and_signals() {
    assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("-1s").is_err() && parse_duration("s").is_err() && parse_duration("1h").is_err());
    assert_eq!((parse_signal("SIGTERM"), parse_signal("HUP"), parse_signal("9")), (Ok(15), Ok(1), Ok(9)));
    assert!(parse_signal("0").is_err() && parse_signal("SIGFOO").is_err());
}

#[test]
fn a_self_dependency_is_a_cycle() {
    let e = p("[services.a]\ncommand = [\"x\"]\ndepends_on = [\"a\"]\n").unwrap_err();
    assert!(e.message.contains("a -> a"), "{e}");
}

#[test]
fn a_service_with_a_cgroup_is_stopped_whole_by_default() {
    let svc = |keys: &str| p(&format!("[services.s]\ncommand = [\"true\"]\n{keys}\n")).unwrap().services["s"].kill_mode;
    assert_eq!(svc(""), KillMode::Process);
    assert_eq!(svc("pids_max = 5"), KillMode::Cgroup);
    assert_eq!(svc("pids_max = 5\nkill_mode = \"process\""), KillMode::Process);
    assert_eq!(svc("kill_mode = \"group\""), KillMode::Group);
}
