//! `holden`: the command-line front of Holden. One file per subcommand; the command line itself
//! is `cli.rs` (clap), which the build script also reads to write the man page; this file only
//! dispatches.
#![forbid(unsafe_code)]

mod cli;
mod ctl;
mod demo;
mod demo_up;
mod exec;
mod query;
mod up;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Cmd};

// The man pages (MAN_PAGES), written by the build script from `cli.rs`.
include!(concat!(env!("OUT_DIR"), "/man_pages.rs"));

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `holden agent ARGS`: the agent's own parser, untouched (the agent stays small).
    if args.get(1).is_some_and(|a| a == "agent") {
        return holden_agent::main_with_args(args[2..].iter().map(|a| a.to_string_lossy().into_owned()));
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // Help and version are answers; a usage error is 2, and 125 for `holden exec`,
            // whose own codes follow podman exec's.
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ if args.get(1).is_some_and(|a| a == "exec") => ExitCode::from(125),
                _ => ExitCode::from(2),
            };
        }
    };
    match cli.command {
        Cmd::Demo { seconds, agent } => demo::main(seconds, agent),
        Cmd::Up { config, control_socket, socket_mode, allow_uid, allow_gid } => {
            up::main(config, control_socket, &socket_mode, allow_uid, allow_gid)
        }
        Cmd::Check { config, json } => ctl::check(config, json),
        Cmd::Status { json, watch, names, control } => {
            ctl::main("status", ctl::Args::new(control, json, watch, false, None, None, None, names))
        }
        Cmd::Top { control } => {
            ctl::main("top", ctl::Args::new(control, false, false, false, None, None, None, vec![]))
        }
        Cmd::Start { names, control } => {
            ctl::main("start", ctl::Args::new(control, false, false, false, None, None, None, names))
        }
        Cmd::Stop { names, control } => {
            ctl::main("stop", ctl::Args::new(control, false, false, false, None, None, None, names))
        }
        Cmd::Restart { names, control } => {
            ctl::main("restart", ctl::Args::new(control, false, false, false, None, None, None, names))
        }
        Cmd::Kill { signal, name, control } => {
            ctl::main("kill", ctl::Args::new(control, false, false, false, None, None, Some(&signal), vec![name]))
        }
        Cmd::Logs { follow, lines, since, json, names, control } => {
            ctl::main("logs", ctl::Args::new(control, json, false, follow, lines, since.as_deref(), None, names))
        }
        Cmd::Events { json, control } => {
            ctl::main("events", ctl::Args::new(control, json, false, false, None, None, None, vec![]))
        }
        Cmd::Reload { json, control } => {
            ctl::main("reload", ctl::Args::new(control, json, false, false, None, None, None, vec![]))
        }
        Cmd::Exec { agent, env, cwd, command } => exec::main(agent, env, cwd, command),
        Cmd::Ping { agent, json } => query::main("ping", agent.agent, json),
        Cmd::Info { agent, json } => query::main("info", agent.agent, json),
        Cmd::Agent { .. } => unreachable!("dispatched before clap"),
        Cmd::Completions { shell } => {
            let shell = match shell {
                cli::Shell::Bash => clap_complete::Shell::Bash,
                cli::Shell::Zsh => clap_complete::Shell::Zsh,
                cli::Shell::Fish => clap_complete::Shell::Fish,
            };
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "holden", &mut script);
            print_all(&script)
        }
        Cmd::Man { list: true, .. } => {
            print_all(MAN_PAGES.iter().map(|(name, _)| format!("{name}\n")).collect::<String>().as_bytes())
        }
        Cmd::Man { page, .. } => {
            let want = match page.as_deref() {
                None => "holden".to_string(),
                Some(p) if p.starts_with("holden") => p.to_string(),
                Some(p) => format!("holden-{p}"),
            };
            match MAN_PAGES.iter().find(|(name, _)| *name == want) {
                Some((_, roff)) => print_all(roff.as_bytes()),
                None => {
                    eprintln!("holden man: no page {want} (holden man --list names them)");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Fdholder { socket } => match holden_supervisor::holder::serve(&socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("holden fdholder: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
fn print_all(text: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("holden: write: {e}");
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("holden").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_options_end_at_the_command() {
        let Cmd::Exec { agent, env, cwd, command } =
            parse(&["exec", "--agent", "/s", "--env", "A=1", "-e", "B=2", "--cwd=/tmp", "--", "ls", "-l"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!((agent, env, cwd), (Some("/s".into()), vec!["A=1".to_string(), "B=2".into()], Some("/tmp".into())));
        assert_eq!(command, ["ls", "-l"]);
        let Cmd::Exec { command, .. } = parse(&["exec", "echo", "--env", "x"]).unwrap().command else { panic!() };
        assert_eq!(command, ["echo", "--env", "x"], "options end at the command");
        for bad in [&["exec"][..], &["exec", "--"], &["exec", "--bogus", "ls"], &["exec", "--agent"]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn typos_get_suggestions() {
        let e = parse(&["stauts"]).unwrap_err().to_string();
        assert!(e.contains("status"), "{e}");
        let e = parse(&["logs", "--folow"]).unwrap_err().to_string();
        assert!(e.contains("--follow"), "{e}");
    }
}
