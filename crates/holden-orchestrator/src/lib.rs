//! The core of Holden's orchestrator (`holden up`), kept free of I/O so that it can be tested
//! alone:
//! - [`config`] reads and checks the TOML configuration, with errors that name the file, line
//!   and column;
//! - [`machine`] is the per-service supervision logic as one pure transition function,
//!   `next(policy, service, event, now) -> (service, actions)`, driven by a fake clock in its
//!   tests;
//! - [`control`] is the control socket's contract, Varlink `io.holden.Orchestrator`: its
//!   interface description, types, errors and the checked decoding of every call.
//!
//! What it deliberately does not do: spawn, poll, signal, log or talk to sockets. The event
//! loop that feeds events in and carries actions out is the `holden` command's job.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
mod constraints;
pub mod control;
pub mod machine;
pub mod plan;
mod readiness;
