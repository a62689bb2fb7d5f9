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
        ("[orchestrator]\ncgroup = \"//\"\n", 2, 10, "root cgroup cannot hold services"),
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
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("2h 30m"), Ok(Duration::from_secs(9000)));
    assert!(parse_duration("-1s").is_err() && parse_duration("s").is_err() && parse_duration("5").is_err());
    assert!(parse_duration("99999999999h").is_err());
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

#[test]
fn readiness_health_and_dependency_conditions() {
    let c = p(r#"
[services.db]
command = ["db"]
ready = { notify = "fd", fd = 5 }
ready_timeout = "10s"
health = { http = "http://localhost:8080/healthz?deep=1", interval = "1s", timeout = "300ms", failures = 2, start_period = "5s" }

[services.init]
command = ["init"]

[services.web]
command = ["web"]
depends_on = { db = { condition = "ready", restart = true }, init = "completed" }
ready = { tcp = "[::1]:80", interval = "2s" }
"#)
    .unwrap();
    let db = &c.services["db"];
    assert_eq!((db.ready.clone(), db.ready_timeout), (Some(ReadyWhen::Fd(5)), Duration::from_secs(10)));
    let h = db.health.clone().unwrap();
    assert_eq!(
        h.probe,
        Probe::Http {
            addr: "127.0.0.1:8080".parse().unwrap(),
            host: "localhost:8080".into(),
            path: "/healthz?deep=1".into()
        }
    );
    assert_eq!(
        (h.interval, h.timeout, h.failures, h.start_period),
        (Duration::from_secs(1), Duration::from_millis(300), 2, Duration::from_secs(5))
    );
    let web = &c.services["web"];
    assert_eq!(web.depends_on, ["db", "init"]);
    assert_eq!(web.dependencies["db"], Dependency { condition: Condition::Ready, restart: true });
    assert_eq!(web.dependencies["init"], Dependency { condition: Condition::Completed, restart: false });
    let Some(ReadyWhen::Probe { probe: Probe::Tcp(a), interval, timeout }) = &web.ready else { panic!() };
    assert_eq!(
        (a.to_string().as_str(), *interval, *timeout),
        ("[::1]:80", Duration::from_secs(2), Duration::from_secs(2))
    );
    assert_eq!(start_order(&c.services), ["db", "init", "web"]);
    // The list form: "started", no restart.
    let c = p("[services.a]\ncommand = [\"x\"]\n[services.b]\ncommand = [\"y\"]\ndepends_on = [\"a\"]\n").unwrap();
    assert_eq!(c.services["b"].dependencies["a"], Dependency { condition: Condition::Started, restart: false });
}

#[test]
fn bad_readiness_health_and_conditions_are_located_errors() {
    let svc = |keys: &str| format!("[services.a]\ncommand = [\"x\"]\n{keys}\n[services.b]\ncommand = [\"y\"]\n");
    let cases = [
        (svc("ready = { notify = \"fd\", fd = 2 }"), 3, "from 3 to 255"),
        (svc("ready = { notify = \"dbus\" }"), 3, "\"fd\" or \"systemd\""),
        (svc("ready = { log = \"x\" }\nstdout = \"null\"\nstderr = \"null\""), 3, "needs stdout or stderr"),
        (svc("ready = { tcp = \"db.example:80\" }"), 3, "names are not looked up"),
        (svc("ready = { tcp = \"127.0.0.1\" }"), 3, "needs a port"),
        (svc("ready = { http = \"https://127.0.0.1/\" }"), 3, "https is not probed"),
        (svc("ready = { exec = [] }"), 3, "non-empty array"),
        (svc("ready = { exec = [\"x\"], tcp = \"127.0.0.1:1\" }"), 3, "one of"),
        (svc("ready = { exec = [\"x\"], every = \"1s\" }"), 3, "unknown key \"every\""),
        (svc("ready = { tcp = \"127.0.0.1:1\", interval = \"1ms\" }"), 3, "at least 10ms"),
        (svc("ready_timeout = \"5s\""), 3, "ready_timeout needs ready"),
        (svc("health = { notify = \"fd\" }"), 3, "exec, tcp or http"),
        (svc("health = { exec = [\"x\"], failures = 0 }"), 3, "from 1 to 1000"),
        (svc("depends_on = { b = \"healthy\" }"), 3, "\"started\", \"ready\" or \"completed\""),
        (svc("depends_on = { b = { condition = \"ready\", restart = \"yes\" } }"), 3, "true or false"),
        (svc("depends_on = { ghost = \"ready\" }"), 3, "unknown service \"ghost\""),
        (svc("depends_on = 5"), 3, "list of names or a table"),
        // Regressions: each was accepted, or refused with a wrong reason.
        (svc("ready = { tcp = \"127.0.0.1:0\" }"), 3, "from 1 to 65535"),
        (svc("ready = { tcp = \"::1:80\" }"), 3, "goes in brackets"),
        (svc("ready = { notify = \"fd\" }\nready_timeout = \"0s\""), 4, "at least 10ms"),
        (svc("depends_on = { b = { condition = \"completed\", restart = true } }"), 3, "goes with"),
        (svc("stdout = \"logs\""), 3, "a file's path"),
        (svc("stderr = \"\""), 3, "a file's path"),
    ];
    for (text, line, needle) in &cases {
        let e = p(text).unwrap_err();
        assert_eq!(e.line, *line, "{text:?}: {e}");
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
    let always = "[services.a]\ncommand = [\"x\"]\ndepends_on = { b = \"completed\" }\n[services.b]\ncommand = [\"y\"]\nrestart = \"always\"\n";
    let e = p(always).unwrap_err();
    assert!(e.message.contains("never completes") && e.line == 3 && e.column == 16, "{e}");
}

#[test]
fn env_files_and_variables_from_the_environment() {
    let dir = std::env::temp_dir().join(format!("holden-config-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.env"), "# settings\nA=1\nexport B=\"two words\"\n\nC='x'\n").unwrap();
    std::fs::write(dir.join("bad.env"), "A=1\nnot a line\n").unwrap();
    let conf = dir.join("holden.toml");
    std::env::set_var("HOLDEN_TEST_CONFIG_PORT", "6380");
    std::fs::write(
        &conf,
        "[services.db]\ncommand = [\"db\", \"--port\", \"${HOLDEN_TEST_CONFIG_PORT}\", \"${HOLDEN_TEST_UNSET:-dflt}\"]\nenv_file = \"app.env\"\nenv = { C = \"over\" }\n",
    )
    .unwrap();
    let c = load(&conf).unwrap();
    let db = &c.services["db"];
    assert_eq!(db.command, ["db", "--port", "6380", "dflt"]);
    let env: Vec<(&str, &str)> = db.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(env, [("A", "1"), ("B", "two words"), ("C", "over")]);
    // An unset variable without a default: file, line and column.
    std::fs::write(&conf, "[services.db]\ncommand = [\"db\",\n  \"${HOLDEN_TEST_UNSET}\"]\n").unwrap();
    let e = load(&conf).unwrap_err();
    assert_eq!((e.line, e.column), (3, 4), "{e}");
    assert!(e.message.contains("HOLDEN_TEST_UNSET is not set"), "{e}");
    // A bad env file names its line; a missing one says so.
    std::fs::write(&conf, "[services.db]\ncommand = [\"db\"]\nenv_file = [\"app.env\", \"bad.env\"]\n").unwrap();
    let e = load(&conf).unwrap_err();
    assert!(e.line == 3 && e.message.contains("bad.env:2: not KEY=VALUE"), "{e}");
    std::fs::write(&conf, "[services.db]\ncommand = [\"db\"]\nenv_file = \"missing.env\"\n").unwrap();
    assert!(load(&conf).unwrap_err().message.contains("missing.env: No such file"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn regression_a_duration_past_u64_seconds_is_an_error_not_a_panic() {
    // Before: Duration::from_secs_f64 panicked, and panic = "abort" took `holden check` (and
    // a running orchestrator's reload) down with it.
    for d in ["1e20s", "99999999999999999999s", "1e30ms", "1e300m"] {
        assert_eq!(parse_duration(d), Err(format!("duration {d:?} is out of range")), "{d}");
    }
    let e = p("[services.a]\ncommand = [\"x\"]\nhealth = { exec = [\"true\"], interval = \"1e300s\" }\n").unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
}

#[test]
fn regression_http_probes_of_ipv6_and_a_query_without_a_path() {
    // Before: "[::1]" split at its last colon ("the port must be a number"), and
    // "127.0.0.1:8080?x" took "8080?x" as the port.
    let c = p("[services.a]\ncommand = [\"x\"]\nhealth = { http = \"http://[::1]/healthz\" }\n[services.b]\ncommand = [\"x\"]\nhealth = { http = \"http://127.0.0.1:8080?x=1\" }\n").unwrap();
    let probe = |n: &str| c.services[n].health.clone().unwrap().probe;
    assert_eq!(
        probe("a"),
        Probe::Http { addr: "[::1]:80".parse().unwrap(), host: "[::1]".into(), path: "/healthz".into() }
    );
    assert_eq!(
        probe("b"),
        Probe::Http { addr: "127.0.0.1:8080".parse().unwrap(), host: "127.0.0.1:8080".into(), path: "/?x=1".into() }
    );
}

#[test]
fn regression_error_columns_are_the_files_after_interpolation() {
    // Before: the column was counted in the interpolated text, off by the value's length.
    let dir = std::env::temp_dir().join(format!("holden-config-cols-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("holden.toml");
    std::fs::write(
        &file,
        "[services.a]\ncommand = [\"x\"]\nbackoff = { initial = \"${HOLDEN_TEST_NO_SUCH_VAR:-100ms}\", max = \"bogus\" }\n",
    )
    .unwrap();
    let e = load(&file).unwrap_err();
    let col = "backoff = { initial = \"${HOLDEN_TEST_NO_SUCH_VAR:-100ms}\", max = ".len() + 1;
    assert_eq!((e.line, e.column), (3, col), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn relative_paths_are_the_files_directory_and_the_cli_reads_only_the_socket() {
    let dir = std::env::temp_dir().join(format!("holden-config-rel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("holden.toml");
    std::fs::write(
        &file,
        "[orchestrator]\ncontrol_socket = \"run/o.sock\"\nstate_dir = \"state\"\n[agents.qm]\nsocket = \"qm.sock\"\n[services.a]\ncommand = [\"${HOLDEN_TEST_ONLY_THE_ORCHESTRATOR_HAS_IT}\"]\nstdout = \"./a.out\"\n",
    )
    .unwrap();
    // The CLI finds the socket although the services' variable is not set here.
    assert_eq!(control_socket_of(&file).unwrap(), Some(dir.join("run/o.sock")));
    assert!(load(&file).unwrap_err().message.contains("is not set"));
    std::fs::write(&file, "[orchestrator]\nstate_dir = \"state\"\n[agents.qm]\nsocket = \"qm.sock\"\n[services.a]\ncommand = [\"x\"]\nstdout = \"./a.out\"\n").unwrap();
    let c = load(&file).unwrap();
    assert_eq!(c.state_dir, Some(dir.join("state")));
    assert_eq!(c.agents["qm"].socket, dir.join("qm.sock"));
    assert_eq!(c.services["a"].stdout, Output::File(dir.join("./a.out")));
    assert_eq!(control_socket_of(&file).unwrap(), None);
    std::fs::remove_dir_all(&dir).unwrap();
}
