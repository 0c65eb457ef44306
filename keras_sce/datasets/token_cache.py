"""On-disk cache of built token corpora, outside the repository.

A corpus is stored under `<cache_dir>/token_corpora/<key>/` as `meta.json`
(vocabulary, document keys, counts of types) and `arrays.npz` (ids, offsets,
training counts). The key hashes the source's identity (resolved path, size,
modification time; per file for a directory) and every option that changes the
result, plus a format version, so a changed file or option is a cache miss, never
a stale corpus. Writes go to a temporary folder renamed into place, so an
interrupted run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np

from keras_sce.datasets.token_corpus import SPLIT_NAMES, TokenCorpus, TokenSplit

FORMAT_VERSION = 1


def default_cache_dir() -> pathlib.Path:
    """`$KERAS_SCE_CACHE` if set, else `~/.cache/keras_sce`."""
    env = os.environ.get("KERAS_SCE_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "keras_sce"


def cache_key(identity: dict, **options) -> str:
    """A hex digest of the source identity and the options."""
    payload = json.dumps(
        {"format": FORMAT_VERSION, "source": identity, "options": options},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _entry(key: str, cache_dir) -> pathlib.Path:
    root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "token_corpora" / key


def load(key: str, cache_dir=None) -> TokenCorpus | None:
    """The cached corpus for `key`, or None (absent or unreadable: rebuilt)."""
    folder = _entry(key, cache_dir)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        with np.load(folder / "arrays.npz") as arrays:
            splits = {
                name: TokenSplit(
                    arrays[f"{name}_ids"], arrays[f"{name}_offsets"],
                    meta["keys"][name], num_types=meta["num_types"][name],
                )
                for name in SPLIT_NAMES
            }
            counts = arrays["counts"]
        if meta.get("format") != FORMAT_VERSION:
            return None
        return TokenCorpus(meta["vocabulary"], counts, splits, source=meta["source"],
                           num_train_types=meta["num_train_types"])
    except (OSError, ValueError, KeyError):
        return None


def save(corpus: TokenCorpus, key: str, cache_dir=None) -> pathlib.Path:
    """Writes `corpus` under `key`; returns its folder."""
    folder = _entry(key, cache_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    try:
        meta = {
            "format": FORMAT_VERSION,
            "source": corpus.source,
            "num_train_types": corpus.num_train_types,
            "vocabulary": list(corpus.vocabulary),
            "keys": {name: corpus.splits[name].keys for name in SPLIT_NAMES},
            "num_types": {name: corpus.splits[name].num_types for name in SPLIT_NAMES},
        }
        (staging / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        arrays = {"counts": corpus.counts}
        for name in SPLIT_NAMES:
            arrays[f"{name}_ids"] = corpus.splits[name].ids
            arrays[f"{name}_offsets"] = corpus.splits[name].offsets
        np.savez(staging / "arrays.npz", **arrays)
        try:
            os.replace(staging, folder)
        except OSError:  # another process stored the same entry first
            if not folder.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
