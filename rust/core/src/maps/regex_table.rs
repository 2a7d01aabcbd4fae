//! regexp_table(5) and pcre_table(5): `/pattern/flags result`, `!/pattern/`, `if` … `endif`,
//! `$n` / `${n}` substitution, first match wins.
//!
//! A lookup costs one pass over the key for all rules the `regex` crate can compile, through
//! a `RegexSet`; only the winning rule is run again for its captures. Rules that need
//! backtracking features (look-around, back-references) use `fancy-regex` and are tried one
//! by one, in their place in the order.
//!
//! A `regexp:` rule is glibc's POSIX regcomp() syntax, not the engines': `posix` reads it
//! as glibc does (or refuses it with glibc's words) and writes it in theirs.
//!
//! Keys and rules are bytes, as Postfix 3.7 matches them: its regexp: is POSIX regcomp in
//! the C locale and its pcre: is compiled without PCRE2_UTF, with or without
//! smtputf8_enable. So `.` is one byte (not one UTF-8 character), case folding is ASCII
//! only, a rule's latin-1 0xE9 matches a key's 0xE9 and no other byte, and a rule's UTF-8
//! `é` matches the same two bytes in a key. The fast rules run on `regex::bytes` without
//! Unicode; the fallback rules (fancy-regex knows only text) see each byte above 0x7F of
//! the key and of the rule (raw, or written `\xHH` / `\x{HH}`) as a private-use character
//! that no case folding, `\w` or `\s` knows, as the C locale knows no such byte.

mod posix;

use super::source::{is_space, logical_lines, trim};
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use std::borrow::Cow;
use std::fmt::Write;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dialect {
    Regexp,
    Pcre,
}

impl Dialect {
    fn label(self) -> &'static str {
        match self {
            Dialect::Regexp => "regexp",
            Dialect::Pcre => "pcre",
        }
    }
}

#[derive(Debug)]
enum Piece {
    Text(Vec<u8>),
    Group(usize),
}

