"""oxipost._core.maps: cdb build and mmap lookups, table source text, regexp/pcre tables."""

def build_cdb(
    text: bytes,
    source: str,
    name: str,
    path: str,
    fold: bool,
    utf8: bool,
    duplicates_mode: str,
) -> list[tuple[int, str]]:
    """Build the cdb file `path` from postmap source text, atomically; return the warnings
    as (line, text), a line's naming the source file `source`, a duplicate's the table
    `name`. Keys are folded as fold_key() does when `fold`. duplicates_mode is "warn"
    (keep first), "replace" (keep last) or "ignore"."""

def fold_key(key: bytes, utf8: bool) -> bytes:
    """`key` folded as Postfix's casefold(): in ASCII, or with `utf8` (smtputf8_enable)
    in full Unicode, as ICU's U_FOLD_CASE_DEFAULT (`Straße` is `strasse`); a key that is
    not UTF-8 in ASCII only."""

def write_cdb(
    path: str, entries: list[tuple[bytes, bytes, int]], name: str, duplicates_mode: str
) -> list[tuple[int, str]]:
    """Write the cdb file `path` from (key, value, line) entries, atomically; return the
    duplicate warnings as (line, text)."""

def logical_lines(text: bytes, name: str) -> tuple[list[tuple[int, bytes]], list[tuple[int, str]]]:
    """The logical lines of a table file as [(first line number, text)], and warnings as
    [(line, text)]."""

def parse_entries(
    text: bytes, name: str, missing_value: str
) -> tuple[list[tuple[bytes, bytes, int]], list[tuple[int, str]]]:
    """`key value` entries of postmap source text as [(key, value, line)], and warnings as
    [(line, text)]."""

class Cdb:
    """A memory-mapped cdb file; CorruptError when it is not one."""

    def __init__(self, path: str) -> None: ...
    def get(self, key: bytes) -> bytes | None:
        """The value under key as Postfix's readers find it: the key as given or with the C
        string's NUL some writers store; trailing NULs of the value dropped."""
    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """get() for each key, with the GIL released."""
    def query_lines(self, input: bytes, fold: bool, utf8: bool, suffix: bytes) -> tuple[bytes, int]:
        """postmap -q - on this table: `key<suffix><TAB>value` lines for the keys found in
        `input` (one per line), each folded as fold_key() when `fold`, and how many were
        found; GIL released."""
    def items(self) -> list[tuple[bytes, bytes]]:
        """Every record in file order."""

class RegexTable:
    """A compiled regexp_table(5) (dialect "regexp") or pcre_table(5) ("pcre")."""

    def __init__(self, text: bytes, dialect: str, name: str, *, no_regsub: bool = False) -> None:
        """With `no_regsub` (Postfix's DICT_FLAG_NO_REGSUB), a rule whose result has `$n`
        is skipped with Postfix's warning."""
    @property
    def warnings(self) -> list[str]:
        """Postfix's warnings for the rules that were skipped."""
    def lookup(self, key: str) -> str | None:
        """The result of the first rule matching the key's UTF-8 bytes, with $n substituted;
        bytes of the result that are not UTF-8 come as surrogate escapes."""
    def lookup_bytes(self, key: bytes) -> str | None:
        """lookup() of a key's raw bytes (a key that is not UTF-8)."""
    def lookup_many(self, keys: list[str]) -> list[str | None]:
        """lookup() for each key, with the GIL released."""
