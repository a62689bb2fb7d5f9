//! The user database as a static binary can read it: `/etc/passwd` and `/etc/group`, parsed
//! directly (no NSS). It resolves the `user` and `group` a process is spawned as: on the
//! caller's side for a local spawn, in the container's own files for the agent's.
//!
//! Man pages: <https://man7.org/linux/man-pages/man5/passwd.5.html>,
//! <https://man7.org/linux/man-pages/man5/group.5.html>.

use std::fmt;
use std::path::Path;

/// Who a process runs as: what `setresuid`, `setresgid` and `setgroups` are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Real, effective and saved uid.
    pub uid: u32,
    /// Real, effective and saved gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Why a user or group could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// No such user name in `/etc/passwd`.
    UnknownUser(String),
    /// No such group name in `/etc/group`.
    UnknownGroup(String),
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::UnknownUser(u) => write!(f, "no user {u:?} in /etc/passwd"),
            LookupError::UnknownGroup(g) => write!(f, "no group {g:?} in /etc/group"),
        }
    }
}

impl std::error::Error for LookupError {}

/// Resolves `user` and `group` (names or numbers) against `/etc/passwd` and `/etc/group` under
/// `root` (`/` for this system) into the credentials a process gets, as `login` would:
/// - `user` alone: its uid, its primary group from `/etc/passwd` (a number that is in no
///   entry: the same number as gid), and as supplementary groups every group that lists it as a
///   member, plus the primary one;
/// - `group` as well: that gid replaces the primary group, as `initgroups(3)` is given it;
/// - `group` alone: `current_uid` stays, with that gid and no other group.
///
/// `None` if neither is given.
pub fn resolve(
    root: &Path,
    user: Option<&str>,
    group: Option<&str>,
    current_uid: u32,
) -> Result<Option<Credentials>, LookupError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let groups_file = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    let gid = group.map(|g| group_id(&groups_file, g)).transpose()?;
    let Some(user) = user else {
        let gid = gid.expect("group is set when user is not");
        if gid == u32::MAX {
            return Err(LookupError::UnknownGroup(group.unwrap_or_default().into()));
        }
        return Ok(Some(Credentials { uid: current_uid, gid, groups: vec![gid] }));
    };
    let entry = passwd.lines().filter_map(PasswdEntry::parse).find(|e| match user.parse::<u32>() {
        Ok(uid) => e.uid == uid,
        Err(_) => e.name == user,
    });
    let (uid, name, primary) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, Some(e.name), e.gid),
        (None, Ok(uid)) => (uid, None, uid),
        (None, Err(_)) => return Err(LookupError::UnknownUser(user.into())),
    };
    let gid = gid.unwrap_or(primary);
    // -1 means "no change" to setresuid and setresgid: it would keep the spawner's identity.
    if uid == u32::MAX {
        return Err(LookupError::UnknownUser(user.into()));
    }
    if gid == u32::MAX {
        return Err(LookupError::UnknownGroup(group.unwrap_or(user).into()));
    }
    let mut groups = vec![gid];
    if let Some(name) = name {
        for line in groups_file.lines() {
            let mut f = line.split(':');
            let (Some(_), Some(_), Some(g), Some(members)) = (f.next(), f.next(), f.next(), f.next()) else {
                continue;
            };
            if let Ok(g) = g.parse::<u32>() {
                if members.split(',').any(|m| m.trim() == name) && !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
    }
    Ok(Some(Credentials { uid, gid, groups }))
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

impl<'a> PasswdEntry<'a> {
    fn parse(line: &'a str) -> Option<PasswdEntry<'a>> {
        let mut f = line.split(':');
        let name = f.next().filter(|n| !n.is_empty() && !n.starts_with('#'))?;
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some(PasswdEntry { name, uid, gid })
    }
}

/// A group name or number as a gid, from `/etc/group` under `root`.
pub fn group(root: &Path, group: &str) -> Result<u32, LookupError> {
    group_id(&std::fs::read_to_string(root.join("etc/group")).unwrap_or_default(), group)
}

fn group_id(groups_file: &str, group: &str) -> Result<u32, LookupError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    groups_file
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| LookupError::UnknownGroup(group.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("holden-users-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n#bad\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/group"), "root:x:0:\nwww:x:33:\nlogs:x:4:www,other\nnogroup:x:65534:\n").unwrap();
        dir
    }

    #[test]
    fn users_and_groups_resolve_as_login_would() {
        let r = root();
        let c = |u, g| resolve(&r, u, g, 1000);
        assert_eq!(c(None, None), Ok(None));
        assert_eq!(c(Some("www"), None), Ok(Some(Credentials { uid: 33, gid: 33, groups: vec![33, 4] })));
        assert_eq!(c(Some("33"), None), Ok(Some(Credentials { uid: 33, gid: 33, groups: vec![33, 4] })));
        assert_eq!(
            c(Some("www"), Some("nogroup")),
            Ok(Some(Credentials { uid: 33, gid: 65534, groups: vec![65534, 4] }))
        );
        assert_eq!(c(Some("4242"), None), Ok(Some(Credentials { uid: 4242, gid: 4242, groups: vec![4242] })));
        assert_eq!(c(None, Some("logs")), Ok(Some(Credentials { uid: 1000, gid: 4, groups: vec![4] })));
        assert_eq!(c(Some("nosuch"), None), Err(LookupError::UnknownUser("nosuch".into())));
        assert_eq!(c(Some("4294967295"), Some("0")), Err(LookupError::UnknownUser("4294967295".into())));
        assert_eq!(c(None, Some("4294967295")), Err(LookupError::UnknownGroup("4294967295".into())));
        assert_eq!(c(Some("www"), Some("nosuch")), Err(LookupError::UnknownGroup("nosuch".into())));
        std::fs::remove_dir_all(&r).unwrap();
    }
}
