//! What a service's process is constrained to, applied by the caller at spawn: its user and
//! group, nice value, OOM score adjustment and resource limits, which work on every kernel and
//! for local and agent services alike (an agent resolves `user` and `group` in its container);
//! and the limits of its cgroup v2 (`memory_max`, `cpu_max`, `pids_max`, ...), which need cgroup
//! v2 with the controller.
//!
//! ```toml
//! [services.web]
//! user = "www-data"          # a name or a number
//! group = "www-data"         # default: the user's primary group
//! nice = 5                   # -20..19
//! oom_score_adj = 500        # -1000..1000
//! rlimits = { nofile = 1024, core = 0, stack = "8388608:infinity" }   # N, "soft:hard"
//! memory_max = "256M"        # memory.max: bytes, K/M/G suffixes, or "max"
//! memory_high = "200M"       # memory.high
//! memory_low = "64M"         # memory.low
//! cpu_max = "50%"            # cpu.max as a share of one CPU ("150%": 1.5 CPUs), or "max"
//! cpu_weight = 100           # cpu.weight, 1..10000
//! io_weight = 100            # io.weight, 1..10000
//! pids_max = 64              # pids.max, or "max"
//! cpus = "0-1"               # cpuset.cpus
//! ```

use std::collections::BTreeMap;

use toml::Spanned;

/// A service's constraints, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    /// The user to run as (a name or a number).
    pub user: Option<String>,
    /// The group to run as (a name or a number).
    pub group: Option<String>,
    /// The nice value.
    pub nice: Option<i32>,
    /// `/proc/PID/oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// Resource limits by `prlimit(1)` name: soft and hard, `None` for infinity.
    pub rlimits: BTreeMap<String, (Option<u64>, Option<u64>)>,
    /// Values for files of the service's cgroup, in the order written.
    pub cgroup: Vec<CgroupLimit>,
}

/// One value written to a file of a service's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLimit {
    /// The configuration key (`memory_max`).
    pub key: &'static str,
    /// The controller it needs (`memory`).
    pub controller: &'static str,
    /// The file (`memory.max`).
    pub file: &'static str,
    /// What is written.
    pub value: String,
}

/// The constraint keys of a `[services.NAME]` table, as written (borrowed from it).
pub(crate) struct RawConstraints<'a> {
    pub user: &'a Option<Spanned<String>>,
    pub group: &'a Option<Spanned<String>>,
    pub nice: &'a Option<Spanned<i64>>,
    pub oom_score_adj: &'a Option<Spanned<i64>>,
    pub rlimits: &'a Option<Spanned<BTreeMap<String, toml::Value>>>,
    /// The cgroup keys present, by name.
    pub cgroup: Vec<(&'static str, &'a Spanned<toml::Value>)>,
}

/// The cgroup keys: configuration key, controller, file.
pub(crate) const CGROUP_KEYS: [(&str, &str, &str); 8] = [
    ("memory_max", "memory", "memory.max"),
    ("memory_high", "memory", "memory.high"),
    ("memory_low", "memory", "memory.low"),
    ("cpu_max", "cpu", "cpu.max"),
    ("cpu_weight", "cpu", "cpu.weight"),
    ("io_weight", "io", "io.weight"),
    ("pids_max", "pids", "pids.max"),
    ("cpus", "cpuset", "cpuset.cpus"),
];

/// A checking error: where (the key's span) and what.
pub(crate) type Failure = (std::ops::Range<usize>, String);

impl RawConstraints<'_> {
    /// Checks the keys of service `name`. Whether `user` and `group` exist is for the spawner to
    /// say (this system's user database, or the agent's).
    pub(crate) fn check(&self, name: &str) -> Result<Constraints, Failure> {
        let mut c = Constraints::default();
        for (key, v, slot) in [("user", self.user, &mut c.user), ("group", self.group, &mut c.group)] {
            if let Some(v) = v {
                let s = v.get_ref();
                if s.is_empty() || s.len() > 256 || s.contains([':', '\n', '\0']) {
                    return Err((v.span(), format!("service {name}: {key} must be a name or a number")));
                }
                *slot = Some(s.clone());
            }
        }
        let ranged = |key: &str, v: &Option<Spanned<i64>>, min: i64, max: i64| match v {
            None => Ok(None),
            Some(n) if (min..=max).contains(n.get_ref()) => Ok(Some(*n.get_ref() as i32)),
            Some(n) => Err((n.span(), format!("service {name}: {key} must be from {min} to {max}"))),
        };
        c.nice = ranged("nice", self.nice, -20, 19)?;
        c.oom_score_adj = ranged("oom_score_adj", self.oom_score_adj, -1000, 1000)?;
        if let Some(limits) = self.rlimits {
            for (resource, value) in limits.get_ref() {
                let fail = |m: String| (limits.span(), format!("service {name}: rlimits.{resource}: {m}"));
                if !holden_proto::RLIMIT_NAMES.contains(&resource.as_str()) {
                    let names = holden_proto::RLIMIT_NAMES.join(", ");
                    return Err(fail(format!("unknown resource (one of {names})")));
                }
                let (soft, hard) = parse_rlimit(value).map_err(fail)?;
                c.rlimits.insert(resource.clone(), (soft, hard));
            }
        }
        for (key, v) in &self.cgroup {
            let (_, controller, file) = CGROUP_KEYS.iter().find(|(k, _, _)| k == key).expect("a cgroup key");
            let value =
                cgroup_value(key, v.get_ref()).map_err(|m| (v.span(), format!("service {name}: {key}: {m}")))?;
            c.cgroup.push(CgroupLimit { key, controller, file, value });
        }
        Ok(c)
    }
}

