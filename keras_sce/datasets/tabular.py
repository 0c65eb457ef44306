"""Loaders for interaction logs in tables: generic CSV and MovieLens ratings."""

from __future__ import annotations

import csv
import itertools
import os

import numpy as np

from keras_sce.datasets._files import check_exists, open_text
from keras_sce.datasets._table_fields import Clock, column_index, infer_delimiter, number
from keras_sce.datasets.sequences import SequenceData
from keras_sce.datasets.user_item_pairs import from_user_item_pairs

# MovieLens archives published by GroupLens (https://grouplens.org/datasets/movielens/),
# with the MD5 sums GroupLens publishes beside them (`<name>.zip.md5`). The ml-1m sum
# was cross-checked offline against several independent public projects that pin the
# same archive (no download was possible on the development machines).
MOVIELENS_ARCHIVES = {
    "ml-1m": (
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "c4d9eecfca2ab87c1945afe126590906",
        "ml-1m/ratings.dat",
    ),
}

# The two layouts of MovieLens ratings, as `load_interactions_csv` arguments:
# `UserID::MovieID::Rating::Timestamp` without a header (ML-1M, ML-10M) and
# `userId,movieId,rating,timestamp` with one (ML-20M, ML-25M, ml-latest).
_MOVIELENS_DAT = {
    "user_col": 0, "item_col": 1, "time_col": 3, "rating_col": 2, "delimiter": "::",
    "header": False,
}
_MOVIELENS_CSV = {
    "user_col": "userId", "item_col": "movieId", "time_col": "timestamp",
    "rating_col": "rating", "delimiter": ",",
}


def load_interactions_csv(
    path: str | os.PathLike,
    *,
    user_col: str | int = "user",
    item_col: str | int = "item",
    time_col: str | int | None = "timestamp",
    delimiter: str | None = None,
    header: bool = True,
    min_rating: float | None = None,
    rating_col: str | int | None = None,
    name: str | None = None,
    drop_duplicates: bool = True,
) -> SequenceData:
    """Loads a `user,item,timestamp` table into per-user sequences.

    Each user's events are sorted by the time column (a stable sort, so ties and
    a missing time column keep file order). Timestamps are numbers (e.g. Unix
    seconds) or ISO-8601 dates / date-times (`2021-03-21`, `2021-03-21 10:00:00`,
    `2021-03-21T10:00:00Z`; a time without a zone is read as UTC); one file may
    not mix the two kinds. User and item ids may be any strings; items are mapped
    to dense ids `1..C` in order of first appearance (0 = padding; the raw ids
    are kept in `SequenceData.item_ids`).

    Rows equal in user, item and timestamp are exact duplicates (exports often
    repeat rows); they are dropped by default, counted in
    `SequenceData.duplicates_dropped` and the summary, and reported by a
    `UserWarning`. Without a time column nothing is dropped.

    The file may be UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8"),
    with LF or CRLF line ends, or gzip-compressed. Malformed rows raise
    `ValueError` naming the file and line.

    Args:
        path: the file.
        user_col: the user column: its name (with `header=True`) or 0-based index.
        item_col: the item column, named or indexed the same way.
        time_col: the timestamp column, named or indexed the same way.
            `None`: file order is time order.
        delimiter: field separator (`"::"` and other multi-character
            separators are accepted). `None`: a tab for `.tsv` / `.tsv.gz`
            files, otherwise whichever of `,` tab `;` `|` occurs most in the
            first line (a comma if none does). An explicit value always wins.
        header: whether the first line names the columns.
        min_rating: keep only rows whose `rating_col` is `>= min_rating`.
        rating_col: rating column (needed with `min_rating`).
        name: description; defaults to the file name.
        drop_duplicates: drop exact duplicate rows (`False` keeps them, and the
            summary counts them as kept).

    Returns:
        A `SequenceData`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an empty, undecodable or malformed file, a missing column
            (named), or an unreadable timestamp (naming file and line).

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "events.csv")
        >>> rows = ["user,item,timestamp", "u1,i9,2", "u1,i7,1", "u1,i7,1", "u2,i9,5"]
        >>> with open(path, "w") as f:
        ...     _ = f.write("\\n".join(rows) + "\\n")
        >>> data = load_interactions_csv(path, drop_duplicates=False)
        >>> data.num_users, data.duplicates_dropped, data.duplicates_kept
        (2, 0, 1)
    """
    path = os.fspath(path)
    check_exists(path, "Interaction file")
    if min_rating is not None and rating_col is None:
        raise ValueError("min_rating needs rating_col.")
    if delimiter == "":
        raise ValueError("delimiter must be a non-empty string or None (infer).")
    users, items, times = [], [], []
    clock = Clock(path)
    with open_text(path, newline="") as handle:
        leading = [handle.readline()]  # up to the first non-blank line, for sniffing
        while leading[-1] and not leading[-1].strip():
            leading.append(handle.readline())
        if delimiter is None:
            delimiter = infer_delimiter(path, leading[-1])
        lines = itertools.chain(leading, handle)
        if len(delimiter) == 1:
            rows = csv.reader(lines, delimiter=delimiter)
        else:
            rows = (line.rstrip("\r\n").split(delimiter) for line in lines)
        index, filtered = None, 0
        for line_no, row in enumerate(rows, start=1):
            if not row or all(not field.strip() for field in row):
                continue
            if index is None:
                columns = (user_col, item_col, time_col, rating_col)
                if header:
                    index = column_index(row, path, line_no, delimiter, *columns)
                    continue
                index = column_index(None, path, line_no, delimiter, *columns)
            width = max(i for i in index if i is not None) + 1
            if len(row) < width:
                raise ValueError(
                    f"{path}, line {line_no}: expected at least {width} fields "
                    f"separated by {delimiter!r}, got {len(row)}."
                )
            u, i, t, r = (row[j].strip() if j is not None else None for j in index)
            if not u or not i:
                raise ValueError(f"{path}, line {line_no}: empty user or item id.")
            if r is not None and min_rating is not None:
                if number(r, path, line_no, "rating") < min_rating:
                    filtered += 1
                    continue
            users.append(u)
            items.append(i)
            if t is not None:
                times.append(clock.read(t, line_no))
    if not users:
        if filtered:
            what = f"all {filtered:,} rows have a rating below min_rating={min_rating}"
        else:
            what = "only a header line" if index is not None and header else "empty file"
        raise ValueError(f"{path}: no interactions found ({what}).")
    return from_user_item_pairs(
        np.asarray(users),
        np.asarray(items),
        np.asarray(times) if time_col is not None else None,
        name=name or os.path.basename(path),
        drop_duplicates=drop_duplicates,
    )


