"""lmdb: tables (Postfix's dict_lmdb, lmdb_table(5)): `<name>.lmdb`, an OpenLDAP LMDB file.

The file is the one Postfix's postmap, postalias and daemons use, so Postfix (Debian's
postfix-lmdb) reads what ours write and ours read what it writes: one LMDB environment in
a single file (MDB_NOSUBDIR) without LMDB's lock file (MDB_NOLOCK). Processes keep out of
each other's way with fcntl locks on the file itself, as dict_lmdb: shared around each
lookup or scan, exclusive around each update; a bulk build (postmap lmdb:FILE) takes it
exclusive once, to know that no reader holds an old snapshot, then keeps it shared while
it replaces every entry in one transaction, so that readers see the old table until the
commit and the new one after it, never a mix. The file is written in place (its readers
keep their open environment: LMDB's copy-on-write does the rest).

Keys and values are stored with their terminating null byte (Postfix's DICT_FLAG_TRY1NULL,
its choice on Linux); a lookup tries the key with its null byte and then without it (what
postalias stores as YP_LAST_MODIFIED and YP_MASTER_NAME, or a file another program wrote)
and keeps to the form that answered first, as dict_lmdb does. A value ends at its first
null byte, as the C string Postfix copies it into.

Writers start with a memory map of lmdb_map_size bytes; when the map is full they double
it and run the transaction again, as Postfix's slmdb does, so a table never stops growing
at that size. A reader whose writer grew the file picks up the new size (MDB_MAP_RESIZED).

Diagnostics, in Postfix's words: "open database NAME.lmdb: REASON" with LMDB's text
("MDB_INVALID: File is not an LMDB file") or the system's, "database NAME.lmdb is older
than source file NAME" (when the source changed after the table was built, but not in
the last 100 seconds), 'lmdb:NAME: duplicate entry: "KEY"'.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import lmdb

from oxipost.maps import CdbTable, TableError, os_reason, warn_if_older

SUFFIX = ".lmdb"
# How often a bulk transaction may be run again after MDB_MAP_FULL (slmdb's
# DICT_LMDB_BULK_RETRY_LIMIT: one doubling per bit of the address space, twice).
_RETRIES = 2 * 64


class _Env:
    """One LMDB environment of a file in this process, shared by every table opened on it
    (LMDB allows one per process), with the descriptor its fcntl locks are taken on.
    `mutex` keeps this process's threads from releasing each other's lock: fcntl locks
    belong to the process, not to a thread."""

    def __init__(self, path: str, write: bool, map_size: int) -> None:
        # Opened before LMDB's own, so that a file that is not there is the system's
        # error, not LMDB's creation of an empty one.
        self.fd = os.open(path, (os.O_RDWR | os.O_CREAT) if write else os.O_RDONLY, 0o644)
        try:
            st = os.fstat(self.fd)
            self.ident = (st.st_dev, st.st_ino)
            self.write = write
            self.env = lmdb.open(
                path,
                subdir=False,
                lock=False,
                readonly=not write,
                create=write,
                map_size=map_size,
                max_dbs=0,
            )
        except BaseException:
            os.close(self.fd)
            raise
        self.mutex = threading.Lock()

    def close(self) -> None:
        self.env.close()
        os.close(self.fd)

    @contextmanager
    def locked(self, how: int) -> Iterator[None]:
        with self.mutex:
            fcntl.lockf(self.fd, how)
            try:
                yield
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def read(self) -> lmdb.Transaction:
        try:
            return self.env.begin(buffers=False)
        except lmdb.MapResizedError:
            # A writer grew the file beyond our map: take its size (mdb_env_set_mapsize 0).
            self.env.set_mapsize(0)
            return self.env.begin(buffers=False)


_envs: dict[str, _Env] = {}
_envs_lock = threading.Lock()


def _reason(e: lmdb.Error, path: str) -> str:
    # py-lmdb says "PATH: TEXT", TEXT being mdb_strerror's (the system's for an errno).
    text = str(e)
    return text.removeprefix(f"{path}: ")


def _environment(path: str, write: bool = False, map_size: int = 0) -> _Env:
    """The environment of `path`, opened once per process and again when the file there
    is another one (removed and rebuilt) or a writer needs the one a reader opened."""
    key = os.path.abspath(path)
    with _envs_lock:
        held = _envs.get(key)
        if held is not None:
            try:
                st = os.stat(path)
                same = (st.st_dev, st.st_ino) == held.ident
            except OSError:
                same = False
            if same and (held.write or not write):
                return held
            held.close()
            del _envs[key]
        try:
            env = _Env(path, write, map_size or 1 << 20)
        except OSError as e:
            raise TableError(f"open database {path}: {os_reason(e)}") from None
        except lmdb.Error as e:
            raise TableError(f"open database {path}: {_reason(e, path)}") from None
        _envs[key] = env
        return env


def _c_string(data: bytes | memoryview) -> bytes:
    # What Postfix copies out: the bytes up to the first null one.
    return bytes(data).partition(b"\0")[0]


class _Reader:
    """What CdbTable asks of its file, from an LMDB one: get, get_many, items."""

    def __init__(self, env: _Env) -> None:
        self.env = env
        # dict_lmdb's DICT_FLAG_TRY1NULL and TRY0NULL: both until one form answers.
        self.try1 = self.try0 = True

    def _get(self, txn: lmdb.Transaction, key: bytes) -> bytes | None:
        if self.try1:
            value = txn.get(key + b"\0")
            if value is not None:
                self.try0 = False
                return _c_string(value)
        if self.try0:
            value = txn.get(key)
            if value is not None:
                self.try1 = False
                return _c_string(value)
        return None

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        with self.env.locked(fcntl.LOCK_SH), self.env.read() as txn:
            return [self._get(txn, k) for k in keys]

    def get(self, key: bytes) -> bytes | None:
        return self.get_many([key])[0]

    def items(self) -> list[tuple[bytes, bytes]]:
        with self.env.locked(fcntl.LOCK_SH), self.env.read() as txn:
            return [(_c_string(k), _c_string(v)) for k, v in txn.cursor()]


class LmdbTable(CdbTable):
    """lmdb: — `<name>.lmdb`; looked up, folded and checked as hash: and cdb: are."""

    def __init__(self, name: str, fold_keys: bool = True) -> None:
        self.path = name + SUFFIX
        # dict_lmdb names the table without its suffix (lmdb:/etc/postfix/access).
        self.shown_path = name
        self.fold_keys = fold_keys
        env = _environment(self.path)
        self._cdb = _Reader(env)  # type: ignore[assignment]
        self.owner = os.fstat(env.fd).st_uid
        warn_if_older(name, self.path)


def _entry(key: bytes, value: bytes, nul: bool) -> tuple[bytes, bytes]:
    # C strings: each ends at its first null byte, then gets the one Postfix stores.
    key, value = _c_string(key), _c_string(value)
    return (key + b"\0", value + b"\0") if nul else (key, value)


def write(
    name: str,
    entries: Iterable[tuple[bytes, bytes, int]],
    dups: str,
    map_size: int,
    truncate: bool,
    plain: Sequence[tuple[bytes, bytes]] = (),
) -> list[tuple[int, str]]:
    """Store (key, value, line) `entries` in `<name>.lmdb` in one transaction, keys as
    given (already folded), with null bytes; `plain` after them without (postalias' NIS
    entries). `truncate`: a bulk build that replaces the table; otherwise an update
    (postmap -i). `dups` is warn, ignore or replace, as postmap's -w and -r say. Returns
    the duplicate warnings as (line, text)."""
    path = name + SUFFIX
    env = _environment(path, write=True, map_size=map_size)
    todo = [(*_entry(k, v, True), line) for k, v, line in entries]
    todo += [(*_entry(k, v, False), 0) for k, v in plain]
    size = max(map_size, 1)
    with env.mutex:
        fcntl.lockf(env.fd, fcntl.LOCK_EX)
        try:
            if truncate:
                # As dict_lmdb's bulk open: no reader is now on an old snapshot whose
                # pages this transaction could reuse; readers of the current one may go on.
                fcntl.lockf(env.fd, fcntl.LOCK_SH)
            for _ in range(_RETRIES):
                env.env.set_mapsize(size)
                try:
                    return _transaction(env.env, name, todo, dups, truncate)
                except lmdb.MapFullError:
                    size *= 2
            raise TableError(f"error updating lmdb:{name}: MDB_MAP_FULL")
        except lmdb.Error as e:
            raise TableError(f"error updating lmdb:{name}: {_reason(e, path)}") from None
        finally:
            fcntl.lockf(env.fd, fcntl.LOCK_UN)


def _transaction(
    env: lmdb.Environment,
    name: str,
    todo: list[tuple[bytes, bytes, int]],
    dups: str,
    truncate: bool,
) -> list[tuple[int, str]]:
    warnings: list[tuple[int, str]] = []
    with env.begin(write=True) as txn:
        if truncate:
            txn.drop(env.open_db(txn=txn), delete=False)
        for key, value, line in todo:
            if txn.put(key, value, overwrite=dups == "replace"):
                continue
            if dups == "warn":
                shown = key.rstrip(b"\0").decode("utf-8", "surrogateescape")
                warnings.append((line, f'lmdb:{name}: duplicate entry: "{shown}"'))
    return warnings


def delete(name: str, keys: Iterable[bytes]) -> bool:
    """Remove `keys` (folded as they were stored) from `<name>.lmdb`, each with its null
    byte or without, as dict_lmdb_delete; whether any was there. A table that is not
    there is created empty, as Postfix's postmap -d does."""
    path = name + SUFFIX
    env = _environment(path, write=True, map_size=1 << 20)
    reader = _Reader(env)
    found = False
    with env.locked(fcntl.LOCK_EX), env.env.begin(write=True) as txn:
        for key in keys:
            gone = False
            if reader.try1 and txn.delete(key + b"\0"):
                reader.try0, gone = False, True
            if not gone and reader.try0 and txn.delete(key):
                reader.try1, gone = False, True
            found = found or gone
    return found
