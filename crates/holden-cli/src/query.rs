//! `holden ping` and `holden info`.

use std::process::ExitCode;

/// `holden ping` or `holden info` on the agent at `path` (else the default).
pub fn main(cmd: &str, path: Option<std::path::PathBuf>, json: bool) -> ExitCode {
    let path = path.unwrap_or_else(holden::Agent::default_path);
    // What it prints: a reader that went away (`| head -0`) is not a crash.
    let println = |text: String| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    };
    let result = holden::Agent::connect(&path).and_then(|mut agent| {
        if cmd == "ping" {
            let start = std::time::Instant::now();
            agent.ping()?;
            let took = start.elapsed();
            if json {
                let v = serde_json::json!({ "socket": path, "answered_us": took.as_micros() as u64 });
                println(v.to_string());
            } else {
                println(format!("{} answered in {took:?}", path.display()));
            }
        } else {
            let info = agent.info()?;
            if json {
                let v = serde_json::json!({ "socket": path, "version": info.version, "pid": info.pid, "features": info.features });
                println(serde_json::to_string_pretty(&v).expect("plain values"));
                return Ok(());
            }
            let f = info.features;
            println(format!("agent {} at {}, pid {} in its namespace", info.version, path.display(), info.pid));
            println(format!(
                "features: clone3 {}, clone_pidfd {}, close_range {}, pidfd_info_exit {}, pidfs {}, \
                 pidfd_signal_group {}",
                f.clone3, f.clone_pidfd, f.close_range, f.pidfd_info_exit, f.pidfs, f.pidfd_signal_group
            ));
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holden {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}
