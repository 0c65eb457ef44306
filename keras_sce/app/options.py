"""Command-line option types and checks: one rule, one place, one clear message.

Each `type=` below refuses a bad value while argparse parses, so the message names
the option (`argument --lr: must be a finite number > 0, got 'nan'`). Rules that
involve two options or the data (heads divide the width, negatives fit in the
catalogue) live in `check_combinations` and `check_against_data`, which raise
`UsageError` with the option names in the message.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib

LOSSES = ("sce", "ce", "gbce", "sampled_softmax", "bce")


class UsageError(Exception):
    """A bad option, data file or output folder: shown as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `keras-sce: error: ...`, exit 2."""

    def error(self, message):
        self.exit(2, f"keras-sce: error: {message} (see '{self.prog} --help')\n")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def int_at_least(low: int):
    """argparse type: an integer `>= low`."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def finite_float(text: str) -> float:
    """argparse type: a finite float (refuses nan and inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float `> 0`."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def unit_interval_float(text: str) -> float:
    """argparse type: a float in `[0, 1)` (a dropout rate)."""
    value = finite_float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def logit_offset(text: str):
    """argparse type: `balanced` or a finite float."""
    if text == "balanced":
        return text
    try:
        return finite_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'balanced' or a finite number, got {text!r}"
        ) from None


def seed(text: str) -> int:
    """argparse type: an integer in `[0, 2**31)`."""
    value = _integer(text)
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**31), got {text!r}")
    return value


def loss_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated loss names, known, at least one, no repeats."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names from {', '.join(LOSSES)}, got {text!r}"
        )
    unknown = [n for n in names if n not in LOSSES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown loss {unknown[0]!r}; choose from {', '.join(LOSSES)}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{repeated[0]!r} is given twice")
    return tuple(names)


def delimiter(text: str) -> str:
    """argparse type: one character, or `\\t` for a tab."""
    value = "\t" if text in ("\\t", "tab") else text
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"must be one character (or '\\t'), got {text!r}")
    return value


def column(text: str) -> str:
    """argparse type: a non-empty column name."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a non-empty column name")
    return text


def check_combinations(args) -> None:
    """Rules between options (before any data is read).

    Raises:
        UsageError: naming the options and what is allowed.
    """
    if args.hidden_dim % args.heads:
        raise UsageError(
            f"--heads {args.heads} must divide --hidden-dim {args.hidden_dim} "
            "(each head gets hidden-dim / heads dimensions)"
        )
    if args.data is None and args.format != "auto":
        raise UsageError(f"--format {args.format} needs --data PATH")


def check_data_path(path: str | None) -> None:
    """`--data`: an existing readable file (or a MovieLens folder)."""
    if path is None:
        return
    if not os.path.exists(path):
        raise UsageError(f"--data {path}: no such file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"--data {path}: not readable")


def prepare_output_folder(path: str) -> pathlib.Path:
    """`--out`: creates the folder if needed and checks that files can be written there."""
    out = pathlib.Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {path}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".keras-sce-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--out {path}: cannot write there ({error.strerror or error})") from None
    return out


def check_against_data(args, num_items: int, num_users: int) -> None:
    """Rules that need the catalogue size (`num_items` counts the padding row).

    Raises:
        UsageError: naming the option and the largest allowed value.
    """
    real = num_items - 1
    if real < 2:
        raise UsageError(f"the data has {real} item(s); training needs at least 2")
    if set(args.losses) & {"gbce", "sampled_softmax"} and args.num_negatives > real:
        raise UsageError(
            f"--num-negatives {args.num_negatives} exceeds the catalogue: "
            f"the data has {real:,} items, so at most {real:,}"
        )
    if "sce" in args.losses:
        if args.bucket_size_y > real:
            raise UsageError(
                f"--bucket-size-y {args.bucket_size_y} exceeds the catalogue: "
                f"the data has {real:,} items, so at most {real:,}"
            )
    if num_users < 1:
        raise UsageError("the data has no user with enough interactions to train")
