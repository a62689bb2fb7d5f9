//! The bench's fault phases: restarts of a crash-looper and `holden status` latency beside a
//! chatty neighbour and while an agent is SIGSTOPped, and a reload of 500 services under a
//! client that calls `List` back to back.

use super::*;

/// A service that exits 1 at once and is restarted 10 ms later, forever.
pub(crate) fn crash_looper(name: &str, extra: &str) -> String {
    format!(
        "[services.{name}]\ncommand = [\"sh\", \"-c\", \"exit 1\", \"{}\"]\n\
         backoff = {{ initial = \"10ms\", max = \"10ms\" }}\n\
         start_limit = {{ burst = 1000000, interval = \"1s\" }}\n{extra}",
        mark()
    )
}

/// One `holden status --json` call (deadline 2 s): how long it took, and the list if it
/// answered, else why not.
pub(crate) fn status_call(socket: &Path) -> (Duration, Result<Vec<Value>, String>) {
    let t0 = Instant::now();
    let out = Command::new(HOLDEN)
        .args(["status", "--json", "--control-socket"])
        .arg(socket)
        .env("HOLDEN_TIMEOUT", "2")
        .stdin(Stdio::null())
        .output();
    let took = t0.elapsed();
    let list = match out {
        Err(e) => Err(format!("run holden status: {e}")),
        Ok(o) if !o.status.success() => Err(format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim())),
        Ok(o) => serde_json::from_slice(&o.stdout).map_err(|e| format!("malformed output: {e}")),
    };
    (took, list)
}

pub(crate) fn restarts_of(list: &[Value], name: &str) -> Option<u64> {
    list.iter().find(|s| s["name"] == name)?["restarts"].as_u64()
}

/// What one phase of the chatty-neighbour and stopped-agent figures measured.
pub(crate) struct Phase {
    /// Per service asked for: restarts in 5 s (scaled to exactly 5 s), if status answered.
    restarts: Vec<Option<f64>>,
    /// `holden status` latencies of the calls that answered.
    status: Vec<Duration>,
    /// Calls that failed or did not answer within 2 s.
    failed: usize,
    /// How long the first failed call took, and why it failed.
    first_failure: Option<(Duration, String)>,
}

