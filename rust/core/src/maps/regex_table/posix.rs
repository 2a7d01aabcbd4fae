//! regexp_table(5) patterns as glibc's regcomp reads them, put into the `regex` crate's
//! syntax (and fancy-regex's, for back-references).
//!
//! Postfix compiles a `regexp:` rule with `regcomp(REG_EXTENDED | REG_ICASE)` (the `x` flag
//! drops REG_EXTENDED, `i` drops REG_ICASE, `m` adds REG_NEWLINE) in the C locale. The
//! parser below follows glibc's `regcomp.c` (`peek_token`, `parse_reg_exp`,
//! `parse_expression`, `parse_dup_op`, `parse_bracket_exp`) token for token, so the same
//! patterns are refused with the same `regerror` text, and what glibc accepts means here
//! what it means there:
//!
//! - a backslash before an ordinary character quotes it (`\d` is a `d`); GNU's `\w \W \s
//!   \S \b \B \< \> \` \'` and the back-references `\1`..`\9` are the only escapes;
//! - in a bracket expression a backslash is itself, a leading `]` is a member, and
//!   `[:class:]`, `[=c=]`, `[.c.]` are the C locale's;
//! - `*`, `+`, `?` or `{` where nothing precedes them is an error in an ERE, and a `)`
//!   without its `(` is an ordinary character;
//! - with REG_ICASE glibc reads the pattern and the key through `toupper()`, but not the
//!   character after a backslash: an escaped lower-case letter matches nothing, and a
//!   range such as `[_-a]` is `[_-A]`, an invalid range.
//!
//! Each bracket expression (and `\w`, `\s`, an escaped letter) becomes the explicit set of
//! key bytes it matches, closed under case when REG_ICASE is on, so the engines' own ideas
//! of classes and case do not enter into it.

use std::fmt::Write;

/// The regcomp flags of a rule.
#[derive(Clone, Copy, Debug)]
pub struct Syntax {
    pub extended: bool,
    pub icase: bool,
    pub newline: bool,
}

/// A pattern in the engines' syntax: `fast` for `regex::bytes` without Unicode, `fancy`
/// for fancy-regex over `fancy_text()` keys. `backrefs` says that only `fancy` can run it.
#[derive(Debug)]
pub struct Translated {
    pub fast: String,
    pub fancy: String,
    pub backrefs: bool,
    /// regcomp's `re_nsub`: a group repeated `{0}` times still counts.
    pub groups: usize,
}

// glibc's regerror() texts.
const BADPAT: &str = "Invalid regular expression";
const ECOLLATE: &str = "Invalid collation character";
const ECTYPE: &str = "Invalid character class name";
const EESCAPE: &str = "Trailing backslash";
const ESUBREG: &str = "Invalid back reference";
const EBRACK: &str = "Unmatched [, [^, [:, [., or [=";
const EPAREN: &str = r"Unmatched ( or \(";
const EBRACE: &str = r"Unmatched \{";
const BADBR: &str = r"Invalid content of \{\}";
const ERANGE: &str = "Invalid range end";
const BADRPT: &str = "Invalid preceding regular expression";
const ESIZE: &str = "Regular expression too big";

/// glibc's RE_DUP_MAX.
const DUP_MAX: i64 = 0x7fff;
/// glibc's BRACKET_NAME_BUF_SIZE.
const NAME_MAX: usize = 32;

type Set = [bool; 256];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tok {
    Char,
    Alt,
    Star,
    Plus,
    Quest,
    OpenDup,
    CloseDup,
    OpenSub,
    CloseSub,
    OpenBracket,
    Period,
    Anchor(&'static str, &'static str),
    BackRef(usize),
    Word(bool),
    Space(bool),
    BackSlash,
    End,
}

#[derive(Clone, Copy, Debug)]
struct Token {
    tok: Tok,
    /// The byte glibc keeps with the token (`opr.c`), translated unless escaped.
    c: u8,
    /// An ordinary character that came after a backslash (not read through toupper()).
    escaped: bool,
    len: usize,
}

enum Out {
    Syn(String),
    /// Regex syntax that differs between the engines: (fast, fancy).
    Both(&'static str, &'static str),
    Byte(u8),
    Set(Box<Set>),
}

