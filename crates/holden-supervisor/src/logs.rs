//! Captured output: each service's stdout and stderr arrive through pipes, are cut into lines,
//! timestamped and appended to `STATE_DIR/logs/NAME.log`, which is rotated by size
//! (`NAME.log.1` is the newest old file). Lines longer than [`MAX_LINE`] are split.
//!
//! The cost is per read, not per line: each wake-up takes one read of at most [`READ_SIZE`]
//! bytes from a pipe (the event loop comes back to a pipe that still has data on its next
//! iteration, after serving everything else), stamps every line of it with one timestamp and
//! appends them with one `write`. Log files are created 0640, whatever the umask.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use holden_sys::event::READABLE;

use crate::conn::Follow;
use crate::supervisor::{say, Supervisor, Target};

/// The longest line kept whole; longer ones are cut at this size.
pub const MAX_LINE: usize = 16 * 1024;
/// The most bytes taken from one pipe per wake-up, so one chatty service cannot starve the
/// event loop or its neighbours.
pub const READ_SIZE: usize = 32 * 1024;

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = OpenOptions::new().create(true).append(true).mode(0o640).custom_flags(libc::O_NOFOLLOW).open(path)?;
    // A file created before (or under a wider umask) is narrowed too.
    if f.metadata()?.permissions().mode() & 0o777 != 0o640 {
        f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    }
    Ok(f)
}

/// One service's log file, with rotation.
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    keep: u32,
    /// The last write error reported (reported again only when it changes).
    pub last_error: Option<String>,
}

impl LogFile {
    /// Opens (creating) `dir/NAME.log` for appending.
    pub fn open(dir: &Path, name: &str, max_size: u64, keep: u32) -> io::Result<LogFile> {
        let path = dir.join(format!("{name}.log"));
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile { path, file: Some(file), size, max_size, keep, last_error: None })
    }

    /// The current file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies new rotation settings (on reload).
    pub fn set_limits(&mut self, max_size: u64, keep: u32) {
        self.max_size = max_size;
        self.keep = keep;
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        // The file was removed or moved (by hand, by logrotate): start a new one, and leave the
        // rotated ones alone.
        if !self.path.exists() {
            return self.reopen();
        }
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        let renamed = std::fs::rename(&self.path, self.rotated(1));
        // Whatever happened, write on: to a new file, or (if the rename failed) the same one,
        // with its real size, so that a failure does not rotate again at every line.
        self.reopen()?;
        renamed
    }

    fn reopen(&mut self) -> io::Result<()> {
        let f = open_append(&self.path)?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    /// Appends finished lines (each with its newline) in one write, rotating first if they
    /// would not fit.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        let len = chunk.len() as u64;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_append(&self.path)?),
        };
        file.write_all(chunk)?;
        self.size += len;
        Ok(())
    }

    /// The last `n` lines, from the current file and as many rotated ones as needed, as many
    /// as fit in `budget` bytes written as JSON strings (a `Logs` reply must stay a message of
    /// the control protocol). Reads only that many bytes from the files' ends, whatever their
    /// size. Returns the lines, oldest first, and whether older ones were left out for the
    /// budget.
    pub fn tail(&self, n: usize, budget: usize) -> (Vec<String>, bool) {
        // Newest first while collecting.
        let mut out: Vec<String> = Vec::new();
        let mut used = 0;
        let files = std::iter::once(self.path.clone()).chain((1..=self.keep).map(|k| self.rotated(k)));
        for path in files {
            if out.len() >= n {
                break;
            }
            let Ok(mut f) = File::open(&path) else { break };
            let Ok(len) = f.metadata().map(|m| m.len()) else { break };
            // A line costs more as JSON than in the file, so what is left of the budget (and
            // one byte: the newline before the first whole line) is all that can be needed.
            let start = len.saturating_sub((budget - used + 1) as u64);
            let mut raw = Vec::new();
            if f.seek(io::SeekFrom::Start(start)).and_then(|_| f.read_to_end(&mut raw)).is_err() {
                break;
            }
            let text = String::from_utf8_lossy(&raw);
            let mut lines: Vec<&str> = text.lines().collect();
            if start > 0 && !lines.is_empty() {
                // Cut at the start (maybe mid-character): the rest did not fit.
                lines.remove(0);
            }
            for l in lines.into_iter().rev() {
                let cost = json_len(l) + 1;
                if out.len() >= n {
                    break;
                }
                if used + cost > budget {
                    out.reverse();
                    return (out, true);
                }
                used += cost;
                out.push(l.to_owned());
            }
            if start > 0 && out.len() < n {
                out.reverse();
                return (out, true);
            }
        }
        out.reverse();
        (out, false)
    }
}

/// The length of `s` as a JSON string, quotes included.
fn json_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

