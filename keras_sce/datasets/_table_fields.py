"""The fields of an interaction table's rows: separator, columns, numbers, timestamps.

The helpers of `keras_sce.datasets.tabular.load_interactions_csv`; their errors name
the file and, where one is at fault, the line.
"""

from __future__ import annotations

import datetime
import math


def infer_delimiter(path, first_line):
    """A tab for `.tsv` files, else the commonest of `,` tab `;` `|` in `first_line`."""
    lowered = path.lower()
    if lowered.endswith(".tsv") or lowered.endswith(".tsv.gz"):
        return "\t"
    counts = {d: first_line.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


class Clock:
    """Reads timestamps: numbers, or ISO-8601 dates / date-times (never both in a file)."""

    def __init__(self, path):
        self.path = path
        self.first = {}  # kind -> (line, text) of its first occurrence

    def read(self, text, line_no):
        try:
            value, kind = float(text), "number"
        except ValueError:
            value, kind = self._iso(text, line_no), "ISO-8601 date"
        if not math.isfinite(value):
            raise ValueError(f"{self.path}, line {line_no}: timestamp {text!r} is not finite.")
        self.first.setdefault(kind, (line_no, text))
        if len(self.first) > 1:
            (a, ta), (b, tb) = self.first["number"], self.first["ISO-8601 date"]
            raise ValueError(
                f"{self.path}, line {line_no}: the time column mixes numbers (line {a}: "
                f"{ta!r}) and ISO-8601 dates (line {b}: {tb!r}); use one kind."
            )
        return value

    def _iso(self, text, line_no):
        # Python 3.10's fromisoformat does not read the "Z" (UTC) suffix.
        spelled = text[:-1] + "+00:00" if text[-1:] in "Zz" and len(text) > 10 else text
        try:
            moment = datetime.datetime.fromisoformat(spelled)
        except ValueError:
            raise ValueError(
                f"{self.path}, line {line_no}: timestamp {text!r} is neither a number nor "
                "an ISO-8601 date/time (e.g. 1616320800, 2021-03-21, 2021-03-21T10:00:00Z)."
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return moment.timestamp()


def number(text, path, line_no, what):
    """`text` as a finite float; `what` names the field in the error."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{path}, line {line_no}: {what} {text!r} is not a number.")
    return value


def column_index(header_row, path, line_no, delimiter, *columns):
    """The 0-based index of each of `columns` (a name looked up in `header_row`, an
    index, or None kept as None)."""
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
                raise ValueError(
                    f"{path}, line {line_no}: no column {column!r} in header {names} "
                    f"(fields separated by {delimiter!r})."
                )
            out.append(names.index(column))
    return out
