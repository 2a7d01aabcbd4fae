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

/// One logical line (NUL-truncated) and the number of the physical line it started on.
pub struct LogicalLine {
    pub lineno: usize,
    pub text: Vec<u8>,
}

/// C code sees a line as a string: it ends at the first NUL.
fn c_string(line: &[u8]) -> &[u8] {
    match memchr::memchr(0, line) {
        Some(nul) => &line[..nul],
        None => line,
    }
}

/// Calls `each(lineno, text)` for every logical line, borrowing the text from `text` when
/// the line has no continuation. A continuation with nothing to continue is reported in
/// `warnings` as Postfix words it (without a line number) and dropped.
pub fn for_each_logical_line<'a>(
    text: &'a [u8],
    name: &str,
    warnings: &mut Vec<(usize, String)>,
    mut each: impl FnMut(usize, &[u8]),
) {
    // The pending logical line: where it started, and its pieces once it has several.
    let mut pending: Option<(usize, &'a [u8])> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut is_joined = false;
    let mut flush =
        |pending: &mut Option<(usize, &'a [u8])>, joined: &mut Vec<u8>, is_joined: &mut bool| {
            if let Some((lineno, first)) = pending.take() {
                if *is_joined {
                    each(lineno, c_string(joined));
                    joined.clear();
                    *is_joined = false;
                } else {
                    each(lineno, c_string(first));
                }
            }
        };
    let mut start = 0;
    let mut lineno = 0;
    while start < text.len() {
        let end = memchr::memchr(b'\n', &text[start..]).map_or(text.len(), |i| start + i);
        let raw = &text[start..end];
        start = end + 1;
        lineno += 1;
        let first = raw.iter().position(|&b| !is_space(b));
        let Some(first) = first else { continue };
        if raw[first] == b'#' {
            continue;
        }
        if first > 0 {
            match pending {
                Some((_, head)) => {
                    if !is_joined {
                        joined.extend_from_slice(head);
                        is_joined = true;
                    }
                    joined.extend_from_slice(raw);
                }
                None => warnings.push((
                    lineno,
                    format!(
                        "{name}: logical line must not start with whitespace: \"{}\"",
                        String::from_utf8_lossy(raw.strip_suffix(b"\r").unwrap_or(raw))
                    ),
                )),
            }
            continue;
        }
        flush(&mut pending, &mut joined, &mut is_joined);
        pending = Some((lineno, raw));
    }
    flush(&mut pending, &mut joined, &mut is_joined);
}

/// The logical lines of `text` (see `for_each_logical_line`), as owned values.
pub fn logical_lines(
    text: &[u8],
    name: &str,
    warnings: &mut Vec<(usize, String)>,
) -> Vec<LogicalLine> {
    let mut out = Vec::new();
    for_each_logical_line(text, name, warnings, |lineno, line| {
        out.push(LogicalLine {
            lineno,
            text: line.to_vec(),
        });
    });
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

/// Calls `each(key, value, lineno)` for every entry of a postmap(1) source text, without
/// copying. `missing_value` is the text after `line N: ` for a key without a value
/// (postmap and texthash word it differently).
pub fn for_each_entry(
    text: &[u8],
    name: &str,
    missing_value: &str,
    warnings: &mut Vec<(usize, String)>,
    mut each: impl FnMut(&[u8], &[u8], usize),
) {
    let mut missing = Vec::new();
    for_each_logical_line(text, name, warnings, |lineno, line| {
        match split_key_value(line) {
            Some((k, v)) => each(k, v, lineno),
            None => missing.push(lineno),
        }
    });
    for lineno in missing {
        warnings.push((lineno, format!("{name}, line {lineno}: {missing_value}")));
    }
    warnings.sort_by_key(|(line, _)| *line);
}

/// The entries of a postmap(1) source text, owned.
pub fn parse_entries(
    text: &[u8],
    name: &str,
    missing_value: &str,
    warnings: &mut Vec<(usize, String)>,
) -> Vec<Entry> {
    let mut entries = Vec::new();
    for_each_entry(text, name, missing_value, warnings, |k, v, lineno| {
        entries.push(Entry {
            key: k.to_vec(),
            value: v.to_vec(),
            lineno,
        })
    });
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
