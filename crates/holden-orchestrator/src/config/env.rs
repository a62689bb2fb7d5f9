//! The configuration's use of the environment: `${VAR}` and `${VAR:-default}` in string
//! values, taken from the orchestrator's environment, and `env_file` (KEY=VALUE lines).

use std::collections::BTreeMap;
use std::path::Path;

/// Replaces `${VAR}` and `${VAR:-default}` inside the TOML strings of `text` (not in keys
/// outside quotes, nor in comments) with `lookup(VAR)`; `$${` is a literal `${`. An unset
/// variable without a default, a malformed reference, or a value that would need quoting (a
/// quote, a backslash, a control character) is an error at its byte offset.
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, (usize, String)> {
    #[derive(PartialEq, Clone, Copy)]
    enum In {
        Code,
        Comment,
        Basic,
        Literal,
        MultiBasic,
        MultiLiteral,
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut state = In::Code;
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        let in_string = matches!(state, In::Basic | In::Literal | In::MultiBasic | In::MultiLiteral);
        if in_string && rest.starts_with("$${") {
            out.push_str("${");
            i += 3;
            continue;
        }
        if in_string && rest.starts_with("${") {
            let end = rest.find('}').ok_or((i, "${ without its closing }".to_string()))?;
            let inner = &rest[2..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err((i, format!("${{{inner}}}: a variable name is letters, digits and '_'")));
            }
            let value = match (lookup(name), default) {
                (Some(v), _) => v,
                (None, Some(d)) => d.to_owned(),
                (None, None) => {
                    return Err((i, format!("${{{name}}}: {name} is not set (give a default: ${{{name}:-...}})")))
                }
            };
            if value.chars().any(|c| c == '"' || c == '\'' || c == '\\' || c.is_control()) {
                return Err((i, format!("${{{name}}}: its value holds a quote, a backslash or a control character")));
            }
            out.push_str(&value);
            i += end + 1;
            continue;
        }
        let (next, take) = match state {
            In::Code if rest.starts_with("\"\"\"") => (In::MultiBasic, 3),
            In::Code if rest.starts_with("'''") => (In::MultiLiteral, 3),
            In::Code if rest.starts_with('"') => (In::Basic, 1),
            In::Code if rest.starts_with('\'') => (In::Literal, 1),
            In::Code if rest.starts_with('#') => (In::Comment, 1),
            In::Comment if rest.starts_with('\n') => (In::Code, 1),
            In::Basic | In::MultiBasic if rest.starts_with('\\') => (state, 2.min(rest.len())),
            In::Basic if rest.starts_with('"') => (In::Code, 1),
            In::Literal if rest.starts_with('\'') => (In::Code, 1),
            In::MultiBasic if rest.starts_with("\"\"\"") => (In::Code, 3),
            In::MultiLiteral if rest.starts_with("'''") => (In::Code, 3),
            _ => (state, rest.chars().next().map_or(1, char::len_utf8)),
        };
        // Whole characters only (a backslash's escaped character may be multi-byte).
        let mut take = take;
        while !text.is_char_boundary(i + take) {
            take += 1;
        }
        out.push_str(&text[i..i + take]);
        state = next;
        i += take;
    }
    Ok(out)
}

/// Reads an env file: `KEY=VALUE` lines (an optional `export ` before; a value may be quoted
/// with `"` or `'`), `#` comments and blank lines. Errors name the line.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("env_file {}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let bad = |why: &str| format!("env_file {}:{}: {why}", path.display(), n + 1);
        let (k, v) = line.split_once('=').ok_or_else(|| bad("not KEY=VALUE"))?;
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(&format!("{k:?} is not a variable name")));
        }
        let v = v.trim();
        let v = match (v.chars().next(), v.chars().last()) {
            (Some(q @ ('"' | '\'')), Some(e)) if v.len() >= 2 && e == q => &v[1..v.len() - 1],
            _ => v,
        };
        if v.contains('\0') {
            return Err(bad("the value holds a NUL byte"));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_inside_strings_only_with_defaults_and_escapes() {
        let env = |k: &str| (k == "PORT").then(|| "8080".to_string());
        let text = "# ${NOT_SET} in a comment\n[services.${KEY}]\ncmd = [\"--port\", \"${PORT}\", '${HOST:-localhost}', \"$${LITERAL}\"]\n";
        let got = interpolate(text, env).unwrap();
        assert_eq!(
            got,
            "# ${NOT_SET} in a comment\n[services.${KEY}]\ncmd = [\"--port\", \"8080\", 'localhost', \"${LITERAL}\"]\n"
        );
        let (at, msg) = interpolate("a = \"x ${NOPE}\"\n", env).unwrap_err();
        assert_eq!((at, msg.contains("NOPE is not set")), (7, true), "{msg}");
        assert!(interpolate("a = \"${PORT\"", env).is_err());
        assert!(interpolate("a = \"${A-B}\"", env).is_err());
        let quote = |_: &str| Some("a\"b".to_string());
        assert!(interpolate("a = \"${Q}\"", quote).unwrap_err().1.contains("quote"));
        // Escapes and multi-line strings keep their shape.
        let got = interpolate("a = \"\\\"${PORT}\"\nb = \"\"\"\n${PORT}\"\"\"\n", env).unwrap();
        assert_eq!(got, "a = \"\\\"8080\"\nb = \"\"\"\n8080\"\"\"\n");
    }
}