struct Parser<'a> {
    pat: &'a [u8],
    pos: usize,
    syn: Syntax,
    tok: Token,
    nsub: usize,
    completed: u32,
    backrefs: bool,
    out: Vec<Out>,
}

fn upper(syn: Syntax, b: u8) -> u8 {
    if syn.icase {
        b.to_ascii_uppercase()
    } else {
        b
    }
}

/// The C locale's `<ctype.h>` classes, by the names regcomp knows.
fn ctype(name: &[u8]) -> Option<fn(u8) -> bool> {
    Some(match name {
        b"alnum" => |c: u8| c.is_ascii_alphanumeric(),
        b"alpha" => |c: u8| c.is_ascii_alphabetic(),
        b"blank" => |c: u8| c == b' ' || c == b'\t',
        b"cntrl" => |c: u8| c < 0x20 || c == 0x7f,
        b"digit" => |c: u8| c.is_ascii_digit(),
        b"graph" => |c: u8| c.is_ascii_graphic(),
        b"lower" => |c: u8| c.is_ascii_lowercase(),
        b"print" => |c: u8| c.is_ascii_graphic() || c == b' ',
        b"punct" => |c: u8| c.is_ascii_punctuation(),
        b"space" => |c: u8| matches!(c, b' ' | b'\t'..=b'\r'),
        b"upper" => |c: u8| c.is_ascii_uppercase(),
        b"xdigit" => |c: u8| c.is_ascii_hexdigit(),
        _ => return None,
    })
}

