"""The GCIDE entry parser, on a small made-up text in its dictd layout and on the real file."""

from __future__ import annotations

import collections
import lzma
import re

import pytest

from keras_sce.datasets.gcide import gcide_documents, load_gcide_corpus, parse_gcide, read_gcide
from keras_sce.datasets.tokens import WORD_PATTERN

# Invented entries laid out as GCIDE's dictd text is (not taken from the dictionary).
SAMPLE = """

00-database-url
   ftp://example.invalid/dict

00-database-info
   Converted on some day.

The notice at column 0 is part of the preamble.

      A motto line of the preamble.
Zork \\Zork\\ adj.
   1. made up for a test.

   Syn: fake
        [WordNet 1.5 +PJC]

Blorb \\Blorb\\ ([b^]l[o^]rb), n. [From the test suite; cf. the
   fixture maker's habit.]
   A small thing written down in a test. [R.]
   [1913 Webster] Blorb

Blorb \\Blorb\\, v. t. [imp. & p. p. {Blorbed}; p. pr. & vb. n.
   {Blorbing}.]
   To write a test. --Anon.
   [1913 Webster]

Quux \\Quux\\ ([.a]*kw[u^]ks), Quuxical
\\Quux"ic*al\\ (-[i^]*kal), a.
   Pertaining to quux.
   [1913 Webster]

Wob-ble dee \\Wob"-ble dee`\\ (w[o^]b"b'l d[=e]). [Unknown.]
   A sound.
   [Webster 1913 Suppl.]

Unzork \\Unzork\\
   See {zork}.
Unblorb
Unquux

Glued \\Glued\\adv. Without a space.
   [PJC]
"""


def test_entries_headwords_and_order():
    entries = list(parse_gcide(SAMPLE))
    assert [e.headword for e in entries] == [
        "Zork", "Blorb", "Blorb", "Quux", "Wob-ble dee", "Unzork", "Glued"
    ]
    assert entries[0].line == SAMPLE.split("\n").index("Zork \\Zork\\ adj.") + 1


@pytest.mark.parametrize(
    "index,pos",
    [(0, "adj."), (1, "n."), (2, "v. t."), (3, "a."), (4, None), (5, None), (6, "adv.")],
    ids=["after-form", "after-pronunciation", "two-word-tag", "wrapped-headword",
         "no-tag", "no-tag-bare", "no-space"],
)
def test_part_of_speech(index, pos):
    assert list(parse_gcide(SAMPLE))[index].pos == pos


def test_definition_text_is_the_body_without_sources_or_etymology():
    entries = list(parse_gcide(SAMPLE))
    assert entries[0].definition == "1. made up for a test. Syn: fake"
    # The wrapped etymology belongs to the head; the next key appended by dictd is dropped.
    assert entries[1].definition == "A small thing written down in a test. [R.]"
    assert entries[2].definition == "To write a test. --Anon."
    assert entries[5].definition == "See {zork}. Unblorb Unquux"
    assert not entries[1].text.endswith("Blorb")


def test_documents_group_homographs():
    docs = list(gcide_documents("sample", SAMPLE))
    assert [d[1] for d in docs[1:3]] == ["blorb", "blorb"]
    assert len({d[0] for d in docs}) == len(docs)


def test_corpus_from_a_compressed_sample(tmp_path):
    path = tmp_path / "mini.txt.xz"
    with lzma.open(path, "wb") as handle:
        handle.write(SAMPLE.encode() + b"\nBad \\Bad\\ n.\n   caf\xe9 here.\n")
    corpus = load_gcide_corpus(path, 5, split=(1.0, 0.0, 0.0), cache=False)
    assert corpus.train.num_documents == 8
    assert corpus.vocabulary[:2] == ["<pad>", "<unk>"]
    assert corpus.train.keys[-1].startswith("Bad:")
    entries = read_gcide(path)
    assert entries[-1].definition == "caf\ufffd here."



@pytest.fixture
def gcide_path(shared_data_dir):
    path = shared_data_dir / "text" / "gcide.txt.xz"
    assert path.exists(), f"{path} is missing from the shared data"
    return path


@pytest.mark.data
def test_real_file_prefix(gcide_path):
    path = gcide_path
    with lzma.open(path, "rb") as handle:
        text = handle.read(3_000_000).decode("utf-8", "replace")
    entries = list(parse_gcide(text[: text.rindex("\n\n")]))
    assert 8000 < len(entries) < 12000
    by_head = {e.headword: e for e in entries}
    assert by_head["aardvark"].pos == "n."
    assert "edentate mammal" in by_head["aardvark"].definition
    assert by_head["Abaft"].pos in ("prep.", "adv.")
    assert not any(e.headword.startswith("00-database") for e in entries)


@pytest.mark.data
@pytest.mark.slow
def test_real_file_counts(gcide_path):
    """The figures of docs/token-corpora.md (GCIDE 0.48, Debian dict-gcide 0.48.5+nmu2)."""
    path = gcide_path
    entries = read_gcide(path)
    assert len(entries) == 126_224
    tags = collections.Counter(e.pos for e in entries if e.pos)
    assert sum(tags.values()) == 118_931
    assert tags["n."] == 64_559 and tags["a."] == 27_171 and tags["v. t."] == 11_235
    word = re.compile(WORD_PATTERN)
    counts = collections.Counter(t.lower() for e in entries for t in word.findall(e.text))
    assert (sum(counts.values()), len(counts)) == (5_373_770, 229_559)
