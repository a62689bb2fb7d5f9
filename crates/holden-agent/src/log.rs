//! Logging to stderr, one line per event, filtered by `--log-level`.
//!
//! Logging never blocks and never kills the agent, whatever stderr is: a line is written only
//! if stderr has room now (one `write` of at most `PIPE_BUF` bytes, after a zero-timeout
//! `poll`), else it is dropped and counted; a write error (a reader that is gone) is ignored.
//! Lines beyond [`BURST`] per second are dropped and counted too, so a flood of refused clients
//! cannot fill stderr. The next line that is written says how many were dropped.
//! Every control character in a line (a newline in a client's argv, an escape sequence) is
//! written escaped, so a client cannot forge log lines.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Severity, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed that the agent cannot fix.
    Error = 0,
    /// A client did something refused.
    Warn = 1,
    /// Start, stop, spawn failures.
    Info = 2,
    /// Every connection and spawn.
    Debug = 3,
}

static MAX: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Most lines written per second; more are dropped (and counted).
pub const BURST: u32 = 100;
/// The longest line written (`PIPE_BUF`, so one write to a pipe with room never blocks).
const MAX_LINE: usize = 4096;

struct Limiter {
    window: Option<Instant>,
    written: u32,
    dropped: u64,
}

static LIMITER: Mutex<Limiter> = Mutex::new(Limiter { window: None, written: 0, dropped: 0 });

impl Level {
    /// Parses `error`, `warn`, `info` or `debug`.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        ["error", "warn", "info", "debug"][self as usize]
    }
}

/// Sets the most verbose level that is printed.
pub fn set_max(level: Level) {
    MAX.store(level as u8, Ordering::Relaxed);
}

/// `text` with every control character (and backslash) escaped: `\n`, `\t`, `\\`, `\x1b`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Prints one line if `level` is enabled, stderr has room and the rate allows.
pub fn log(level: Level, args: std::fmt::Arguments<'_>) {
    if level as u8 > MAX.load(Ordering::Relaxed) {
        return;
    }
    let mut lim = LIMITER.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    if lim.window.is_none_or(|w| now.duration_since(w).as_secs() >= 1) {
        lim.window = Some(now);
        lim.written = 0;
    }
    if lim.written >= BURST {
        lim.dropped += 1;
        return;
    }
    let mut line = String::new();
    if lim.dropped > 0 {
        line = format!("holden-agent: warn: {} log lines dropped (stderr full or too many lines)\n", lim.dropped);
    }
    line += &format!("holden-agent: {}: {}", level.name(), escape(&args.to_string()));
    if line.len() > MAX_LINE - 1 {
        let mut cut = MAX_LINE - 1;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line.push('\n');
    // One write, only if it cannot block; whatever else happens (EPIPE) is not the agent's problem.
    if holden_sys::event::write_now(holden_sys::fd::stdio(2), line.as_bytes()) {
        lim.written += 1;
        lim.dropped = 0;
    } else {
        lim.dropped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("a\nholden-agent: error: X"), "a\\nholden-agent: error: X");
        assert_eq!(escape("\x1b[31mred\t\\"), "\\x1b[31mred\\t\\\\");
        assert_eq!(escape("plain é"), "plain é");
    }
}
