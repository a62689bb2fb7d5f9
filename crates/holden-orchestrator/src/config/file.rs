//! Reading a configuration file: the whole of it for `holden up` (interpolated, checked, its
//! relative paths made the file directory's), or only its control socket for the commands
//! that look for their orchestrator.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{interpolate, parse_from, Config, ConfigError, Output};

/// Reads and checks a configuration file. Its relative paths (`control_socket`, `state_dir`,
/// agents' sockets, `stdout`/`stderr` files, `env_file`) are relative to the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let original = read(path)?;
    let (text, anchors) = interpolate(&original, |k| std::env::var(k).ok())
        .map_err(|(offset, message)| error_at(path, &original, offset, message))?;
    let mut cfg = parse_from(path, &text, &original, &anchors)?;
    let base = base_dir(path);
    let rebase = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    cfg.control_socket.as_mut().map(rebase);
    cfg.state_dir.as_mut().map(rebase);
    cfg.agents.values_mut().for_each(|a| rebase(&mut a.socket));
    for s in cfg.services.values_mut() {
        for o in [&mut s.stdout, &mut s.stderr] {
            if let Output::File(f) = o {
                rebase(f);
            }
        }
    }
    Ok(cfg)
}

/// The control socket a configuration file names, read without checking the rest of it: a
/// command that only needs to find its orchestrator does not depend on the services'
/// variables and env files (which may be set for the orchestrator alone).
pub fn control_socket_of(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        orchestrator: Orchestrator,
    }
    #[derive(Deserialize, Default)]
    struct Orchestrator {
        control_socket: Option<Spanned<String>>,
    }
    let original = read(path)?;
    let at = |offset: usize, message: String| error_at(path, &original, offset, message);
    let file: File =
        toml::from_str(&original).map_err(|e| at(e.span().map_or(0, |s| s.start), e.message().to_lowercase()))?;
    let Some(socket) = file.orchestrator.control_socket else { return Ok(None) };
    // Its own ${VAR}s only: the string as written, interpolated and read again.
    let span = socket.span();
    let (literal, _) = interpolate(&original[span.clone()], |k| std::env::var(k).ok())
        .map_err(|(offset, message)| at(span.start + offset, message))?;
    let value: toml::Table =
        toml::from_str(&format!("v = {literal}")).map_err(|e| at(span.start, e.message().into()))?;
    let socket = PathBuf::from(value["v"].as_str().unwrap_or_default());
    Ok(Some(if socket.is_relative() { base_dir(path).join(socket) } else { socket }))
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.into(),
        line: 1,
        column: 1,
        message: format!("cannot read the file: {e}"),
    })
}

/// The directory of the configuration file, absolute: what its relative paths are relative to.
fn base_dir(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// An error at byte `offset` of `text`, read from `file`: its line and column.
pub(super) fn error_at(file: &Path, text: &str, offset: usize, message: String) -> ConfigError {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    ConfigError {
        file: file.into(),
        line: before.matches('\n').count() + 1,
        column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
        message,
    }
}
