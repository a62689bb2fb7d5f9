//! The configuration's use of the environment: `${VAR}` and `${VAR:-default}` in string
//! values, taken from the orchestrator's environment, and `env_file` (KEY=VALUE lines).

use std::collections::BTreeMap;
use std::path::Path;

/// Where replacements ended: `(offset in the interpolated text, offset in the original)`.
pub type Anchors = Vec<(usize, usize)>;

/// Replaces `${VAR}` and `${VAR:-default}` inside the TOML strings of `text` (not in keys
/// outside quotes, nor in comments) with `lookup(VAR)`; `$${` is a literal `${`. An unset
/// variable without a default, a malformed reference (unclosed within its string, nested, a
/// default holding `$`, `{`, a quote or a backslash), or a value that would need quoting (a
/// quote, a backslash, a control character) is an error at its byte offset.
///
/// Returns the text and, for error positions, the anchors `(offset in the result, offset in
/// `text`)` where a replacement ended: see [`original_offset`].
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<(String, Anchors), (usize, String)> {
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
    let mut anchors = Vec::new();
    let mut state = In::Code;
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        let in_string = matches!(state, In::Basic | In::Literal | In::MultiBasic | In::MultiLiteral);
        if in_string && rest.starts_with("$${") {
            out.push_str("${");
            i += 3;
            anchors.push((out.len(), i));
            continue;
        }
        if in_string && rest.starts_with("${") {
            // The reference ends at the first `}`, before anything that would end the string
            // or the line, or open another reference.
            let end = match rest[2..].find(['}', '"', '\'', '\\', '\n', '$', '{']) {
                Some(k) if rest.as_bytes()[2 + k] == b'}' => 2 + k,
                Some(k) if matches!(rest.as_bytes()[2 + k], b'$' | b'{') => {
                    return Err((i, "${...} cannot hold $ or { (no nesting; write $${ for a literal ${)".into()))
                }
                _ => return Err((i, "${ without its closing } in the same string".into())),
            };
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
            anchors.push((out.len(), i));
            continue;
        }
        // A multi-line string may end in up to two quotes of its own before its closing three.
        let run = |q: u8| rest.bytes().take(5).take_while(|&c| c == q).count();
        let (next, take) = match state {
            In::Code if rest.starts_with("\"\"\"") => (In::MultiBasic, 3),
            In::Code if rest.starts_with("\'\'\'") => (In::MultiLiteral, 3),
            In::Code if rest.starts_with('"') => (In::Basic, 1),
            In::Code if rest.starts_with('\'') => (In::Literal, 1),
            In::Code if rest.starts_with('#') => (In::Comment, 1),
            In::Comment if rest.starts_with('\n') => (In::Code, 1),
            In::Basic | In::MultiBasic if rest.starts_with('\\') => (state, 2.min(rest.len())),
            In::Basic if rest.starts_with('"') => (In::Code, 1),
            In::Literal if rest.starts_with('\'') => (In::Code, 1),
            In::MultiBasic if run(b'"') >= 3 => (In::Code, run(b'"')),
            In::MultiLiteral if run(b'\'') >= 3 => (In::Code, run(b'\'')),
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
    Ok((out, anchors))
}

/// Where offset `at` of an interpolated text was in the original, given the anchors
/// [`interpolate`] returned (inside a replaced value: that far into the reference, at most).
pub fn original_offset(anchors: &[(usize, usize)], at: usize) -> usize {
    match anchors.partition_point(|&(out, _)| out <= at) {
        0 => at,
        k => {
            let (out, orig) = anchors[k - 1];
            orig + (at - out)
        }
    }
}

/// Reads an env file: `KEY=VALUE` lines (an optional `export ` before), `#` comments and blank
/// lines. A value may be quoted: `"..."` takes the escapes `\"`, `\\`, `\$` and `\n`,
/// `'...'` none; a comment may follow the closing quote. An unquoted value ends before ` #`.
/// Errors name the line.
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
        let v = env_value(v.trim()).map_err(|why| bad(&why))?;
        if v.contains('\0') {
            return Err(bad("the value holds a NUL byte"));
        }
        out.insert(k.to_owned(), v);
    }
    Ok(out)
}