/// The read end of a service's stdout or stderr pipe, with its unfinished line.
pub struct Pipe {
    /// The service.
    pub service: String,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// Its key at the log-pipe holder, if one keeps a copy.
    pub holder_key: Option<String>,
    fd: File,
    partial: Vec<u8>,
}

impl Pipe {
    /// Wraps a non-blocking read end.
    pub fn new(service: &str, stream: &'static str, fd: OwnedFd) -> io::Result<Pipe> {
        holden_sys::fd::set_nonblocking(fd.as_fd(), true)?;
        Ok(Pipe { service: service.into(), stream, holder_key: None, fd: File::from(fd), partial: Vec::new() })
    }

    /// Reads once (at most [`READ_SIZE`] bytes) and appends the finished lines to `out`, each
    /// formatted as `TIMESTAMP STREAM TEXT\n`. Returns how many lines were added and whether
    /// the pipe reached its end (every writer closed it: the unfinished line, if any, is added
    /// too).
    pub fn read_into(&mut self, out: &mut Vec<u8>) -> (usize, bool) {
        let mut buf = [0u8; READ_SIZE];
        let eof = loop {
            match self.fd.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    self.partial.extend_from_slice(&buf[..n]);
                    break false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: nothing there. Any other error ends the pipe like EOF.
                Err(e) => break e.kind() != io::ErrorKind::WouldBlock,
            }
        };
        (self.cut(out, eof), eof)
    }

    fn cut(&mut self, out: &mut Vec<u8>, all: bool) -> usize {
        let mut now: Option<String> = None;
        let mut start = 0;
        let mut count = 0;
        loop {
            let rest = &self.partial[start..];
            let end = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= MAX_LINE => Some((i, i + 1)),
                _ if rest.len() >= MAX_LINE => Some((MAX_LINE, MAX_LINE)),
                _ if all && !rest.is_empty() => Some((rest.len(), rest.len())),
                _ => None,
            };
            let Some((text_end, next)) = end else { break };
            let stamp = now.get_or_insert_with(|| crate::text::timestamp(std::time::SystemTime::now()));
            let mut text = &rest[..text_end];
            if let Some(t) = text.strip_suffix(b"\r") {
                text = t;
            }
            out.extend_from_slice(stamp.as_bytes());
            out.push(b' ');
            out.extend_from_slice(self.stream.as_bytes());
            out.push(b' ');
            match std::str::from_utf8(text) {
                Ok(t) => out.extend_from_slice(t.as_bytes()),
                Err(_) => out.extend_from_slice(String::from_utf8_lossy(text).as_bytes()),
            }
            out.push(b'\n');
            count += 1;
            start += next;
        }
        self.partial.drain(..start);
        count
    }
}

impl AsFd for Pipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Supervisor {
    /// Watches a read end of a service's stdout or stderr pipe; `holder_key` names the copy the
    /// log-pipe holder keeps, forgotten when the pipe ends.
    pub(crate) fn watch_pipe(&mut self, name: &str, which: &'static str, fd: OwnedFd, holder_key: Option<String>) {
        let Some(svc) = self.services.get_mut(name) else { return };
        if svc.log.is_none() {
            match LogFile::open(&self.log_dir, name, self.cfg.log_max_size, self.cfg.log_keep) {
                Ok(l) => svc.log = Some(l),
                Err(e) => say(&format!("{name}: cannot open its log in {}: {e}", self.log_dir.display())),
            }
        }
        match Pipe::new(name, which, fd) {
            Ok(mut pipe) => {
                pipe.holder_key = holder_key;
                let token = self.token();
                if self.epoll.add(&pipe, token, READABLE).is_ok() {
                    self.targets.insert(token, Target::Pipe(pipe));
                }
            }
            Err(e) => say(&format!("{name}: {which} pipe: {e}")),
        }
    }

