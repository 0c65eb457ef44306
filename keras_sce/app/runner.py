"""Run a function in a fresh child process; any way the child dies becomes a result.

`run_in_child` starts a *spawned* process (a fresh interpreter: its peak memory is
that job's own, and no TensorFlow state leaks between jobs), sends it the function
and its arguments, and waits for either the result on a pipe or the death of the
process. A child that raises, is killed by a signal (out-of-memory kills are SIGKILL),
segfaults, or exits without a result gives a `ChildResult` whose `cause` says so;
the parent never blocks on a dead child. Results are plain picklable values.

TensorFlow prints start-up lines on stderr from C++ (oneDNN, CUDA probing, absl)
while its library loads, before any setting can stop them, and a spawned child
imports it while unpickling its job. So `quiet_tensorflow_environment` sets the
variables that silence the later lines (children inherit them), and the child's
stderr is a pipe that the parent forwards line by line, minus those start-up lines
(`is_startup_noise`); `TF_CPP_MIN_LOG_LEVEL=0` forwards everything.

Example:

>>> from keras_sce.app.runner import run_in_child
>>> result = run_in_child(pow, 2, 10, name="pow")
>>> result.ok, result.value
(True, 1024)
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import sys
import threading
import time
import traceback as traceback_module
from collections.abc import Callable
from typing import Any

from keras_sce.app import memory

# Test hook: "name=kind,name=kind" makes the job `name` die mid-training (see
# `inject_fault_if_requested`); kinds: sigkill, sigsegv, raise, exit.
FAULT_ENV = "KERAS_SCE_INJECT_FAULT"
FAULT_KINDS = ("sigkill", "sigsegv", "raise", "exit")


@dataclasses.dataclass
class ChildResult:
    """What came back from a child: its value, or why there is none.

    Attributes:
        name: the job's name (for messages).
        value: what the function returned (None unless `ok`).
        cause: None on success, else one line: `exception: ValueError: ...`,
            `killed by SIGKILL (likely out of memory)`, `timed out after 60 s`...
        traceback: the child's traceback text when it raised.
        exitcode: the process exit code (negative: killed by that signal).
        peak_rss_bytes: the child's peak RSS as last seen from the parent (Linux),
            a lower bound when the child died between two looks.
        wall_seconds: wall time from start to end.
    """

    name: str
    value: Any = None
    cause: str | None = None
    traceback: str | None = None
    exitcode: int | None = None
    peak_rss_bytes: int | None = None
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.cause is None


def describe_exit(exitcode: int | None) -> str:
    """One line for a process that ended without sending a result."""
    if exitcode is None:
        return "ended without a result (exit status unknown)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            return f"killed by {name} (likely out of memory)"
        if -exitcode == signal.SIGSEGV:
            return f"killed by {name} (segmentation fault)"
        return f"killed by {name}"
    return f"exited with status {exitcode} without a result"


def quiet_tensorflow_environment() -> None:
    """Sets the variables that keep TensorFlow's C++ start-up logging off the terminal.

    Only defaults: a variable the user set is kept (`TF_CPP_MIN_LOG_LEVEL=0` shows
    everything again). Call before TensorFlow is imported and before spawning.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # also the "failed call to cuInit" line
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "  # absl INFO lines
    r"|E\d{4} [^]]*cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|To enable the following instructions: .* rebuild TensorFlow"
)


def is_startup_noise(line: str) -> bool:
    """True for TensorFlow's C++ start-up chatter (absl INFO, cuInit probe, CPU flags)."""
    return _NOISE.match(line) is not None


def _forward_stderr(fd: int, keep_all: bool) -> None:
    with os.fdopen(fd, "r", errors="replace") as lines:
        for line in lines:
            if keep_all or not is_startup_noise(line):
                sys.stderr.write(line)
                sys.stderr.flush()


# Starting a child swaps the parent's file descriptor 2 and environment for a moment:
# two threads doing it at once would leave fd 2 on one child's pipe, whose forwarder
# then reads back its own writes forever. One start at a time.
_SPAWN_LOCK = threading.Lock()


