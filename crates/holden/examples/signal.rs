//! Signal a process through its pidfd and read how it ended:
//! `cargo run -p holden --example signal -- [--agent SOCKET | --local]`. Starts `sleep 1000`,
//! sends SIGTERM through the pidfd (no pid to be reused in between), and prints the status.

use holden::{Agent, Command};

fn main() -> Result<(), holden::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cmd = Command::new("sleep");
    cmd.arg("1000");
    let mut child = match args.as_slice() {
        [flag] if flag == "--local" => cmd.spawn()?,
        [flag, socket] if flag == "--agent" => cmd.spawn_via(&mut Agent::connect(socket)?)?,
        _ => cmd.spawn_via(&mut Agent::connect_default()?)?,
    };
    child.signal(libc::SIGTERM)?;
    let status = child.wait()?;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    println!("sleep ended by signal {:?}", status.signal());
    Ok(())
}
