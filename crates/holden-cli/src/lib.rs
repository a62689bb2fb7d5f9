//! Pieces shared by Holden's command-line programs (`holden`, `pidfd_monitor`): shell-like word
//! splitting, timestamps, signal names, and listing a process's children from `/proc`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// Why a command line could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError(pub String);

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `line` into words the way a POSIX shell does before expansion (the `shell-words`
/// crate): blanks separate words, single quotes keep everything literal, double quotes keep
/// blanks and honour backslash escapes, and a backslash outside quotes escapes the next
/// character. There is no expansion of variables, globs or tildes.
pub fn split_words(line: &str) -> Result<Vec<String>, SplitError> {
    // A backslash that ends the line would continue it in a shell: here there is no next line.
    let trailing = line.trim_end_matches(['\n', ' ', '\t']).chars().rev().take_while(|c| *c == '\\').count();
    if trailing % 2 == 1 {
        return Err(SplitError("a backslash ends the line".into()));
    }
    shell_words::split(line).map_err(|e| SplitError(e.to_string()))
}

pub use holden_supervisor::procfs::{children_of, env_value, is_running, processes_with_env, stat_fields};
pub use holden_supervisor::text::{signal_name, timestamp};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        let w = |s: &str| split_words(s).unwrap();
        assert_eq!(w("sleep 0.2"), ["sleep", "0.2"]);
        assert_eq!(w("  sh -c 'echo a  b'  "), ["sh", "-c", "echo a  b"]);
        assert_eq!(w(r#"echo "a \"q\" $x" b\ c"#), ["echo", "a \"q\" $x", "b c"]);
        assert_eq!(w("a''b \"\""), ["ab", ""]);
        assert_eq!(w(""), Vec::<String>::new());
        assert!(split_words("echo 'open").is_err());
        assert!(split_words("echo \"open").is_err());
        assert!(split_words("echo \\").is_err());
    }

    #[test]
    fn timestamps_are_utc_iso8601() {
        let t = |s: u64, ms: u64| timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(s * 1000 + ms));
        assert_eq!(t(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(t(1_795_791_845, 123), "2026-11-27T15:04:05.123Z");
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(40), "SIGRTMIN+6");
    }
}