/// The text written to a cgroup file for configuration key `key`.
fn cgroup_value(key: &str, v: &toml::Value) -> Result<String, String> {
    let text = v.as_str().map(str::trim);
    match key {
        "memory_max" | "memory_high" | "memory_low" => match (v, text) {
            (toml::Value::Integer(n), _) if *n >= 0 => Ok(n.to_string()),
            (_, Some("max")) => Ok("max".into()),
            (_, Some(t)) => parse_size(t).map(|n| n.to_string()),
            _ => Err("must be a size (bytes, or a number with K, M or G) or \"max\"".into()),
        },
        "cpu_max" => match text {
            Some("max") => Ok("max 100000".into()),
            Some(t) => {
                let pct: f64 = t
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse().ok())
                    .ok_or("must be a percentage of one CPU (\"50%\") or \"max\"")?;
                if !(1.0..=100_000.0).contains(&pct) {
                    return Err("must be from 1% to 100000%".into());
                }
                Ok(format!("{} 100000", (pct * 1000.0).round() as u64))
            }
            None => Err("must be a percentage of one CPU (\"50%\") or \"max\"".into()),
        },
        "cpu_weight" | "io_weight" => match v.as_integer() {
            Some(n) if (1..=10_000).contains(&n) && key == "io_weight" => Ok(format!("default {n}")),
            Some(n) if (1..=10_000).contains(&n) => Ok(n.to_string()),
            _ => Err("must be an integer from 1 to 10000".into()),
        },
        "pids_max" => match (v, text) {
            (toml::Value::Integer(n), _) if *n >= 1 => Ok(n.to_string()),
            (_, Some("max")) => Ok("max".into()),
            _ => Err("must be a positive integer or \"max\"".into()),
        },
        _ => match text {
            // cpus: a CPU list as cpuset.cpus takes it ("0-1", "0,2-3").
            Some(t) if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '-') => Ok(t.into()),
            _ => Err("must be a CPU list such as \"0-1\" or \"0,2\"".into()),
        },
    }
}

/// A size: bytes, or a number with a K, M or G suffix (powers of 1024).
fn parse_size(t: &str) -> Result<u64, String> {
    let (num, scale) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("{t:?} is not a size (bytes, or a number with K, M or G)"))?;
    n.checked_mul(scale).ok_or_else(|| format!("{t:?} is too large"))
}

/// An rlimit value: `N` (soft and hard), `"infinity"`, or `"SOFT:HARD"` with each part a number
/// or `infinity` (`unlimited` is the same).
fn parse_rlimit(v: &toml::Value) -> Result<(Option<u64>, Option<u64>), String> {
    let one = |s: &str| -> Result<Option<u64>, String> {
        match s.trim() {
            "infinity" | "unlimited" => Ok(None),
            n => n.parse().map(Some).map_err(|_| format!("{n:?} is not a number or \"infinity\"")),
        }
    };
    let (soft, hard) = match v {
        toml::Value::Integer(n) if *n >= 0 => (Some(*n as u64), Some(*n as u64)),
        toml::Value::String(s) => match s.split_once(':') {
            Some((soft, hard)) => (one(soft)?, one(hard)?),
            None => {
                let n = one(s)?;
                (n, n)
            }
        },
        _ => return Err("must be a non-negative integer, \"infinity\" or \"SOFT:HARD\"".into()),
    };
    if soft.unwrap_or(u64::MAX) > hard.unwrap_or(u64::MAX) {
        return Err("the soft limit is above the hard limit".into());
    }
    Ok((soft, hard))
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Config, ConfigError};
    use std::path::Path;

    fn service(keys: &str) -> Result<Config, ConfigError> {
        parse(Path::new("h.toml"), &format!("[services.s]\ncommand = [\"true\"]\n{keys}\n"))
    }

    #[test]
    fn constraints_parse_with_their_defaults() {
        let c = service("").unwrap().services["s"].constraints.clone();
        assert_eq!(c, super::Constraints::default());
        let c = service(
            "user = \"www\"\ngroup = \"33\"\nnice = -5\noom_score_adj = 1000\n\
             rlimits = { nofile = 1024, core = \"infinity\", stack = \"10:unlimited\", memlock = \"5:6\" }",
        )
        .unwrap()
        .services["s"]
            .constraints
            .clone();
        assert_eq!(
            (c.user.as_deref(), c.group.as_deref(), c.nice, c.oom_score_adj),
            (Some("www"), Some("33"), Some(-5), Some(1000))
        );
        let r: Vec<_> = c.rlimits.into_iter().collect();
        assert_eq!(
            r,
            [
                ("core".to_string(), (None, None)),
                ("memlock".to_string(), (Some(5), Some(6))),
                ("nofile".to_string(), (Some(1024), Some(1024))),
                ("stack".to_string(), (Some(10), None)),
            ]
        );
    }

    #[test]
    fn constraint_mistakes_name_the_key_and_the_line() {
        for (keys, line, needle) in [
            ("nice = 20", 3, "service s: nice must be from -20 to 19"),
            ("\noom_score_adj = -1001", 4, "oom_score_adj must be from -1000 to 1000"),
            ("user = \"\"", 3, "user must be a name or a number"),
            ("group = \"a\\nb\"", 3, "group must be a name or a number"),
            ("rlimits = { nofile = -1 }", 3, "rlimits.nofile: must be a non-negative integer"),
            ("rlimits = { nofile = \"3:2\" }", 3, "soft limit is above the hard limit"),
            ("rlimits = { bogus = 1 }", 3, "rlimits.bogus: unknown resource (one of"),
            ("nice = \"5\"", 3, "invalid type"),
        ] {
            let e = service(keys).unwrap_err();
            assert_eq!(e.line, line, "{keys}: {e}");
            assert!(e.to_string().contains(needle), "{keys}: {e}");
        }
    }
}
