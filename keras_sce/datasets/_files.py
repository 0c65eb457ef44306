"""Opening interaction files as people have them: UTF-8 with or without a BOM, gzip."""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import warnings
import zlib

_GZIP_MAGIC = b"\x1f\x8b"


def check_exists(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder; expected a {what.lower()}.")


@contextlib.contextmanager
def open_text(path: str, *, newline: str | None = None):
    """Yields a text handle; gzip is detected by its magic bytes, not the name.

    `utf-8-sig` drops the byte-order mark that Excel's "CSV UTF-8" writes (and
    reads a file without one unchanged). A file that is not UTF-8 raises a
    `ValueError` naming it, whenever the bad bytes are met while reading.
    """
    with open(path, "rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline=newline) as handle:
            yield handle
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text ({error.reason} at byte 0x{error.object[error.start]:02x}); "
            "save it as UTF-8 (optionally gzip-compressed)."
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: damaged gzip file ({error}).") from None


def warn_caller(message: str) -> None:
    """A `UserWarning` attributed to the first caller outside this package."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(0), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)
