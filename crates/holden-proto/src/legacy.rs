//! The Holden v0.2 protocol, served for existing callers (see `legacy-v0.2-protocol.md`).
//!
//! Raw host-endian structs on a `SOCK_STREAM` Unix socket. Every message is an 8-byte header
//! (`type: u32`, `length: u32`) and `length` bytes of body. Requests served: START_PROCESS (1,
//! body [`START_BODY`] bytes: `name[256]`, `args[32][256]`, `arg_count: i32`, strings
//! NUL-terminated) and PING (11, empty). Replies: PROCESS_STARTED (2, body `host_pid: i32`,
//! `container_pid: i32`) immediately followed by a separate one-byte message `'x'` carrying the
//! pidfd as `SCM_RIGHTS`; PROCESS_ERROR (3, body 512 bytes of NUL-terminated text); PONG (12).
//!
//! Unlike v0.2, nothing in a message is trusted: a `length` that does not match the type's size,
//! an `arg_count` outside 0..=32, or a string without its NUL gets PROCESS_ERROR; a body longer
//! than [`MAX_BODY`] loses the framing, and the connection is closed.

/// Size of the header.
pub const HEADER: usize = 8;
/// START_PROCESS's body size.
pub const START_BODY: usize = 256 + 32 * 256 + 4;
/// Largest body the agent reads (and discards, if it is not understood) without closing.
pub const MAX_BODY: usize = START_BODY;
/// Size of PROCESS_ERROR's body.
pub const ERROR_BODY: usize = 512;

/// START_PROCESS.
pub const START_PROCESS: u32 = 1;
/// PROCESS_STARTED.
pub const PROCESS_STARTED: u32 = 2;
/// PROCESS_ERROR.
pub const PROCESS_ERROR: u32 = 3;
/// PING.
pub const PING: u32 = 11;
/// PONG.
pub const PONG: u32 = 12;

/// A v0.2 request the agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Spawn `name` (looked up in PATH) with `argv = [name, args...]`.
    StartProcess {
        /// The program.
        name: Vec<u8>,
        /// `argv[1..]`.
        args: Vec<Vec<u8>>,
    },
    /// PING.
    Ping,
}

/// Reads a header: `(type, length)`.
pub fn parse_header(h: &[u8; HEADER]) -> (u32, u32) {
    let ty = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
    (ty, len)
}

fn cstr(field: &[u8], what: &str) -> Result<Vec<u8>, String> {
    match field.iter().position(|&b| b == 0) {
        Some(end) => Ok(field[..end].to_vec()),
        None => Err(format!("{what} is not NUL-terminated")),
    }
}

/// Decodes a whole message (its body exactly `length` bytes). The error is the text to send
/// back in PROCESS_ERROR; framing is intact either way.
pub fn decode(ty: u32, body: &[u8]) -> Result<Request, String> {
    match ty {
        START_PROCESS => {
            if body.len() != START_BODY {
                return Err(format!("Invalid length {} for START_PROCESS (expected {START_BODY})", body.len()));
            }
            let name = cstr(&body[..256], "name")?;
            if name.is_empty() {
                return Err("name is empty".into());
            }
            let count = i32::from_ne_bytes([body[8448], body[8449], body[8450], body[8451]]);
            if !(0..=32).contains(&count) {
                return Err(format!("Invalid arg_count {count} (expected 0..=32)"));
            }
            let args = (0..count as usize)
                .map(|i| cstr(&body[256 + i * 256..256 + (i + 1) * 256], &format!("args[{i}]")))
                .collect::<Result<_, _>>()?;
            Ok(Request::StartProcess { name, args })
        }
        PING if body.is_empty() => Ok(Request::Ping),
        PING => Err(format!("Invalid length {} for PING (expected 0)", body.len())),
        other => Err(format!("Unknown message type: {other}")),
    }
}

fn message(ty: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + body.len());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(body.len() as u32).to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// Encodes PROCESS_STARTED (the pidfd follows in a separate one-byte message).
pub fn process_started(pid: i32) -> Vec<u8> {
    let mut body = [0u8; 8];
    body[..4].copy_from_slice(&pid.to_ne_bytes());
    body[4..].copy_from_slice(&pid.to_ne_bytes());
    message(PROCESS_STARTED, &body)
}

/// Encodes PROCESS_ERROR, cutting `text` to fit its 512-byte field with a NUL.
pub fn process_error(text: &str) -> Vec<u8> {
    let mut body = [0u8; ERROR_BODY];
    let bytes = text.as_bytes();
    let n = bytes.len().min(ERROR_BODY - 1);
    body[..n].copy_from_slice(&bytes[..n]);
    message(PROCESS_ERROR, &body)
}

/// Encodes PONG.
pub fn pong() -> Vec<u8> {
    message(PONG, &[])
}

/// Encodes a request, as a v0.2 client does (for tests and tools). Fails if a string does not
/// fit its 255-byte field or there are more than 32 arguments.
pub fn encode_start(name: &[u8], args: &[&[u8]]) -> Option<Vec<u8>> {
    if name.len() > 255 || args.len() > 32 || args.iter().any(|a| a.len() > 255) {
        return None;
    }
    let mut body = vec![0u8; START_BODY];
    body[..name.len()].copy_from_slice(name);
    for (i, a) in args.iter().enumerate() {
        body[256 + i * 256..256 + i * 256 + a.len()].copy_from_slice(a);
    }
    body[8448..].copy_from_slice(&(args.len() as i32).to_ne_bytes());
    Some(message(START_PROCESS, &body))
}

/// Encodes PING.
pub fn ping() -> Vec<u8> {
    message(PING, &[])
}
