//! Writes `holden.1`, the man page, from the command line's definition (`src/cli.rs`) into
//! `OUT_DIR`; `holden man` prints it and `make install` installs it.

#[allow(dead_code)]
mod cli {
    include!("src/cli.rs");
}

fn main() {
    println!("cargo:rerun-if-changed=src/cli.rs");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cmd = <cli::Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page).expect("render the man page");
    std::fs::write(out.join("holden.1"), page).expect("write holden.1");
}
