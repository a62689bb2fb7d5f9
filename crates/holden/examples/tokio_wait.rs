//! Wait for several processes at once in a tokio program (feature `tokio`):
//! `cargo run -p holden --features tokio --example tokio_wait -- [--agent SOCKET | --local]`.
//! Each `Child::wait_async` waits on its pidfd's readiness; nothing blocks a thread.

#[cfg(feature = "tokio")]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), holden::Error> {
    use holden::{Agent, Command};
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut agent = match args.as_slice() {
        [flag] if flag == "--local" => None,
        [flag, socket] if flag == "--agent" => Some(Agent::connect(socket)?),
        _ => Some(Agent::connect_default()?),
    };
    let mut spawn = |delay: &str, code: i32| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("sleep {delay}; exit {code}")]);
        match agent.as_mut() {
            Some(a) => cmd.spawn_via(a),
            None => cmd.spawn(),
        }
    };
    let (mut a, mut b, mut c) = (spawn("0.3", 0)?, spawn("0.1", 1)?, spawn("0.2", 2)?);
    // The three waits run together: this takes 0.3 s, not 0.6 s.
    let started = std::time::Instant::now();
    let (a, b, c) = tokio::join!(a.wait_async(), b.wait_async(), c.wait_async());
    let codes = [a?.code(), b?.code(), c?.code()];
    println!("exit codes {codes:?} after {:?}", started.elapsed());
    assert_eq!(codes, [Some(0), Some(1), Some(2)]);
    Ok(())
}

#[cfg(not(feature = "tokio"))]
fn main() {
    eprintln!("build with --features tokio");
}
