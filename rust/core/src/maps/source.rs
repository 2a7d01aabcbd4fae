//! The text of a lookup table as postmap(1) and texthash read it: logical lines (a line
//! that starts with whitespace continues the previous one, keeping that whitespace; blank
//! lines and lines whose first non-blank is `#` are skipped, even inside a continuation),
//! then `key whitespace value`.

/// Postfix's ISSPACE: the C locale's isspace.
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// One logical line and the number of the physical line it started on.
pub struct LogicalLine<'a> {
    pub lineno: usize,
    pub parts: Vec<&'a [u8]>,
}

impl LogicalLine<'_> {
    pub fn text(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.parts.iter().map(|p| p.len()).sum());
        for p in &self.parts {
            out.extend_from_slice(p);
        }
        // C code sees the line as a string: it ends at the first NUL.
        if let Some(nul) = out.iter().position(|&b| b == 0) {
            out.truncate(nul);
        }
        out
    }
}

/// Splits `text` into logical lines. A continuation with nothing to continue is reported
/// in `warnings` as Postfix words it (without a line number) and dropped.
pub fn logical_lines<'a>(
    text: &'a [u8],
    name: &str,
    warnings: &mut Vec<(usize, String)>,
) -> Vec<LogicalLine<'a>> {
    let mut out: Vec<LogicalLine<'a>> = Vec::new();
    let mut continuing = false;
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let body = trim(raw);
        if body.is_empty() || body[0] == b'#' {
            continue;
        }
        if is_space(raw[0]) {
            if continuing {
                if let Some(last) = out.last_mut() {
                    last.parts.push(raw);
                }
            } else {
                warnings.push((
                    i + 1,
                    format!(
                        "{name}: logical line must not start with whitespace: \"{}\"",
                        String::from_utf8_lossy(raw.strip_suffix(b"\r").unwrap_or(raw))
                    ),
                ));
            }
            continue;
        }
        out.push(LogicalLine {
            lineno: i + 1,
            parts: vec![raw],
        });
        continuing = true;
    }
    out
}

/// A `key value` entry with the line it came from.
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lineno: usize,
}

/// Splits a logical line into key and value; `None` when there is no value.
pub fn split_key_value(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let line = trim(line);
    let end = line.iter().position(|&b| is_space(b))?;
    let value = trim(&line[end..]);
    if value.is_empty() {
        return None;
    }
    Some((&line[..end], value))
}

/// Parses a postmap(1) source file. `missing_value` is the text after `line N: ` for a line
/// with a key and no value (postmap and texthash word it differently).
pub fn parse_entries(
    text: &[u8],
    name: &str,
    missing_value: &str,
    warnings: &mut Vec<(usize, String)>,
) -> Vec<Entry> {
    let lines = logical_lines(text, name, warnings);
    let mut entries = Vec::with_capacity(lines.len());
    for line in lines {
        let joined = line.text();
        match split_key_value(&joined) {
            Some((k, v)) => entries.push(Entry {
                key: k.to_vec(),
                value: v.to_vec(),
                lineno: line.lineno,
            }),
            None => warnings.push((
                line.lineno,
                format!("{name}, line {}: {missing_value}", line.lineno),
            )),
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_keeps_inner_whitespace_and_skips_comments() {
        let mut w = Vec::new();
        let text = b"#c\n\nnoval\n  lead ws\nk1 v1\n  cont\n# mid\n\tmore  \nk2\tv2\r\nk3 a\0b\n";
        let e = parse_entries(text, "t", "expected", &mut w);
        let got: Vec<(String, String, usize)> = e
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.key).into_owned(),
                    String::from_utf8_lossy(&e.value).into_owned(),
                    e.lineno,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("noval".into(), "lead ws".into(), 3),
                ("k1".into(), "v1  cont\tmore".into(), 5),
                ("k2".into(), "v2".into(), 9),
                ("k3".into(), "a".into(), 10),
            ]
        );
        assert!(w.is_empty());
    }

    #[test]
    fn leading_whitespace_and_missing_value_warn() {
        let mut w = Vec::new();
        let e = parse_entries(b"  lead\nkey\na b\n", "f", "expected format", &mut w);
        assert_eq!(e.len(), 1);
        assert_eq!(
            w,
            vec![
                (
                    1,
                    "f: logical line must not start with whitespace: \"  lead\"".to_string()
                ),
                (2, "f, line 2: expected format".to_string()),
            ]
        );
    }
}