/// One env file value, as written after `=` (trimmed).
fn env_value(v: &str) -> Result<String, String> {
    let mut chars = v.char_indices();
    let (value, after) = match chars.next() {
        Some((_, q @ ('"' | '\''))) => {
            let mut value = String::new();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    c if c == q => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' if q == '"' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, e @ ('"' | '\\' | '$'))) => value.push(e),
                        Some((_, e)) => {
                            return Err(format!("unknown escape \\{e} (\\\", \\\\, \\$ and \\n are known)"))
                        }
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("the value's {q} is not closed"))?;
            (value, v[end..].trim_start())
        }
        _ => match v.find(" #").or_else(|| v.find("\t#")) {
            Some(k) => (v[..k].trim_end().to_owned(), ""),
            None => (v.to_owned(), ""),
        },
    };
    if !after.is_empty() && !after.starts_with('#') {
        return Err(format!("text after the closing quote: {after:?}"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_inside_strings_only_with_defaults_and_escapes() {
        let env = |k: &str| (k == "PORT").then(|| "8080".to_string());
        let text = "# ${NOT_SET} in a comment\n[services.${KEY}]\ncmd = [\"--port\", \"${PORT}\", '${HOST:-localhost}', \"$${LITERAL}\"]\n";
        let got = interpolate(text, env).unwrap().0;
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
        let got = interpolate("a = \"\\\"${PORT}\"\nb = \"\"\"\n${PORT}\"\"\"\n", env).unwrap().0;
        assert_eq!(got, "a = \"\\\"8080\"\nb = \"\"\"\n8080\"\"\"\n");
    }

    #[test]
    fn regression_references_end_in_their_string_and_do_not_nest() {
        let env = |k: &str| (k == "HOME").then(|| "/root".to_string());
        // Before: "${HOME:-${USER}}" gave "/root}", and an unclosed ${ swallowed text up to a
        // } lines later.
        let (at, msg) = interpolate("a = \"${HOME:-${USER}}\"\n", env).unwrap_err();
        assert_eq!(at, 5);
        assert!(msg.contains("no nesting"), "{msg}");
        let (_, msg) = interpolate("a = \"${HOME:-/root\"\nb = { c = \"1\" }\n", env).unwrap_err();
        assert!(msg.contains("closing }"), "{msg}");
        // Before: a multi-line string ending in a quote of its own (""""), and the strings
        // after it were read inside out.
        let (got, _) = interpolate("a = \"\"\"x\"\"\"\"\nb = \"${HOME}\" # ${NOPE}\n", env).unwrap();
        assert_eq!(got, "a = \"\"\"x\"\"\"\"\nb = \"/root\" # ${NOPE}\n");
        let (got, _) = interpolate("a = '''x''''\nb = '${HOME}'\n", env).unwrap();
        assert_eq!(got, "a = '''x''''\nb = '/root'\n");
    }

    #[test]
    fn original_offsets_step_over_replacements() {
        let env = |_: &str| Some("a-long-value".to_string());
        let text = "a = \"${X}\"\nb = 1\n";
        let (got, anchors) = interpolate(text, env).unwrap();
        let b = got.find("b =").unwrap();
        assert_eq!(original_offset(&anchors, b), text.find("b =").unwrap());
        assert_eq!(original_offset(&anchors, 2), 2);
    }

    #[test]
    fn regression_env_file_quotes_escapes_and_comments() {
        let dir = std::env::temp_dir().join(format!("holden-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.env");
        let read = |text: &str| {
            std::fs::write(&f, text).unwrap();
            read_env_file(&f)
        };
        let got = read(
            "A=\"a\" # note\nB='b c' \nC=\"say \\\"hi\\\" \\$HOME\\n\"\nD=plain # comment\nE=x#y\nexport F=\"\"\r\n",
        )
        .unwrap();
        let want = [("A", "a"), ("B", "b c"), ("C", "say \"hi\" $HOME\n"), ("D", "plain"), ("E", "x#y"), ("F", "")];
        assert_eq!(got, want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        // Before: each was kept with its quotes, silently.
        for (bad, why) in [
            ("A=\"abc\n", "not closed"),
            ("A=\"a\" \"b\"\n", "after the closing quote"),
            ("A=\"a\\q\"\n", "unknown escape"),
        ] {
            let e = read(bad).unwrap_err();
            assert!(e.contains(":1: ") && e.contains(why), "{bad:?}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