    /// One read from a pipe into its service's log (one write), and to followers. Returns
    /// whether it read anything.
    pub(crate) fn on_pipe(&mut self, token: u64) -> bool {
        let Some(Target::Pipe(pipe)) = self.targets.get_mut(&token) else { return false };
        let mut chunk = Vec::new();
        let (count, eof) = pipe.read_into(&mut chunk);
        let name = pipe.service.clone();
        // The spawn tag of the process the pipe belongs to (`NAME/STREAM/TAG`), if known.
        let tag = pipe.holder_key.as_deref().and_then(|k| k.rsplit('/').next()).map(str::to_owned);
        if eof {
            if let Some(Target::Pipe(p)) = self.targets.remove(&token) {
                let _ = self.epoll.delete(&p);
                if let (Some(h), Some(key)) = (&mut self.holder, &p.holder_key) {
                    h.forget(key);
                }
            }
        }
        if count == 0 {
            return false;
        }
        self.log_ready(&name, tag.as_deref(), &chunk);
        if let Some(log) = self.services.get_mut(&name).and_then(|s| s.log.as_mut()) {
            match log.write_chunk(&chunk) {
                Ok(()) => log.last_error = None,
                Err(e) => {
                    let msg = format!("write {}: {e}", log.path().display());
                    if log.last_error.as_ref() != Some(&msg) {
                        say(&format!("{name}: {msg}"));
                        log.last_error = Some(msg);
                    }
                }
            }
        }
        let following = self.followers.iter().any(|t| {
            matches!(self.targets.get(t), Some(Target::Conn(c)) if matches!(&c.follow, Some(Follow::Logs(n)) if *n == name))
        });
        if following {
            let text = String::from_utf8_lossy(&chunk);
            let lines: Vec<&str> = text.lines().collect();
            self.broadcast(
                |f| matches!(f, Follow::Logs(n) if *n == name),
                || holden_proto::encode_reply(&serde_json::json!({ "lines": lines }), true),
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_files_and_tail_reads_across_them() {
        let dir = std::env::temp_dir().join(format!("holden-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = LogFile::open(&dir, "svc", 1024, 2).unwrap();
        for i in 0..200 {
            log.write_chunk(format!("line {i:04} {}\n", "x".repeat(40)).as_bytes()).unwrap();
        }
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(dir.join("svc.log")) <= 1024);
        assert!(size(dir.join("svc.log.1")) > 900 && size(dir.join("svc.log.2")) > 900);
        assert!(!dir.join("svc.log.3").exists());
        let (tail, cut) = log.tail(30, usize::MAX / 2);
        assert_eq!((tail.len(), cut), (30, false));
        assert!(tail[29].starts_with("line 0199"), "{:?}", tail[29]);
        assert!(tail[0].starts_with("line 0170"), "{:?}", tail[0]);
        // Everything there is: fewer than asked, nothing cut.
        let (all, cut) = log.tail(1000, usize::MAX / 2);
        assert!(!cut && all.len() < 200 && all[0].starts_with("line 0"), "{}", all.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn regression_a_tail_fits_its_budget_as_json_and_says_what_it_left_out() {
        // Before: `holden logs -n 50000` (or `--since`) asked for more than one reply could
        // carry, and the CLI refused the reply ("larger than the protocol allows").
        let dir = std::env::temp_dir().join(format!("holden-logs-budget-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = LogFile::open(&dir, "svc", 1 << 20, 3).unwrap();
        // Quotes and a control character: longer as JSON than in the file.
        for i in 0..3000 {
            log.write_chunk(format!("line {i:04} \"{}\" \u{1}\n", "x".repeat(90)).as_bytes()).unwrap();
        }
        let budget = 64 * 1024;
        let (tail, cut) = log.tail(100_000, budget);
        assert!(cut, "older lines were left out");
        let json = serde_json::to_string(&tail).unwrap();
        assert!(json.len() <= budget + 2, "{} bytes as JSON", json.len());
        assert!(json.len() > budget - 200, "the budget is used: {} bytes", json.len());
        assert!(tail.last().unwrap().starts_with("line 2999"), "the newest line is there");
        assert!(tail.iter().all(|l| l.starts_with("line ") && l.ends_with('\u{1}')), "only whole lines");
        let (few, cut) = log.tail(5, budget);
        assert_eq!((few.len(), cut), (5, false));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pipes_cut_lines_split_long_ones_and_flush_the_last_at_eof() {
        let (r, mut w) = std::io::pipe().unwrap();
        let mut p = Pipe::new("svc", "stdout", r.into()).unwrap();
        w.write_all(b"one\ntw").unwrap();
        let drain = |p: &mut Pipe| {
            let mut out = Vec::new();
            let (n, eof) = p.read_into(&mut out);
            let text = String::from_utf8(out).unwrap();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            assert_eq!(lines.len(), n);
            (lines, eof)
        };
        let (lines, eof) = drain(&mut p);
        assert_eq!((lines.len(), eof), (1, false));
        assert!(lines[0].ends_with(" stdout one"), "{lines:?}");
        w.write_all(&[b'y'; MAX_LINE + 5]).unwrap();
        w.write_all(b"o\r\nthree").unwrap();
        drop(w);
        let mut lines = Vec::new();
        let eof = loop {
            let (mut more, eof) = drain(&mut p);
            lines.append(&mut more);
            if eof {
                break eof;
            }
        };
        assert!(eof);
        assert_eq!(lines.len(), 3, "two cut from the long line, then the last at EOF");
        assert!(lines[0].ends_with(&format!("tw{}", "y".repeat(MAX_LINE - 2))));
        assert!(lines[1].ends_with(" stdout yyyyyyyo"));
        assert!(lines[2].ends_with(" stdout three"));
    }
}
