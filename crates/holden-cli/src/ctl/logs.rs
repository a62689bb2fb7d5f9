//! `holden logs [-f] [-n N] [--since WHEN] [NAME...]`: one service's log as it is, or several
//! (every service with a captured log when none is named) interleaved by timestamp, each line
//! prefixed with its service's name (coloured on a terminal). Lines start with their ISO 8601
//! UTC timestamp, so text order is time order.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::SystemTime;

use holden_orchestrator::control::ServiceStatus;

use super::{field, went_away, Args, Client, Failure};

/// The most lines per service `--since` looks back through (one reply carries at most
/// `MAX_LOG_BYTES` of them; the CLI says when older ones in range were left out).
const SINCE_LINES: u32 = holden_orchestrator::control::MAX_LOG_LINES;

/// `--since`: a duration ago (`30s`, `10m`, `1h30m`, `2d`, as config durations are read), or a
/// UTC time `2026-11-27T10:00[:05[.123]][Z]`. Returns the timestamp prefix to compare log lines
/// with.
pub(super) fn parse_since(v: &str) -> Result<String, String> {
    let bad =
        || format!("--since {v:?}: a duration (30s, 10m, 1h30m, 2d) or a UTC time (2026-11-27T10:00[:05[.123]][Z])");
    if v.chars().last().is_some_and(|c| c.is_ascii_alphabetic() && c != 'Z') {
        let d = holden_orchestrator::config::parse_duration(v).map_err(|_| bad())?;
        let then = SystemTime::now().checked_sub(d).ok_or_else(|| format!("--since {v:?} is too far back"))?;
        return Ok(holden_cli::timestamp(then));
    }
    // A time: the log's own format, to the minute, second or fraction of it, each field in range.
    let t = v.strip_suffix('Z').unwrap_or(v);
    let shape = "dddd-dd-ddTdd:dd:dd.ddd";
    let fits = [16, 19, 21, 22, 23].contains(&t.len())
        && t.chars().zip(shape.chars()).all(|(c, s)| match s {
            'd' => c.is_ascii_digit(),
            s => c == s,
        });
    let field = |r: std::ops::Range<usize>| t[r].parse::<u32>().unwrap_or(u32::MAX);
    let in_range = fits
        && (1..=12).contains(&field(5..7))
        && (1..=31).contains(&field(8..10))
        && field(11..13) < 24
        && field(14..16) < 60
        && (t.len() < 19 || field(17..19) < 60);
    if !in_range {
        return Err(bad());
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
    // The last lines of each, merged by time, the last N of all (or all since, or the last N
    // of those).
    let mut merged: Vec<(String, usize, String)> = Vec::new();
    let mut followed = Vec::new();
    // The services whose older lines one reply could not carry, with their oldest line given.
    let mut cut: Vec<(String, String)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut conn = Client::connect(a)?;
        let deadline = conn.deadline();
        conn.send("Logs", serde_json::json!({ "name": name, "lines": lines }), a.follow, deadline)?;
        match conn.recv(Some(deadline)) {
            Ok(Some((p, _))) => {
                let got: Vec<String> = field(&p, "lines")?;
                if p.get("truncated").and_then(|t| t.as_bool()) == Some(true) {
                    cut.push((name.clone(), got.first().cloned().unwrap_or_default()));
                }
                merged.extend(got.into_iter().map(|l| (l, i, name.clone())));
                followed.push((i, name.clone(), conn));
            }
            Ok(None) => return Err(went_away()),
            // Every service: those without a captured log are left out.
            Err(Failure::Refused(holden_orchestrator::control::ControlError::NoLog { .. })) if a.names.is_empty() => {}
            Err(e) => return Err(e),
        }
    }
    if followed.is_empty() && a.follow {
        return Err(Failure::Broken("-f: no service captures its output, so there is nothing to follow".into()));
    }
    if let Some(since) = &a.since {
        merged.retain(|(l, ..)| l.as_str() >= since.as_str());
    }
    // By time only, stably: lines of one service keep their order within a millisecond.
    let time = |l: &str| l.split(' ').next().unwrap_or_default().to_owned();
    merged.sort_by_cached_key(|(l, ..)| time(l));
    if let Some(keep) = a.lines.or(a.since.is_none().then_some(10)) {
        merged.drain(..merged.len().saturating_sub(keep as usize));
    }
    // Said where it matters: lines of a cut service would have been shown.
    let oldest_shown = merged.first().map(|(l, ..)| time(l));
    for (name, first) in &cut {
        let wanted_older = match &a.since {
            Some(since) => first.as_str() >= since.as_str(),
            None => oldest_shown.as_deref().is_none_or(|o| time(first).as_str() >= o),
        };
        if wanted_older && !(a.since.is_some() && a.lines.is_some_and(|n| merged.len() >= n as usize)) {
            eprintln!(
                "holden logs: {name}: older lines were left out (one reply carries at most {} KiB of them; the log files have them all)",
                holden_orchestrator::control::MAX_LOG_BYTES / 1024
            );
        }
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
        assert!(parse_since("1h30m").is_ok() && parse_since("2d").is_ok());
        // Regressions: accepted before, as a string prefix, or wrapped round.
        for bad in ["2026-11-27T10:00:5", "2026-19-99T99:99", "2026-11-27T24:00", "307445734561825861m"] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "10", "10x", "yesterday", "2026-11-27", "2026-11-27 10:00", "2026-11-27T10:00:05.1234"] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
    }
}
