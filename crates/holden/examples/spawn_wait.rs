//! Spawn a command through an agent and wait for it:
//! `cargo run -p holden --example spawn_wait -- [--agent SOCKET | --local] -- CMD ARGS...`
//! (the agent's socket defaults to `$HOLDEN_SOCKET_PATH`, else `/run/holden/agent.sock`;
//! `--local` spawns here instead, with the same API). Exits with the command's status.

use holden::{Agent, Command};

fn main() -> Result<(), holden::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let (opts, argv) = (&args[..split], args.get(split + 1..).unwrap_or_default());
    let argv =
        if argv.is_empty() { &["sh".to_string(), "-c".into(), "echo hello from $$; exit 3".into()][..] } else { argv };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let mut child = match opts {
        [flag] if flag == "--local" => cmd.spawn()?,
        [flag, socket] if flag == "--agent" => cmd.spawn_via(&mut Agent::connect(socket)?)?,
        _ => cmd.spawn_via(&mut Agent::connect_default()?)?,
    };
    println!("spawned pid {:?}", child.pid());
    let status = child.wait()?;
    println!("exited: code {:?}, signal {:?}", status.code(), status.signal());
    std::process::exit(status.shell_code());
}
