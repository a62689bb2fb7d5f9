//! The `holden` library's examples (`crates/holden/examples`), run against a real agent and
//! locally, as a reader of the README would run them. `cargo test --workspace --all-features`
//! builds them beside the test binaries (`target/debug/examples`). Needs root.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// An example's executable, next to this test's own build directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|d| d.parent()).unwrap().join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test --workspace --all-features` builds it (or cargo build -p holden --examples --all-features)",
        path.display()
    );
    path
}

#[test]
fn the_library_examples_run_through_an_agent_and_locally() {
    let dir = Dir::new("examples");
    let agent = Agent::start(&dir, "agent");
    let socket = agent.socket.display().to_string();
    for (name, code) in [("spawn_wait", 3), ("signal", 0), ("pipes", 0), ("tokio_wait", 0)] {
        for how in [vec!["--agent", socket.as_str()], vec!["--local"]] {
            let out = run_short(Command::new(example(name)).args(&how));
            assert_eq!(out.status.code(), Some(code), "{name} {how:?}: {}{}", stdout(&out), stderr(&out));
        }
    }
    let out = run_short(Command::new(example("pipes")).args(["--agent", &socket]));
    assert_eq!(stdout(&out), "THROUGH A PIPE\n");
    let out = run_short(Command::new(example("tokio_wait")).args(["--agent", &socket]));
    assert!(stdout(&out).contains("exit codes [Some(0), Some(1), Some(2)]"), "{}", stdout(&out));
    drop(agent);
    dir.assert_no_leftovers(&[]);
}
