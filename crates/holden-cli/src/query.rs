//! `holden ping` and `holden info`.

use std::process::ExitCode;

pub fn main(cmd: &str, args: Vec<String>) -> ExitCode {
    let mut path = None;
    let mut json = false;
    let mut i = 0;
    while i < args.len() {
        match crate::agent_flag(&args, &mut i) {
            Ok(Some(p)) => path = Some(p),
            Ok(None) if args[i] == "-h" || args[i] == "--help" => {
                println!("Usage: holden {cmd} [--agent PATH] [--json]");
                return ExitCode::SUCCESS;
            }
            Ok(None) if args[i] == "--json" => json = true,
            Ok(None) => {
                eprintln!("holden {cmd}: unknown argument {:?}", args[i]);
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("holden {cmd}: {e}");
                return ExitCode::from(2);
            }
        }
        i += 1;
    }
    let path = path.unwrap_or_else(holden::Agent::default_path);
    let result = holden::Agent::connect(&path).and_then(|mut agent| {
        if cmd == "ping" {
            let start = std::time::Instant::now();
            agent.ping()?;
            let took = start.elapsed();
            if json {
                let v = serde_json::json!({ "socket": path, "answered_us": took.as_micros() as u64 });
                println!("{v}");
            } else {
                println!("{} answered in {took:?}", path.display());
            }
        } else {
            let info = agent.info()?;
            if json {
                let v = serde_json::json!({ "socket": path, "version": info.version, "pid": info.pid, "features": info.features });
                println!("{}", serde_json::to_string_pretty(&v).expect("plain values"));
                return Ok(());
            }
            let f = info.features;
            println!("agent {} at {}, pid {} in its namespace", info.version, path.display(), info.pid);
            println!(
                "features: clone3 {}, clone_pidfd {}, close_range {}, pidfd_info_exit {}, pidfs {}, \
                 pidfd_signal_group {}",
                f.clone3, f.clone_pidfd, f.close_range, f.pidfd_info_exit, f.pidfs, f.pidfd_signal_group
            );
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
