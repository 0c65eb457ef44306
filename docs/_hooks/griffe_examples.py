"""Griffe extension: docstring examples written in the Keras manner render as code.

Google style puts a section's content under an indented header (``Examples:`` and
then indented ``>>>`` lines). Many docstrings follow Keras instead: ``Example:``, a
blank line, and the example at the header's own indentation. Griffe then sees an empty
section and Markdown reads the ``>>>`` lines as nested quotes. This extension indents
such a block under an ``Examples:`` header before the docstring is parsed, in the
API pages only: the sources are not changed.
"""

from __future__ import annotations

import re

import griffe

HEADER = re.compile(r"^(\s*)Examples?:\s*$")
NEXT_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")


def indent_examples(text: str) -> str:
    """``text`` with each flush ``Example:`` block indented under ``Examples:``."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        match = HEADER.match(lines[i])
        j = i + 1
        while match and j < len(lines) and not lines[j].strip():
            j += 1
        if not match or j == len(lines) or lines[j][len(match.group(1)):][:1] == " ":
            out.append(lines[i])  # not a header, or already Google style
            i += 1
            continue
        indent = match.group(1)
        out.append(f"{indent}Examples:")
        block = []
        while j < len(lines):
            body = lines[j][len(indent):] if lines[j].startswith(indent) else lines[j]
            if NEXT_SECTION.match(body):
                break
            block.append(lines[j])
            j += 1
        tail = []
        while block and not block[-1].strip():
            tail.insert(0, block.pop())
        out.extend(f"    {line}" if line.strip() else "" for line in block)
        out.extend(tail)
        i = j
    return "\n".join(out)


class IndentExamples(griffe.Extension):
    """Applies `indent_examples` to every docstring griffe reads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = indent_examples(obj.docstring.value)
