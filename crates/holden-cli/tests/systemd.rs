//! The shipped systemd units and example configuration: `systemd-analyze verify` accepts the
//! units without a single warning (their binaries pointed at this build), and `holden check`
//! accepts the example. (Socket activation itself is tested with the agent, through
//! `systemd-socket-activate`; sd_notify with `holden up`.)

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn dist(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist").join(p)
}

#[test]
fn the_systemd_units_verify_cleanly() {
    let dir = Dir::new("units");
    let units = ["holden-agent.socket", "holden-agent.service", "holden.service"];
    for u in units {
        let text = std::fs::read_to_string(dist(&format!("systemd/{u}"))).unwrap();
        let text = text
            .replace("/usr/bin/holden-agent", &format!("{HOLDEN} agent"))
            .replace("/usr/bin/holden ", &format!("{HOLDEN} "));
        std::fs::write(dir.path(u), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| dir.path(u)))
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    assert!(out.status.success() && stderr(&out).trim().is_empty(), "systemd-analyze verify:\n{}", stderr(&out));
    // The check is strict: a misspelt key is caught.
    std::fs::write(
        dir.path("holden.service"),
        std::fs::read_to_string(dir.path("holden.service")).unwrap() + "Bogus=1\n",
    )
    .unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(dir.path("holden.service")).output().unwrap();
    assert!(stderr(&out).contains("Unknown key"), "{}", stderr(&out));
}

#[test]
fn the_example_configuration_checks() {
    let out = Command::new(HOLDEN).args(["check", "-c"]).arg(dist("holden.toml")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok: 2 services (telemetry, media), 1 agents"), "{}", stdout(&out));
}
