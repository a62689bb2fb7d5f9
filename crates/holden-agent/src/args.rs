//! Command-line arguments: parsing only, no effects.

use std::path::PathBuf;
use std::time::Duration;

use crate::log::Level;

/// The default socket when neither `--socket` nor `HOLDEN_SOCKET_PATH` is given.
pub const DEFAULT_SOCKET: &str = "/run/holden/agent.sock";

/// The text of `--help`.
pub const HELP: &str = "\
holden-agent: spawn commands for callers on a Unix socket and hand back pidfds

Usage: holden-agent [OPTIONS]

Options:
  --socket PATH            listen on PATH (default: $HOLDEN_SOCKET_PATH, else /run/holden/agent.sock);
                           ignored under systemd socket activation (LISTEN_FDS)
  --socket-mode MODE       octal permissions of the socket file (default 0660)
  --socket-group GROUP     group (name or gid) of the socket file
  --allow-uid UID[,UID..]  also let these uids spawn (root and the agent's own uid always may)
  --allow-gid GID[,GID..]  also let members of these groups spawn
  --allow-uid-as-agent UID[,UID..]
                           let these uids spawn processes that run as the agent's own user
                           (by default a caller other than root and the agent's own uid gets
                           processes running as itself: its uid, gid and groups)
  --max-connections N      connections served at once (default 1024)
  --message-timeout SECS   time for a begun message to arrive whole (default 10)
  --log-level LEVEL        error, warn, info or debug (default info)
  -h, --help               print this help
  -V, --version            print the version

The agent speaks Varlink (interface io.holden.Agent) and the Holden v0.2 protocol on the same
socket. It removes its socket and exits 0 on SIGTERM or SIGINT.

Exit status: 0 after SIGTERM/SIGINT, 1 on a runtime error (for example another agent already
listens on the socket), 2 on a usage error.
";

/// Parsed options.
#[derive(Debug)]
pub struct Options {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub socket_group: Option<String>,
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    pub as_agent_uids: Vec<u32>,
    pub max_connections: usize,
    pub message_timeout: Duration,
    pub log_level: Level,
}

/// What the command line asks for.
pub enum Parsed {
    Run(Options),
    Help,
    Version,
}

fn ids(flag: &str, v: &str) -> Result<Vec<u32>, String> {
    v.split(',').map(|s| s.trim().parse::<u32>().map_err(|_| format!("{flag}: {s:?} is not a numeric id"))).collect()
}

/// Parses `args` (without the program name); `env_socket` is `HOLDEN_SOCKET_PATH`.
pub fn parse(args: impl IntoIterator<Item = String>, env_socket: Option<String>) -> Result<Parsed, String> {
    let mut o = Options {
        socket: PathBuf::from(env_socket.filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_SOCKET.into())),
        socket_mode: 0o660,
        socket_group: None,
        allow_uids: Vec::new(),
        allow_gids: Vec::new(),
        as_agent_uids: Vec::new(),
        max_connections: 1024,
        message_timeout: Duration::from_secs(10),
        log_level: Level::Info,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let value = |it: &mut dyn Iterator<Item = String>| {
            inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--socket" => o.socket = PathBuf::from(value(&mut it)?),
            "--socket-mode" => {
                let v = value(&mut it)?;
                o.socket_mode = u32::from_str_radix(v.trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| format!("--socket-mode: {v:?} is not an octal mode such as 0660"))?;
            }
            "--socket-group" => o.socket_group = Some(value(&mut it)?),
            "--allow-uid" => o.allow_uids.extend(ids("--allow-uid", &value(&mut it)?)?),
            "--allow-gid" => o.allow_gids.extend(ids("--allow-gid", &value(&mut it)?)?),
            "--allow-uid-as-agent" => {
                let uids = ids("--allow-uid-as-agent", &value(&mut it)?)?;
                // Running as the agent implies being allowed to spawn.
                o.allow_uids.extend(&uids);
                o.as_agent_uids.extend(uids);
            }
            "--max-connections" => {
                let v = value(&mut it)?;
                o.max_connections = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--max-connections: {v:?} is not a positive number"))?;
            }
            "--message-timeout" => {
                let v = value(&mut it)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s < 1e6)
                    .ok_or_else(|| format!("--message-timeout: {v:?} is not a positive number of seconds"))?;
                o.message_timeout = Duration::from_secs_f64(secs);
            }
            "--log-level" => {
                let v = value(&mut it)?;
                o.log_level =
                    Level::parse(&v).ok_or_else(|| format!("--log-level: {v:?} is not error, warn, info or debug"))?;
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if o.socket.as_os_str().is_empty() {
        return Err("--socket: the path is empty".into());
    }
    Ok(Parsed::Run(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(a: &[&str]) -> Result<Options, String> {
        match parse(a.iter().map(|s| s.to_string()), None)? {
            Parsed::Run(o) => Ok(o),
            _ => Err("not run".into()),
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let o = run(&[]).unwrap();
        assert_eq!(o.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(o.socket_mode, 0o660);
        let o = run(&["--socket", "/tmp/a.sock", "--socket-mode=0600", "--allow-uid", "1,2", "--allow-gid=7"]).unwrap();
        assert_eq!(o.socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!((o.socket_mode, o.allow_uids, o.allow_gids), (0o600, vec![1, 2], vec![7]));
        match parse(vec![], Some("/x/env.sock".into())).unwrap() {
            Parsed::Run(o) => assert_eq!(o.socket, PathBuf::from("/x/env.sock")),
            _ => panic!(),
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        for (args, word) in [
            (&["--socket-mode", "999"][..], "--socket-mode"),
            (&["--allow-uid", "bob"][..], "--allow-uid"),
            (&["--max-connections", "0"][..], "--max-connections"),
            (&["--message-timeout", "-1"][..], "--message-timeout"),
            (&["--log-level", "loud"][..], "--log-level"),
            (&["--socket"][..], "--socket"),
            (&["--bogus"][..], "--bogus"),
        ] {
            let e = run(args).unwrap_err();
            assert!(e.contains(word), "{e}");
        }
    }
}
