"""Reading text for token corpora: a file, a directory or a tarball, never extracted.

A source is one of

- a file, plain or compressed by its suffix (`.xz`, `.gz`, `.bz2`);
- a directory, its files in sorted order of their relative paths (regular files
  only; symbolic links are skipped, as in tarballs, so the corpus is what the
  directory holds);
- a tarball (`.tar`, `.tar.xz`/`.txz`, `.tar.gz`/`.tgz`, `.tar.bz2`),
  read member by member with `tarfile` in streaming mode. A member's name is
  only ever used as a document key, never as a path on disk, so a hostile archive
  (`../../x`, absolute names, links) cannot write anywhere; links, devices and
  directories are skipped.

Every problem is reported with the file (and member) it concerns.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import pathlib
import tarfile
from collections.abc import Iterable, Iterator

_COMPRESSED = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}
TAR_SUFFIXES = (".tar", ".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2")
# Errors raised by the decompressors and tarfile on a corrupt or truncated input.
_CORRUPT = (lzma.LZMAError, EOFError, gzip.BadGzipFile, tarfile.TarError, OSError, ValueError)


def is_tarball(path) -> bool:
    """Whether `path` names a tarball by its suffix."""
    return str(path).lower().endswith(TAR_SUFFIXES)


def _plain_name(name: str) -> str:
    """`name` without a compression suffix (`a.c.xz` -> `a.c`)."""
    for suffix in _COMPRESSED:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _wanted(name: str, suffixes) -> bool:
    return suffixes is None or _plain_name(name).endswith(tuple(suffixes))


def _check_suffixes(suffixes):
    if suffixes is None:
        return None
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    suffixes = tuple(suffixes)
    if not suffixes or not all(isinstance(s, str) and s for s in suffixes):
        raise ValueError(f"`suffixes` must be None or non-empty strings, got {suffixes!r}.")
    return suffixes


def read_file_bytes(path) -> bytes:
    """The bytes of a file, decompressed by its suffix; errors name the file."""
    path = pathlib.Path(path)
    opener = _COMPRESSED.get(path.suffix.lower(), open)
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except PermissionError as error:
        raise PermissionError(f"{path}: cannot be read ({error.strerror}).") from None
    except _CORRUPT as error:
        raise ValueError(f"{path}: cannot be read or decompressed ({error}).") from None


def _iter_directory(root: pathlib.Path, suffixes) -> Iterator[tuple[str, bytes]]:
    for name in _directory_files(root, suffixes):
        yield name, read_file_bytes(root / name)


def _directory_files(root: pathlib.Path, suffixes) -> list[str]:
    names = []
    for folder, _, files in os.walk(root, followlinks=False):
        for file_name in sorted(files):
            full = pathlib.Path(folder, file_name)
            if full.is_symlink() or not full.is_file():
                continue
            relative = full.relative_to(root).as_posix()
            if _wanted(relative, suffixes):
                names.append(relative)
    return sorted(names)


def _iter_tarball(path: pathlib.Path, suffixes) -> Iterator[tuple[str, bytes]]:
    try:
        # "r|*": a forward-only stream; members are read in archive order and never
        # extracted (extractfile gives their bytes, nothing touches the disk).
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if not member.isreg() or not _wanted(member.name, suffixes):
                    continue
                handle = archive.extractfile(member)
                if handle is None:  # pragma: no cover - isreg() members have data
                    continue
                yield member.name, handle.read()
    except _CORRUPT as error:
        raise ValueError(f"{path}: not a readable tarball ({error}).") from None


def iter_source_files(source, *, suffixes: Iterable[str] | None = None):
    """Yields `(name, bytes)` for every file of a source, in a deterministic order.

    Args:
        source: a file, a directory or a tarball (see the module docstring).
        suffixes: keep only files (members) whose name, less a compression suffix,
            ends with one of these, e.g. `(".c", ".h")`; None keeps all.

    Returns:
        An iterator of `(name, data)`: the file's name (relative to a directory,
        the member name in a tarball) and its decompressed bytes.

    Raises:
        FileNotFoundError: `source` does not exist.
        PermissionError: a file cannot be read.
        ValueError: a file or tarball is corrupt, or `suffixes` is malformed.
    """
    suffixes = _check_suffixes(suffixes)
    path = pathlib.Path(source)
    if not path.exists():
        raise FileNotFoundError(f"token corpus source {path} does not exist.")
    if path.is_dir():
        return _iter_directory(path, suffixes)
    if is_tarball(path):
        return _iter_tarball(path, suffixes)
    return iter([(path.name, read_file_bytes(path))])


def decode_text(data: bytes, name: str, encoding: str = "utf-8", errors: str = "strict") -> str:
    """Decodes `data`; an undecodable byte raises an error naming the file.

    With `errors="strict"` (the default) a bad byte is an error; `"replace"`
    substitutes U+FFFD (the tokenizers then split the word there), `"ignore"`
    drops it. Any codec error handler of `bytes.decode` is accepted.
    """
    try:
        return data.decode(encoding, errors)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{name}: not valid {encoding} at byte {error.start} ({error.reason}). Pass "
            "errors='replace' to substitute U+FFFD for undecodable bytes, or the right "
            "encoding."
        ) from None
    except LookupError as error:
        raise ValueError(f"{name}: {error} (encoding={encoding!r}, errors={errors!r}).") from None


def source_identity(source, *, suffixes: Iterable[str] | None = None) -> dict:
    """What identifies a source's content cheaply: resolved path, sizes, mtimes.

    For a directory, a digest over every included file's relative name, size and
    modification time (so adding, removing or touching a file changes it).
    """
    suffixes = _check_suffixes(suffixes)
    path = pathlib.Path(source).resolve()
    if not path.exists():
        raise FileNotFoundError(f"token corpus source {path} does not exist.")
    if not path.is_dir():
        stat = path.stat()
        return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    digest = hashlib.sha256()
    for name in _directory_files(path, suffixes):
        stat = (path / name).stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return {"path": str(path), "directory": digest.hexdigest()}
