"""Result records: a CSV schema whose columns are only ever added, Markdown and PNG.

Part of `keras_sce.app.harness` (use it from there).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class CsvSchema:
    """The columns of one results CSV: a stable core and columns added later.

    A file whose header lacks a core column is another file and is refused; one that
    lacks an added column is rewritten once with that column (empty in old rows)
    appended to its header; columns a file has beyond the schema are kept (empty in
    new rows). Column names are never changed.

    Attributes:
        name: the schema's name in messages.
        fields: the core columns, in order.
        added: columns added since (after the core in a new file).
    """

    name: str
    fields: tuple
    added: tuple = ()

    @property
    def columns(self) -> tuple:
        return tuple(self.fields) + tuple(self.added)

    def check_row(self, row: dict) -> None:
        """Raises `ValueError` naming missing and unknown columns of `row`."""
        missing = [c for c in self.columns if c not in row]
        unknown = [k for k in row if k not in self.columns]
        if missing or unknown:
            raise ValueError(f"{self.name} row: missing columns {missing}, unknown {unknown}")

    def header_of(self, path) -> list[str] | None:
        """The header of an existing file in this schema (None: no file); refuses others."""
        path = Path(path)
        if not path.exists() or not path.stat().st_size:
            return None
        with open(path, newline="") as handle:
            header = next(csv.reader(handle), [])
        lacking = [c for c in self.fields if c not in header]
        if lacking:
            raise ValueError(f"{path} has another header ({header[:4]}...; lacks {lacking[:3]}); "
                             "write to a new file")
        return header

    def append(self, path, row: dict) -> None:
        """Appends one row (header written for a new file, widened for an old one)."""
        self.check_row(row)
        header = self.header_of(path)
        if header is None or any(c not in header for c in self.columns):
            rows = self.read(path) if header is not None else []
            self.write(path, [*rows, row], header=header)
            return
        with open(path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=header, restval="").writerow(row)

    def read(self, path) -> list[dict]:
        """All rows of `path` as dicts of strings (columns it lacks are empty)."""
        with open(path, newline="") as handle:
            return [{**dict.fromkeys(self.columns, ""), **r} for r in csv.DictReader(handle)]

    def write(self, path, rows, header=None) -> None:
        """Writes `rows` as the whole file, atomically (a reader never sees half a file).

        The header is `header` (an existing file's) widened by the schema's columns it
        lacks, or the schema's columns.
        """
        columns = list(header or ())
        columns += [c for c in self.columns if c not in columns]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="",
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)


# ------------------------------------------------------------------ Markdown and PNG


def _format(value, fmt: str) -> str:
    if value is None or value == "":
        return "-"
    try:
        if not fmt.endswith("s") and isinstance(value, str):
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            return "-"
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def markdown_table(rows, columns) -> str:
    """A Markdown table; `columns` are `(key, title, format)`.

    A format is a Python format spec for numbers (right-aligned), `"s"` for text
    (left-aligned) or `">s"` for right-aligned text; empty, None and non-finite
    cells show `-`.
    """
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "|".join("---" if fmt == "s" else "---:" for _, _, fmt in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(k), f) for k, _, f in columns) + " |")
    return "\n".join(lines)


def plot_panels(panels, path, title: str = "", ncols: int | None = None) -> bool:
    """Writes a PNG of one or more panels; False (and no file) without matplotlib.

    Args:
        panels: dicts with `series` (`{label: (xs, ys)}` or `(xs, ys, style)`, a
            Matplotlib format such as `"C3x:"`) and/or `bars` (`(names, values)` or
            `(names, values, errors)`, horizontal), and optional `xlabel`,
            `ylabel`, `title`, `xlog`, `ylog`.
        path: the PNG file.
        title: the figure's title.
        ncols: panels per row (default: all in one row).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ncols = ncols or len(panels)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.8 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        if "bars" in panel:  # horizontal bars: (names, values[, errors]), first on top
            names, values, *errors = panel["bars"]
            ax.barh(list(names), list(values), xerr=errors[0] if errors else None, capsize=4)
            ax.invert_yaxis()
        for label, series in panel.get("series", {}).items():
            xs, ys, style = (*series, "o-")[:3]
            ax.plot(xs, ys, style, label=label)
        ax.set(xlabel=panel.get("xlabel", ""), ylabel=panel.get("ylabel", ""),
               title=panel.get("title", ""))
        if panel.get("xlog"):
            ax.set_xscale("log")
        if panel.get("ylog"):
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if panel.get("series"):
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