/// Bytes as the characters of the same numbers (latin-1): each character of the text is
/// one byte of the table or key, as Postfix reads them.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The bytes of a `latin1()` text.
fn latin1_bytes(text: &str) -> Vec<u8> {
    // Every character came from one byte; anything else (an engine's own words in a
    // warning) keeps its UTF-8.
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(b) => out.push(b),
            Err(_) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// The fallback engine's character for a byte: ASCII as itself, a byte above 0x7F as
/// U+F780..U+F7FF (private use: no case, not a letter, a digit or a space). The order of
/// the bytes is kept, so a range of bytes is the range of their characters.
fn fancy_char(b: u8) -> char {
    if b.is_ascii() {
        char::from(b)
    } else {
        char::from_u32(0xF700 + u32::from(b)).unwrap_or('?')
    }
}

/// A key as the fallback engine sees it.
fn fancy_text(key: &[u8]) -> String {
    key.iter().map(|&b| fancy_char(b)).collect()
}

/// A fallback rule: fancy-regex, over the key as `fancy_text()`.
struct Fancy {
    re: fancy_regex::Regex,
    /// A `regexp:` rule with REG_ICASE: glibc reads the key through toupper(), which only
    /// a back-reference can tell (fancy-regex compares those case-sensitively).
    upper: bool,
}

impl Fancy {
    fn text(&self, key: &[u8]) -> String {
        if self.upper {
            fancy_text(&key.to_ascii_uppercase())
        } else {
            fancy_text(key)
        }
    }
}

/// Where in the key a position of its `fancy_text()` is: each key byte is one character.
fn key_offset(text: &str, at: usize) -> usize {
    text[..at].chars().count()
}

/// A rule's pattern (a `latin1()` text, one character a byte) as an engine reads it: each
/// byte above 0x7F as an escape of that byte, `\xHH` for `regex::bytes` without Unicode,
/// the `fancy_char()` for fancy-regex, which also gets its `\xHH` and `\x{HH}` escapes
/// of such bytes so. A backslash before such a byte quotes it, as in Postfix's engines.
fn escape_high(pattern: &str, fancy: bool) -> Cow<'_, str> {
    if pattern.is_ascii() && !(fancy && pattern.contains("\\x")) {
        return Cow::Borrowed(pattern);
    }
    let escape = |out: &mut String, b: u8| {
        let _ = if fancy {
            write!(out, "\\x{{{:X}}}", u32::from(fancy_char(b)))
        } else {
            write!(out, "\\x{b:02X}")
        };
    };
    let chars: Vec<char> = pattern.chars().collect();
    let byte = |c: char| u8::try_from(u32::from(c)).unwrap_or(b'?');
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let n = chars[i + 1];
            if fancy && n == 'x' {
                if let Some((b, next)) = hex_escape(&chars, i + 2) {
                    escape(&mut out, b);
                    i = next;
                    continue;
                }
            }
            if n.is_ascii() {
                out.push(c);
                out.push(n);
            } else {
                escape(&mut out, byte(n));
            }
            i += 2;
        } else {
            if c.is_ascii() {
                out.push(c);
            } else {
                escape(&mut out, byte(c));
            }
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// The byte above 0x7F a `\x` escape names, `HH` or `{HH}` from `at`, and where it ends.
fn hex_escape(chars: &[char], at: usize) -> Option<(u8, usize)> {
    let (digits, next) = if chars.get(at) == Some(&'{') {
        let close = at + 1 + chars[at + 1..].iter().position(|&c| c == '}')?;
        (&chars[at + 1..close], close + 1)
    } else {
        let n = chars[at..]
            .iter()
            .take(2)
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        (&chars[at..at + n], at + n)
    };
    let text: String = digits.iter().collect();
    let value = u32::from_str_radix(&text, 16).ok()?;
    let b = u8::try_from(value).ok().filter(|b| !b.is_ascii())?;
    Some((b, next))
}

enum Matcher {
    /// Index into the table's `RegexSet`, and the same pattern alone for captures.
    Fast(usize, Regex),
    Fancy(Box<Fancy>),
}

enum Kind {
    Rule(Vec<Piece>),
    /// Index of the rule after the matching `endif`.
    If(usize),
    Endif,
}

struct Rule {
    matcher: Option<Matcher>,
    negate: bool,
    kind: Kind,
    /// For a `regexp:` rule whose result has `$n`: its groups as POSIX fills them.
    longest: Option<Box<Longest>>,
    /// A `regexp:` rule's second pattern (`/p1/!/p2/`) and whether it is negated: the rule
    /// applies when that one's test holds too.
    second: Option<(Box<Compiled>, bool)>,
}

/// POSIX's (and glibc's) groups: of the leftmost matches the longest, and within it what
/// the pattern's first way (in its order, repetitions greedy) to match just that gives
/// each group. Leftmost-first alone stops at `a` in `(a|ab)` against `ab`.
/// Built on the rule's first match that substitutes, not with the table: most rules of a
/// large table never answer.
#[derive(Default)]
struct Longest {
    engines: std::sync::OnceLock<Option<LongestEngines>>,
}

struct LongestEngines {
    /// The pattern reporting every match end (`MatchKind::All`): anchored, the last is
    /// the longest.
    all: regex_automata::meta::Regex,
    /// The pattern then the end: for a match that ends the key.
    ending: Regex,
    /// The pattern then one byte and the end, run on the key cut one byte after the
    /// match: the pattern must end where the match does, and an assertion there (`$`,
    /// `\b`, `\>`) sees the byte that follows it in the key.
    before_byte: Regex,
}

impl LongestEngines {
    fn new(pattern: &str) -> Option<LongestEngines> {
        use regex_automata::{meta, util::syntax, MatchKind};
        let all = meta::Regex::builder()
            .configure(
                meta::Config::new()
                    .match_kind(MatchKind::All)
                    .utf8_empty(false),
            )
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .build(pattern)
            .ok()?;
        let build = |tail: &str| {
            RegexBuilder::new(&format!("(?:{pattern}){tail}"))
                .unicode(false)
                .size_limit(64 << 20)
                .build()
                .ok()
        };
        Some(LongestEngines {
            all,
            ending: build(r"\z")?,
            before_byte: build(r"(?s:.)\z")?,
        })
    }
}

impl Longest {
    /// The groups of the match POSIX takes.
    fn captures<'k>(&self, first: &Regex, key: &'k [u8]) -> Option<regex::bytes::Captures<'k>> {
        use regex_automata::{Anchored, Input};
        let engines = self
            .engines
            .get_or_init(|| LongestEngines::new(first.as_str()))
            .as_ref()?;
        let start = first.find(key)?.start();
        let input = Input::new(key).range(start..).anchored(Anchored::Yes);
        let end = engines.all.search(&input)?.end();
        let caps = if end == key.len() {
            engines.ending.captures_at(key, start)?
        } else {
            engines.before_byte.captures_at(&key[..=end], start)?
        };
        (caps.get(0)?.start() == start).then_some(caps)
    }
}

pub struct RegexTable {
    rules: Vec<Rule>,
    set: RegexSet,
    /// True when some rule is not in the set, so a miss of the set is not a miss of the table.
    needs_walk: bool,
    pub warnings: Vec<String>,
}

#[derive(Default, Clone, Copy)]
struct Flags {
    icase: bool,
    multiline: bool,
    dotall: bool,
    extended: bool,
    anchored: bool,
    ungreedy: bool,
}

/// Parses `/pattern/flags` at the start of `s`; returns the pattern, flags and the rest.
/// Errors are the message and whether it "skips" or "ignores" the rule (the dialects differ).
fn parse_pattern(s: &str, dialect: Dialect) -> Result<(&str, Flags, &str), String> {
    let mut chars = s.char_indices();
    let Some((_, delim)) = chars.next() else {
        return Err("no regexp: skipping this rule".into());
    };
    let mut end = None;
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delim {
            end = Some(i);
            break;
        }
    }
    let Some(end) = end else {
        let verb = match dialect {
            Dialect::Regexp => "skipping",
            Dialect::Pcre => "ignoring",
        };
        return Err(format!(
            "no closing regexp delimiter \"{delim}\": {verb} this rule"
        ));
    };
    let pattern = &s[delim.len_utf8()..end];
    let after = &s[end + delim.len_utf8()..];
    // A regexp: rule's flags end where its second pattern starts (`/p1/!/p2/`).
    let flag_end = after
        .bytes()
        .position(|b| is_space(b) || (b == b'!' && dialect == Dialect::Regexp))
        .unwrap_or(after.len());
    let mut flags = Flags {
        icase: true,
        extended: dialect == Dialect::Regexp,
        ..Flags::default()
    };
    for c in after[..flag_end].chars() {
        match (c, dialect) {
            ('i', _) => flags.icase = !flags.icase,
            ('m', _) => flags.multiline = !flags.multiline,
            ('x', _) => flags.extended = !flags.extended,
            ('s', Dialect::Pcre) => flags.dotall = !flags.dotall,
            ('A', Dialect::Pcre) => flags.anchored = !flags.anchored,
            ('U', Dialect::Pcre) => flags.ungreedy = !flags.ungreedy,
            ('E' | 'X', Dialect::Pcre) => {}
            _ => return Err(format!("unknown regexp option \"{c}\": skipping this rule")),
        }
    }
    Ok((pattern, flags, &after[flag_end..]))
}