impl Parser<'_> {
    fn byte_at(&self, i: usize) -> Option<u8> {
        self.pat.get(i).copied()
    }

    /// glibc's `peek_token` at `at`; `caret` is RE_CARET_ANCHORS_HERE.
    fn peek(&self, at: usize, caret: bool) -> Token {
        let ere = self.syn.extended;
        let mut t = Token {
            tok: Tok::Char,
            c: 0,
            escaped: false,
            len: 1,
        };
        let Some(raw) = self.byte_at(at) else {
            t.tok = Tok::End;
            t.len = 0;
            return t;
        };
        t.c = upper(self.syn, raw);
        if raw == b'\\' {
            let Some(c2) = self.byte_at(at + 1) else {
                t.tok = Tok::BackSlash;
                return t;
            };
            t.c = c2;
            t.len = 2;
            t.escaped = true;
            t.tok = match c2 {
                b'|' if !ere => Tok::Alt,
                b'1'..=b'9' => Tok::BackRef(usize::from(c2 - b'1')),
                b'<' => Tok::Anchor(r"\b{start}", r"(?<![0-9A-Za-z_])(?=[0-9A-Za-z_])"),
                b'>' => Tok::Anchor(r"\b{end}", r"(?<=[0-9A-Za-z_])(?![0-9A-Za-z_])"),
                b'b' => Tok::Anchor(r"\b", r"\b"),
                b'B' => Tok::Anchor(r"\B", r"\B"),
                b'`' => Tok::Anchor(r"\A", r"\A"),
                b'\'' => Tok::Anchor(r"\z", r"\z"),
                b'w' | b'W' => Tok::Word(c2 == b'W'),
                b's' | b'S' => Tok::Space(c2 == b'S'),
                b'(' if !ere => Tok::OpenSub,
                b')' if !ere => Tok::CloseSub,
                b'+' if !ere => Tok::Plus,
                b'?' if !ere => Tok::Quest,
                b'{' if !ere => Tok::OpenDup,
                b'}' if !ere => Tok::CloseDup,
                _ => Tok::Char,
            };
            if t.tok != Tok::Char {
                t.escaped = false;
            }
            return t;
        }
        t.tok = match raw {
            b'|' if ere => Tok::Alt,
            b'*' => Tok::Star,
            b'+' if ere => Tok::Plus,
            b'?' if ere => Tok::Quest,
            b'{' if ere => Tok::OpenDup,
            b'}' if ere => Tok::CloseDup,
            b'(' if ere => Tok::OpenSub,
            b')' if ere => Tok::CloseSub,
            b'[' => Tok::OpenBracket,
            b'.' => Tok::Period,
            b'^' if ere || caret || at == 0 => Tok::Anchor("^", "^"),
            b'$' if ere || at + 1 == self.pat.len() => Tok::Anchor("$", "$"),
            b'$' => {
                // A BRE `$` anchors only before `\|`, `\)` or the end.
                match self.peek(at + 1, false).tok {
                    Tok::Alt | Tok::CloseSub => Tok::Anchor("$", "$"),
                    _ => Tok::Char,
                }
            }
            _ => Tok::Char,
        };
        t
    }

    fn fetch(&mut self, caret: bool) {
        self.tok = self.peek(self.pos, caret);
        self.pos += self.tok.len;
    }

    fn parse(mut self) -> Result<Translated, &'static str> {
        self.fetch(true);
        self.reg_exp(0)?;
        let render = |fancy: bool| {
            let mut s = String::new();
            for o in &self.out {
                match o {
                    Out::Syn(t) => s.push_str(t),
                    Out::Both(fast, slow) => s.push_str(if fancy { slow } else { fast }),
                    Out::Byte(b) => push_byte(&mut s, *b, fancy),
                    Out::Set(set) => push_set(&mut s, set, fancy),
                }
            }
            s
        };
        Ok(Translated {
            fast: render(false),
            fancy: render(true),
            backrefs: self.backrefs,
            groups: self.nsub,
        })
    }

    fn reg_exp(&mut self, nest: usize) -> Result<(), &'static str> {
        self.branch(nest)?;
        while self.tok.tok == Tok::Alt {
            self.fetch(true);
            self.out.push(Out::Syn("|".into()));
            if !self.branch_ends(nest) {
                self.branch(nest)?;
            }
        }
        Ok(())
    }

    fn branch_ends(&self, nest: usize) -> bool {
        matches!(self.tok.tok, Tok::Alt | Tok::End) || (nest > 0 && self.tok.tok == Tok::CloseSub)
    }

    fn branch(&mut self, nest: usize) -> Result<(), &'static str> {
        self.expression(nest)?;
        while !self.branch_ends(nest) {
            self.expression(nest)?;
        }
        Ok(())
    }

    fn literal(&mut self) {
        let t = self.tok;
        if t.escaped && self.syn.icase && t.c.is_ascii_lowercase() {
            // glibc compares it, untranslated, with the key read through toupper().
            self.out.push(Out::Set(Box::new([false; 256])));
        } else {
            self.out.push(Out::Byte(t.c));
        }
    }

    fn expression(&mut self, nest: usize) -> Result<(), &'static str> {
        let start = self.out.len();
        let ere = self.syn.extended;
        match self.tok.tok {
            Tok::Char => self.literal(),
            Tok::Period => self.out.push(Out::Syn(".".into())),
            Tok::OpenSub => self.sub_exp(nest + 1)?,
            Tok::OpenBracket => self.bracket()?,
            Tok::BackRef(n) => {
                if self.completed & (1 << n) == 0 {
                    return Err(ESUBREG);
                }
                self.backrefs = true;
                // A group of its own: `\1` before a `0` is not the engines' `\10`.
                self.out.push(Out::Syn(format!("(?:\\{})", n + 1)));
            }
            Tok::OpenDup if !ere => return Err(BADRPT),
            Tok::OpenDup | Tok::Star | Tok::Plus | Tok::Quest => {
                if ere {
                    return Err(BADRPT);
                }
                self.literal();
            }
            // glibc 2.36 says EPAREN here, not the ERPAREN its parser names.
            Tok::CloseSub if !ere => return Err(EPAREN),
            Tok::CloseSub | Tok::CloseDup => self.literal(),
            Tok::Anchor(fast, fancy) => {
                // Nothing repeats an anchor: what follows starts a new expression.
                self.out.push(Out::Both(fast, fancy));
                self.fetch(false);
                return Ok(());
            }
            Tok::Word(neg) => self.class_op(ctype(b"alnum"), b"_", neg),
            Tok::Space(neg) => self.class_op(ctype(b"space"), b"", neg),
            Tok::Alt | Tok::End => return Ok(()),
            Tok::BackSlash => return Err(EESCAPE),
        }
        self.fetch(false);
        while matches!(
            self.tok.tok,
            Tok::Star | Tok::Plus | Tok::Quest | Tok::OpenDup
        ) {
            let quant = self.dup_op()?;
            self.out.insert(start, Out::Syn("(?:".into()));
            self.out.push(Out::Syn(format!("){quant}")));
            if !ere && matches!(self.tok.tok, Tok::Star | Tok::OpenDup) {
                // A BRE repeats an expression once.
                return Err(BADRPT);
            }
        }
        Ok(())
    }

    fn sub_exp(&mut self, nest: usize) -> Result<(), &'static str> {
        let cur = self.nsub;
        self.nsub += 1;
        self.out.push(Out::Syn("(".into()));
        self.fetch(true);
        if self.tok.tok != Tok::CloseSub {
            self.reg_exp(nest)?;
            if self.tok.tok != Tok::CloseSub {
                return Err(EPAREN);
            }
        }
        if cur < 9 {
            self.completed |= 1 << cur;
        }
        self.out.push(Out::Syn(")".into()));
        Ok(())
    }

    /// glibc's `fetch_number`: -1 for none, -2 for a bad one or the end of the pattern.
    fn number(&mut self) -> i64 {
        let mut num: i64 = -1;
        loop {
            self.fetch(false);
            let t = self.tok;
            if t.tok == Tok::End {
                return -2;
            }
            if t.tok == Tok::CloseDup || t.c == b',' {
                return num;
            }
            num = if t.tok != Tok::Char || !t.c.is_ascii_digit() || num == -2 {
                -2
            } else if num == -1 {
                i64::from(t.c - b'0')
            } else {
                (num * 10 + i64::from(t.c - b'0')).min(DUP_MAX + 1)
            };
        }
    }

    /// The repetition at the current token, in regex syntax; leaves the next token read.
    fn dup_op(&mut self) -> Result<String, &'static str> {
        let quant = match self.tok.tok {
            Tok::Star => "*".to_string(),
            Tok::Plus => "+".to_string(),
            Tok::Quest => "?".to_string(),
            _ => {
                let mut start = self.number();
                let is_comma = |t: Token| t.tok == Tok::Char && t.c == b',';
                if start == -1 {
                    if !is_comma(self.tok) {
                        return Err(BADBR);
                    }
                    start = 0;
                }
                let mut end = 0;
                if start != -2 {
                    end = if self.tok.tok == Tok::CloseDup {
                        start
                    } else if is_comma(self.tok) {
                        self.number()
                    } else {
                        -2
                    };
                }
                if start == -2 || end == -2 {
                    return Err(if self.tok.tok == Tok::End {
                        EBRACE
                    } else {
                        BADBR
                    });
                }
                if (end != -1 && start > end) || self.tok.tok != Tok::CloseDup {
                    return Err(BADBR);
                }
                if DUP_MAX < (if end == -1 { start } else { end }) {
                    return Err(ESIZE);
                }
                match end {
                    -1 => format!("{{{start},}}"),
                    e if e == start => format!("{{{start}}}"),
                    e => format!("{{{start},{e}}}"),
                }
            }
        };
        self.fetch(false);
        Ok(quant)
    }

    /// `\w`, `\W`, `\s`, `\S`: glibc's `build_charclass_op`.
    fn class_op(&mut self, class: Option<fn(u8) -> bool>, extra: &[u8], neg: bool) {
        let mut set = [false; 256];
        if let Some(f) = class {
            for c in 0..=255u8 {
                if f(c) {
                    set[usize::from(upper(self.syn, c))] = true;
                }
            }
        }
        for &c in extra {
            set[usize::from(upper(self.syn, c))] = true;
        }
        if neg {
            set.iter_mut().for_each(|b| *b = !*b);
        }
        self.push_set(set);
    }

    /// A set of (translated) bytes as the key bytes it matches.
    fn push_set(&mut self, set: Set) {
        let mut keys = [false; 256];
        for c in 0..=255u8 {
            keys[usize::from(c)] = set[usize::from(upper(self.syn, c))];
        }
        self.out.push(Out::Set(Box::new(keys)));
    }

    /// glibc's `peek_token_bracket` at the current position: (kind, byte, length), where
    /// kind is one of `[:` `[=` `[.` (as ':' '=' '.'), '-', ']', '^' or 'c' (a character).
    fn peek_bracket(&self) -> Option<(u8, u8, usize)> {
        let raw = self.byte_at(self.pos)?;
        let c = upper(self.syn, raw);
        if raw == b'[' {
            if let Some(c2 @ (b':' | b'=' | b'.')) = self.byte_at(self.pos + 1) {
                return Some((c2, c2, 2));
            }
            return Some((b'c', c, 1));
        }
        let kind = match raw {
            b'-' | b']' | b'^' => raw,
            _ => b'c',
        };
        Some((kind, c, 1))
    }

    /// glibc's `parse_bracket_symbol`: the name in `[:name:]`, `[=name=]`, `[.name.]`.
    fn bracket_symbol(&mut self, delim: u8) -> Result<Vec<u8>, &'static str> {
        let mut name = Vec::new();
        if self.pos >= self.pat.len() {
            return Err(EBRACK);
        }
        loop {
            if name.len() >= NAME_MAX {
                return Err(EBRACK);
            }
            let raw = self.pat[self.pos];
            // Class names are read as written, the others through toupper().
            let ch = if delim == b':' {
                raw
            } else {
                upper(self.syn, raw)
            };
            self.pos += 1;
            if self.pos >= self.pat.len() {
                return Err(EBRACK);
            }
            if ch == delim && self.pat[self.pos] == b']' {
                break;
            }
            name.push(ch);
        }
        self.pos += 1;
        Ok(name)
    }

    /// One element of a bracket expression (glibc's `parse_bracket_element`), the token
    /// `(kind, c, len)` at the current position: a byte, or a class or equivalence class
    /// as `Err`-free `Elem` values.
    fn bracket_element(
        &mut self,
        (kind, c, len): (u8, u8, usize),
        accept_hyphen: bool,
    ) -> Result<Elem, &'static str> {
        self.pos += len;
        match kind {
            b':' => Ok(Elem::Class(self.bracket_symbol(b':')?)),
            b'=' => Ok(Elem::Equiv(self.bracket_symbol(b'=')?)),
            b'.' => Ok(Elem::Coll(self.bracket_symbol(b'.')?)),
            b'-' if !accept_hyphen => {
                // A `-` that does not end the list or a range is undefined; glibc says so.
                match self.peek_bracket() {
                    Some((b']', _, _)) => Ok(Elem::Byte(c)),
                    _ => Err(ERANGE),
                }
            }
            _ => Ok(Elem::Byte(c)),
        }
    }

    /// glibc's `parse_bracket_exp`, from after the `[`.
    fn bracket(&mut self) -> Result<(), &'static str> {
        let mut set: Set = [false; 256];
        let mut tok = self.peek_bracket().ok_or(BADPAT)?;
        let non_match = tok.0 == b'^';
        if non_match {
            if self.syn.newline {
                set[usize::from(b'\n')] = true;
            }
            self.pos += tok.2;
            tok = self.peek_bracket().ok_or(BADPAT)?;
        }
        if tok.0 == b']' {
            tok.0 = b'c';
        }
        let mut first = true;
        loop {
            let start = self.bracket_element(tok, first)?;
            first = false;
            let mut next = self.peek_bracket();
            let mut range_end = None;
            if !matches!(start, Elem::Class(_) | Elem::Equiv(_)) {
                let t = next.ok_or(EBRACK)?;
                if t.0 == b'-' {
                    self.pos += t.2;
                    let t2 = self.peek_bracket().ok_or(EBRACK)?;
                    if t2.0 == b']' {
                        // A `-` before the `]` is itself.
                        self.pos -= t.2;
                        next = Some((b'c', t.1, t.2));
                    } else {
                        range_end = Some(t2);
                    }
                }
            }
            if let Some(t2) = range_end {
                let end = self.bracket_element(t2, true)?;
                next = self.peek_bracket();
                let (lo, hi) = (start.range_point()?, end.range_point()?);
                if lo > hi {
                    return Err(ERANGE);
                }
                for c in lo..=hi {
                    set[usize::from(c)] = true;
                }
            } else {
                match start {
                    Elem::Byte(c) => set[usize::from(c)] = true,
                    Elem::Equiv(name) | Elem::Coll(name) => match name[..] {
                        [c] => set[usize::from(c)] = true,
                        _ => return Err(ECOLLATE),
                    },
                    Elem::Class(name) => {
                        // With REG_ICASE glibc matches either case for these two.
                        let name: &[u8] = match &name[..] {
                            b"upper" | b"lower" if self.syn.icase => b"alpha",
                            n => n,
                        };
                        let f = ctype(name).ok_or(ECTYPE)?;
                        for c in 0..=255u8 {
                            if f(c) {
                                set[usize::from(upper(self.syn, c))] = true;
                            }
                        }
                    }
                }
            }
            tok = next.ok_or(EBRACK)?;
            if tok.0 == b']' {
                self.pos += tok.2;
                break;
            }
        }
        if non_match {
            set.iter_mut().for_each(|b| *b = !*b);
        }
        self.push_set(set);
        Ok(())
    }
}

