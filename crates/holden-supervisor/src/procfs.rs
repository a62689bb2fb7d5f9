//! Queries of `/proc`: process state, parents, environments, ancestry.

/// The fields of `/proc/PID/stat` from field 3 (the state) on, so field N of proc(5) is at
/// index N - 3. The command name, field 2, is in parentheses and may hold anything: the fields
/// are taken after the last ')'.
pub fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_owned).collect())
}

/// Whether `pid` exists and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

/// The pids of every process in `/proc`.
pub fn all_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// The pids of every process whose parent is `ppid`, read from `/proc`.
pub fn children_of(ppid: i32) -> Vec<i32> {
    all_pids().filter(|&pid| stat_fields(pid).and_then(|f| f.get(1)?.parse().ok()) == Some(ppid)).collect()
}

/// The pids of running processes (zombies excluded) whose environment holds `KEY=VALUE`.
pub fn processes_with_env(key: &str, value: &str) -> Vec<i32> {
    all_pids().filter(|&pid| is_running(pid) && env_value(pid, key).is_some_and(|v| v == value)).collect()
}

/// The value of `key` in the environment `pid` started with (`/proc/PID/environ`), if it is
/// there and readable.
pub fn env_value(pid: i32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    env.split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Field 22 of `/proc/PID/stat`: the start time in clock ticks after boot.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

/// The parent of `pid`, from `/proc/PID/stat`.
pub fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Whether `pid` is `ancestor` or one of its descendants (a bounded walk up the parents).
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        if p == ancestor {
            return true;
        }
        match parent_of(p) {
            Some(parent) if parent > 0 && parent != p => p = parent,
            _ => return false,
        }
    }
    false
}

/// The pids a supervisor must never signal or adopt, whatever a state file says: PID 1, its
/// own pid and every ancestor of it (in its pid namespace), and 0 and negatives (groups).
pub fn protected_pids() -> Vec<i32> {
    let mut out = vec![1, std::process::id() as i32];
    let mut pid = std::process::id() as i32;
    while let Some(parent) = parent_of(pid).filter(|p| *p > 1 && !out.contains(p)) {
        out.push(parent);
        pid = parent;
    }
    out
}
