"""Loaders for interaction logs in tables: generic CSV and MovieLens ratings."""

from __future__ import annotations

import csv
import os

import numpy as np

from keras_sce.datasets.sequences import SequenceData, from_user_item_pairs

# MovieLens archives published by GroupLens (https://grouplens.org/datasets/movielens/),
# with the MD5 sums GroupLens publishes beside them (``<name>.zip.md5``). The ml-1m sum
# was cross-checked offline against several independent public projects that pin the
# same archive (no download was possible on the development machines).
MOVIELENS_ARCHIVES = {
    "ml-1m": (
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "c4d9eecfca2ab87c1945afe126590906",
        "ml-1m/ratings.dat",
    ),
}


def load_interactions_csv(
    path: str | os.PathLike,
    *,
    user_col: str | int = "user",
    item_col: str | int = "item",
    time_col: str | int | None = "timestamp",
    delimiter: str = ",",
    header: bool = True,
    min_rating: float | None = None,
    rating_col: str | int | None = None,
    name: str | None = None,
) -> SequenceData:
    """Loads a ``user,item,timestamp`` table into per-user sequences.

    Each user's events are sorted by the time column (a stable sort, so ties and
    a missing time column keep file order). User and item ids may be any strings;
    items are mapped to dense ids ``1..n`` (0 = padding; the raw ids are kept in
    ``SequenceData.item_ids``). Malformed rows raise ``ValueError`` naming the
    file and line.

    Args:
        path: the file.
        user_col, item_col, time_col: column names (with ``header=True``) or
            0-based indices. ``time_col=None``: file order is time order.
        delimiter: field separator (``"::"`` and other multi-character
            separators are accepted).
        header: whether the first line names the columns.
        min_rating: keep only rows whose ``rating_col`` is ``>= min_rating``.
        rating_col: rating column (needed with ``min_rating``).
        name: description; defaults to the file name.

    Returns:
        A `SequenceData`.

    Example:

    >>> data = load_interactions_csv("events.csv")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Interaction file not found: {path}")
    if min_rating is not None and rating_col is None:
        raise ValueError("min_rating needs rating_col.")
    users, items, times = [], [], []
    with open(path, encoding="utf-8", newline="") as handle:
        if len(delimiter) == 1:
            rows = csv.reader(handle, delimiter=delimiter)
        else:
            rows = (line.rstrip("\r\n").split(delimiter) for line in handle)
        index = None
        for line_no, row in enumerate(rows, start=1):
            if not row or all(not field.strip() for field in row):
                continue
            if index is None:
                if header:
                    index = _column_index(row, path, user_col, item_col, time_col, rating_col)
                    continue
                index = _column_index(None, path, user_col, item_col, time_col, rating_col)
            width = max(i for i in index if i is not None) + 1
            if len(row) < width:
                raise ValueError(
                    f"{path}, line {line_no}: expected at least {width} fields, got {len(row)}."
                )
            u, i, t, r = (row[j].strip() if j is not None else None for j in index)
            if not u or not i:
                raise ValueError(f"{path}, line {line_no}: empty user or item id.")
            if r is not None and min_rating is not None:
                if float(_number(r, path, line_no, "rating")) < min_rating:
                    continue
            users.append(u)
            items.append(i)
            times.append(0.0 if t is None else _number(t, path, line_no, "timestamp"))
    if not users:
        raise ValueError(f"{path}: no interactions found.")
    return from_user_item_pairs(
        np.asarray(users), np.asarray(items), np.asarray(times), name=name or os.path.basename(path)
    )


def _number(text, path, line_no, what):
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}, line {line_no}: {what} {text!r} is not a number.") from None


def _column_index(header_row, path, *columns):
    out = []
    for column in columns:
        if column is None:
            out.append(None)
        elif isinstance(column, int):
            out.append(column)
        elif header_row is None:
            raise ValueError(f"{path}: column {column!r} given by name but header=False.")
        else:
            names = [h.strip() for h in header_row]
            if column not in names:
                raise ValueError(f"{path}, line 1: no column {column!r} in header {names}.")
            out.append(names.index(column))
    return out


def load_movielens(
    path: str | os.PathLike | None = None,
    *,
    variant: str = "ml-1m",
    min_rating: float | None = None,
) -> SequenceData:
    """Loads MovieLens ratings as implicit-feedback sequences ordered by time.

    Reads ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``, ML-1M/10M) or
    ``ratings.csv`` (``userId,movieId,rating,timestamp`` with a header, ML-20M,
    ML-25M, ml-latest). With ``path=None`` the archive of ``variant`` is
    downloaded with ``keras.utils.get_file`` and checked against GroupLens' MD5
    (needs the network; offline, pass the local file or the folder holding it).

    Args:
        path: ``ratings.dat``, ``ratings.csv`` or a folder containing one.
        variant: archive to download when ``path`` is None (``"ml-1m"``).
        min_rating: keep only ratings ``>= min_rating`` (e.g. 4 for "liked").

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
    rating = 2 if min_rating is not None else None
    if path.endswith(".dat"):
        return load_interactions_csv(
            path,
            user_col=0,
            item_col=1,
            time_col=3,
            rating_col=rating,
            min_rating=min_rating,
            delimiter="::",
            header=False,
            name=f"MovieLens {os.path.basename(path)}",
        )
    return load_interactions_csv(
        path,
        user_col="userId",
        item_col="movieId",
        time_col="timestamp",
        rating_col="rating" if min_rating is not None else None,
        min_rating=min_rating,
        name=f"MovieLens {os.path.basename(path)}",
    )
