//! `holden top` in a real terminal: tmux runs it, `send-keys` types, `capture-pane` reads the
//! screen. The table shows the services, `x` stops the selected one and the table says
//! `stopped`, the log pane follows the selected service, `q` exits 0 and the terminal is back
//! to its normal screen. Needs root and tmux (CI installs it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

struct Tmux(String);

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let t = Tmux(name.to_owned());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", name, "-x", "80", "-y", "24", command])
            .env_remove("TMUX")
            .status()
            .expect("tmux is needed for this test: apt-get install tmux");
        assert!(ok.success());
        t
    }
    fn keys(&self, keys: &[&str]) {
        assert!(Command::new("tmux").args(["send-keys", "-t", &self.0]).args(keys).status().unwrap().success());
    }
    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.0]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        wait_until(
            what,
            scaled(Duration::from_secs(10)),
            || {
                last = self.screen();
                f(&last)
            },
            || self.screen(),
        );
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).status();
    }
}

#[test]
fn top_shows_the_services_stops_one_with_x_and_quits_with_q() {
    let dir = Dir::new("top");
    let up = Up::start(
        &dir,
        r#"
[services.alpha]
command = ["sh", "-c", "echo alpha says hello; exec sleep 1000"]

[services.beta]
command = ["sleep", "1001"]
"#,
    );
    up.wait_state("beta", "running");
    let done = dir.path("exit");
    let tmux = Tmux::start(
        &format!("holden-top-{}", std::process::id()),
        &format!("{HOLDEN} top --control-socket {}; echo exit=$? > {}; sleep 60", up.socket.display(), done.display()),
    );
    // The table, in 80 columns, and the log pane on the first service.
    let screen =
        tmux.wait_for("the table", |s| s.contains("alpha") && s.contains("beta") && s.contains("alpha says hello"));
    assert!(screen.lines().any(|l| l.contains("alpha") && l.contains("running")), "{screen}");
    assert!(screen.contains("holden top") && screen.contains("NAME") && screen.contains("STATE"), "{screen}");
    // Down to beta, x: the orchestrator stops it and the table says so (from the events).
    tmux.keys(&["j", "x"]);
    tmux.wait_for("beta stopped", |s| s.lines().any(|l| l.contains("beta") && l.contains("stopped")));
    up.wait_state("beta", "stopped");
    assert_eq!(up.service("alpha")["state"], "running");
    // ? shows the help; Esc closes it.
    tmux.keys(&["?"]);
    tmux.wait_for("the help", |s| s.contains("SIGKILL (asks y/n)"));
    tmux.keys(&["Escape"]);
    // K asks first; n sends nothing.
    tmux.keys(&["k", "K"]);
    tmux.wait_for("the question", |s| s.contains("SIGKILL to alpha? y/n"));
    tmux.keys(&["n"]);
    tmux.wait_for("not sent", |s| s.contains("not sent"));
    assert_eq!(up.service("alpha")["state"], "running");
    // q: exit 0, and the normal screen is back (the alternate screen is gone with its table).
    tmux.keys(&["q"]);
    wait_until(
        "top exits",
        scaled(Duration::from_secs(5)),
        || std::fs::read_to_string(&done).is_ok_and(|s| s.ends_with('\n')),
        || tmux.screen(),
    );
    assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "exit=0");
    let after = tmux.screen();
    assert!(!after.contains("holden top"), "the terminal was not restored:\n{after}");
    up.stop(&dir, &[]);
}

#[test]
fn top_ends_when_the_orchestrator_goes_away_and_restores_the_terminal() {
    let dir = Dir::new("top-gone");
    let up = Up::start(&dir, "[services.s]\ncommand = [\"sleep\", \"1002\"]\n");
    up.wait_state("s", "running");
    let done = dir.path("exit");
    let tmux = Tmux::start(
        &format!("holden-top-gone-{}", std::process::id()),
        &format!(
            "NO_COLOR=1 {HOLDEN} top --control-socket {} 2>{}.err; echo exit=$? > {}; sleep 60",
            up.socket.display(),
            done.display(),
            done.display()
        ),
    );
    tmux.wait_for("the table", |s| s.contains("running"));
    up.crash();
    wait_until(
        "top exits",
        scaled(Duration::from_secs(5)),
        || std::fs::read_to_string(&done).is_ok_and(|s| s.ends_with('\n')),
        || tmux.screen(),
    );
    assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "exit=3");
    let err = std::fs::read_to_string(format!("{}.err", done.display())).unwrap();
    assert!(err.contains("went away"), "{err}");
    assert!(!tmux.screen().contains("holden top"), "{}", tmux.screen());
}

#[test]
fn regression_top_ends_when_its_terminal_goes_away() {
    let dir = Dir::new("top-hangup");
    let up = Up::start(&dir, "[services.s]\ncommand = [\"sleep\", \"1003\"]\n");
    up.wait_state("s", "running");
    let name = format!("holden-top-hangup-{}", std::process::id());
    let tmux = Tmux::start(&name, &format!("exec {HOLDEN} top --control-socket {}", up.socket.display()));
    tmux.wait_for("the table", |s| s.contains("running"));
    let out = Command::new("tmux").args(["list-panes", "-t", &name, "-F", "#{pane_pid}"]).output().unwrap();
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // Whatever happens, no top is left spinning after this test (through a pidfd: never a
    // recycled pid).
    struct KillOnDrop(std::os::fd::OwnedFd);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = holden_sys::process::pidfd_send_signal(&self.0, 9);
        }
    }
    let _guard = KillOnDrop(holden_sys::process::pidfd_open(pid).unwrap());
    // The terminal goes away (as when an ssh session drops): top used to spin on end-of-file
    // at full CPU for ever, never looking at its signals or its orchestrator again.
    drop(tmux);
    wait_until(
        "top ends",
        scaled(Duration::from_secs(5)),
        || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || holden_cli::stat_fields(pid).is_some_and(|f| f[0] == "Z")
        },
        || format!("top (pid {pid}) still runs: {:?}", holden_cli::stat_fields(pid)),
    );
    up.stop(&dir, &[]);
}
