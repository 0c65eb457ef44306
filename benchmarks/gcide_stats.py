"""GCIDE counts: entries, part-of-speech tags, word tokens and the corpus splits.

Prints what docs/token-corpora.md reports, and times a first (building) and a second
(cached) load of the word-level corpus. Usage (what produced the figures there)::

    python benchmarks/gcide_stats.py ../shared/data/text/gcide.txt.xz --max-types 100000
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from keras_sce.datasets.gcide import load_gcide_corpus, parse_gcide  # noqa: E402
from keras_sce.datasets.token_sources import read_file_bytes  # noqa: E402
from keras_sce.datasets.tokens import WORD_PATTERN  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path", help="gcide.txt.xz")
    parser.add_argument("--max-types", type=int, default=100_000)
    parser.add_argument("--cache-dir", default=None,
                        help="default: a fresh temporary folder, so the first load builds")
    args = parser.parse_args(argv)
    text = read_file_bytes(args.path).decode("utf-8", "replace")  # as read_gcide does
    entries = list(parse_gcide(text))
    tags = collections.Counter(e.pos for e in entries if e.pos)
    print(f"entries: {len(entries):,}; with a part-of-speech tag: {sum(tags.values()):,}")
    print("top tags: " + ", ".join(f"{t} {n:,}" for t, n in tags.most_common(8)))
    # The narrower reading "a tag right after the first form, no pronunciation between".
    direct = re.compile(r"^[^\\]*\\[^\\]*\\\s*,?\s*[a-z]{1,7}\.")
    narrow = sum(1 for e in entries if direct.match(e.text))
    print(f"tag right after the first form (no pronunciation between): {narrow:,}")
    print(f"'[1913 Webster]' source markers: {text.count('[1913 Webster]'):,}")
    word = re.compile(WORD_PATTERN)
    for what, texts in (("whole file", [text]), ("entries", [e.text for e in entries])):
        counts = collections.Counter(t.lower() for s in texts for t in word.findall(s))
        print(f"word tokens ({what}): {sum(counts.values()):,}; lower-cased types: "
              f"{len(counts):,}")
    with tempfile.TemporaryDirectory() as scratch:
        for attempt in ("first load", "second load"):
            start = time.perf_counter()
            corpus = load_gcide_corpus(args.path, args.max_types,
                                       cache_dir=args.cache_dir or scratch)
            print(f"{attempt}: {time.perf_counter() - start:.1f} s")
    print(corpus.report_table())
    unigram_baseline(corpus)


def unigram_baseline(corpus) -> None:
    """Add-one unigram perplexity of the held-out splits, closed form and streamed."""
    import numpy as np
    import tensorflow as tf

    from keras_sce.evaluation import evaluate_next_token

    log_p = np.log(corpus.counts + 1.0)  # padding row: never a candidate
    norm = np.log(np.exp(log_p[1:]).sum())
    for name in ("validation", "test"):
        split = corpus.splits[name]
        is_target = np.ones(split.num_tokens, bool)
        is_target[split.offsets[:-1][np.diff(split.offsets) > 0]] = False
        cross_entropy = -np.mean(log_p[split.ids[is_target]] - norm)
        print(f"add-one unigram perplexity, {name}: {np.exp(cross_entropy):,.1f}")
    # The streamed evaluator, on a slice of the test windows, against the closed form.
    data = corpus.test.dataset(128, 32).take(20)
    windows = np.concatenate([batch[1].numpy() for batch in data])
    targets = windows[windows != 0]
    want = np.exp(-np.mean(log_p[targets] - norm))
    got = evaluate_next_token(lambda x: tf.ones(tf.concat([tf.shape(x), [1]], 0)), data,
                              log_p[:, None].astype("float32"))
    print(f"streamed over {got['tokens']:,} test positions: perplexity {got['perplexity']:,.2f}"
          f" (closed form {want:,.2f}), acc@1 {got['acc@1']:.4f}, acc@10 {got['acc@10']:.4f}")


if __name__ == "__main__":
    main()
