//! What `execve(2)` is given, prepared by the parent before a spawn (no system calls here):
//! the PATH candidates, as `execvp(3)` would try them, and the environment with updates applied.
//! Re-exported from [`crate::process`].

use std::ffi::CString;

/// The paths `execvp(3)` would try for `program`, in order: `program` itself if it contains a
/// slash, else each directory of `path` (an empty entry is the current directory) joined with
/// it; `path` defaults to `/usr/local/bin:/usr/bin:/bin`. Entries with a NUL byte are skipped.
pub fn exec_candidates(program: &[u8], path: Option<&[u8]>) -> Vec<CString> {
    if program.contains(&b'/') {
        return CString::new(program).into_iter().collect();
    }
    let path = path.unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    path.split(|&b| b == b':')
        .filter_map(|dir| {
            let mut full = Vec::with_capacity(dir.len() + 1 + program.len());
            if dir.is_empty() {
                full.extend_from_slice(b".");
            } else {
                full.extend_from_slice(dir);
            }
            full.push(b'/');
            full.extend_from_slice(program);
            CString::new(full).ok()
        })
        .collect()
}

/// An environment (`KEY=VALUE` entries) with updates applied in order: `(KEY, Some(VALUE))`
/// sets (replacing every earlier entry of that key, the new one last), `(KEY, None)` removes.
/// Linear in the entries and updates (an index by key, not a scan per update). The one
/// environment builder of the library's local spawns and the agent's.
pub fn merge_env(base: Vec<Vec<u8>>, updates: &[(&[u8], Option<&[u8]>)]) -> Vec<Vec<u8>> {
    fn key(e: &[u8]) -> &[u8] {
        e.split(|&b| b == b'=').next().unwrap_or(e)
    }
    let mut env: Vec<Option<Vec<u8>>> = base.into_iter().map(Some).collect();
    let mut index: std::collections::HashMap<Vec<u8>, Vec<usize>> = std::collections::HashMap::new();
    for (i, e) in env.iter().enumerate() {
        index.entry(key(e.as_deref().expect("all present yet")).to_vec()).or_default().push(i);
    }
    for (k, v) in updates {
        for i in index.remove(*k).unwrap_or_default() {
            env[i] = None;
        }
        if let Some(v) = v {
            let mut kv = k.to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v);
            index.insert(k.to_vec(), vec![env.len()]);
            env.push(Some(kv));
        }
    }
    env.into_iter().flatten().collect()
}
