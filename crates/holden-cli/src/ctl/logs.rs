//! `holden logs [-f] [-n N] [--since WHEN] [NAME...]`: one service's log as it is, or several
//! (every service with a captured log when none is named) interleaved by timestamp, each line
//! prefixed with its service's name (coloured on a terminal). Lines start with their ISO 8601
//! UTC timestamp, so text order is time order.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use holden_orchestrator::control::ServiceStatus;

use super::{field, went_away, Args, Client, Failure};

/// The most lines per service `--since` looks back through.
const SINCE_LINES: u32 = 10_000;

/// `--since`: `30s`, `10m`, `2h`, `1d` ago, or a UTC time `2026-11-27T10:00[:05[.123]][Z]`.
/// Returns the timestamp prefix to compare log lines with.
pub(super) fn parse_since(v: &str) -> Result<String, String> {
    let ago = |n: &str, unit: u64| -> Option<Duration> { n.parse::<u64>().ok().map(|n| Duration::from_secs(n * unit)) };
    let d = match v.char_indices().last() {
        Some((i, 's')) => ago(&v[..i], 1),
        Some((i, 'm')) => ago(&v[..i], 60),
        Some((i, 'h')) => ago(&v[..i], 3600),
        Some((i, 'd')) => ago(&v[..i], 86_400),
        _ => None,
    };
    if let Some(d) = d {
        let then = SystemTime::now().checked_sub(d).ok_or_else(|| format!("--since {v:?} is too far back"))?;
        return Ok(holden_cli::timestamp(then));
    }
    // A time: the digits and separators of the log's own format, as far as given.
    let t = v.strip_suffix('Z').unwrap_or(v);
    let shape = "dddd-dd-ddTdd:dd:dd.ddd";
    let fits = t.len() >= 16
        && t.len() <= shape.len()
        && t.chars().zip(shape.chars()).all(|(c, s)| match s {
            'd' => c.is_ascii_digit(),
            s => c == s,
        });
    if !fits {
        return Err(format!("--since {v:?}: a duration (30s, 10m, 2h, 1d) or a UTC time (2026-11-27T10:00[:05][Z])"));
    }
    Ok(t.to_owned())
}

/// Runs `holden logs` as `a` asks.
pub(super) fn run(a: &Args) -> Result<ExitCode, Failure> {
    let mut c = Client::connect(a)?;
    let names: Vec<String> = if a.names.is_empty() {
        let list: Vec<ServiceStatus> = field(&c.call("List", serde_json::json!({}))?, "services")?;
        list.into_iter().map(|s| s.name).collect()
    } else {
        a.names.clone()
    };
    let lines = if a.since.is_some() { SINCE_LINES } else { a.lines.unwrap_or(10) };
    // One service named, as it always was: its lines as they are.
    let prefixed = a.names.len() != 1;
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let colour = a.colour(std::io::stdout().is_terminal());
    let label = |i: usize, name: &str| -> String {
        if !prefixed {
            return String::new();
        }
        if colour {
            format!("\x1b[{}m{name:<width$}\x1b[0m | ", 31 + i % 6)
        } else {
            format!("{name:<width$} | ")
        }
    };
    // The last lines of each, merged by time, the last N of all (or all since).
    let mut merged: Vec<(String, usize, String)> = Vec::new();
    let mut followed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut conn = Client::connect(a)?;
        let deadline = conn.deadline();
        conn.send("Logs", serde_json::json!({ "name": name, "lines": lines }), a.follow, deadline)?;
        match conn.recv(Some(deadline)) {
            Ok(Some((p, _))) => {
                let got: Vec<String> = field(&p, "lines")?;
                merged.extend(got.into_iter().map(|l| (l, i, name.clone())));
                followed.push((i, name.clone(), conn));
            }
            Ok(None) => return Err(went_away()),
            // Every service: those without a captured log are left out.
            Err(Failure::Refused(holden_orchestrator::control::ControlError::NoLog { .. })) if a.names.is_empty() => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(since) = &a.since {
        merged.retain(|(l, ..)| l.as_str() >= since.as_str());
    }
    // By time only, stably: lines of one service keep their order within a millisecond.
    let time = |l: &str| l.split(' ').next().unwrap_or_default().to_owned();
    merged.sort_by_cached_key(|(l, ..)| time(l));
    if a.since.is_none() {
        let keep = a.lines.unwrap_or(10) as usize;
        merged.drain(..merged.len().saturating_sub(keep));
    }
    let mut out = std::io::stdout().lock();
    let render = |i: usize, name: &str, l: &str| -> String {
        if !a.json {
            return format!("{}{l}", label(i, name));
        }
        // `TIMESTAMP STREAM TEXT`, as the orchestrator writes it.
        let mut parts = l.splitn(3, ' ');
        let (time, stream, text) = (parts.next(), parts.next(), parts.next());
        serde_json::json!({ "service": name, "time": time, "stream": stream, "text": text.unwrap_or_default() })
            .to_string()
    };
    for (l, i, name) in &merged {
        if writeln!(out, "{}", render(*i, name, l)).and_then(|_| out.flush()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Following: a thread per service; its lines come here, printed as they arrive.
    let (tx, rx) = mpsc::channel::<Result<(usize, String, Vec<String>), Failure>>();
    for (i, name, mut conn) in followed {
        let tx = tx.clone();
        std::thread::spawn(move || loop {
            let r = match conn.recv(None) {
                Ok(Some((p, _))) => field::<Vec<String>>(&p, "lines").map(|l| (i, name.clone(), l)),
                Ok(None) => Err(went_away()),
                Err(e) => Err(e),
            };
            let stop = r.is_err();
            if tx.send(r).is_err() || stop {
                return;
            }
        });
    }
    drop(tx);
    while let Ok(r) = rx.recv() {
        let (i, name, lines) = r?;
        for l in lines {
            if writeln!(out, "{}", render(i, &name, &l)).and_then(|_| out.flush()).is_err() {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    Err(went_away())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_utc_time() {
        let ten_min = parse_since("10m").unwrap();
        let now = holden_cli::timestamp(SystemTime::now());
        assert!(ten_min < now && ten_min.len() == now.len(), "{ten_min} {now}");
        assert_eq!(parse_since("2026-11-27T10:00").unwrap(), "2026-11-27T10:00");
        assert_eq!(parse_since("2026-11-27T10:00:05.123Z").unwrap(), "2026-11-27T10:00:05.123");
        for bad in ["", "10", "10x", "yesterday", "2026-11-27", "2026-11-27 10:00", "2026-11-27T10:00:05.1234"] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
    }
}
