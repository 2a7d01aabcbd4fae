//! Lookup tables (Postfix's dict_* family): the indexed `hash:`/`cdb:` format, the text
//! format postmap(1) builds from, and regexp/pcre tables.

pub mod casefold;
mod casefold_table;
pub mod cdb;
pub mod regex_table;
pub mod source;

pub use casefold::Fold;

use crate::CoreResult;
use std::collections::HashMap;

/// What a build does with a key seen twice (postmap's default, `-r` and `-w`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Duplicates {
    /// Keep the first value and warn.
    WarnKeepFirst,
    /// Keep the last value, silently.
    Replace,
    /// Keep the first value, silently.
    Ignore,
}

/// Warnings, each with the number of the line it is about.
pub type LineWarnings = Vec<(usize, String)>;

/// Builds the cdb image of a postmap(1) source text. `source` labels the warnings about a
/// line as Postfix does (the path the user gave), `name` those about a duplicate key (the
/// table's file); they come in the order Postfix reads the lines, each with
/// the line it is about, so that a caller's own warnings (postmap's skipped non-UTF-8
/// lines) can go among them.
///
/// One pass without copying lines: records go straight into the image. Tables rarely hold
/// a key twice, so duplicates are only looked for while the hash tables are filled; when
/// there is one, the table is built again the slow way, which reports each with its line.
pub fn build_cdb_from_source(
    text: &[u8],
    source: &str,
    name: &str,
    fold: Fold,
    duplicates: Duplicates,
) -> CoreResult<(Vec<u8>, LineWarnings)> {
    const MISSING: &str = "expected format: key whitespace value";
    let mut warnings = Vec::new();
    let estimate = memchr::memchr_iter(b'\n', text).count() + 1;
    let mut builder = cdb::CdbBuilder::with_capacity(text.len(), estimate);
    let mut folded = Vec::new();
    let mut failure = None;
    source::for_each_entry(text, source, MISSING, &mut warnings, |key, value, _| {
        if failure.is_some() {
            return;
        }
        let key = if fold == Fold::Keep {
            key
        } else {
            folded.clear();
            fold.append(key, &mut folded);
            &folded[..]
        };
        if let Err(e) = builder.add(key, value) {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(image) = builder.finish_if_unique()? {
        return Ok((image, warnings));
    }
    warnings.clear();
    let mut entries = source::parse_entries(text, source, MISSING, &mut warnings);
    if fold != Fold::Keep {
        for e in &mut entries {
            let mut key = Vec::with_capacity(e.key.len());
            fold.append(&e.key, &mut key);
            e.key = key;
        }
    }
    let pairs = entries.into_iter().map(|e| (e.key, e.value, e.lineno));
    let image = build_cdb(pairs, name, duplicates, &mut warnings)?;
    warnings.sort_by_key(|(line, _)| *line);
    Ok((image, warnings))
}

fn duplicate_warning(name: &str, key: &[u8]) -> String {
    format!(
        "{name}: duplicate entry: \"{}\"",
        String::from_utf8_lossy(key)
    )
}

/// Builds a cdb image from (key, value, line) in order, applying the duplicate rule;
/// duplicate warnings are added with their line.
pub fn build_cdb(
    pairs: impl Iterator<Item = (Vec<u8>, Vec<u8>, usize)>,
    name: &str,
    duplicates: Duplicates,
    warnings: &mut Vec<(usize, String)>,
) -> CoreResult<Vec<u8>> {
    let mut kept: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for (key, value, line) in pairs {
        match index.get(&key) {
            Some(&at) => match duplicates {
                Duplicates::WarnKeepFirst => warnings.push((line, duplicate_warning(name, &key))),
                Duplicates::Replace => kept[at].1 = value,
                Duplicates::Ignore => {}
            },
            None => {
                index.insert(key.clone(), kept.len());
                kept.push((key, value));
            }
        }
    }
    let mut builder = cdb::CdbBuilder::new();
    for (k, v) in &kept {
        builder.add(k, v)?;
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdb_round_trip_duplicates_and_missing_keys() {
        let tmp = crate::testdir::TempDir::new();
        let dir = tmp.path();
        let path = dir.join("t.cdb");
        let src = b"Alice a1\nbob b1\nALICE a2\n";
        let (image, warnings) =
            build_cdb_from_source(src, "t", "t", Fold::Ascii, Duplicates::WarnKeepFirst).unwrap();
        assert_eq!(
            warnings,
            vec![(3, "t: duplicate entry: \"alice\"".to_string())]
        );
        cdb::write_file_atomically(&path, &image).unwrap();
        let r = cdb::CdbReader::open(&path).unwrap();
        assert_eq!(r.get(b"alice"), Some(&b"a1"[..]));
        assert_eq!(r.get(b"bob"), Some(&b"b1"[..]));
        assert_eq!(r.get(b"carol"), None);
        assert_eq!(r.items().len(), 2);

        let (image, _) =
            build_cdb_from_source(src, "t", "t", Fold::Ascii, Duplicates::Replace).unwrap();
        cdb::write_file_atomically(&path, &image).unwrap();
        let r = cdb::CdbReader::open(&path).unwrap();
        assert_eq!(r.get(b"alice"), Some(&b"a2"[..]));
    }

    #[test]
    fn many_keys_all_found() {
        let pairs = (0..20_000u32).map(|i| {
            (
                format!("k{i}").into_bytes(),
                i.to_le_bytes().to_vec(),
                i as usize,
            )
        });
        let mut w = Vec::new();
        let image = build_cdb(pairs, "t", Duplicates::WarnKeepFirst, &mut w).unwrap();
        let tmp = crate::testdir::TempDir::new();
        let dir = tmp.path();
        let path = dir.join("m.cdb");
        cdb::write_file_atomically(&path, &image).unwrap();
        let r = cdb::CdbReader::open(&path).unwrap();
        for i in 0..20_000u32 {
            assert_eq!(
                r.get(format!("k{i}").as_bytes()),
                Some(&i.to_le_bytes()[..])
            );
        }
        assert_eq!(r.get(b"k20000"), None);
    }

    #[test]
    fn a_file_that_is_not_cdb_is_refused() {
        let tmp = crate::testdir::TempDir::new();
        let dir = tmp.path();
        let path = dir.join("j.cdb");
        std::fs::write(&path, b"junk\n").unwrap();
        assert!(cdb::CdbReader::open(&path).is_err());
        std::fs::write(&path, vec![0xffu8; 4096]).unwrap();
        assert!(cdb::CdbReader::open(&path).is_err());
    }
}
