"""The memory XLA assigns to a compiled program, measured without running it.

`compiled_memory_bytes` compiles each configuration's function in a fresh CPU-only
child process (`keras_sce.app.runner`) with XLA's buffer-assignment dump on, and
reads the dump (`buffer_assignment_bytes`): the bytes of the program less those of
its inputs. A program too large to run can still be measured. Used through
`keras_sce.app.harness`.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from keras_sce.app import runner

XLA_PROBE = "xla_memory_probe"


def buffer_assignment_bytes(text: str) -> int:
    """XLA's "Total bytes used" of a buffer-assignment dump minus its parameters (inputs).

    Raises:
        ValueError: when `text` has no "Total bytes used" line.
    """
    import re

    total = re.search(r"^Total bytes used: (\d+)", text, re.M)
    if total is None:
        raise ValueError("no 'Total bytes used' line in the XLA buffer assignment dump")
    params = re.findall(r"^allocation \d+: size (\d+), parameter \d+", text, re.M)
    return int(total.group(1)) - sum(int(size) for size in params)


def _compile_each(build: Callable, configs: list, dump_dir: str, execute: bool) -> list:
    import tensorflow as tf

    out = []
    for config in configs:
        fn, specs, *make_inputs = build(config)

        @functools.wraps(fn)  # fn's signature (tf.function needs one without *args)...
        def xla_memory_probe(*args, fn=fn):
            return fn(*args)

        xla_memory_probe.__name__ = XLA_PROBE  # ...under a name the dump filter knows
        before = set(os.listdir(dump_dir))
        probe = tf.function(xla_memory_probe, jit_compile=True, autograph=False)
        if execute:  # compiles, then runs on build's inputs; the first output is kept
            value = float(tf.nest.flatten(probe(*make_inputs[0]()))[0])
        else:
            probe.experimental_get_compiler_ir(*specs)(stage="optimized_hlo")  # compile only
        new = [f for f in set(os.listdir(dump_dir)) - before
               if XLA_PROBE in f and f.endswith("buffer-assignment.txt")]
        if len(new) != 1:
            raise RuntimeError(f"expected one XLA buffer assignment for {config}, found {new}")
        num_bytes = buffer_assignment_bytes((Path(dump_dir) / new[0]).read_text())
        out.append((num_bytes, value) if execute else num_bytes)
    return out


def compiled_memory_bytes(build: Callable, configs: Sequence, *, execute: bool = False,
                          timeout: float | None = 1800) -> list:
    """Bytes XLA assigns to each configuration's compiled program (inputs excluded).

    One fresh CPU-only process compiles `fn` for each configuration, with
    `(fn, specs[, make_inputs]) = build(config)`: `specs` are the
    `tf.TensorSpec` of `fn`'s arguments (variables it reads are inputs too).

    Args:
        build: a module-level function (pickled by name).
        configs: its arguments (picklable).
        execute: also run each program once on `make_inputs()` (else it is only
            compiled, so a program too large to run can be measured).
        timeout: seconds for the whole child.

    Returns:
        One byte count per configuration; with `execute`, `(bytes, first output)`.

    Raises:
        RuntimeError: when the child fails (its cause and traceback in the message).
    """
    with tempfile.TemporaryDirectory() as dump_dir:
        env = {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3",
               "XLA_FLAGS": f"--xla_dump_to={dump_dir} --xla_dump_hlo_module_re=.*{XLA_PROBE}.*"}
        result = runner.run_in_child(_compile_each, build, list(configs), dump_dir, execute,
                                     name="xla memory", timeout=timeout, env=env)
    if not result.ok:
        raise RuntimeError(f"compiling for memory failed: {result.cause}\n{result.traceback}")
    return result.value