def _start_with_filtered_stderr(proc) -> threading.Thread:
    """Starts `proc` with its stderr on a pipe, forwarded by a thread; returns the thread.

    Call with `_SPAWN_LOCK` held (fd 2 is redirected while the child starts).
    """
    read_fd, write_fd = os.pipe()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(write_fd, 2)  # the child inherits fd 2 at spawn
        proc.start()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_fd)
    keep_all = os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"
    thread = threading.Thread(target=_forward_stderr, args=(read_fd, keep_all), daemon=True)
    thread.start()
    return thread


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 muted (absl writes there at load time)."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    quiet_tensorflow_environment()
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def inject_fault_if_requested(name: str) -> None:
    """Test hook: dies as `$KERAS_SCE_INJECT_FAULT` asks for job `name`, if it does."""
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, spec.split(",")):
        job, _, kind = item.partition("=")
        if job != name:
            continue
        if kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "sigsegv":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif kind == "raise":
            raise RuntimeError(f"fault injected by {FAULT_ENV} for {name!r}")
        elif kind == "exit":
            os._exit(3)
        else:
            raise ValueError(f"{FAULT_ENV}: unknown kind {kind!r}; choose from {FAULT_KINDS}.")


def _child_main(writer, fn, args, kwargs) -> None:
    import_tensorflow_quietly()
    try:
        message = ("ok", fn(*args, **kwargs), None)
    except BaseException as error:  # noqa: B036 - everything goes back to the parent
        message = ("error", f"exception: {type(error).__name__}: {error}", _format_tb())
    try:
        writer.send(message)
    except Exception as error:  # e.g. an unpicklable result
        writer.send(("error", f"result not sent: {type(error).__name__}: {error}", None))
    writer.close()


def _format_tb() -> str:
    return "".join(traceback_module.format_exc())


def _stop(proc, grace: float = 5.0) -> None:
    """Ends the child: terminate, then kill if it lingers."""
    if proc.is_alive():
        proc.terminate()
        proc.join(grace)
    if proc.is_alive():
        proc.kill()
        proc.join()


@contextlib.contextmanager
def _environment(overrides: dict):
    """Sets `overrides` in `os.environ` (a spawned child copies it) and restores it."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update({key: str(value) for key, value in overrides.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_in_child(
    fn: Callable,
    *args,
    name: str | None = None,
    timeout: float | None = None,
    poll_seconds: float = 0.5,
    env: dict | None = None,
    **kwargs,
) -> ChildResult:
    """Runs `fn(*args, **kwargs)` in a spawned process and returns what happened.

    Args:
        fn: a module-level function (it is pickled by name).
        *args: positional arguments (picklable).
        name: the job's name in the result (default: `fn.__name__`).
        timeout: seconds after which the child is killed (None: no limit).
        poll_seconds: how often the parent looks at the child while waiting.
        env: environment variables set for the child only (e.g. `XLA_FLAGS`, read
            before the child imports anything).
        **kwargs: keyword arguments (picklable).

    Returns:
        A `ChildResult`; `ok` is True when `fn` returned.

    Raises:
        KeyboardInterrupt: after stopping the child, when the parent is interrupted.
    """
    quiet_tensorflow_environment()
    name = name or getattr(fn, "__name__", "job")
    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(writer, fn, args, kwargs), name=name)
    start = time.perf_counter()
    with _SPAWN_LOCK, _environment(env or {}):
        forwarder = _start_with_filtered_stderr(proc)
    writer.close()  # the parent's copy: EOF on the reader once the child is gone
    result = ChildResult(name)
    message = None
    try:
        while message is None:
            ready = multiprocessing.connection.wait([reader, proc.sentinel], poll_seconds)
            result.peak_rss_bytes = memory.child_peak_rss_bytes(proc.pid) or result.peak_rss_bytes
            if reader in ready or reader.poll():
                try:
                    message = reader.recv()
                except (EOFError, OSError):
                    break  # died without (a whole) message
            elif not proc.is_alive():
                break
            elif timeout is not None and time.perf_counter() - start > timeout:
                _stop(proc)
                result.cause = f"timed out after {timeout:g} s"
                break
        proc.join(30.0)  # reap it (a result is in hand, or the pipe is closed)
        _stop(proc)
    except BaseException:
        _stop(proc)
        raise
    finally:
        reader.close()
        forwarder.join(5.0)  # the child's last lines (a traceback) before the result
    result.exitcode = proc.exitcode
    result.wall_seconds = time.perf_counter() - start
    if message is None:
        result.cause = result.cause or describe_exit(proc.exitcode)
    elif message[0] == "ok":
        result.value = message[1]
    else:
        result.cause, result.traceback = message[1], message[2]
    return result
