"""Token corpora from text: tokenize, top-K vocabulary, document split, on-disk cache.

`load_token_corpus` reads a source (a file, a directory or a tarball, see
`keras_sce.datasets.token_sources`), cuts it into documents, tokenizes them,
assigns each document to train / validation / test by a seeded hash of its group
key, keeps the K most frequent *training* types as the vocabulary, and maps every
split to ids (`TokenCorpus`). The result is
cached outside the repository, keyed by the source's identity (path, size, mtime)
and every option, so a second call is a file read.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
from array import array
from collections.abc import Callable, Iterable

import numpy as np

from keras_sce.datasets import token_cache
from keras_sce.datasets.token_corpus import (
    OOV_ID,
    OOV_TOKEN,
    PADDING_TOKEN,
    SPLIT_NAMES,
    TokenCorpus,
    TokenSplit,
)
from keras_sce.datasets.token_sources import (
    decode_text,
    is_tarball,
    iter_source_files,
    source_identity,
)

WORD_PATTERN = r"[A-Za-z]+(?:['-][A-Za-z]+)*"
CODE_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|\S"
# name -> (pattern, lower-case)
TOKENIZERS = {"words": (WORD_PATTERN, True), "code": (CODE_PATTERN, False)}
DOCUMENT_MODES = ("file", "lines", "paragraphs")


def regex_tokenizer(pattern: str, lowercase: bool = False) -> Callable[[str], list[str]]:
    """A tokenizer returning every match of `pattern` (lower-cased on request).

    Examples:
        >>> regex_tokenizer(WORD_PATTERN, lowercase=True)("Don't re-run it, Bob!")
        ["don't", 're-run', 'it', 'bob']
    """
    compiled = re.compile(pattern)

    def tokenize(text: str) -> list[str]:
        tokens = compiled.findall(text)
        return [t.lower() for t in tokens] if lowercase else tokens

    return tokenize


def _resolve_tokenizer(tokenizer):
    if isinstance(tokenizer, str):
        if tokenizer not in TOKENIZERS:
            raise ValueError(
                f"`tokenizer` must be one of {sorted(TOKENIZERS)} or a callable, got {tokenizer!r}."
            )
        return regex_tokenizer(*TOKENIZERS[tokenizer]), tokenizer
    if callable(tokenizer):
        return tokenizer, _callable_key(tokenizer)
    raise TypeError(f"`tokenizer` must be a name or a callable, got {type(tokenizer).__name__}.")


def _callable_key(fn) -> str | None:
    """A stable cache identity for a module-level function; None for lambdas/closures.

    The function's `cache_version` attribute, if any, is part of it: bump it when
    the function's output changes, or the cache would return the old corpus.
    """
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}"
    if "<" in name or name == ".":
        return None
    return f"{name}:{getattr(fn, 'cache_version', '')}"


def _split_documents(mode, name: str, text: str):
    """Yields `(key, group, text)` documents of one file."""
    if mode == "file":
        yield name, name, text
    elif mode == "lines":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                key = f"{name}:{number}"
                yield key, key, line
    elif mode == "paragraphs":
        for number, block in enumerate(re.split(r"\n[ \t]*\n", text)):
            if block.strip():
                key = f"{name}#{number}"
                yield key, key, block
    else:
        for item in mode(name, text):
            if len(item) == 2:
                yield item[0], item[0], item[1]
            else:
                yield item


def split_of(group: str, fractions, seed: int) -> int:
    """0 (train), 1 (validation) or 2 (test) for a document group, from a seeded hash.

    Independent of file order and of the rest of the corpus: adding documents never
    moves another one to a different split.
    """
    digest = hashlib.blake2b(f"{seed}\0{group}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    return 0 if u < fractions[0] else (1 if u < fractions[0] + fractions[1] else 2)


def check_fractions(split):
    """`split` as three floats (train, validation, test) summing to 1; ValueError if not."""
    try:
        fractions = tuple(float(f) for f in split)
    except TypeError:
        fractions = ()
    if len(fractions) != 3 or min(fractions, default=-1) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"`split` must be three non-negative fractions (train, validation, test) summing "
            f"to 1, got {split!r}."
        )
    if fractions[0] == 0:
        raise ValueError("`split` gives the training split no documents: the vocabulary is "
                         "built from it.")
    return fractions


def load_token_corpus(
    source,
    max_types: int,
    *,
    tokenizer: str | Callable[[str], Iterable[str]] = "words",
    documents: str | Callable = "file",
    suffixes: Iterable[str] | None = None,
    split=(0.9, 0.05, 0.05),
    seed: int = 0,
    encoding: str = "utf-8",
    errors: str = "strict",
    cache: bool = True,
    cache_dir=None,
) -> TokenCorpus:
    """Reads a text source into a top-K vocabulary and three id splits.

    Args:
        source: a file (plain, `.xz`, `.gz`, `.bz2`), a directory, or a
            tarball (`.tar`, `.tar.xz`, `.tar.gz`, ...), read without
            extracting it.
        max_types: K, the number of training types kept; ids `2 .. K + 1`.
        tokenizer: `"words"` (`[A-Za-z]+(?:['-][A-Za-z]+)*`, lower-cased),
            `"code"` (`[A-Za-z_][A-Za-z0-9_]*|[0-9]+|\\S`, case kept) or a
            callable `str -> iterable of str`.
        documents: `"file"` (each file or member is a document), `"lines"`,
            `"paragraphs"` (blank-line separated), or a callable
            `(name, text) -> iterable of (key, text) or (key, group, text)`;
            documents of one group always land in the same split.
        suffixes: keep only files / members with these name endings, e.g.
            `(".c", ".h")`.
        split: train / validation / test fractions of the document groups.
        seed: seed of the split's hash.
        encoding: text encoding of every file.
        errors: `"strict"` (an undecodable byte is an error naming the file),
            `"replace"` (U+FFFD) or `"ignore"`.
        cache: read / write the cache. Callables defined at module level are
            keyed by their qualified name and `cache_version` attribute (bump it
            when their output changes); a lambda or closure turns the cache off.
        cache_dir: cache folder; default `$KERAS_SCE_CACHE` or
            `~/.cache/keras_sce`.

    Returns:
        A `TokenCorpus`.

    Raises:
        FileNotFoundError: `source` does not exist.
        ValueError: an empty corpus or training split, `max_types` above the
            training types available, an undecodable or corrupt file (named), or a
            bad option.

    Examples:
        A folder of sources, each `.c`/`.h` file a document, the top 5 types (a
        kernel tarball reads the same way, with `max_types=1_000_000`):

        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> for name in ("a.c", "b.h", "notes.txt"):
        ...     with open(os.path.join(folder, name), "w") as f:
        ...         _ = f.write("int main(void) { return 0; }\\n")
        >>> corpus = load_token_corpus(folder, 5, tokenizer="code", suffixes=(".c", ".h"),
        ...                            split=(1.0, 0.0, 0.0), cache=False)
        >>> corpus.vocabulary_size, corpus.train.keys, corpus.train.num_tokens
        (7, ['a.c', 'b.h'], 20)
    """
    if not isinstance(max_types, int) or isinstance(max_types, bool) or max_types < 1:
        raise ValueError(f"`max_types` must be a positive int, got {max_types!r}.")
    fractions = check_fractions(split)
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    tokenize, tokenizer_key = _resolve_tokenizer(tokenizer)
    if isinstance(documents, str) and documents not in DOCUMENT_MODES:
        raise ValueError(
            f"`documents` must be one of {DOCUMENT_MODES} or a callable, got {documents!r}."
        )
    if not isinstance(documents, str) and not callable(documents):
        raise TypeError("`documents` must be a mode name or a callable.")
    documents_key = documents if isinstance(documents, str) else _callable_key(documents)
    key = None
    if cache and tokenizer_key is not None and documents_key is not None:
        key = token_cache.cache_key(
            source_identity(source, suffixes=suffixes),
            max_types=max_types, tokenizer=tokenizer_key, documents=documents_key,
            suffixes=None if suffixes is None else sorted(suffixes), split=fractions,
            seed=seed, encoding=encoding, errors=errors,
        )
        cached = token_cache.load(key, cache_dir)
        if cached is not None:
            return cached
    corpus = _build(source, max_types, tokenize, documents, suffixes, fractions, seed,
                    encoding, errors)
    if key is not None:
        token_cache.save(corpus, key, cache_dir)
    return corpus


def _build(source, max_types, tokenize, documents, suffixes, fractions, seed, encoding, errors):
    type_ids: dict[str, int] = {}  # provisional id per type, in order of appearance
    ids = [array("i") for _ in SPLIT_NAMES]
    lengths = [array("q") for _ in SPLIT_NAMES]
    keys: list[list[str]] = [[] for _ in SPLIT_NAMES]
    files = 0
    root = pathlib.Path(source)
    for name, data in iter_source_files(source, suffixes=suffixes):
        files += 1
        if root.is_dir():
            where = str(root / name)
        else:
            where = f"{source}:{name}" if is_tarball(root) else str(source)
        text = decode_text(data, where, encoding, errors)
        for key, group, doc_text in _split_documents(documents, name, text):
            part = split_of(group, fractions, seed)
            before = len(ids[part])
            ids[part].extend(type_ids.setdefault(t, len(type_ids)) for t in tokenize(doc_text))
            lengths[part].append(len(ids[part]) - before)
            keys[part].append(key)
    if files == 0:
        raise ValueError(f"token corpus {source}: no file to read (check `suffixes`).")
    if not type_ids:
        raise ValueError(f"token corpus {source}: the tokenizer found no token in {files} "
                         "file(s).")
    arrays = [np.frombuffer(a, dtype=np.int32) if len(a) else np.zeros(0, np.int32)
              for a in ids]
    train_counts = np.bincount(arrays[0], minlength=len(type_ids))
    num_train_types = int(np.count_nonzero(train_counts))
    if num_train_types == 0:
        raise ValueError(f"token corpus {source}: the training split holds no token "
                         f"({len(keys[0])} document(s)); lower the held-out fractions.")
    if max_types > num_train_types:
        raise ValueError(
            f"`max_types`={max_types} but the training split of {source} has only "
            f"{num_train_types} token types; pass max_types <= {num_train_types}."
        )
    reserved = [t for t in (PADDING_TOKEN, OOV_TOKEN) if t in type_ids]
    if reserved:
        raise ValueError(f"token corpus {source}: the tokenizer produced the reserved "
                         f"token(s) {reserved}; map them to something else.")
    types = list(type_ids)
    if not isinstance(types[0], str):
        raise TypeError(f"the tokenizer must return strings, got {type(types[0]).__name__}.")
    seen = np.flatnonzero(train_counts)
    # Decreasing count, ties by increasing token string: independent of file order.
    order = sorted(seen.tolist(), key=lambda i: (-int(train_counts[i]), types[i]))[:max_types]
    remap = np.full(len(types), OOV_ID, dtype=np.int32)
    remap[np.asarray(order, dtype=np.int64)] = np.arange(2, max_types + 2, dtype=np.int32)
    counts = np.zeros(max_types + 2, dtype=np.int64)
    counts[2:] = train_counts[order]
    counts[OOV_ID] = int(train_counts.sum() - counts[2:].sum())
    splits = {}
    for part, name in enumerate(SPLIT_NAMES):
        offsets = np.concatenate([[0], np.cumsum(np.frombuffer(lengths[part], np.int64)
                                                 if len(lengths[part]) else [])])
        splits[name] = TokenSplit(
            remap[arrays[part]], offsets.astype(np.int64), keys[part],
            num_types=int(np.count_nonzero(np.bincount(arrays[part], minlength=1))),
        )
    vocabulary = [PADDING_TOKEN, OOV_TOKEN] + [types[i] for i in order]
    return TokenCorpus(vocabulary, counts, splits, source=str(source),
                       num_train_types=num_train_types)

