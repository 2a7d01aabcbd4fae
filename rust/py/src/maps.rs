//! `oxipost._core.maps`: cdb build and mmap lookups, the postmap source format, and
//! regexp/pcre tables. Builds and batch lookups run with the GIL released.

#[pyo3::pymodule(submodule)]
pub mod maps {
    use crate::error::PyCoreError;
    use oxipost_core::maps::{self as core, cdb, regex_table, source, Duplicates, Fold};
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::types::{PyBytes, PyString};
    use std::path::PathBuf;

    /// Warnings with the line they are about, so callers can interleave them by line.
    type Warnings = Vec<(usize, String)>;
    type Lines<'py> = Vec<(usize, Bound<'py, PyBytes>)>;
    type Entries<'py> = Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, usize)>;

    fn duplicates(mode: &str) -> PyResult<Duplicates> {
        match mode {
            "warn" => Ok(Duplicates::WarnKeepFirst),
            "replace" => Ok(Duplicates::Replace),
            "ignore" => Ok(Duplicates::Ignore),
            _ => Err(PyValueError::new_err(format!(
                "bad duplicates mode: {mode}"
            ))),
        }
    }

    /// Builds `<path>` (a cdb file) from postmap source text, atomically; returns the
    /// warnings as (line, text), naming the source file `source` and the table `name`.
    #[pyfunction]
    #[pyo3(signature = (text, source, name, path, fold, utf8, duplicates_mode))]
    #[allow(clippy::too_many_arguments)]
    fn build_cdb(
        py: Python<'_>,
        text: &[u8],
        source: &str,
        name: &str,
        path: PathBuf,
        fold: bool,
        utf8: bool,
        duplicates_mode: &str,
    ) -> Result<Warnings, PyErr> {
        let dups = duplicates(duplicates_mode)?;
        let fold = Fold::new(fold, utf8);
        let result = py.detach(|| -> Result<Warnings, PyCoreError> {
            let (image, warnings) = core::build_cdb_from_source(text, source, name, fold, dups)?;
            cdb::write_file_atomically(&path, &image)?;
            Ok(warnings)
        });
        Ok(result?)
    }

    /// A table key folded as Postfix's casefold(): in ASCII, or with `utf8` in full
    /// Unicode (oxipost_core::maps::casefold).
    #[pyfunction]
    fn fold_key<'py>(py: Python<'py>, key: &[u8], utf8: bool) -> Bound<'py, PyBytes> {
        let mut out = Vec::with_capacity(key.len());
        Fold::new(true, utf8).append(key, &mut out);
        PyBytes::new(py, &out)
    }

    /// Writes `<path>` (a cdb file) from (key, value, line) triples, atomically; returns
    /// the duplicate warnings as (line, text).
    #[pyfunction]
    #[pyo3(signature = (path, entries, name, duplicates_mode))]
    fn write_cdb(
        py: Python<'_>,
        path: PathBuf,
        entries: Vec<(Vec<u8>, Vec<u8>, usize)>,
        name: &str,
        duplicates_mode: &str,
    ) -> Result<Vec<(usize, String)>, PyErr> {
        let dups = duplicates(duplicates_mode)?;
        let result = py.detach(|| -> Result<Vec<(usize, String)>, PyCoreError> {
            let mut warnings = Vec::new();
            let image = core::build_cdb(entries.into_iter(), name, dups, &mut warnings)?;
            cdb::write_file_atomically(&path, &image)?;
            Ok(warnings)
        });
        Ok(result?)
    }

    /// The logical lines of a table file: ([(line number, text)], [(line, warning)]).
    #[pyfunction]
    fn logical_lines<'py>(py: Python<'py>, text: &[u8], name: &str) -> (Lines<'py>, Warnings) {
        let mut warnings = Vec::new();
        let lines = source::logical_lines(text, name, &mut warnings)
            .iter()
            .map(|l| (l.lineno, PyBytes::new(py, &l.text)))
            .collect();
        (lines, warnings)
    }

    /// `key value` entries of postmap source text: ([(key, value, line)], [(line, warning)]).
    #[pyfunction]
    fn parse_entries<'py>(
        py: Python<'py>,
        text: &[u8],
        name: &str,
        missing_value: &str,
    ) -> (Entries<'py>, Warnings) {
        let mut warnings = Vec::new();
        let entries = py.detach(|| source::parse_entries(text, name, missing_value, &mut warnings));
        let out = entries
            .iter()
            .map(|e| {
                (
                    PyBytes::new(py, &e.key),
                    PyBytes::new(py, &e.value),
                    e.lineno,
                )
            })
            .collect();
        (out, warnings)
    }

    /// A memory-mapped cdb file.
    #[pyclass(frozen, module = "oxipost._core.maps")]
    pub struct Cdb {
        reader: cdb::CdbReader,
    }

    #[pymethods]
    impl Cdb {
        #[new]
        fn new(py: Python<'_>, path: PathBuf) -> Result<Self, PyCoreError> {
            let reader = py.detach(|| cdb::CdbReader::open(&path))?;
            Ok(Cdb { reader })
        }

        /// The value as Postfix's readers find it (the key, or the key with its C NUL).
        fn get<'py>(&self, py: Python<'py>, key: &[u8]) -> Option<Bound<'py, PyBytes>> {
            let mut scratch = Vec::new();
            self.reader
                .get_c(key, &mut scratch)
                .map(|v| PyBytes::new(py, v))
        }

        fn get_many<'py>(
            &self,
            py: Python<'py>,
            keys: Vec<Vec<u8>>,
        ) -> Vec<Option<Bound<'py, PyBytes>>> {
            let found: Vec<Option<&[u8]>> = py.detach(|| {
                let mut scratch = Vec::new();
                keys.iter()
                    .map(|k| self.reader.get_c(k, &mut scratch))
                    .collect()
            });
            found
                .into_iter()
                .map(|v| v.map(|v| PyBytes::new(py, v)))
                .collect()
        }

        /// `postmap -q -` on this table alone: (output, number found), GIL released.
        fn query_lines<'py>(
            &self,
            py: Python<'py>,
            input: &[u8],
            fold: bool,
            utf8: bool,
            suffix: &[u8],
        ) -> (Bound<'py, PyBytes>, usize) {
            let fold = Fold::new(fold, utf8);
            let (out, found) = py.detach(|| self.reader.query_lines(input, fold, suffix));
            (PyBytes::new(py, &out), found)
        }

        fn items<'py>(&self, py: Python<'py>) -> Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
            self.reader
                .items()
                .into_iter()
                .map(|(k, v)| (PyBytes::new(py, k), PyBytes::new(py, v)))
                .collect()
        }
    }

    /// A table's result as Python text: its bytes that are not UTF-8 as surrogate escapes,
    /// as the Python side decodes every table's bytes.
    fn result_text(py: Python<'_>, v: Vec<u8>) -> PyResult<Bound<'_, PyString>> {
        match String::from_utf8(v) {
            Ok(s) => Ok(PyString::new(py, &s)),
            Err(e) => PyBytes::new(py, e.as_bytes())
                .call_method1("decode", ("utf-8", "surrogateescape"))?
                .cast_into::<PyString>()
                .map_err(Into::into),
        }
    }

    /// A compiled regexp_table(5) or pcre_table(5).
    #[pyclass(frozen, module = "oxipost._core.maps")]
    pub struct RegexTable {
        table: regex_table::RegexTable,
    }

    #[pymethods]
    impl RegexTable {
        #[new]
        #[pyo3(signature = (text, dialect, name, *, no_regsub = false))]
        fn new(
            py: Python<'_>,
            text: &[u8],
            dialect: &str,
            name: &str,
            no_regsub: bool,
        ) -> PyResult<Self> {
            let dialect = match dialect {
                "regexp" => regex_table::Dialect::Regexp,
                "pcre" => regex_table::Dialect::Pcre,
                _ => return Err(PyValueError::new_err(format!("bad dialect: {dialect}"))),
            };
            let table =
                py.detach(|| regex_table::RegexTable::compile(text, dialect, name, no_regsub));
            Ok(RegexTable { table })
        }

        #[getter]
        fn warnings(&self) -> Vec<String> {
            self.table.warnings.clone()
        }

        fn lookup<'py>(
            &self,
            py: Python<'py>,
            key: &str,
        ) -> PyResult<Option<Bound<'py, PyString>>> {
            self.table
                .lookup(key.as_bytes())
                .map(|v| result_text(py, v))
                .transpose()
        }

        fn lookup_bytes<'py>(
            &self,
            py: Python<'py>,
            key: &[u8],
        ) -> PyResult<Option<Bound<'py, PyString>>> {
            self.table
                .lookup(key)
                .map(|v| result_text(py, v))
                .transpose()
        }

        fn lookup_many<'py>(
            &self,
            py: Python<'py>,
            keys: Vec<String>,
        ) -> PyResult<Vec<Option<Bound<'py, PyString>>>> {
            let found: Vec<Option<Vec<u8>>> = py.detach(|| {
                keys.iter()
                    .map(|k| self.table.lookup(k.as_bytes()))
                    .collect()
            });
            found
                .into_iter()
                .map(|v| v.map(|v| result_text(py, v)).transpose())
                .collect()
        }
    }
}
