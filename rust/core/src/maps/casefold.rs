//! Table-key case folding as Postfix 3.7's casefold() (util/casefold.c): ASCII only
//! (`lowercase()`), or, for a table whose keys dict_utf8 checks while smtputf8_enable =
//! yes (DICT_FLAG_UTF8_ACTIVE), ICU's full case folding (U_FOLD_CASE_DEFAULT:
//! CaseFolding.txt's C and F mappings, so `ß` is `ss` and `ﬁ` is `fi`, not a lowercase).
//! The table of non-ASCII folds, casefold_table.rs, is generated from that ICU by
//! scripts/gen_casefold.py.

use super::casefold_table::FOLDS;

/// How a table's keys are folded: not at all (`postmap -f`, tcp: and socketmap:), in
/// ASCII, or in full Unicode (smtputf8_enable = yes, Postfix's DICT_FLAG_UTF8_ACTIVE).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fold {
    Keep,
    Ascii,
    Utf8,
}

impl Fold {
    /// The folding of a table opened with (`fold`, `utf8`): Postfix's DICT_FLAG_FOLD_FIX
    /// and DICT_FLAG_UTF8_ACTIVE.
    pub fn new(fold: bool, utf8: bool) -> Fold {
        match (fold, utf8) {
            (false, _) => Fold::Keep,
            (true, false) => Fold::Ascii,
            (true, true) => Fold::Utf8,
        }
    }

    /// Appends `key`, folded, to `out`. A key that is not UTF-8 folds in ASCII only:
    /// Postfix neither looks up nor stores one where it folds in Unicode.
    pub fn append(self, key: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        match (self, std::str::from_utf8(key)) {
            (Fold::Keep, _) => out.extend_from_slice(key),
            (Fold::Utf8, Ok(text)) if !key.is_ascii() => casefold(text, out),
            _ => {
                out.extend_from_slice(key);
                out[start..].make_ascii_lowercase();
            }
        }
    }
}

fn casefold(text: &str, out: &mut Vec<u8>) {
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase() as u8);
            continue;
        }
        match FOLDS.binary_search_by_key(&u32::from(c), |&(cp, _)| cp) {
            Ok(i) => out.extend_from_slice(FOLDS[i].1.as_bytes()),
            Err(_) => out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(fold: Fold, key: &str) -> String {
        let mut out = Vec::new();
        fold.append(key.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn full_folding_is_not_lowercasing() {
        assert_eq!(folded(Fold::Utf8, "Straße"), "strasse");
        assert_eq!(folded(Fold::Utf8, "ΣΊΣΥΦΟΣ"), "σίσυφοσ");
        assert_eq!(folded(Fold::Utf8, "İstanbul"), "i\u{307}stanbul");
        assert_eq!(folded(Fold::Utf8, "ﬁle@ÉTÉ.example"), "file@été.example");
        assert_eq!(folded(Fold::Ascii, "Straße ÉTÉ"), "straße ÉtÉ");
        assert_eq!(folded(Fold::Keep, "ÉTÉ"), "ÉTÉ");
    }

    #[test]
    fn a_key_that_is_not_utf8_folds_in_ascii() {
        let mut out = Vec::new();
        Fold::Utf8.append(b"AB\xc9", &mut out);
        assert_eq!(out, b"ab\xc9");
    }

    #[test]
    fn the_table_is_sorted() {
        assert!(FOLDS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
