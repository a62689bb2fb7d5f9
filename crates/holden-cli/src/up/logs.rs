//! Captured output: each service's stdout and stderr arrive through pipes, are cut into lines,
//! timestamped and appended to `STATE_DIR/logs/NAME.log`, which is rotated by size
//! (`NAME.log.1` is the newest old file). Lines longer than [`MAX_LINE`] are split.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The longest line kept whole; longer ones are cut at this size.
pub const MAX_LINE: usize = 16 * 1024;
/// The most bytes taken from one pipe per wake-up, so one chatty service cannot starve the
/// event loop.
const READ_BUDGET: usize = 256 * 1024;

/// One service's log file, with rotation.
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    keep: u32,
}

impl LogFile {
    /// Opens (creating) `dir/NAME.log` for appending.
    pub fn open(dir: &Path, name: &str, max_size: u64, keep: u32) -> io::Result<LogFile> {
        let path = dir.join(format!("{name}.log"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile { path, file: Some(file), size, max_size, keep })
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
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        self.size = 0;
        Ok(())
    }

    /// Appends one finished line (with its newline), rotating first if it would not fit.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(OpenOptions::new().create(true).append(true).open(&self.path)?),
        };
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        file.write_all(&buf)?;
        self.size += len;
        Ok(())
    }

    /// The last `n` lines, from the current file and as many rotated ones as needed.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if n == 0 {
            return out;
        }
        let files = std::iter::once(self.path.clone()).chain((1..=self.keep).map(|k| self.rotated(k)));
        for path in files {
            let Ok(text) = std::fs::read(&path) else { break };
            let text = String::from_utf8_lossy(&text);
            let mut lines: Vec<String> = text.lines().rev().take(n - out.len()).map(str::to_owned).collect();
            lines.reverse();
            lines.append(&mut out);
            out = lines;
            if out.len() >= n {
                break;
            }
        }
        out
    }
}

/// The read end of a service's stdout or stderr pipe, with its unfinished line.
pub struct Pipe {
    /// The service.
    pub service: String,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    fd: File,
    partial: Vec<u8>,
}

impl Pipe {
    /// Wraps a non-blocking read end.
    pub fn new(service: &str, stream: &'static str, fd: OwnedFd) -> io::Result<Pipe> {
        holden_sys::fd::set_nonblocking(fd.as_fd(), true)?;
        Ok(Pipe { service: service.into(), stream, fd: File::from(fd), partial: Vec::new() })
    }

    /// Reads what is there (up to a budget) and returns the finished lines, each already
    /// formatted as `TIMESTAMP STREAM TEXT`, and whether the pipe reached its end (every
    /// writer closed it: the unfinished line, if any, is returned too).
    pub fn drain(&mut self) -> (Vec<String>, bool) {
        let mut lines = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let mut taken = 0;
        let mut eof = false;
        while taken < READ_BUDGET {
            match self.fd.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    taken += n;
                    self.partial.extend_from_slice(&buf[..n]);
                    self.cut(&mut lines, false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // WouldBlock: drained. Any other error ends the pipe like EOF.
                    break;
                }
            }
        }
        if eof {
            self.cut(&mut lines, true);
        }
        (lines, eof)
    }

    fn cut(&mut self, lines: &mut Vec<String>, all: bool) {
        let now = holden_cli::timestamp(std::time::SystemTime::now());
        let mut start = 0;
        loop {
            let rest = &self.partial[start..];
            let end = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= MAX_LINE => Some((i, i + 1)),
                _ if rest.len() >= MAX_LINE => Some((MAX_LINE, MAX_LINE)),
                _ if all && !rest.is_empty() => Some((rest.len(), rest.len())),
                _ => None,
            };
            let Some((text_end, next)) = end else { break };
            let text = String::from_utf8_lossy(&rest[..text_end]);
            lines.push(format!("{now} {} {}", self.stream, text.trim_end_matches('\r')));
            start += next;
        }
        self.partial.drain(..start);
    }
}

impl AsFd for Pipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
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
            log.write_line(&format!("line {i:04} {}", "x".repeat(40))).unwrap();
        }
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(dir.join("svc.log")) <= 1024);
        assert!(size(dir.join("svc.log.1")) > 900 && size(dir.join("svc.log.2")) > 900);
        assert!(!dir.join("svc.log.3").exists());
        let tail = log.tail(30);
        assert_eq!(tail.len(), 30);
        assert!(tail[29].starts_with("line 0199"), "{:?}", tail[29]);
        assert!(tail[0].starts_with("line 0170"), "{:?}", tail[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pipes_cut_lines_split_long_ones_and_flush_the_last_at_eof() {
        let (r, mut w) = std::io::pipe().unwrap();
        let mut p = Pipe::new("svc", "stdout", r.into()).unwrap();
        w.write_all(b"one\ntw").unwrap();
        let (lines, eof) = p.drain();
        assert_eq!((lines.len(), eof), (1, false));
        assert!(lines[0].ends_with(" stdout one"), "{lines:?}");
        w.write_all(&[b'y'; MAX_LINE + 5]).unwrap();
        w.write_all(b"o\r\nthree").unwrap();
        drop(w);
        let (lines, eof) = p.drain();
        assert!(eof);
        assert_eq!(lines.len(), 3, "two cut from the long line, then the last at EOF");
        assert!(lines[0].ends_with(&format!("tw{}", "y".repeat(MAX_LINE - 2))));
        assert!(lines[1].ends_with(" stdout yyyyyyyo"));
        assert!(lines[2].ends_with(" stdout three"));
    }
}
