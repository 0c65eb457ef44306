"""GCIDE (the Collaborative International Dictionary of English) as documents.

The dictd text of GCIDE is a sequence of entries. An entry starts with a
headword line at column 0, `headword \\form\\ (pronunciation), pos. [etymology]`
(the dictd key, the headword with its stress marks between backslashes, an
optional pronunciation in parentheses, then an optional part-of-speech tag), which
may wrap onto further column-0 lines when several forms share the entry; the
indented lines under it are the definitions, notes, synonyms and source markers
(`[1913 Webster]`, `[WordNet 1.5]`). Entries are separated by a blank line;
the `00-database-*` entries and the licence preamble are metadata, not entries.

`parse_gcide` yields `GcideEntry` objects (headword, part of speech,
definition text), shared by the word-level language model (`gcide_documents`
for `load_token_corpus`) and by a part-of-speech
classification task.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

from keras_sce.datasets.token_sources import decode_text, read_file_bytes

_HEADWORD = re.compile(r"^([^\s\\][^\\]*?) ?\\")
_FORM = re.compile(r"\\[^\\]*\\")
# After a form: an optional parenthesised pronunciation, an optional comma, then a
# run of lower-case abbreviations ("n.", "v. t.", "a. & adv.", "n. pl.").
_POS = re.compile(
    r"^\s*(?:\([^()]*\))?\s*,?\s*"
    r"((?:[a-z]{1,7}\.)(?:\s?(?:&\s)?[a-z]{1,7}\.)*)(?![A-Za-z])"
)
_SOURCE = re.compile(
    r"\[(?:\s*(?:1913 Webster|Webster 1913 Suppl\.|Webster 1913|WordNet(?: [\d.]+)?"
    r"|WordNet sense \d+|PJC\.?|Century Dict\. 1906|RDH|RHD|MW10|AS|\+)\s*)+\]"
)
_METADATA_PREFIX = "00-database"


@dataclasses.dataclass(frozen=True)
class GcideEntry:
    """One dictionary entry.

    Args:
        headword: the dictd key of the entry (`"aardvark"`, `"Aaron's rod"`).
        pos: the part-of-speech tag after the first form and its pronunciation
            (`"n."`, `"a."`, `"v. t."`, `"adv."`, `"a. & n."`), or None
            when the headword line has none.
        definition: the indented body, whitespace collapsed, without the source
            markers (`[1913 Webster]`, `[WordNet 1.5]`, ...).
        text: the whole entry as in the file (headword lines and body).
        line: 1-based line number of the headword line.
    """

    headword: str
    pos: str | None
    definition: str
    text: str
    line: int


def _entry_pos(head_lines: list[str]) -> str | None:
    """The tag after the first form (or, if none there, after the last form)."""
    block = " ".join(head_lines)
    forms = list(_FORM.finditer(block))
    if not forms:
        return None
    for form in (forms[0], forms[-1]):
        match = _POS.match(block[form.end() :])
        if match:
            return re.sub(r"\s+", " ", match.group(1))
    return None


def _unbalanced(head_lines: list[str]) -> bool:
    block = "".join(head_lines)
    return block.count("[") > block.count("]") or block.count("(") > block.count(")")


def _make_entry(lines: list[str], start: int, next_headword: str | None) -> GcideEntry:
    head = _HEADWORD.match(lines[0]).group(1).strip()
    n_head = 1
    while n_head < len(lines) and lines[n_head][:1] not in ("", " ", "\t"):
        n_head += 1
    # A bracket (etymology) or parenthesis (pronunciation) left open by the headword
    # lines continues on the indented lines below: those belong to the head too. A
    # few entries never close theirs (typos); then the body is left whole.
    if _unbalanced(lines[:n_head]):
        for extra in range(1, 4):
            stop = n_head + extra
            if stop > len(lines) or not lines[stop - 1].strip():
                break
            if not _unbalanced(lines[:stop]):
                n_head = stop
                break
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    # dictd's conversion appends the next entry's key to the last line of this one
    # ("[1913 Webster] Aaronic"): that word belongs to the next entry.
    if next_headword and len(lines) > n_head and lines[-1].endswith(" " + next_headword):
        lines = lines[:-1] + [lines[-1][: -len(next_headword) - 1].rstrip()]
    body = " ".join(line.strip() for line in lines[n_head:])
    definition = re.sub(r"\s+", " ", _SOURCE.sub(" ", body)).strip()
    return GcideEntry(head, _entry_pos(lines[:n_head]), definition, "\n".join(lines), start + 1)


def parse_gcide(text: str) -> Iterator[GcideEntry]:
    """Yields the entries of GCIDE's dictd text, in file order.

    An entry starts at a column-0 headword line (`key \\form\\ ...`) that follows
    a blank line; the metadata entries (`00-database-*`) and the licence text are
    skipped.

    Args:
        text: the decompressed dictionary text.

    Returns:
        An iterator of `GcideEntry`.

    Examples:
        >>> text = "Abaft \\\\A*baft\\"\\\\, adv. (Naut.)\\n   Toward the stern.\\n"
        >>> entry = next(parse_gcide(text))
        >>> entry.headword, entry.pos, entry.definition
        ('Abaft', 'adv.', 'Toward the stern.')
    """
    lines = text.split("\n")
    start = None  # first line of the entry being read
    in_metadata = True  # before the first entry, or inside a 00-database entry
    previous_blank = True
    for number, line in enumerate(lines):
        match = _HEADWORD.match(line) if line[:1] not in ("", " ", "\t") else None
        opens = match is not None and (previous_blank or in_metadata)
        if line.startswith(_METADATA_PREFIX) and previous_blank:
            if start is not None:
                yield _make_entry(lines[start:number], start, None)
            start, in_metadata = None, True
        elif opens:
            if start is not None:
                yield _make_entry(lines[start:number], start, match.group(1).strip())
            start, in_metadata = number, False
        previous_blank = not line.strip()
    if start is not None:
        yield _make_entry(lines[start:], start, None)


def read_gcide(path, *, errors: str = "replace") -> list[GcideEntry]:
    """Parses a GCIDE dictd text file (plain or compressed, e.g. `gcide.txt.xz`).

    `errors="replace"` by default: GCIDE 0.48 holds three bytes that are not
    UTF-8 (Windows-1252 punctuation and a c-cedilla); they become U+FFFD.
    """
    return list(parse_gcide(decode_text(read_file_bytes(path), str(path), "utf-8", errors)))


def gcide_documents(name: str, text: str):
    """Document splitter for `load_token_corpus(..., documents=gcide_documents)`.

    One document per entry (its whole text); the key is `headword:line`, the
    split group is the lower-cased headword, so every entry of a headword (its
    homographs) lands in the same split.
    """
    for entry in parse_gcide(text):
        yield f"{entry.headword}:{entry.line}", entry.headword.lower(), entry.text


# Part of the cache key of corpora built with this splitter: bump it whenever the
# parser's output changes.
gcide_documents.cache_version = 1


def load_gcide_corpus(path, max_types: int, **options):
    """The GCIDE word-level corpus: one document per entry, the `"words"` tokenizer.

    Args:
        path: the dictd text (`gcide.txt.xz`).
        max_types: vocabulary size K (ids 2 .. K + 1).
        **options: forwarded to `load_token_corpus`
            (`split`, `seed`, `cache_dir`, ...); `errors` defaults to
            `"replace"` (see `read_gcide`).

    Returns:
        A `TokenCorpus`.
    """
    from keras_sce.datasets.tokens import load_token_corpus

    options.setdefault("errors", "replace")
    options.setdefault("documents", gcide_documents)
    return load_token_corpus(path, max_types, **options)