enum Elem {
    Byte(u8),
    Class(Vec<u8>),
    Equiv(Vec<u8>),
    Coll(Vec<u8>),
}

impl Elem {
    /// The byte a range starts or ends at (glibc's `build_range_exp` in the C locale).
    fn range_point(&self) -> Result<u8, &'static str> {
        match self {
            Elem::Byte(c) => Ok(*c),
            Elem::Coll(name) => match name[..] {
                [c] => Ok(c),
                _ => Err(ECOLLATE),
            },
            Elem::Class(_) | Elem::Equiv(_) => Err(ERANGE),
        }
    }
}

/// A byte in the engine's syntax: letters and digits as themselves, anything else escaped
/// by number, a byte above 0x7F as `fancy_char()` for fancy-regex.
fn push_byte(s: &mut String, b: u8, fancy: bool) {
    let _ = if b.is_ascii_alphanumeric() {
        write!(s, "{}", char::from(b))
    } else if fancy {
        write!(s, "\\x{{{:X}}}", u32::from(super::fancy_char(b)))
    } else {
        write!(s, "\\x{b:02X}")
    };
}

fn push_set(s: &mut String, set: &Set, fancy: bool) {
    s.push('[');
    let mut c = 0usize;
    let mut any = false;
    while c < 256 {
        if !set[c] {
            c += 1;
            continue;
        }
        // A run stops at 0x80 too: fancy-regex's characters for the bytes above 0x7F are
        // not next to ASCII.
        let mut end = c;
        while end + 1 < 256 && set[end + 1] && end + 1 != 0x80 {
            end += 1;
        }
        let (lo, hi) = (c as u8, end as u8);
        push_byte(s, lo, fancy);
        if hi > lo {
            s.push('-');
            push_byte(s, hi, fancy);
        }
        any = true;
        c = end + 1;
    }
    if !any {
        // Nothing: a class no character is in.
        s.push_str(if fancy {
            r"^\x00-\x{10FFFF}"
        } else {
            r"^\x00-\xFF"
        });
    }
    s.push(']');
}

