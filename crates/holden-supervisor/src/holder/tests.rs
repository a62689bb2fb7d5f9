//! Tests of the log-pipe holder: a real holder, in a thread and as a process.
use super::*;
use std::io::Write;
use std::path::PathBuf;
use std::thread;

/// Held while a process is spawned: until it execs, the child has a copy of every
/// descriptor of this process, which would fool `has_reader`.
static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("holden-holder-test-{}-{name}.sock", std::process::id()))
}

/// A client of a holder that listens now or soon (an empty command starts nothing).
fn client(path: &Path) -> Holder {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Holder::connect_or_start(path, &[]) {
            Ok(h) => return h,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn keys(h: &mut Holder) -> Vec<String> {
    h.take_all().unwrap().into_iter().map(|(k, _)| k).collect()
}

/// Whether the pipe of `w` still has a reader anywhere (SIGPIPE is ignored in tests).
fn has_reader(w: &mut io::PipeWriter) -> bool {
    let _no_spawn = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    w.write(b"x").map_err(|e| assert_eq!(e.kind(), ErrorKind::BrokenPipe)).is_ok()
}

/// Whether the pipe loses its last reader within a second. Other tests of this binary spawn
/// processes (`state.rs`), and a child between its fork and its exec briefly holds a copy of
/// every descriptor of this process, close-on-exec or not: a single look could see that copy.
fn reader_gone(w: &mut io::PipeWriter) -> bool {
    (0..100).any(|_| {
        let gone = !has_reader(w);
        if !gone {
            thread::sleep(std::time::Duration::from_millis(10));
        }
        gone
    })
}

#[test]
fn pipes_outlive_clients_and_bad_peers_until_forgotten_or_exit() {
    let path = socket_path("keep");
    let server = thread::spawn({
        let path = path.clone();
        move || serve(&path)
    });
    let mut a = client(&path);
    let (r1, mut w1) = io::pipe().unwrap();
    let (r2, mut w2) = io::pipe().unwrap();
    a.store("web.out", r1.as_fd());
    a.store("web.err", r2.as_fd());
    a.flush().unwrap();
    assert!(!a.wants_write());
    drop((a, r1, r2)); // the supervisor dies
    let long = [b'a'; 600];
    let bad: [(&[u8], bool); 7] = [
        (b"hello\n", false),
        (&long, false),
        (b"store db.err\n", false), // no descriptor
        (b"forget db.err\n", true), // a descriptor no store claims
        (b"store bad\x07key\n", true),
        (b"store \xff\n", true),
        (b"take now\n", false),
    ];
    for (bytes, with_fd) in bad {
        let s = UnixStream::connect(&path).unwrap();
        socket::send_with_fds(s.as_fd(), bytes, &[w1.as_fd()][..with_fd as usize]).unwrap();
        assert_eq!((&s).read(&mut [0u8; 16]).unwrap(), 0, "a hang-up answers {bytes:?}");
    }
    let mut b = client(&path);
    let mut taken: BTreeMap<_, _> = b.take_all().unwrap().into_iter().collect();
    assert_eq!(taken.keys().collect::<Vec<_>>(), ["web.err", "web.out"]);
    w1.write_all(b"one").unwrap();
    let mut buf = [0u8; 3];
    fs::File::from(taken.remove("web.out").unwrap()).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"one", "the taken descriptor is the stored pipe");
    drop(taken);
    b.forget("web.out");
    assert_eq!(keys(&mut b), ["web.err"]);
    assert!(reader_gone(&mut w1), "a forgotten pipe is closed, and no copy leaked");
    assert!(has_reader(&mut w2));
    b.shutdown();
    server.join().unwrap().unwrap();
    assert!(!path.exists(), "exit removes the socket");
    assert!(reader_gone(&mut w2), "exit closes everything");
}

/// The holder process of `starts_a_holder_process_and_reaps_it`: this test binary again.
#[test]
#[ignore = "run by starts_a_holder_process_and_reaps_it"]
fn holder_process() {
    let socket = PathBuf::from(std::env::args_os().last().unwrap());
    if socket.to_string_lossy().contains("holden-holder-test") {
        serve(&socket).unwrap();
    }
}

#[test]
fn starts_a_holder_process_and_reaps_it() {
    let path = socket_path("proc");
    let exe = std::env::current_exe().unwrap().into_os_string();
    let command = [exe, "--exact".into(), "holder::tests::holder_process".into(), "--ignored".into()];
    let no_spawn = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
    let mut a = Holder::connect_or_start(&path, &command).unwrap();
    drop(no_spawn);
    let pid = a.child.as_ref().expect("a holder was started").pid;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let session = stat.rsplit(')').next().unwrap().split_whitespace().nth(3).unwrap();
    assert_eq!(session, pid.to_string(), "the holder leads its own session");
    assert_eq!(fs::read_link(format!("/proc/{pid}/fd/1")).unwrap(), Path::new("/dev/null"));
    let (r, mut w) = io::pipe().unwrap();
    a.store("x.out", r.as_fd());
    a.flush().unwrap();
    drop(r);
    let mut b = Holder::connect_or_start(&path, &command).unwrap();
    assert!(b.child.is_none(), "the running holder is used");
    assert_eq!(keys(&mut b), ["x.out"]);
    b.child = a.child.take(); // as if `b` had started it
    b.shutdown();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the holder is gone and reaped");
    assert!(reader_gone(&mut w) && !path.exists());
}