/// Restarts of `services` over 5 s, then ~100 `holden status` calls 20 ms apart (at most 20 s).
pub(crate) fn phase(socket: &Path, services: &[&str]) -> Phase {
    std::thread::sleep(Duration::from_millis(500));
    let l0 = status_call(socket).1.ok();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let l1 = status_call(socket).1.ok();
    let secs = t0.elapsed().as_secs_f64();
    let restarts = services
        .iter()
        .map(|s| {
            let r0 = restarts_of(l0.as_deref()?, s)?;
            let r1 = restarts_of(l1.as_deref()?, s)?;
            Some(r1.saturating_sub(r0) as f64 * 5.0 / secs)
        })
        .collect();
    let (mut status, mut failed, mut first_failure) = (Vec::new(), 0, None);
    let end = Instant::now() + Duration::from_secs(20);
    while status.len() + failed < 100 && Instant::now() < end {
        match status_call(socket) {
            (took, Ok(_)) => status.push(took),
            (took, Err(why)) => {
                failed += 1;
                first_failure.get_or_insert((took, why));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    status.sort();
    Phase { restarts, status, failed, first_failure }
}

pub(crate) fn fmt_restarts(r: Option<f64>) -> String {
    r.map_or("- (status did not answer)".into(), |r| format!("{r:.0}"))
}

pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// p50, p95 and max of sorted latencies.
pub(crate) fn lat(p: &Phase) -> String {
    let v = &p.status;
    let failed = match &p.first_failure {
        Some((took, why)) => format!("{} failed or over 2 s, the first after {took:?}: {why}", p.failed),
        None => "none failed".into(),
    };
    if v.is_empty() {
        return format!("- (none answered; {failed})");
    }
    format!(
        "p50 {:?}, p95 {:?}, max {:?} ({} calls; {failed})",
        v[v.len() / 2],
        v[(v.len() * 95 / 100).min(v.len() - 1)],
        v[v.len() - 1],
        v.len() + p.failed
    )
}

pub(crate) fn start_agent(socket: &Path) -> Child {
    let agent = Command::new(HOLDEN)
        .args(["agent", "--log-level", "warn", "--socket"])
        .arg(socket)
        .env(MARK_VAR, mark())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_socket(socket);
    agent
}

pub(crate) fn stop_agent(mut agent: Child) {
    let procs = Procs::under(agent.id() as i32);
    kill(agent.id() as i32, libc::SIGTERM);
    let _ = agent.wait();
    procs.finish("holden agent", Duration::from_secs(5));
}

/// A crash-looper's restarts and `holden status` latency, alone and beside a `yes` neighbour.
pub(crate) fn chatty_neighbour(dir: &Path) {
    println!("== chatty neighbour (crash-looper `sh -c 'exit 1'`, backoff 10 ms; neighbour `yes` into its log)");
    let crash = crash_looper("crash", "");
    let h = Holden::start(dir, &crash);
    let alone = phase(&h.socket, &["crash"]);
    h.stop();
    let h = Holden::start(dir, &format!("{crash}[services.chatty]\ncommand = [\"yes\", \"{}\"]\n", mark()));
    let beside = phase(&h.socket, &["crash"]);
    h.stop();
    println!("crash-looper restarts per 5 s, alone:        {}", fmt_restarts(alone.restarts[0]));
    println!("crash-looper restarts per 5 s, beside `yes`: {}", fmt_restarts(beside.restarts[0]));
    println!("crash-looper restarts, beside / alone:       {}", ratio(beside.restarts[0], alone.restarts[0]));
    println!("holden status latency, alone:        {}", lat(&alone));
    println!("holden status latency, beside `yes`: {}", lat(&beside));
}

/// A local crash-looper's restarts and `holden status` latency before and while the agent that
/// runs another crash-looper is SIGSTOPped.
pub(crate) fn stopped_agent(dir: &Path) {
    println!("== stopped agent (a crash-looper through agent a, one local; backoff 10 ms)");
    let agent_sock = dir.join("agent-stop.sock");
    let agent = start_agent(&agent_sock);
    let h = Holden::start(
        dir,
        &format!(
            "[agents.a]\nsocket = \"{}\"\n{}{}",
            agent_sock.display(),
            crash_looper("remote", "agent = \"a\"\n"),
            crash_looper("local", "")
        ),
    );
    let before = phase(&h.socket, &["local", "remote"]);
    kill(agent.id() as i32, libc::SIGSTOP);
    let stopped = phase(&h.socket, &["local", "remote"]);
    kill(agent.id() as i32, libc::SIGCONT);
    let after = phase(&h.socket, &["remote"]);
    h.stop();
    stop_agent(agent);
    println!(
        "local restarts per 5 s, agent running:     {} (through the agent: {})",
        fmt_restarts(before.restarts[0]),
        fmt_restarts(before.restarts[1])
    );
    println!(
        "local restarts per 5 s, agent SIGSTOPped:  {} (through the agent: {})",
        fmt_restarts(stopped.restarts[0]),
        fmt_restarts(stopped.restarts[1])
    );
    println!("local restarts, stopped / running:        {}", ratio(stopped.restarts[0], before.restarts[0]));
    println!("through the agent after SIGCONT, per 5 s: {}", fmt_restarts(after.restarts[0]));
    println!("holden status latency, agent running:    {}", lat(&before));
    println!("holden status latency, agent SIGSTOPped: {}", lat(&stopped));
}

/// 500 waiting services; the configuration then loses 250 and gains 250 and `holden reload`
/// applies it, while a client calls `List` back to back: the gaps between its answers.
pub(crate) fn reload_500(dir: &Path) {
    println!("== reload of 500 services (250 removed, 250 added)");
    let h = Holden::start(dir, &parkers(0..500, ""));
    let deadline = Instant::now() + Duration::from_secs(60);
    while holden_cli::children_of(h.pid()).len() < 500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    Holden::write_config(&h.dir, &parkers(250..750, ""));

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (socket, stop) = (h.socket.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(&socket).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut rd = std::io::BufReader::new(s.try_clone().unwrap());
            let mut answers = vec![Instant::now()];
            let mut msg = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                s.write_all(b"{\"method\":\"io.holden.Orchestrator.List\"}\0").unwrap();
                msg.clear();
                rd.read_until(0, &mut msg).unwrap();
                let head = &msg[..msg.len().min(64)];
                assert!(
                    head.windows(11).any(|w| w == b"\"services\":"),
                    "List answered {}",
                    String::from_utf8_lossy(head)
                );
                answers.push(Instant::now());
            }
            answers
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let out = Command::new(HOLDEN)
        .args(["reload", "--control-socket"])
        .arg(&h.socket)
        .env("HOLDEN_TIMEOUT", "30")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1).saturating_sub(took).max(Duration::from_millis(200)));
    stop.store(true, Ordering::Relaxed);
    let answers = client.join().unwrap();
    let window = answers[answers.len() - 1] - answers[0];
    // The longest gap, and when it began relative to the reload call.
    let (at, longest) = answers
        .windows(2)
        .map(|w| (w[0], w[1] - w[0]))
        .max_by_key(|(_, gap)| *gap)
        .expect("List answered at least once");
    let from_reload = if at >= t0 { format!("+{:?}", at - t0) } else { format!("-{:?}", t0 - at) };
    // The same client's longest gap in the second before the call: what the machine gives anyway.
    let before = answers.windows(2).filter(|w| w[1] <= t0).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let mut gaps: Vec<Duration> = answers.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();

    // Then until the 250 new ones run.
    let mut running_at = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_at.is_none() && Instant::now() < deadline {
        if let (_, Ok(list)) = status_call(&h.socket) {
            if list.len() == 500 && list.iter().all(|s| s["state"] == "running") {
                running_at = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    h.stop();
    // "added: a, b\nremoved: c\nchanged: -" → "added 2, removed 1, changed 0".
    let summary: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| format!("{k} {}", if v == "-" { 0 } else { v.split(", ").count() }))
        .collect();
    println!("holden reload: {took:?}, {} ({})", out.status, summary.join(", "));
    println!(
        "List back to back around the reload: {} answers in {window:?}; gap p50 {:?}, p99 {:?}",
        gaps.len(),
        gaps[gaps.len() / 2],
        gaps[(gaps.len() * 99 / 100).min(gaps.len() - 1)]
    );
    println!(
        "longest gap between List answers (the loop's longest block): {longest:?}, beginning at reload {}",
        from_reload
    );
    println!("longest gap in the second before the reload call (baseline): {before:?}");
    println!(
        "reload → 500 running again (the 250 new ones up): {}",
        running_at.map_or("not within 60 s".into(), |d| format!("{d:?}"))
    );
}
