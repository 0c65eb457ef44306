"""The SASRec / S3-Rec text format: one line per user, `user_id item_1 ... item_n`."""

from __future__ import annotations

import os

import numpy as np

from keras_sce.datasets._files import check_exists, open_text
from keras_sce.datasets.sequences import PADDING_ID, SequenceData


def load_sequences_txt(path: str | os.PathLike, *, name: str | None = None) -> SequenceData:
    """Loads the SASRec / S3-Rec text format: `user_id item_1 ... item_n` per line.

    Items are integers already in time order (the convention of the SASRec, S3-Rec
    and SCE benchmark files). Item ids are remapped to the dense range `1..C` in
    increasing raw-id order, so a file whose ids are already `1..C` (Beauty,
    Sports, Toys, Yelp) keeps every id unchanged, and a stray id of 10^12 costs one
    table row, not 10^12; `SequenceData.item_ids` maps dense ids back to raw ids.
    Raw ids must be positive (0 is the padding id of these files). User ids are kept
    as they are (any integer, one line per user).

    Repeated items are kept: the format has no timestamps, so an item listed twice
    cannot be told from a re-consumption (Yelp has such repeats). The summary
    counts consecutive repeats and the users whose leave-one-out test target equals
    their validation target.

    The file may be UTF-8 with or without a byte-order mark, with LF or CRLF line
    ends, or gzip-compressed. Blank lines are skipped; anything else that is
    malformed raises a `ValueError` that names the file and the line.

    Args:
        path: the text file.
        name: description stored in the result; defaults to the file name.

    Returns:
        A `SequenceData`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an empty, undecodable or malformed file (naming file and line).

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "Tiny.txt")
        >>> with open(path, "w") as f:
        ...     _ = f.write("1 1 2 3\\n2 2 3 4\\n")
        >>> data = load_sequences_txt(path)
        >>> data.summary()
        'Tiny.txt: 2 users, 4 items (table of 5 rows), 6 interactions'
    """
    path = os.fspath(path)
    check_exists(path, "Sequence file")
    rows, users, seen_users = [], [], {}
    with open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            values = _parse_ids(fields, line, path, line_no)
            if len(values) < 2:
                raise ValueError(
                    f"{path}, line {line_no}: user {values[0]} has no items "
                    "(each line needs a user id followed by at least one item id)."
                )
            user, items = values[0], values[1:]
            if user in seen_users:
                raise ValueError(
                    f"{path}, line {line_no}: user {user} already appeared on line "
                    f"{seen_users[user]}; the format has one line per user."
                )
            seen_users[user] = line_no
            low = min(items)
            if low < 1:
                raise ValueError(
                    f"{path}, line {line_no}: item id {low} is not a positive integer "
                    "(ids start at 1; 0 is reserved for padding)."
                )
            users.append(user)
            rows.append(items)
    if not rows:
        raise ValueError(f"{path}: no users found (empty file).")
    raw = np.asarray([item for items in rows for item in items], dtype=np.int64)
    raw_ids, dense = np.unique(raw, return_inverse=True)
    sequences = np.split(dense.astype(np.int64) + 1, np.cumsum([len(r) for r in rows])[:-1])
    return SequenceData(
        sequences=sequences,
        num_items=raw_ids.size + 1,
        user_ids=np.asarray(users, dtype=np.int64),
        name=name or os.path.basename(path),
        item_ids=np.concatenate([[PADDING_ID], raw_ids]),
    )


_INT64_MAX = 2**63 - 1


def _parse_ids(fields, line, path, line_no):
    # int() also reads "1_000" and non-ASCII digits; refuse those as malformed.
    bad = None
    if not line.isascii() or "_" in line:
        strict = (f for f in fields if not (f.isascii() and "_" not in f and _is_int(f)))
        bad = next(strict, None)
    if bad is None:
        try:
            values = [int(f) for f in fields]
        except ValueError:
            bad = next(f for f in fields if not _is_int(f))
    if bad is not None:
        raise ValueError(
            f"{path}, line {line_no}: expected integer ids ('user item item ...'), got {bad!r}."
        )
    big = next((v for v in values if abs(v) > _INT64_MAX), None)
    if big is not None:
        raise ValueError(f"{path}, line {line_no}: id {big} does not fit in 64 bits.")
    return values


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