/// The `!`s before a pattern, each turning its sense, and blanks among them; the rest.
fn negations(mut s: &str) -> (bool, &str) {
    let mut negate = false;
    loop {
        let t = s.trim_start();
        match t.strip_prefix('!') {
            Some(r) => {
                negate = !negate;
                s = r;
            }
            None => return (negate, t),
        }
    }
}

/// The regex-crate spelling of a rule's pattern with its flags.
fn engine_pattern(pattern: &str, flags: Flags, dialect: Dialect) -> String {
    let mut inline = String::new();
    if flags.icase {
        inline.push('i');
    }
    match dialect {
        // POSIX without REG_NEWLINE: `.` matches a newline and ^ $ only at the ends;
        // `m` (REG_NEWLINE) gives the line-oriented behaviour.
        Dialect::Regexp => inline.push_str(if flags.multiline { "m" } else { "s" }),
        Dialect::Pcre => {
            if flags.multiline {
                inline.push('m');
            }
            if flags.dotall {
                inline.push('s');
            }
            if flags.extended {
                inline.push('x');
            }
            if flags.ungreedy {
                inline.push('U');
            }
        }
    }
    let body = if flags.anchored {
        // In x mode a trailing comment would swallow the `)`: end the line first.
        let nl = if flags.extended { "\n" } else { "" };
        format!(r"\A(?:{pattern}{nl})")
    } else {
        pattern.to_string()
    };
    if inline.is_empty() {
        body
    } else {
        format!("(?{inline}){body}")
    }
}

/// The message Postfix's PCRE2 would give for a pattern neither engine accepts, for the
/// common cases; otherwise the engine's own words. (`regexp:` rules get glibc's from
/// `posix`.)
fn compile_error(pattern: &str, engine: &str) -> String {
    let mut depth = 0i32;
    let mut escaped = false;
    let mut in_class = false;
    for c in pattern.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => depth -= 1,
            _ => {}
        }
    }
    let end = pattern.chars().count();
    if in_class {
        format!("error in regex at offset {end}: missing terminating ] for character class")
    } else if depth > 0 {
        format!("error in regex at offset {end}: missing closing parenthesis")
    } else {
        let first = engine.lines().last().unwrap_or(engine).trim().to_string();
        format!("error in regex at offset 0: {first}")
    }
}

/// A warning of the result's parse: Postfix's `mac_parse()` says its own without the
/// map's name and line, the table's prescan with them.
enum ResultWarning {
    Bare(String),
    Line(String),
}

/// A result's pieces and its highest `$n`, read as Postfix's `mac_parse()` reads it with
/// dict_regexp's or dict_pcre's prescan: `$$` is a `$`; `$name`, `${name}` and `$(name)`
/// (nested brackets of the same kind inside) must name a group by number, 1 or more.
/// On error, the warnings before Postfix's "bad replacement syntax".
fn mac_parse(text: &str, dialect: Dialect) -> Result<(Vec<Piece>, usize), Vec<ResultWarning>> {
    let b = text.as_bytes();
    let mut pieces = Vec::new();
    let mut lit = Vec::new();
    let mut warnings = Vec::new();
    let mut max_sub = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let ch = text[i..].chars().next().unwrap_or('?');
            lit.extend(latin1_bytes(ch.encode_utf8(&mut [0; 4])));
            i += ch.len_utf8();
            continue;
        }
        if b.get(i + 1) == Some(&b'$') {
            lit.push(b'$');
            i += 2;
            continue;
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut lit)));
        }
        i += 1;
        let name = match b.get(i) {
            Some(&open @ (b'{' | b'(')) => {
                let close = if open == b'{' { b'}' } else { b')' };
                let mut level = 1;
                let mut end = i + 1;
                while level > 0 {
                    match b.get(end) {
                        None => {
                            warnings.push(ResultWarning::Bare(format!(
                                "truncated macro reference: \"{text}\""
                            )));
                            return Err(warnings);
                        }
                        Some(&c) if c == open => level += 1,
                        Some(&c) if c == close => level -= 1,
                        Some(_) => {}
                    }
                    end += 1;
                }
                let name = &text[i + 1..end - 1];
                i = end;
                name
            }
            _ => {
                let n = b[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                i += n;
                &text[i - n..i]
            }
        };
        if name.is_empty() {
            warnings.push(ResultWarning::Bare(format!("empty macro name: \"{text}\"")));
            return Err(warnings);
        }
        // dict_regexp_prescan / dict_pcre_prescan: a problem is noted and the parse goes on.
        if !name.bytes().all(|c| c.is_ascii_digit()) {
            warnings.push(ResultWarning::Line(format!(
                "non-numeric replacement index \"{name}\""
            )));
            continue;
        }
        // atoi(): a number too large for an int is no group either.
        let n = name.parse::<usize>().unwrap_or(usize::MAX);
        if n < 1 {
            let words = match dialect {
                Dialect::Regexp => "out-of-range",
                Dialect::Pcre => "out of range",
            };
            warnings.push(ResultWarning::Line(format!(
                "{words} replacement index \"{name}\""
            )));
            continue;
        }
        max_sub = max_sub.max(n);
        pieces.push(Piece::Group(n));
    }
    if !warnings.is_empty() {
        return Err(warnings);
    }
    if !lit.is_empty() {
        pieces.push(Piece::Text(lit));
    }
    Ok((pieces, max_sub))
}

