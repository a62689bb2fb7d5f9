//! `holden-agent`: see the library's documentation and `holden-agent --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    holden_agent::main_with_args(std::env::args().skip(1))
}
