//! The configuration's use of the environment: `${VAR}` and `${VAR:-default}` in string
//! values, taken from the orchestrator's environment, and `env_file` (KEY=VALUE lines).

use std::collections::BTreeMap;
use std::path::Path;

/// One replacement: `(start, end)` in the interpolated text and `(start, end)` in the original.
pub type Anchor = ((usize, usize), (usize, usize));

/// Replaces `${VAR}` and `${VAR:-default}` inside the TOML strings of `text` (not in keys
/// outside quotes, nor in comments) with `lookup(VAR)`; `$${` is a literal `${`. An unset
/// variable without a default, a malformed reference (unclosed within its string, nested, a
/// default holding `$`, `{`, a quote or a backslash), or a value that would need quoting (a
/// quote, a backslash, a control character) is an error at its byte offset.
///
/// Returns the text and, for error positions, the anchors `(offset in the result, offset in
/// `text`)` where a replacement ended: see [`original_offset`].
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, Vec<Anchor>), (usize, String)> {
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
            let from = (out.len(), i);
            out.push_str("${");
            i += 3;
            anchors.push(((from.0, out.len()), (from.1, i)));
            continue;
        }
        if in_string && rest.starts_with("${") {
            // The reference ends at the first `}`, before anything that would end the string
            // or the line, or open another reference.
            let end = match rest[2..].find(['}', '"', '\'', '\\', '\n']) {
                Some(k) if rest.as_bytes()[2 + k] == b'}' => 2 + k,
                _ => return Err((i, "${ without its closing } in the same string".into())),
            };
            if rest[2..end].contains("${") {
                return Err((i, "${...} does not nest (write $${ for a literal ${)".into()));
            }
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
            let from = out.len();
            out.push_str(&value);
            anchors.push(((from, out.len()), (i, i + end + 1)));
            i += end + 1;
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
/// [`interpolate`] returned: inside a replaced value, at the start of its reference.
pub fn original_offset(anchors: &[Anchor], at: usize) -> usize {
    match anchors.partition_point(|&((start, _), _)| start <= at) {
        0 => at,
        k => {
            let ((_, out_end), (in_start, in_end)) = anchors[k - 1];
            if at < out_end {
                in_start
            } else {
                in_end + (at - out_end)
            }
        }
    }
}

/// Reads an env file: `KEY=VALUE` lines (an optional `export ` before), `#` comments and blank
/// lines. A value may be quoted: `"..."` takes the escapes `\"`, `\\`, `\$` and `\n` (any
/// other backslash stays), `'...'` none; a comment may follow the closing quote. An unquoted
/// value is taken as written. Errors name the line.
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
                    // As in a shell's double quotes: \" \\ \$ (and \n) are escapes; any other
                    // backslash stays as written (a pattern's \d stays \d).
                    '\\' if q == '"' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, e @ ('"' | '\\' | '$'))) => value.push(e),
                        Some((_, e)) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("the value's {q} is not closed"))?;
            (value, v[end..].trim_start())
        }
        // Unquoted: as written (a # in it is part of it).
        _ => (v.to_owned(), ""),
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
        assert!(msg.contains("does not nest"), "{msg}");
        // A default may hold $ and { of its own.
        let (got, _) = interpolate("a = \"${NOPE:-pa$word{}\"\n", env).unwrap();
        assert_eq!(got, "a = \"pa$word{\"\n");
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
        // Inside the value: the reference's start.
        assert_eq!(original_offset(&anchors, got.find("long").unwrap()), text.find("${X}").unwrap());
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
            "A=\"a\" # note\nB='b c' \nC=\"say \\\"hi\\\" \\$HOME\\n\"\nD=plain # kept\nE=x#y\nexport F=\"\"\r\nG=\"^\\d+$\"\n",
        )
        .unwrap();
        let want = [
            ("A", "a"),
            ("B", "b c"),
            ("C", "say \"hi\" $HOME\n"),
            ("D", "plain # kept"),
            ("E", "x#y"),
            ("F", ""),
            ("G", "^\\d+$"),
        ];
        assert_eq!(got, want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        // Before: each was kept with its quotes, silently.
        for (bad, why) in [("A=\"abc\n", "not closed"), ("A=\"a\" \"b\"\n", "after the closing quote")] {
            let e = read(bad).unwrap_err();
            assert!(e.contains(":1: ") && e.contains(why), "{bad:?}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