/// A rule's pattern (its bytes) in the engines' syntax, or glibc's regerror() text.
pub fn translate(pattern: &[u8], syn: Syntax) -> Result<Translated, &'static str> {
    Parser {
        pat: pattern,
        pos: 0,
        syn,
        tok: Token {
            tok: Tok::End,
            c: 0,
            escaped: false,
            len: 0,
        },
        nsub: 0,
        completed: 0,
        backrefs: false,
        out: Vec::new(),
    }
    .parse()
}

#[cfg(test)]
mod tests {
    use super::super::{Dialect, RegexTable};
    use super::*;

    const ERE: Syntax = Syntax {
        extended: true,
        icase: true,
        newline: false,
    };

    fn err(pattern: &str, syn: Syntax) -> Option<&'static str> {
        translate(pattern.as_bytes(), syn).err()
    }

    /// The result of `key` in a one-rule table, as Debian's Postfix 3.7 answers it.
    fn lookup(rule: &str, key: &str) -> Option<String> {
        let t = RegexTable::compile(format!("{rule}\n").as_bytes(), Dialect::Regexp, "t", false);
        assert!(t.warnings.is_empty(), "{rule}: {:?}", t.warnings);
        t.lookup(key.as_bytes())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    #[test]
    fn refused_with_glibc_words() {
        let bre = Syntax {
            extended: false,
            ..ERE
        };
        for (pattern, want) in [
            ("a[", BADPAT),
            ("[^", BADPAT),
            ("a[b", EBRACK),
            ("a[]", EBRACK),
            ("a[[:alpha:]", EBRACK),
            ("a[[.a", EBRACK),
            (r"\p{Lu}", BADBR),
            ("a{}", BADBR),
            ("a{x}", BADBR),
            ("a{2,1}", BADBR),
            ("a{1,2,3}", BADBR),
            ("a{", EBRACE),
            ("a{1", EBRACE),
            ("a{40000}", ESIZE),
            ("{1}", BADRPT),
            ("*a", BADRPT),
            ("(*a)", BADRPT),
            ("a|*b", BADRPT),
            ("^*", BADRPT),
            ("(a", EPAREN),
            ("[[:foo:]]", ECTYPE),
            ("[[:UPPER:]]", ECTYPE),
            ("[[.ab.]]", ECOLLATE),
            ("[[=ab=]]", ECOLLATE),
            ("[[.hyphen.]]", ECOLLATE),
            ("[z-a]", ERANGE),
            // REG_ICASE reads the range as `[_-A]`.
            ("[_-a]", ERANGE),
            ("[a-z-9]", ERANGE),
            ("[[:alpha:]-z]", ERANGE),
            ("[a--]", ERANGE),
            (r"(a)\2", ESUBREG),
            (r"(a\1)", ESUBREG),
            ("a\\", EESCAPE),
        ] {
            assert_eq!(err(pattern, ERE), Some(want), "{pattern}");
        }
        for (pattern, want) in [
            (r"a\)", EPAREN),
            (r"\{1\}a", BADRPT),
            ("a**", BADRPT),
            (r"a*\{2\}", BADRPT),
            (r"a\{1", EBRACE),
        ] {
            assert_eq!(err(pattern, bre), Some(want), "{pattern}");
        }
        for ok in [
            "a)", ")", "a**", "a+*", "()", "a||b", "(|a)", "a{,3}", "[]a]", "[a-]", "[--z]",
        ] {
            assert_eq!(err(ok, ERE), None, "{ok}");
        }
    }

    #[test]
    fn ere_means_what_glibc_means() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (r"/a\d/ r", "ad", None),
            (r"/a\d/ r", "a1", None),
            // Not read through toupper(): only an upper-case escaped letter matches.
            (r"/a\d/i r", "ad", Some("r")),
            (r"/\D/ r", "d", Some("r")),
            (r"/[\s]/ r", "\\", Some("r")),
            (r"/[\s]/ r", "s", Some("r")),
            (r"/[\s]/ r", " ", None),
            (r"/\s/ r", " ", Some("r")),
            ("/[]a]/ r", "]", Some("r")),
            ("/[^]a]/ r", "]", None),
            ("/[^]a]/ r", "b", Some("r")),
            ("/^a{,3}$/ r", "aaa", Some("r")),
            ("/^a{,3}$/ r", "aaaa", None),
            ("/a**/ r", "b", Some("r")),
            (r"/\<ab/ r", "x ab", Some("r")),
            (r"/\<ab/ r", "xab", None),
            (r"/ab\>/ r", "abc", None),
            (r"/\`ab\'/ r", "ab", Some("r")),
            ("/[[:alpha:]]/ r", "1", None),
            ("/[[:upper:]]/ r", "a", Some("r")),
            ("/[[:upper:]]/i r", "a", None),
            ("/[[=a=]]/ r", "A", Some("r")),
            ("/x[[.-.]]/ r", "x-", Some("r")),
            ("/x[[.a.]-c]/ r", "xb", Some("r")),
            ("/[A-_]/ r", "z", Some("r")),
            ("/[A-_]/ r", "`", None),
            ("/[Z-a]/i r", "_", Some("r")),
            ("/a)/ r", "a)", Some("r")),
            (r"/(a)\1/ r", "aa", Some("r")),
            // REG_ICASE compares a back-reference through toupper() too.
            (r"/(a)\1/ r", "aA", Some("r")),
            (r"/(a)\1/i r", "aA", None),
            (r"/^(.+)@\1$/ r$1", "ab@AB", Some("rab")),
            (
                r"/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)\10/ r",
                "abcdefghija0",
                Some("r"),
            ),
            ("/(a){0}b/ [$1]", "b", Some("[]")),
            ("/(a){0}(b)/ [$1][$2]", "b", Some("[][b]")),
            ("/a{3}{2}/ r", "aaaaa", None),
            ("/a{3}{2}/ r", "aaaaaa", Some("r")),
            ("/\\w+/ r", "_", Some("r")),
            ("/\\W/ r", "-", Some("r")),
            ("/[\u{e9}-\u{ff}]/ r", "\u{ea}", Some("r")),
            // REG_NEWLINE: `.` and a non-matching list stop at a newline; `^` after one.
            ("/a.b/ r", "a\nb", Some("r")),
            ("/a.b/m r", "a\nb", None),
            ("/a[^x]b/m r", "a\nb", None),
            ("/^b/m r", "a\nb", Some("r")),
            ("/^b/ r", "a\nb", None),
        ];
        for (rule, key, want) in cases {
            assert_eq!(lookup(rule, key).as_deref(), *want, "{rule} {key:?}");
        }
    }

    /// What glibc's regexec() puts in the groups: the longest of the leftmost matches.
    #[test]
    fn groups_of_the_longest_match() {
        let cases: &[(&str, &str, &str)] = &[
            ("/(a|ab)/ $1", "xab", "ab"),
            ("/^(ab|a)(bcd|c)/ [$1][$2]", "abcd", "[a][bcd]"),
            ("/(a*)(ab)?/ [$1][$2]", "aab", "[a][ab]"),
            ("/(a|ab)(b*)/ [$1][$2]", "ab", "[a][b]"),
            ("/(foo|foobar)(bar)?/ [$1][$2]", "foobar", "[foo][bar]"),
            (r"/(x|xy)\b/ [$1]", "xy z", "[xy]"),
            (
                r"/^(.*)(\.example)?\.com$/ [$1][$2]",
                "a.example.com",
                "[a.example][]",
            ),
            ("/(a|ab|abc)(c*)/ [$1][$2]", "abc", "[ab][c]"),
            ("/(a+|b+)*/ [$1]", "aabb", "[bb]"),
            ("/((a)|(ab))*c/ [$1][$2][$3]", "abac", "[a][a][ab]"),
            ("/(.*)(b|ba){1}[ab]($)*/ [$1][$2][$3]", "baab", "[][ba][]"),
        ];
        for (rule, key, want) in cases {
            assert_eq!(lookup(rule, key).as_deref(), Some(*want), "{rule} {key:?}");
        }
    }

    #[test]
    fn flag_x_is_a_basic_regular_expression() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (r"/a\{2\}/x r", "aa", Some("r")),
            ("/a{2}/x r", "a{2}", Some("r")),
            (r"/\(a\)\1/x $1", "aa", Some("a")),
            (r"/a\|b/x r", "b", Some("r")),
            ("/a|b/x r", "b", None),
            ("/a+/x r", "a+", Some("r")),
            (r"/a\+/x r", "aa", Some("r")),
            ("/*a/x r", "*a", Some("r")),
            (r"/\(*a\)/x r", "*a", Some("r")),
            ("/^*a/x r", "*a", Some("r")),
            ("/a^b/x r", "a^b", Some("r")),
            ("/a$b/x r", "a$b", Some("r")),
            (r"/a$\|b/x r", "a", Some("r")),
            ("/(a/x r", "(a", Some("r")),
        ];
        for (rule, key, want) in cases {
            assert_eq!(lookup(rule, key).as_deref(), *want, "{rule} {key:?}");
        }
    }
}
