"""Odd and malformed interaction files, one case per line, each with its exact outcome.

Every case writes a small file under ``tmp_path`` and asserts either the sequences
the loader accepts (in the file's own ids, translated back with ``raw_items``) or
the error class and message it refuses with. A warning is expected exactly when
exact duplicates are dropped.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import warnings

import numpy as np
import pytest

from keras_sce.datasets import (
    leave_one_out,
    load_interactions_csv,
    load_movielens,
    load_sequences_txt,
)


@dataclasses.dataclass
class Accept:
    raw: list  # per user, raw item ids in time order
    fields: dict = dataclasses.field(default_factory=dict)  # SequenceData attributes


@dataclasses.dataclass
class Refuse:
    error: type
    message: str  # regex; "{f}" stands for the file's path


def accept(raw, **fields):
    return Accept(raw, fields)


LOADERS = {"txt": load_sequences_txt, "csv": load_interactions_csv, "ml": load_movielens}
GZ = gzip.compress
BOM = b"\xef\xbb\xbf"
H = "user,item,timestamp\n"


def case(case_id, loader, content, expect, file="data", **kwargs):
    return pytest.param(loader, content, file, kwargs, expect, id=f"{loader}-{case_id}")


CASES = [
    # --- text format: user item item ... ---
    case("plain", "txt", "1 1 2 3\n2 3 1\n", accept([[1, 2, 3], [3, 1]], num_items=4)),
    case("blank-lines", "txt", "\n1 1 2\n\n   \n2 3 1\n\n", accept([[1, 2], [3, 1]])),
    case("trailing-whitespace", "txt", "1 1 2 \t \n2 3 1  \n", accept([[1, 2], [3, 1]])),
    case("crlf", "txt", "1 1 2\r\n2 3 1\r\n", accept([[1, 2], [3, 1]])),
    case("no-final-newline", "txt", "1 1 2\n2 3 1", accept([[1, 2], [3, 1]])),
    case("tabs", "txt", "1\t1\t2\n", accept([[1, 2]])),
    case("bom", "txt", BOM + b"1 1 2\n", accept([[1, 2]])),
    case("gzip", "txt", GZ(b"1 1 2\n2 3 1\n"), accept([[1, 2], [3, 1]]), file="d.txt.gz"),
    case("huge-id-one-row", "txt", "1 5 1000000000000 7\n", accept([[5, 10**12, 7]], num_items=4)),
    case("sparse-ids", "txt", "1 30 10\n2 20\n", accept([[30, 10], [20]], num_items=4)),
    case("repeats-kept", "txt", "1 4 4 4\n2 1 2 1\n", accept([[4, 4, 4], [1, 2, 1]],
         num_consecutive_repeats=2, num_test_equals_valid=1, duplicates_dropped=0)),
    case("one-interaction-user", "txt", "1 5\n2 1 2 3\n", accept([[5], [1, 2, 3]])),
    case("negative-user-id", "txt", "-4 1 2\n", accept([[1, 2]], user_ids=[-4])),
    case("empty", "txt", "", Refuse(ValueError, r"{f}: no users found \(empty file\)")),
    case("only-blank-lines", "txt", "\n \n\t\n", Refuse(ValueError, "empty file")),
    case("not-int", "txt", "1 1 2\n2 3 x 4\n",
         Refuse(ValueError, r"{f}, line 2: expected integer ids .*got 'x'")),
    case("float-id", "txt", "1 1 2.5\n", Refuse(ValueError, r"{f}, line 1: .*got '2\.5'")),
    case("underscore-id", "txt", "1 1_000\n", Refuse(ValueError, r"line 1: .*got '1_000'")),
    case("arabic-digits", "txt", "1 \u0661\u0662\n", Refuse(ValueError, r"line 1: .*got '")),
    case("csv-given-to-text", "txt", "user,item\n", Refuse(ValueError, r"line 1: .*'user,item'")),
    case("negative-item", "txt", "1 3 -2\n",
         Refuse(ValueError, r"{f}, line 1: item id -2 is not a positive integer")),
    case("zero-item", "txt", "1 1 0 2\n", Refuse(ValueError, r"line 1: item id 0 .*padding")),
    case("user-without-items", "txt", "1 1 2\n2\n",
         Refuse(ValueError, r"line 2: user 2 has no items")),
    case("user-twice", "txt", "1 1 2\n1 3\n",
         Refuse(ValueError, r"line 2: user 1 already appeared on line 1")),
    case("id-over-64-bits", "txt", "1 99999999999999999999\n",
         Refuse(ValueError, r"line 1: id 99999999999999999999 does not fit in 64 bits")),
    case("latin-1", "txt", b"1 1 2\n# caf\xe9\n", Refuse(ValueError, r"{f}: not UTF-8 text")),
    case("truncated-gzip", "txt", GZ(b"1 1 2\n" * 50)[:-12],
         Refuse(ValueError, r"{f}: damaged gzip file"), file="d.gz"),
    case("bad-gzip-header", "txt", b"\x1f\x8bgarbage", Refuse(ValueError, "damaged gzip file")),
    # --- CSV ---
    case("plain", "csv", H + "u1,b,20\nu2,a,5\nu1,a,10\n",
         accept([["a", "b"], ["a"]], num_items=3, duplicates_dropped=0)),
    case("bom-excel", "csv", BOM + (H + "u1,b,2\nu1,a,1\n").encode(), accept([["a", "b"]])),
    case("crlf", "csv", H.replace("\n", "\r\n") + "u1,b,2\r\nu1,a,1\r\n", accept([["a", "b"]])),
    case("blank-lines-spaces", "csv", "\n" + H + " u1 , b , 2 \n\n u1,a,1\n",
         accept([["a", "b"]])),
    case("quoted-comma", "csv", H + 'u1,"a,b",1\n', accept([["a,b"]])),
    case("odd-ids-are-labels", "csv", H + "-1,0,1\n-1,007,2\n", accept([["0", "007"]])),
    case("tsv-by-extension", "csv", H.replace(",", "\t") + "u1\tb\t2\nu1\ta\t1\n",
         accept([["a", "b"]]), file="d.tsv"),
    case("tsv-gz", "csv", GZ((H.replace(",", "\t") + "u1\tb\t2\n").encode()),
         accept([["b"]]), file="d.tsv.gz"),
    case("csv-gz", "csv", GZ((H + "u1,b,2\n").encode()), accept([["b"]]), file="d.csv.gz"),
    case("semicolon-sniffed", "csv", H.replace(",", ";") + "u1;b;2\nu1;a;1\n",
         accept([["a", "b"]])),
    case("tab-sniffed", "csv", H.replace(",", "\t") + "u1\tb\t2\n", accept([["b"]]), file="d.txt"),
    case("explicit-delimiter-wins", "csv", H.replace(",", "\t") + "u1\tb\t2\n",
         Refuse(ValueError, r"no column 'user' in header .*separated by ','\)"), file="d.tsv",
         delimiter=","),
    case("iso-space", "csv", H + "u1,b,2021-03-21 10:00:00\nu1,a,2021-03-21 09:59:59\n",
         accept([["a", "b"]])),
    case("iso-zulu", "csv", H + "u1,b,2021-03-21T10:00:00Z\nu1,a,2021-03-21T09:00:00Z\n",
         accept([["a", "b"]])),
    case("iso-offsets", "csv", H + "u1,a,2021-03-21T10:00:00+02:00\nu1,b,2021-03-21T09:00:00Z\n",
         accept([["a", "b"]])),
    case("iso-dates", "csv", H + "u1,b,2021-03-22\nu1,a,2021-03-21\nu1,c,2021-03-22\n",
         accept([["a", "b", "c"]])),
    case("fractional-seconds", "csv", H + "u1,b,1.5\nu1,a,1.25\n", accept([["a", "b"]])),
    case("mixed-time-kinds", "csv", H + "u1,b,5\nu1,a,2021-03-21\n",
         Refuse(ValueError, r"{f}, line 3: the time column mixes numbers \(line 2: '5'\)")),
    case("bad-timestamp", "csv", H + "u1,b,20\nu1,a,yesterday\n",
         Refuse(ValueError, r"{f}, line 3: timestamp 'yesterday' is neither a number")),
    case("bad-date", "csv", H + "u1,b,2021-02-30\n", Refuse(ValueError, r"line 2: timestamp")),
    case("nan-timestamp", "csv", H + "u1,b,nan\n", Refuse(ValueError, r"line 2: .* not finite")),
    case("empty-timestamp", "csv", H + "u1,b,\n", Refuse(ValueError, r"line 2: timestamp ''")),
    case("exact-duplicates-dropped", "csv", H + "u1,a,1\nu1,b,2\nu1,a,1\nu1,b,2\nu1,b,2\n",
         accept([["a", "b"]], duplicates_dropped=3, duplicates_kept=0)),
    case("exact-duplicates-kept", "csv", H + "u1,a,1\nu1,b,2\nu1,b,2\n",
         accept([["a", "b", "b"]], duplicates_kept=1, duplicates_dropped=0,
                num_test_equals_valid=1), drop_duplicates=False),
    case("repeat-at-other-time-kept", "csv", H + "u1,a,1\nu1,b,2\nu1,b,3\n",
         accept([["a", "b", "b"]], duplicates_dropped=0, num_consecutive_repeats=1)),
    case("same-time-other-user-kept", "csv", H + "u1,a,1\nu2,a,1\n", accept([["a"], ["a"]])),
    case("no-time-column-keeps-repeats", "csv", "user,item\nu1,a\nu1,a\n",
         accept([["a", "a"]], duplicates_dropped=0), time_col=None),
    case("empty", "csv", "", Refuse(ValueError, r"{f}: no interactions found \(empty file\)")),
    case("header-only", "csv", H, Refuse(ValueError, r"no interactions found \(only a header")),
    case("missing-column", "csv", "user,item\nu1,b\n",
         Refuse(ValueError, r"{f}, line 1: no column 'timestamp' in header \['user', 'item'\]")),
    case("short-row", "csv", H + "u1,b,1\nu1,b\n",
         Refuse(ValueError, r"{f}, line 3: expected at least 3 fields separated by ','")),
    case("empty-item", "csv", H + "u1,,1\n", Refuse(ValueError, r"line 2: empty user or item id")),
    case("latin-1", "csv", (H + "u1,caf\xe9,1\n").encode("latin-1"),
         Refuse(ValueError, r"{f}: not UTF-8 text")),
    case("name-without-header", "csv", "u1,b,1\n", Refuse(ValueError, "header=False"),
         header=False),
    case("bad-rating", "csv", "user,item,timestamp,r\nu1,b,1,x\n",
         Refuse(ValueError, r"line 2: rating 'x' is not a number"), rating_col="r", min_rating=3),
    case("nan-rating", "csv", "user,item,timestamp,r\nu1,b,1,nan\n",
         Refuse(ValueError, r"line 2: rating 'nan'"), rating_col="r", min_rating=3),
    case("all-below-min-rating", "csv", "user,item,timestamp,r\nu1,b,1,2\n",
         Refuse(ValueError, r"found \(all 1 rows have a rating below min_rating=3\)"),
         rating_col="r", min_rating=3),
    case("min-rating-keeps-liked", "csv", "user,item,timestamp,r\nu1,b,1,2\nu1,a,2,4\n",
         accept([["a"]]), rating_col="r", min_rating=3),
    case("blank-lines-before-tsv-header", "csv", "\n\n" + H.replace(",", "\t") + "u1\tb\t2\n",
         accept([["b"]]), file="d.txt"),
    case("empty-delimiter", "csv", H, Refuse(ValueError, "delimiter must be"), delimiter=""),
    # --- MovieLens ---
    case("dat-duplicates", "ml", "1::10::5::300\n1::10::5::300\n1::20::3::100\n",
         accept([["20", "10"]], duplicates_dropped=1), file="ratings.dat"),
    case("dat-crlf", "ml", "1::10::5::300\r\n1::20::3::100\r\n", accept([["20", "10"]]),
         file="ratings.dat"),
    case("csv-bom", "ml", BOM + b"userId,movieId,rating,timestamp\n1,10,5.0,300\n",
         accept([["10"]]), file="ratings.csv"),
]


@pytest.mark.parametrize("loader, content, file, kwargs, expect", CASES)
def test_file(tmp_path, loader, content, file, kwargs, expect):
    path = tmp_path / (file if file != "data" else {"txt": "d.txt", "csv": "d.csv"}[loader])
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    load = LOADERS[loader]
    if isinstance(expect, Refuse):
        pattern = expect.message.replace("{f}", re.escape(str(path)))
        with pytest.raises(expect.error, match=pattern):
            load(path, **kwargs)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load(path, **kwargs)
    assert [data.raw_items(s).tolist() for s in data.sequences] == expect.raw
    for field, value in expect.fields.items():
        got = getattr(data, field)
        assert (got.tolist() if isinstance(got, np.ndarray) else got) == value, field
    duplicate_warnings = [w for w in caught if "exact duplicate" in str(w.message)]
    assert len(duplicate_warnings) == (1 if data.duplicates_dropped else 0)
    assert data.num_items == len(np.unique(np.concatenate(data.sequences))) + 1


@pytest.mark.parametrize(
    "path, error, message",
    [
        ("missing.txt", FileNotFoundError, "Sequence file not found"),
        (".", IsADirectoryError, "is a folder"),
    ],
    ids=["missing", "folder"],
)
def test_text_loader_refuses_paths(tmp_path, path, error, message):
    with pytest.raises(error, match=message):
        load_sequences_txt(tmp_path / path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "locked.txt"
    path.write_text("1 1 2\n")
    path.chmod(0)
    with pytest.raises(PermissionError, match="locked.txt"):
        load_sequences_txt(path)


def test_user_with_one_or_two_interactions_only_trains(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("1 5\n2 1 2\n3 1 2 3\n")
    split = leave_one_out(load_sequences_txt(path))
    assert split.eval_users.tolist() == [2]
    assert [t.tolist() for t in split.train] == [[4], [1, 2], [1]]
    path.write_text("1 5\n2 1 2\n")
    with pytest.raises(ValueError, match="No user of 'd.txt' has the 3 interactions"):
        leave_one_out(load_sequences_txt(path))