enum Compiled {
    Fast(Regex),
    Fancy(Box<Fancy>),
}

/// A compiled rule, its number of groups, and whether its groups are POSIX's (a `regexp:`
/// rule the `regex` crate runs).
type CompiledRule = (Compiled, usize, bool);

fn compile(pattern: &str, flags: Flags, dialect: Dialect) -> Result<CompiledRule, String> {
    if dialect == Dialect::Regexp {
        return compile_posix(pattern, flags);
    }
    let full = engine_pattern(&escape_high(pattern, false), flags, dialect);
    match RegexBuilder::new(&full)
        .unicode(false)
        .size_limit(64 << 20)
        .build()
    {
        Ok(re) => {
            let groups = re.captures_len() - 1;
            Ok((Compiled::Fast(re), groups, false))
        }
        Err(fast_err) => match fancy_regex::Regex::new(&engine_pattern(
            &escape_high(pattern, true),
            flags,
            dialect,
        )) {
            Ok(re) => {
                let groups = re.captures_len() - 1;
                let upper = false;
                Ok((
                    Compiled::Fancy(Box::new(Fancy { re, upper })),
                    groups,
                    false,
                ))
            }
            Err(_) => Err(compile_error(pattern, &fast_err.to_string())),
        },
    }
}

/// A `regexp:` rule: glibc's regcomp() syntax, put into the engines' by `posix`.
fn compile_posix(pattern: &str, flags: Flags) -> Result<CompiledRule, String> {
    let syntax = posix::Syntax {
        extended: flags.extended,
        icase: flags.icase,
        newline: flags.multiline,
    };
    let t = posix::translate(&latin1_bytes(pattern), syntax).map_err(str::to_string)?;
    if !t.backrefs {
        let full = engine_pattern(&t.fast, flags, Dialect::Regexp);
        if let Ok(re) = RegexBuilder::new(&full)
            .unicode(false)
            .size_limit(64 << 20)
            .build()
        {
            return Ok((Compiled::Fast(re), t.groups, true));
        }
    }
    let full = engine_pattern(&t.fancy, flags, Dialect::Regexp);
    match fancy_regex::Regex::new(&full) {
        Ok(re) => {
            let upper = flags.icase;
            Ok((
                Compiled::Fancy(Box::new(Fancy { re, upper })),
                t.groups,
                false,
            ))
        }
        // Valid for glibc but more than the engines hold (a large repetition of a
        // repetition): glibc's word for a pattern it cannot hold.
        Err(_) => Err("Regular expression too big".into()),
    }
}

