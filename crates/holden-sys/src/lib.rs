//! `holden-sys`: every Linux system call Holden makes that the standard library does not wrap.
//!
//! This crate is the only place in Holden with `unsafe` code. Each wrapper stands for one C call
//! (named in its doc, with a man-page link), takes `BorrowedFd`/`AsFd` for descriptors it uses and
//! returns `OwnedFd` for descriptors it creates, and reports failures as `std::io::Error`.
//!
//! What it deliberately does not do: policy. It has no notion of agents, protocols or services;
//! it spawns exactly what it is told, and it never retries or logs.
//!
//! Modules:
//! - [`process`]: race-free spawn with `clone(CLONE_PIDFD)`, pidfd signalling, waiting and
//!   `PIDFD_GET_INFO`, kernel feature probes.
//! - [`socket`]: `SCM_RIGHTS` send and receive, peer credentials, socket-activation descriptors.
//! - [`event`]: `epoll`, `signalfd` and `poll`.
//! - [`fd`]: descriptor hygiene (`close_range`, close-on-exec), resource limits, ids.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod event;
mod exec;
pub mod fd;
mod features;
pub mod process;
pub mod socket;
mod spawn;
pub mod users;

/// Turns a C-style `-1`/`errno` return into an `io::Result`.
fn cvt(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`] for the `long` that `syscall(2)` returns.
fn cvt_long(ret: libc::c_long) -> std::io::Result<libc::c_long> {
    if ret == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests;
