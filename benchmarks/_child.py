"""One child-process convention for the benchmark scripts.

A benchmark runs each configuration in a fresh Python process (so its peak memory
is its own). The child prints its result as one ``RESULT <json>`` line on stdout
(:func:`emit`); the parent runs it to completion and reads that line back
(:func:`run_child`), or raises naming the configuration with the tail of its
stderr. ``subprocess.run`` waits for the child's exit, so a crash or an
out-of-memory kill is an error, never a hang. (The main job uses the richer
``keras_sce.app.runner``, which turns such deaths into result rows.)
"""

from __future__ import annotations

import json
import subprocess

PREFIX = "RESULT "


def emit(result) -> None:
    """Prints ``result`` as the child's ``RESULT`` line."""
    print(PREFIX + json.dumps(result), flush=True)


def parse_result(stdout: str):
    """The last ``RESULT`` line of ``stdout`` as an object, or None without one."""
    lines = [line for line in stdout.splitlines() if line.startswith(PREFIX)]
    return json.loads(lines[-1][len(PREFIX):]) if lines else None


def run_child(command, what: str, *, env=None, timeout=None, tail: int = 3000):
    """Runs ``command`` and returns its ``RESULT``; raises ``RuntimeError`` otherwise."""
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    result = parse_result(done.stdout)
    if done.returncode != 0 or result is None:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-tail:]}")
    return result