impl RegexTable {
    /// Compiles a table; rules Postfix would skip are skipped with its warning.
    /// `no_regsub` is Postfix's DICT_FLAG_NO_REGSUB, set for tables whose results name a
    /// file, a command or a mailbox: a rule whose result has `$n` is skipped, so that no
    /// part of an address a remote client chose can reach such a result.
    pub fn compile(text: &[u8], dialect: Dialect, name: &str, no_regsub: bool) -> RegexTable {
        let label = dialect.label();
        let mut warnings = Vec::new();
        let mut raw_warnings = Vec::new();
        let lines = logical_lines(text, name, &mut raw_warnings);
        warnings.extend(raw_warnings.into_iter().map(|(_, w)| w));
        let mut rules: Vec<Rule> = Vec::new();
        let mut open_ifs: Vec<(usize, usize)> = Vec::new();
        let mut set_patterns: Vec<String> = Vec::new();
        for line in &lines {
            let text = latin1(trim(&line.text));
            // The rule's own bytes in a message are shown as UTF-8 where they are.
            let warn = |msg: &str| {
                let msg = String::from_utf8_lossy(&latin1_bytes(msg)).into_owned();
                format!("{label} map {name}, line {}: {msg}", line.lineno)
            };
            let lower = text.to_ascii_lowercase();
            let word_end = |n: usize| {
                text.as_bytes()
                    .get(n)
                    .is_none_or(|c| !c.is_ascii_alphanumeric())
            };
            if lower.starts_with("endif") && word_end(5) {
                // Without its IF, that is all Postfix says of the line.
                if !open_ifs.is_empty() && !trim(&text.as_bytes()[5..]).is_empty() {
                    warnings.push(warn("ignoring extra text after ENDIF"));
                }
                match open_ifs.pop() {
                    Some((at, _)) => {
                        rules.push(Rule {
                            matcher: None,
                            negate: false,
                            kind: Kind::Endif,
                            longest: None,
                            second: None,
                        });
                        let after = rules.len();
                        rules[at].kind = Kind::If(after);
                    }
                    None => warnings.push(warn("ignoring ENDIF without matching IF")),
                }
                continue;
            }
            let is_if = lower.starts_with("if") && word_end(2);
            if !is_if
                && text
                    .as_bytes()
                    .first()
                    .is_some_and(u8::is_ascii_alphanumeric)
            {
                warnings.push(warn("ignoring unrecognized request"));
                continue;
            }
            let (negate, rest) = negations(if is_if { &text[2..] } else { &text });
            let (pattern, flags, mut after) = match parse_pattern(rest, dialect) {
                Ok(p) => p,
                Err(msg) => {
                    warnings.push(warn(&msg));
                    continue;
                }
            };
            // dict_regexp's older form of `if !/p2/ /p1/ ... endif`: `/p1/!/p2/ result`.
            let mut second = None;
            if dialect == Dialect::Regexp && !is_if && after.starts_with('!') {
                let (negate2, rest2) = negations(after);
                match parse_pattern(rest2, dialect) {
                    Ok((pattern2, flags2, after2)) => {
                        second = Some((pattern2, flags2, negate2));
                        after = after2;
                    }
                    Err(msg) => {
                        warnings.push(warn(&msg));
                        continue;
                    }
                }
            }
            let result = after.trim();
            // The checks of the result come before the pattern is compiled, but for
            // its groups: the order of Postfix's dict_regexp_parseline and
            // dict_pcre_parse_rule.
            let mut parsed = None;
            if is_if && !result.is_empty() {
                warnings.push(warn(&format!(
                    "ignoring extra text after IF statement: \"{result}\""
                )));
                warnings.push(warn(
                    "do not prepend whitespace to statements between IF and ENDIF",
                ));
            }
            if !is_if {
                if result.is_empty() {
                    warnings.push(warn("no replacement text: using empty string"));
                }
                let (pieces, max_sub) = match mac_parse(result, dialect) {
                    Ok(p) => p,
                    Err(said) => {
                        for w in said {
                            warnings.push(match w {
                                ResultWarning::Line(msg) => warn(&msg),
                                ResultWarning::Bare(msg) => {
                                    String::from_utf8_lossy(&latin1_bytes(&msg)).into_owned()
                                }
                            });
                        }
                        warnings.push(warn("bad replacement syntax: skipping this rule"));
                        continue;
                    }
                };
                if max_sub > 0 && negate {
                    warnings.push(warn(
                        "$number found in negative match replacement text: skipping this rule",
                    ));
                    continue;
                }
                if max_sub > 0 && no_regsub {
                    warnings.push(warn(
                        "regular expression substitution is not allowed: skipping this rule",
                    ));
                    continue;
                }
                parsed = Some((pieces, max_sub));
            }
            let (compiled, groups, posix) = match compile(pattern, flags, dialect) {
                Ok(c) => c,
                Err(msg) => {
                    warnings.push(warn(&msg));
                    continue;
                }
            };
            let kind = match parsed {
                None => {
                    open_ifs.push((rules.len(), line.lineno));
                    Kind::If(0)
                }
                Some((_, max_sub)) if max_sub > groups => {
                    warnings.push(warn(&format!(
                        "out of range replacement index \"{max_sub}\": skipping this rule"
                    )));
                    continue;
                }
                Some((pieces, _)) => Kind::Rule(pieces),
            };
            let second = match second {
                None => None,
                Some((pattern2, flags2, negate2)) => match compile(pattern2, flags2, dialect) {
                    Ok((c, _, _)) => Some((Box::new(c), negate2)),
                    Err(msg) => {
                        warnings.push(warn(&msg));
                        continue;
                    }
                },
            };
            let substitutes =
                matches!(&kind, Kind::Rule(p) if p.iter().any(|p| matches!(p, Piece::Group(_))));
            let longest = match (&compiled, posix) {
                (Compiled::Fast(_), true) if substitutes => Some(Box::default()),
                _ => None,
            };
            let matcher = match compiled {
                Compiled::Fast(re) => {
                    set_patterns.push(re.as_str().to_string());
                    Matcher::Fast(set_patterns.len() - 1, re)
                }
                Compiled::Fancy(re) => Matcher::Fancy(re),
            };
            rules.push(Rule {
                matcher: Some(matcher),
                negate,
                kind,
                longest,
                second,
            });
        }
        for (at, lineno) in open_ifs.into_iter().rev() {
            warnings.push(format!(
                "{label} map {name}, line {lineno}: IF has no matching ENDIF"
            ));
            // Postfix closes an unterminated IF at the end of the table.
            rules[at].kind = Kind::If(rules.len());
        }
        let set = RegexSetBuilder::new(&set_patterns)
            .unicode(false)
            .size_limit(512 << 20)
            .dfa_size_limit(64 << 20)
            .build()
            .unwrap_or_else(|_| RegexSet::empty());
        let needs_walk = set.len() != set_patterns.len()
            || rules
                .iter()
                .any(|r| r.negate || matches!(r.matcher, Some(Matcher::Fancy(_))));
        RegexTable {
            rules,
            set,
            needs_walk,
            warnings,
        }
    }

