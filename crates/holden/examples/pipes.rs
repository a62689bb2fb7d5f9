//! Pass pipes for a child's stdin and stdout, through an agent or locally:
//! `cargo run -p holden --example pipes -- [--agent SOCKET | --local]`. The child (`tr`) reads
//! what is written to the pipe and answers in upper case; the descriptors travel with the
//! `Spawn` call, so this works across container boundaries.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use holden::{Agent, Command, Stdio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (in_r, mut in_w) = std::io::pipe()?;
    let (mut out_r, out_w) = std::io::pipe()?;
    let mut cmd = Command::new("tr");
    cmd.args(["a-z", "A-Z"]).stdin(Stdio::from(OwnedFd::from(in_r))).stdout(Stdio::from(OwnedFd::from(out_w)));
    let mut child = match args.as_slice() {
        [flag] if flag == "--local" => cmd.spawn()?,
        [flag, socket] if flag == "--agent" => cmd.spawn_via(&mut Agent::connect(socket)?)?,
        _ => cmd.spawn_via(&mut Agent::connect_default()?)?,
    };
    // Our copies of the child's ends go, so that the pipes end when the child is done.
    drop(cmd);
    in_w.write_all(b"through a pipe\n")?;
    drop(in_w);
    let mut answer = String::new();
    out_r.read_to_string(&mut answer)?;
    assert!(child.wait()?.success());
    print!("{answer}");
    assert_eq!(answer, "THROUGH A PIPE\n");
    Ok(())
}
