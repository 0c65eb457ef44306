"""Token corpora: sources (files, directories, tarballs), vocabulary, split, windows, cache."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile

import numpy as np
import pytest

from keras_sce.datasets import token_cache, token_sources, tokens
from keras_sce.datasets.token_corpus import TokenSplit
from keras_sce.datasets.token_sources import iter_source_files
from keras_sce.datasets.tokens import (
    CODE_PATTERN,
    WORD_PATTERN,
    load_token_corpus,
    regex_tokenizer,
    split_of,
)

TEXT = "b a c a b a\n\nd b e\n\nThe cat's re-run: the END.\n"


def _load(source, max_types=3, **kwargs):
    kwargs.setdefault("cache", False)
    kwargs.setdefault("split", (1.0, 0.0, 0.0))
    return load_token_corpus(source, max_types, **kwargs)


def _write(path, text, opener=open):
    with opener(path, "wb") as handle:
        handle.write(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def _tar(path, members, mode="w:gz"):
    """``members``: (name, bytes) regular files, or (name, TarInfo type, linkname)."""
    with tarfile.open(path, mode) as archive:
        for member in members:
            info = tarfile.TarInfo(member[0])
            if len(member) == 2:
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))
            else:
                info.type, info.linkname = member[1], member[2]
                archive.addfile(info)
    return path


@pytest.mark.parametrize(
    "pattern,lower,text,expected",
    [
        (WORD_PATTERN, True, "Don't RE-run x2, o'clock-ish!",
         ["don't", "re-run", "x", "o'clock-ish"]),
        (WORD_PATTERN, True, "a--b 'q' -x", ["a", "b", "q", "x"]),
        (CODE_PATTERN, False, "if (x_1>=42) return f(y);",
         ["if", "(", "x_1", ">", "=", "42", ")", "return", "f", "(", "y", ")", ";"]),
    ],
    ids=["words-apostrophe-hyphen", "words-stray-punctuation", "code"],
)
def test_default_tokenizers(pattern, lower, text, expected):
    assert regex_tokenizer(pattern, lowercase=lower)(text) == expected


def test_vocabulary_is_top_k_by_count_then_string(tmp_path):
    corpus = _load(_write(tmp_path / "c.txt", "b a c a b a d e e\n"), max_types=3)
    # a:3, b:2, e:2 (tie broken by the string), c and d out.
    assert corpus.vocabulary == ["<pad>", "<unk>", "a", "b", "e"]
    assert corpus.counts.tolist() == [0, 2, 3, 2, 2]
    assert corpus.train.ids.tolist() == [3, 2, 1, 2, 3, 2, 1, 4, 4]
    assert corpus.train.oov_rate == pytest.approx(2 / 9)
    assert corpus.token_to_id()["e"] == 4


@pytest.mark.parametrize(
    "name,opener",
    [("c.txt", open), ("c.txt.xz", lzma.open), ("c.txt.gz", gzip.open), ("c.txt.bz2", bz2.open)],
    ids=["plain", "xz", "gz", "bz2"],
)
def test_compressed_files_read_like_plain_ones(tmp_path, name, opener):
    plain = _load(_write(tmp_path / "plain.txt", TEXT), documents="paragraphs")
    got = _load(_write(tmp_path / name, TEXT, opener), documents="paragraphs")
    assert got.vocabulary == plain.vocabulary
    assert got.train.ids.tolist() == plain.train.ids.tolist()
    assert got.train.num_documents == 3


def test_directory_is_walked_in_sorted_order_without_symlinks(tmp_path):
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    _write(root / "b.c", "int b;")
    _write(root / "sub" / "a.h", "int a;")
    _write(root / "notes.txt", "words words")
    _write(root / "z.c.xz", "int z;", lzma.open)
    os.symlink(root / "b.c", root / "link.c")
    names = [name for name, _ in iter_source_files(root, suffixes=(".c", ".h"))]
    assert names == ["b.c", "sub/a.h", "z.c.xz"]
    corpus = _load(root, max_types=2, tokenizer="code", suffixes=(".c", ".h"))
    assert corpus.train.keys == names


HOSTILE = [
    ("../../evil.c", b"evil code;"),
    ("/abs/path.h", b"abs;"),
    ("ok/readme.txt", b"not code"),
    ("ok/link.c", tarfile.SYMTYPE, "/etc/passwd"),
    ("ok/hard.c", tarfile.LNKTYPE, "../../evil.c"),
    ("ok/dir.c", tarfile.DIRTYPE, ""),
    ("ok/good.c", b"int good = 1;"),
]


@pytest.mark.parametrize("mode,suffix", [("w:gz", ".tar.gz"), ("w:xz", ".tar.xz"), ("w", ".tar")],
                         ids=["tar.gz", "tar.xz", "tar"])
def test_tarball_is_streamed_not_extracted(tmp_path, monkeypatch, mode, suffix):
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    archive = _tar(tmp_path / f"src{suffix}", HOSTILE, mode)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    got = dict(iter_source_files(archive, suffixes=(".c", ".h")))
    # Links, directories and unwanted suffixes are skipped; names are only keys.
    assert got == {"../../evil.c": b"evil code;", "/abs/path.h": b"abs;",
                   "ok/good.c": b"int good = 1;"}
    corpus = _load(archive, max_types=4, tokenizer="code", suffixes=(".c", ".h"))
    assert corpus.train.keys == ["../../evil.c", "/abs/path.h", "ok/good.c"]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not os.path.exists("/abs/path.h")


@pytest.mark.parametrize(
    "setup,kwargs,error,match",
    [
        (lambda p: _write(p / "e.txt", ""), {}, ValueError, "no token"),
        (lambda p: _write(p / "e.txt", "!!! ..."), {}, ValueError, "no token"),
        (lambda p: _write(p / "c.txt", "a b c"), {"max_types": 4}, ValueError,
         "has only 3 token types"),
        (lambda p: _write(p / "bad.txt", b"ok \xff no"), {}, ValueError, r"bad\.txt.*byte 3"),
        (lambda p: _write(p / "bad.txt.xz", b"not xz data"), {}, ValueError, r"bad\.txt\.xz"),
        (lambda p: _tar(p / "t.tar.gz", [("a.txt", b"x")]), {"suffixes": (".c",)}, ValueError,
         "no file"),
        (lambda p: p / "missing.txt", {}, FileNotFoundError, "missing"),
        (lambda p: _write(p / "c.txt", "a"), {"split": (0.5, 0.5)}, ValueError, "three"),
        (lambda p: _write(p / "c.txt", "a"), {"tokenizer": "chars"}, ValueError, "tokenizer"),
        (lambda p: _write(p / "c.txt", "a"), {"documents": "pages"}, ValueError, "documents"),
        (lambda p: _write(p / "c.txt", "a"), {"max_types": 0}, ValueError, "max_types"),
    ],
    ids=["empty-file", "no-words", "k-too-large", "undecodable", "corrupt-xz", "filtered-out",
         "missing", "two-fractions", "unknown-tokenizer", "unknown-documents", "k-zero"],
)
def test_clear_errors(tmp_path, setup, kwargs, error, match):
    source = setup(tmp_path)
    max_types = kwargs.pop("max_types", 1)
    with pytest.raises(error, match=match):
        _load(source, max_types=max_types, **kwargs)


@pytest.mark.parametrize(
    "tokenizer,error,match",
    [(lambda s: ["<unk>"] + s.split(), ValueError, "reserved"),
     (lambda s: [len(w) for w in s.split()], TypeError, "strings")],
    ids=["reserved-token", "non-string-tokens"],
)
def test_bad_custom_tokenizer(tmp_path, tokenizer, error, match):
    with pytest.raises(error, match=match):
        _load(_write(tmp_path / "c.txt", "a bb ccc"), max_types=1, tokenizer=tokenizer)


def test_undecodable_bytes_can_be_replaced(tmp_path):
    corpus = _load(_write(tmp_path / "bad.txt", b"caf\xe9 ok"), max_types=2, errors="replace")
    assert corpus.vocabulary[2:] == ["caf", "ok"]


def test_undecodable_member_is_named(tmp_path):
    archive = _tar(tmp_path / "t.tar.gz", [("good.c", b"a"), ("dir/bad.c", b"\xff")])
    with pytest.raises(ValueError, match=r"t\.tar\.gz:dir/bad\.c"):
        _load(archive, max_types=1)


def test_unreadable_file_is_named(tmp_path, monkeypatch):
    path = _write(tmp_path / "secret.txt", "a b")
    if os.name == "posix" and os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads anything: simulate the refusal

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(token_sources, "open", refuse, raising=False)
    with pytest.raises(PermissionError, match="secret.txt"):
        _load(path, max_types=1)


def _many_docs(tmp_path, n=600):
    lines = [f"a{'b' * (i % 37)} c{'d' * (i % 11)} shared{'e' * (i % 3)}" for i in range(n)]
    return _write(tmp_path / "many.txt", "\n".join(lines))


def test_split_is_deterministic_seeded_and_by_group(tmp_path):
    path = _many_docs(tmp_path)
    kwargs = dict(documents="lines", split=(0.8, 0.1, 0.1))
    one, two = _load(path, 10, seed=3, **kwargs), _load(path, 10, seed=3, **kwargs)
    other = _load(path, 10, seed=4, **kwargs)
    assert {n: s.keys for n, s in one.splits.items()} == {n: s.keys for n, s in two.splits.items()}
    assert one.test.keys != other.test.keys
    sizes = [one.splits[n].num_documents for n in ("train", "validation", "test")]
    assert sum(sizes) == 600 and 420 < sizes[0] < 540 and sizes[1] > 30 and sizes[2] > 30
    # The hash sees only the group key: file order and other documents do not matter.
    assert all(split_of(k, (0.8, 0.1, 0.1), 3) == 2 for k in one.test.keys)


def test_documents_of_one_group_share_a_split(tmp_path):
    def by_letter(name, text):
        for word in text.split():
            yield word, word[0], word  # key, group, text

    path = _write(tmp_path / "g.txt", " ".join(f"{c}{i}" for c in "abcdefgh" for i in range(9)))
    corpus = _load(path, 1, documents=by_letter, split=(0.5, 0.25, 0.25))
    letters = [{key[0] for key in split.keys} for split in corpus.splits.values()]
    assert set().union(*letters) == set("abcdefgh")
    assert sum(len(group) for group in letters) == 8  # no letter in two splits
    assert all(len(split.keys) % 9 == 0 for split in corpus.splits.values())


def test_report_counts_add_up(tmp_path):
    corpus = _load(_many_docs(tmp_path), 5, documents="lines", split=(0.7, 0.15, 0.15))
    report = corpus.report()
    assert sum(r["tokens"] for r in report.values()) == 1800
    assert sum(r["documents"] for r in report.values()) == 600
    for name, row in report.items():
        split = corpus.splits[name]
        assert row["oov_rate"] == pytest.approx(np.mean(split.ids == 1))
    assert report["train"]["types"] == corpus.num_train_types <= 51
    assert "| train |" in corpus.report_table()


@pytest.mark.parametrize("length", [1, 2, 3, 5, 40], ids=lambda n: f"L{n}")
def test_windows_cover_every_target_once_within_documents(length):
    lengths = [0, 1, 2, 7, 12]
    ids = np.arange(2, 2 + sum(lengths), dtype=np.int32)
    split = TokenSplit(ids, np.concatenate([[0], np.cumsum(lengths)]), list("abcde"))
    windows = split.windows(length)
    assert windows.shape[1] == length + 1
    inputs, targets = windows[:, :-1], windows[:, 1:]
    real = targets != 0
    # Every token except each document's first is a target exactly once...
    firsts = {int(ids[o]) for o, n in zip(np.cumsum([0] + lengths[:-1]), lengths, strict=True) if n}
    assert sorted(targets[real].tolist()) == sorted(set(ids.tolist()) - firsts)
    # ...and its input is the token before it in the same document (ids are consecutive).
    assert np.all(inputs[real] == targets[real] - 1)


def test_dataset_batches_and_weights(tmp_path):
    split = TokenSplit(np.arange(2, 12, dtype=np.int32), np.array([0, 4, 10]), ["a", "b"])
    batches = list(split.dataset(3, 2, with_weights=True))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    w = np.concatenate([b[2].numpy() for b in batches])
    assert x.tolist() == [[2, 3, 4], [6, 7, 8], [9, 10, 0]]
    assert y.tolist() == [[3, 4, 5], [7, 8, 9], [10, 11, 0]]
    assert w.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]
    first = [b[0].numpy().tolist() for b in split.dataset(3, 3, shuffle=True, seed=5)]
    again = [b[0].numpy().tolist() for b in split.dataset(3, 3, shuffle=True, seed=5)]
    assert first == again
    with pytest.raises(ValueError, match="sequence_length"):
        split.dataset(0, 2)
    with pytest.raises(ValueError, match="no document of two"):
        TokenSplit(np.array([5], np.int32), np.array([0, 1]), ["x"]).dataset(3, 2)


def test_cache_hit_miss_and_location(tmp_path, monkeypatch):
    path = _write(tmp_path / "c.txt", TEXT)
    monkeypatch.setenv("KERAS_SCE_CACHE", str(tmp_path / "cache"))
    kwargs = dict(documents="paragraphs", cache=True)
    first = _load(path, **kwargs)
    entries = list((tmp_path / "cache" / "token_corpora").iterdir())
    assert len(entries) == 1
    monkeypatch.setattr(tokens, "_build", lambda *a: pytest.fail("the cache was not used"))
    second = _load(path, **kwargs)
    assert second.vocabulary == first.vocabulary
    assert second.train.ids.tolist() == first.train.ids.tolist()
    assert second.train.keys == first.train.keys
    monkeypatch.undo()
    monkeypatch.setenv("KERAS_SCE_CACHE", str(tmp_path / "cache"))
    _load(path, max_types=4, **kwargs)  # another option: another entry
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    _load(path, **kwargs)  # a touched file: another entry
    assert len(list((tmp_path / "cache" / "token_corpora").iterdir())) == 3


def test_cache_off_for_closures_and_when_asked(tmp_path, monkeypatch):
    path = _write(tmp_path / "c.txt", TEXT)
    cache_dir = tmp_path / "cache"
    _load(path, cache=False, cache_dir=cache_dir)
    _load(path, tokenizer=lambda s: s.split(), cache=True, cache_dir=cache_dir)
    assert not cache_dir.exists()
    _load(path, tokenizer=_split_words, cache=True, cache_dir=cache_dir)  # a named callable
    assert len(list((cache_dir / "token_corpora").iterdir())) == 1
    _load(path, tokenizer=_split_words, cache=True, cache_dir=cache_dir)
    assert len(list((cache_dir / "token_corpora").iterdir())) == 1
    monkeypatch.setattr(_split_words, "cache_version", 2, raising=False)
    _load(path, tokenizer=_split_words, cache=True, cache_dir=cache_dir)
    assert len(list((cache_dir / "token_corpora").iterdir())) == 2


def _split_words(text):
    return text.split()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_SCE_CACHE", str(tmp_path / "here"))
    assert token_cache.default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("KERAS_SCE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert token_cache.default_cache_dir() == tmp_path / ".cache" / "keras_sce"
