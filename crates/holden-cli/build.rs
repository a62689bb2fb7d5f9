//! Writes the man pages, `holden.1` and `holden-COMMAND.1` for each command, from the command
//! line's definition (`src/cli.rs`) into `OUT_DIR/man`, and `OUT_DIR/man_pages.rs`, their list
//! for `holden man`; `make install` installs them.

#[allow(dead_code)]
mod cli {
    include!("src/cli.rs");
}

fn main() {
    println!("cargo:rerun-if-changed=src/cli.rs");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("man");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("make OUT_DIR/man");
    let cmd = <cli::Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(cmd, &dir).expect("render the man pages");
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .expect("read OUT_DIR/man")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().trim_end_matches(".1").to_owned())
        .collect();
    pages.sort();
    let list: String = pages
        .iter()
        .map(|p| format!("    ({p:?}, include_str!(concat!(env!(\"OUT_DIR\"), \"/man/{p}.1\"))),\n"))
        .collect();
    std::fs::write(
        out.join("man_pages.rs"),
        format!("/// The man pages: name, roff.\npub const MAN_PAGES: &[(&str, &str)] = &[\n{list}];\n"),
    )
    .expect("write man_pages.rs");
}
