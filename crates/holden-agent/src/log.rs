//! Logging to stderr, one line per event, filtered by `--log-level`.

use std::sync::atomic::{AtomicU8, Ordering};

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

/// Prints one line if `level` is enabled.
pub fn log(level: Level, args: std::fmt::Arguments<'_>) {
    if level as u8 <= MAX.load(Ordering::Relaxed) {
        eprintln!("holden-agent: {}: {args}", level.name());
    }
}
