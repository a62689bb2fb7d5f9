//! Exit statuses through the agent, on both paths: PIDFD_INFO_EXIT (the default on 6.15+)
//! and the exit stream (forced here, and the default on older kernels, which `make vm-test` runs).

mod common;
use common::*;

fn thousand_exits(force_stream: bool) {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    client.force_exit_stream(force_stream);
    // Unforced, the library takes PIDFD_INFO_EXIT where the kernel has it (6.15+) and the
    // agent's exit stream below: `make vm-test` runs this on 6.1 and 6.12 for the latter.
    let stream = force_stream || !holden_sys::process::probe_features().pidfd_info_exit;
    for i in 0..1000 {
        let n = (i * 7) % 256;
        let mut child = holden::Command::new("sh").args(["-c", &format!("exit {n}")]).spawn_via(&mut client).unwrap();
        assert_eq!(child.uses_exit_stream(), stream, "the path taken");
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(n), "spawn {i}: {status}");
    }
    assert_no_children(agent.pid());
}

#[test]
fn thousand_exit_codes_on_the_kernels_own_path() {
    thousand_exits(false);
}

#[test]
fn thousand_exit_codes_through_the_exit_stream() {
    thousand_exits(true);
}

#[test]
fn signals_and_core_dumps_are_reported() {
    require_root();
    let agent = TestAgent::start(&[]);
    for stream in [false, true] {
        let mut client = agent.client();
        client.force_exit_stream(stream);
        let mut child = holden::Command::new("sleep").arg("30").spawn_via(&mut client).unwrap();
        assert_eq!(child.try_wait().unwrap(), None);
        child.signal(15).unwrap();
        let s = child.wait().unwrap();
        assert_eq!((s.code(), s.signal(), s.core_dumped()), (None, Some(15), false), "stream={stream}");
        // A status is read once and then kept.
        assert_eq!(child.wait().unwrap(), s);
        let mut child = holden::Command::new("sh")
            .args(["-c", "kill -ABRT $$"])
            .rlimit("core", Some(0), Some(0))
            .spawn_via(&mut client)
            .unwrap();
        // SIGABRT (busybox's sh ignores SIGQUIT).
        assert_eq!(child.wait().unwrap().signal(), Some(6));
    }
    assert_no_children(agent.pid());
}

#[test]
fn try_wait_polls_until_exit() {
    require_root();
    let agent = TestAgent::start(&[]);
    for stream in [false, true] {
        let mut client = agent.client();
        client.force_exit_stream(stream);
        let mut child = holden::Command::new("sleep").arg("0.2").spawn_via(&mut client).unwrap();
        assert_eq!(child.try_wait().unwrap(), None);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "no exit seen by try_wait");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(status.success());
    }
}

#[test]
fn async_wait_with_tokio() {
    require_root();
    let agent = TestAgent::start(&[]);
    let mut client = agent.client();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut a = holden::Command::new("sh").args(["-c", "sleep 0.1; exit 4"]).spawn_via(&mut client).unwrap();
    let mut b = holden::Command::new("sh").args(["-c", "exit 5"]).spawn().unwrap();
    let (sa, sb) = rt.block_on(async { tokio::join!(a.wait_async(), b.wait_async()) });
    assert_eq!((sa.unwrap().code(), sb.unwrap().code()), (Some(4), Some(5)));
}