    /// The result of the first rule that matches the bytes of `key`, with `$n` substituted:
    /// bytes too, since a group may end inside a UTF-8 character of the key and a rule's
    /// result may hold bytes that are not UTF-8.
    pub fn lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        let hits = self.set.matches(key);
        if !self.needs_walk && !hits.matched_any() {
            return None;
        }
        let in_set = !self.set.is_empty();
        // Made once, and only when a fallback rule is reached.
        let (text, upper) = (std::cell::OnceCell::new(), std::cell::OnceCell::new());
        // A pattern fancy-regex gives up on (backtrack limit) does not match.
        let fancy_hit = |f: &Fancy| {
            let cell = if f.upper { &upper } else { &text };
            f.re.is_match(cell.get_or_init(|| f.text(key)))
                .unwrap_or(false)
        };
        let matched = |m: &Matcher| match m {
            Matcher::Fast(i, re) => {
                if in_set {
                    hits.matched(*i)
                } else {
                    re.is_match(key)
                }
            }
            Matcher::Fancy(re) => fancy_hit(re),
        };
        let also = |second: &Option<(Box<Compiled>, bool)>| match second {
            None => true,
            Some((c, negate)) => {
                let hit = match c.as_ref() {
                    Compiled::Fast(re) => re.is_match(key),
                    Compiled::Fancy(re) => fancy_hit(re),
                };
                hit != *negate
            }
        };
        let mut i = 0;
        while i < self.rules.len() {
            let rule = &self.rules[i];
            let hit =
                rule.matcher.as_ref().is_some_and(&matched) != rule.negate && also(&rule.second);
            match &rule.kind {
                Kind::Endif => {}
                Kind::If(after) => {
                    if !hit {
                        i = *after;
                        continue;
                    }
                }
                Kind::Rule(pieces) if hit => return Some(Self::expand(rule, pieces, key)),
                Kind::Rule(_) => {}
            }
            i += 1;
        }
        None
    }

    fn expand(rule: &Rule, pieces: &[Piece], key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if !pieces.iter().any(|p| matches!(p, Piece::Group(_))) {
            for p in pieces {
                if let Piece::Text(t) = p {
                    out.extend_from_slice(t);
                }
            }
            return out;
        }
        // Byte offsets into the key: the text a fallback rule matched has three bytes for
        // each byte above 0x7F, so its groups are taken back to bytes.
        let groups: Vec<Option<Cow<'_, [u8]>>> = match rule.matcher.as_ref() {
            Some(Matcher::Fast(_, re)) => rule
                .longest
                .as_ref()
                .and_then(|l| l.captures(re, key))
                .or_else(|| re.captures(key))
                .map_or_else(Vec::new, |c| {
                    c.iter()
                        .map(|m| m.map(|m| Cow::Borrowed(m.as_bytes())))
                        .collect()
                }),
            Some(Matcher::Fancy(f)) => {
                let text = f.text(key);
                f.re.captures(&text)
                    .ok()
                    .flatten()
                    .map_or_else(Vec::new, |c| {
                        c.iter()
                            .map(|m| {
                                m.map(|m| {
                                    let start = key_offset(&text, m.start());
                                    let end = start + key_offset(m.as_str(), m.as_str().len());
                                    Cow::Borrowed(&key[start..end])
                                })
                            })
                            .collect()
                    })
            }
            None => Vec::new(),
        };
        for p in pieces {
            match p {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Group(n) => {
                    if let Some(Some(g)) = groups.get(*n) {
                        out.extend_from_slice(g);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str, d: Dialect) -> RegexTable {
        RegexTable::compile(text.as_bytes(), d, "re", false)
    }

    /// `lookup()` of a text key, its result as text (lossy: tests compare UTF-8 results).
    trait TextLookup {
        fn get(&self, key: &str) -> Option<String>;
    }

    impl TextLookup for RegexTable {
        fn get(&self, key: &str) -> Option<String> {
            self.lookup(key.as_bytes())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        }
    }

    #[test]
    fn first_match_wins_with_substitution_and_default_case_folding() {
        let t = table(
            "/^(.*)@example\\.com$/ local:$1\n/^x/ second ${0}\n/user/ hit $$1\n",
            Dialect::Pcre,
        );
        assert_eq!(t.get("Bob@EXAMPLE.com").as_deref(), Some("local:Bob"));
        assert_eq!(t.get("USER").as_deref(), Some("hit $1"));
        assert_eq!(t.get("zzz"), None);
        assert_eq!(
            t.warnings,
            vec![
                "pcre map re, line 2: out of range replacement index \"0\"",
                "pcre map re, line 2: bad replacement syntax: skipping this rule"
            ]
        );
    }

    /// Debian's Postfix 3.7 on these rule lines: `!`s each turn the sense, a regexp:
    /// rule may take a second pattern, and a `#` after a pattern is an unknown flag.
    #[test]
    fn negations_and_second_patterns_as_dict_regexp() {
        let src = "!!/a/ r1\n! ! /b/ r2\n/c/#x r3\n!\n/d/!/e/!/f/ r4\n/(g)/!!/h/ r5$1\n";
        let t = table(src, Dialect::Regexp);
        assert_eq!(
            t.warnings,
            vec![
                "regexp map re, line 3: unknown regexp option \"#\": skipping this rule",
                "regexp map re, line 4: no regexp: skipping this rule",
            ]
        );
        assert_eq!(t.get("a").as_deref(), Some("r1"));
        assert_eq!(t.get("b").as_deref(), Some("r2"));
        assert_eq!(t.get("c"), None);
        assert_eq!(t.get("dx").as_deref(), Some("!/f/ r4"));
        assert_eq!(t.get("de"), None);
        assert_eq!(t.get("gh").as_deref(), Some("r5g"));
        assert_eq!(t.get("g"), None);
        let src = "if /a/ extra\nendif\nfoo /b/ r\nENDIF x\n";
        let t = table(src, Dialect::Regexp);
        assert_eq!(
            t.warnings,
            vec![
                "regexp map re, line 1: ignoring extra text after IF statement: \"extra\"",
                "regexp map re, line 1: do not prepend whitespace to statements between IF \
                 and ENDIF",
                "regexp map re, line 3: ignoring unrecognized request",
                "regexp map re, line 4: ignoring ENDIF without matching IF",
            ]
        );
        let t = table("/d/!/e/ r4\n", Dialect::Pcre);
        assert_eq!(
            t.warnings,
            vec!["pcre map re, line 1: unknown regexp option \"!\": skipping this rule"]
        );
    }

    /// Debian's Postfix 3.7 on these results (mac_parse and the tables' prescan).
    #[test]
    fn results_are_read_as_mac_parse_reads_them() {
        let src = "/(a)/ r $0\n/(a)/ r ${x}$y\n/(a)/ r ${1\n/(a)/ r $-\n/(a)/ r $1_\n\
                   !/a/ $0\n/(a/\n/(a)/ r $2\n/(a)(b)?/ [$(1)][${2}][$$1][$01]\n";
        let t = table(src, Dialect::Regexp);
        assert_eq!(
            t.warnings,
            vec![
                "regexp map re, line 1: out-of-range replacement index \"0\"",
                "regexp map re, line 1: bad replacement syntax: skipping this rule",
                "regexp map re, line 2: non-numeric replacement index \"x\"",
                "regexp map re, line 2: non-numeric replacement index \"y\"",
                "regexp map re, line 2: bad replacement syntax: skipping this rule",
                "truncated macro reference: \"r ${1\"",
                "regexp map re, line 3: bad replacement syntax: skipping this rule",
                "empty macro name: \"r $-\"",
                "regexp map re, line 4: bad replacement syntax: skipping this rule",
                "regexp map re, line 5: non-numeric replacement index \"1_\"",
                "regexp map re, line 5: bad replacement syntax: skipping this rule",
                "regexp map re, line 6: out-of-range replacement index \"0\"",
                "regexp map re, line 6: bad replacement syntax: skipping this rule",
                "regexp map re, line 7: no replacement text: using empty string",
                "regexp map re, line 7: Unmatched ( or \\(",
                "regexp map re, line 8: out of range replacement index \"2\": skipping this rule",
            ]
        );
        assert_eq!(t.get("a").as_deref(), Some("[a][][$1][a]"));
    }

    #[test]
    fn if_endif_and_negation() {
        let src = "if /^a/\n!/b/ no-b\n/c/ c\nendif\n/./ other\n";
        let t = table(src, Dialect::Regexp);
        assert_eq!(t.get("ax").as_deref(), Some("no-b"));
        assert_eq!(t.get("abc").as_deref(), Some("c"));
        assert_eq!(t.get("zb").as_deref(), Some("other"));
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn flag_i_makes_it_case_sensitive_and_lookaround_uses_the_fallback() {
        let t = table("/abc/i sensitive\n/foo(?!bar)/ lookahead\n", Dialect::Pcre);
        assert_eq!(t.get("ABC"), None);
        assert_eq!(t.get("abc").as_deref(), Some("sensitive"));
        assert_eq!(t.get("foobaz").as_deref(), Some("lookahead"));
        assert_eq!(t.get("foobar"), None);
    }

    #[test]
    fn bad_lines_are_skipped_with_postfix_words() {
        let src = "/a(/ bad\n/abc/ r1\n/q/z r2\n/no-close r3\nendif\nif /zz/\n";
        let t = table(src, Dialect::Regexp);
        assert_eq!(
            t.warnings,
            vec![
                "regexp map re, line 1: Unmatched ( or \\(",
                "regexp map re, line 3: unknown regexp option \"z\": skipping this rule",
                "regexp map re, line 4: no closing regexp delimiter \"/\": skipping this rule",
                "regexp map re, line 5: ignoring ENDIF without matching IF",
                "regexp map re, line 6: IF has no matching ENDIF",
            ]
        );
        assert_eq!(t.get("abc").as_deref(), Some("r1"));
    }

    #[test]
    fn no_regsub_skips_only_the_rules_that_substitute() {
        let src = "/^(.*)-cmd@/ |/bin/run $1\n\
                   /^b(.*)$/ pre ${1} post\n\
                   /^literal@/ |/bin/fixed $$1\n\
                   !/x/ $1\n\
                   /^(.*)$/ user\n";
        for (d, label) in [(Dialect::Regexp, "regexp"), (Dialect::Pcre, "pcre")] {
            let t = RegexTable::compile(src.as_bytes(), d, "re", true);
            let refused = "regular expression substitution is not allowed: skipping this rule";
            assert_eq!(
                t.warnings,
                vec![
                    format!("{label} map re, line 1: {refused}"),
                    format!("{label} map re, line 2: {refused}"),
                    format!(
                        "{label} map re, line 4: $number found in negative match \
                         replacement text: skipping this rule"
                    ),
                ]
            );
            // The skipped rules match nothing: the next rule answers.
            assert_eq!(t.get("evil;rm-cmd@x").as_deref(), Some("user"));
            assert_eq!(t.get("bob").as_deref(), Some("user"));
            assert_eq!(
                t.get("literal@x").as_deref(),
                Some("|/bin/fixed $1"),
                "$$ is a literal $, not a substitution"
            );
            // The same text without the flag substitutes.
            let open = RegexTable::compile(src.as_bytes(), d, "re", false);
            assert_eq!(open.get("evil-cmd@x").as_deref(), Some("|/bin/run evil"));
            assert_eq!(open.get("bob").as_deref(), Some("pre ob post"));
        }
    }

    /// What Debian's Postfix 3.7 postmap -q answers for these keys against this table
    /// (smtputf8_enable = no, or -u): both dialects compare bytes.
    #[test]
    fn keys_and_rules_are_bytes_as_in_postfix() {
        let src: &[u8] = b"/^a\xe9$/ latin1-e9\n/^a.$/ anyone\n/^a\xc3\xa9$/ utf8-e-acute\n\
                           /^b[\xc3\xa9]$/ bclass\n/^c(.)$/ c=$1\n/^\xc9$/ upper-E9\n\
                           /^\xc3\x89$/ upper-utf8\n/^d..$/ d-two\n";
        let cases: [(&[u8], Option<&[u8]>); 11] = [
            (b"a\xe9", Some(b"latin1-e9")),
            (b"a\xe8", Some(b"anyone")),
            (b"a\xc3\xa9", Some(b"utf8-e-acute")),
            (b"b\xc3", Some(b"bclass")),
            (b"c\xe8", Some(b"c=\xe8")),
            // `.` is one byte: not the two of a UTF-8 `é`.
            (b"c\xc3\xa9", None),
            (b"d\xc3\xa9", Some(b"d-two")),
            // No case folding beyond ASCII, latin-1 or UTF-8.
            (b"\xe9", None),
            (b"\xc3\xa9", None),
            (b"\xc3\x89", Some(b"upper-utf8")),
            (b"\xc9", Some(b"upper-E9")),
        ];
        for d in [Dialect::Regexp, Dialect::Pcre] {
            let t = RegexTable::compile(src, d, "re", false);
            assert!(t.warnings.is_empty(), "{:?}", t.warnings);
            for (key, want) in cases {
                assert_eq!(t.lookup(key).as_deref(), want, "{d:?} {key:?}");
            }
        }
    }

    #[test]
    fn the_fallback_engine_matches_the_same_bytes() {
        // Look-ahead sends these rules to fancy-regex, which sees bytes as latin-1 text.
        let src: &[u8] = b"/^a\xe9(?!x)$/ latin1-e9\n/^c(.)(?!x)$/ c=$1\n\
                           /^d\\\xe9(?=\xe8)(.)/ quoted=$1\n/^b[\xc3\xa9](?!x)$/ bclass\n";
        let t = RegexTable::compile(src, Dialect::Pcre, "re", false);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert_eq!(t.lookup(b"a\xe9").as_deref(), Some(&b"latin1-e9"[..]));
        assert_eq!(t.lookup(b"a\xe8"), None);
        assert_eq!(t.lookup(b"c\xe8").as_deref(), Some(&b"c=\xe8"[..]));
        assert_eq!(t.lookup(b"c\xc3\xa9"), None);
        assert_eq!(t.lookup(b"d\xe9\xe8").as_deref(), Some(&b"quoted=\xe8"[..]));
        assert_eq!(t.lookup(b"b\xa9").as_deref(), Some(&b"bclass"[..]));
        // Case folds in ASCII only, and no byte above 0x7F is a word character; the
        // escapes \xHH and \x{HH} name bytes, their ranges too.
        let src: &[u8] = b"/^a\xe9(?!x)$/ latin1-e9\n/^(\\w+)(?!x)$/ word=$1\n\
                           /^\\x{e8}(?!x)/ escaped-e8\n/^[\\x80-\\xe0](?!x)/ range\n";
        let t = RegexTable::compile(src, Dialect::Pcre, "re", false);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert_eq!(t.lookup(b"A\xe9").as_deref(), Some(&b"latin1-e9"[..]));
        assert_eq!(t.lookup(b"a\xc9"), None);
        assert_eq!(t.lookup(b"Ab").as_deref(), Some(&b"word=Ab"[..]));
        assert_eq!(t.lookup(b"\xe8y").as_deref(), Some(&b"escaped-e8"[..]));
        assert_eq!(t.lookup(b"\xe0y").as_deref(), Some(&b"range"[..]));
        assert_eq!(t.lookup(b"\xe1y"), None);
    }

    #[test]
    fn a_group_may_end_inside_a_utf8_character() {
        let t = table("/^(..)/ $1\n", Dialect::Regexp);
        assert_eq!(t.lookup("é!".as_bytes()).as_deref(), Some(&b"\xc3\xa9"[..]));
        assert_eq!(t.lookup("xé".as_bytes()).as_deref(), Some(&b"x\xc3"[..]));
    }
}