def load_movielens(
    path: str | os.PathLike | None = None,
    *,
    variant: str = "ml-1m",
    min_rating: float | None = None,
    drop_duplicates: bool = True,
) -> SequenceData:
    """Loads MovieLens ratings as implicit-feedback sequences ordered by time.

    Reads `ratings.dat` (`UserID::MovieID::Rating::Timestamp`, ML-1M/10M) or
    `ratings.csv` (`userId,movieId,rating,timestamp` with a header, ML-20M,
    ML-25M, ml-latest). With `path=None` the archive of `variant` is
    downloaded with `keras.utils.get_file` and checked against GroupLens' MD5
    (needs the network; offline, pass the local file or the folder holding it).

    Args:
        path: `ratings.dat`, `ratings.csv` or a folder containing one.
        variant: archive to download when `path` is None (`"ml-1m"`).
        min_rating: keep only ratings `>= min_rating` (e.g. 4 for "liked").
        drop_duplicates: drop rows equal in user, movie and timestamp (see
            `load_interactions_csv`).

    Returns:
        A `SequenceData` (items re-indexed densely from 1).
    """
    if path is None:
        if variant not in MOVIELENS_ARCHIVES:
            raise ValueError(f"variant must be one of {sorted(MOVIELENS_ARCHIVES)}.")
        import keras

        url, md5, inner = MOVIELENS_ARCHIVES[variant]
        archive = keras.utils.get_file(
            origin=url, file_hash=md5, hash_algorithm="md5", extract=True
        )
        base = archive if os.path.isdir(archive) else os.path.dirname(archive)
        candidates = [os.path.join(base, inner), os.path.join(base, os.path.basename(inner))]
        path = next((c for c in candidates if os.path.exists(c)), candidates[0])
    path = os.fspath(path)
    if os.path.isdir(path):
        for fname in ("ratings.dat", "ratings.csv"):
            if os.path.exists(os.path.join(path, fname)):
                path = os.path.join(path, fname)
                break
        else:
            raise FileNotFoundError(f"No ratings.dat or ratings.csv in {path}.")
    layout = dict(_MOVIELENS_DAT if path.endswith(".dat") else _MOVIELENS_CSV)
    if min_rating is None:
        layout["rating_col"] = None  # every rating counts: the column is not read
    return load_interactions_csv(
        path,
        **layout,
        min_rating=min_rating,
        name=f"MovieLens {os.path.basename(path)}",
        drop_duplicates=drop_duplicates,
    )
