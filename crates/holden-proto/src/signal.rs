//! Signals by name and number: the one table every Holden program uses, for the numbering that
//! x86, ARM and RISC-V share (Linux's generic one). Real-time signals are named as `kill -l`
//! names them with glibc: `SIGRTMIN` is 34 (glibc keeps 32 and 33 for itself), then
//! `SIGRTMIN+1` up to `SIGRTMIN+15` and `SIGRTMAX-14` down to `SIGRTMAX` (64). Numbers 1 to 64
//! are accepted everywhere; 32 and 33 have no name.

/// The standard signals, 1 to 31.
const STANDARD: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// The first real-time signal as glibc (and `kill -l`) numbers it.
pub const SIGRTMIN: i32 = 34;
/// The last signal.
pub const SIGRTMAX: i32 = 64;

const GENERIC: bool = cfg!(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "riscv64"
));

/// The usual name of a signal (`SIGTERM`, `SIGRTMIN+2`), or `signal N` for one without a name
/// (and on architectures with another numbering).
pub fn name(sig: i32) -> String {
    match sig {
        1..=31 if GENERIC => STANDARD[sig as usize - 1].to_owned(),
        SIGRTMIN if GENERIC => "SIGRTMIN".into(),
        SIGRTMAX if GENERIC => "SIGRTMAX".into(),
        35..=49 if GENERIC => format!("SIGRTMIN+{}", sig - SIGRTMIN),
        50..=63 if GENERIC => format!("SIGRTMAX-{}", SIGRTMAX - sig),
        _ => format!("signal {sig}"),
    }
}

/// Parses a signal given as a number from 1 to 64, or a name with or without `SIG`, in any
/// case: `SIGTERM`, `term`, `RTMIN+3`, `SIGRTMAX-1`.
pub fn parse(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=SIGRTMAX).contains(&n) { Ok(n) } else { Err(format!("signal {n} is out of range 1..=64")) };
    }
    let unknown = || format!("unknown signal {s:?}");
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if !GENERIC {
        return Err(format!("signal names are not known on this architecture; give {s:?} as a number"));
    }
    if let Some(i) = STANDARD.iter().position(|n| n[3..] == *bare) {
        return Ok(i as i32 + 1);
    }
    let offset = |rest: &str, base: i32, sign: i32| -> Result<i32, String> {
        let n: i32 = if rest.is_empty() { 0 } else { rest.parse().map_err(|_| unknown())? };
        let sig = base + sign * n;
        if (SIGRTMIN..=SIGRTMAX).contains(&sig) && n >= 0 {
            Ok(sig)
        } else {
            Err(format!("{s:?} is outside SIGRTMIN..SIGRTMAX"))
        }
    };
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        return offset(rest.strip_prefix('+').unwrap_or(rest), SIGRTMIN, 1);
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        return offset(rest.strip_prefix('-').unwrap_or(rest), SIGRTMAX, -1);
    }
    Err(unknown())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_has_a_name_that_parses_back() {
        for sig in 1..=64 {
            let n = name(sig);
            if sig == 32 || sig == 33 {
                assert_eq!(n, format!("signal {sig}"));
                continue;
            }
            assert_eq!(parse(&n), Ok(sig), "{n}");
        }
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(35), "SIGRTMIN+1");
        assert_eq!(name(63), "SIGRTMAX-1");
        assert_eq!((parse("term"), parse("HUP"), parse("9"), parse("SIGRTMIN+3")), (Ok(15), Ok(1), Ok(9), Ok(37)));
        assert!(parse("0").is_err() && parse("65").is_err() && parse("SIGFOO").is_err());
        assert!(parse("RTMIN+31").is_err() && parse("RTMAX-31").is_err() && parse("RTMIN+x").is_err());
    }
}
