"""keras_sce.app.runner: every way a child can end becomes a result; the parent never hangs."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from keras_sce.app import runner


def _square(x):
    return x * x


def _raise(message):
    raise ValueError(message)


def _signal(signum):
    os.kill(os.getpid(), signum)


def _exit_silently(code):
    os._exit(code)


def _print_noise_and_return():
    sys.stderr.write("WARNING: All log messages before absl::InitializeLog() is called are "
                     "written to STDERR\n")
    sys.stderr.write("I0000 00:00:1796156016.469757    6222 port.cc:153] oneDNN custom ops\n")
    sys.stderr.write("a real warning\n")
    sys.stderr.flush()
    return "done"


def _unpicklable():
    return lambda: None


@pytest.mark.parametrize(
    ("fn", "args", "cause"),
    [
        pytest.param(_raise, ("bad value",), "exception: ValueError: bad value", id="exception"),
        pytest.param(
            _signal, (signal.SIGKILL,), "killed by SIGKILL (likely out of memory)", id="sigkill"
        ),
        pytest.param(
            _signal, (signal.SIGSEGV,), "killed by SIGSEGV (segmentation fault)", id="segfault"
        ),
        pytest.param(_exit_silently, (3,), "exited with status 3 without a result", id="exit-3"),
        pytest.param(_unpicklable, (), "result not sent: ", id="unpicklable-result"),
    ],
)
def test_a_dead_child_is_a_result_with_its_cause(fn, args, cause):
    result = runner.run_in_child(fn, *args, name="job", poll_seconds=0.1)
    assert not result.ok
    assert result.value is None
    assert result.cause.startswith(cause)
    if fn is _raise:
        assert "Traceback" in result.traceback and "ValueError: bad value" in result.traceback


def test_a_child_returns_its_value():
    result = runner.run_in_child(_square, 7, name="square")
    assert result.ok and result.value == 49 and result.cause is None
    assert result.exitcode == 0


def test_is_startup_noise():
    assert runner.is_startup_noise(
        "I0000 00:00:1796156016.469996    6222 cudart_stub.cc:31] Could not find cuda drivers"
    )
    assert runner.is_startup_noise(
        "E0000 00:00:1796156018.707546    6222 cuda_platform.cc:52] failed call to cuInit: X"
    )
    assert not runner.is_startup_noise("E0000 00:00:1.5    6222 bfc_allocator.cc:1] OOM")
    assert not runner.is_startup_noise("Traceback (most recent call last):")


def test_a_hanging_child_is_killed_after_the_timeout():
    result = runner.run_in_child(_signal, signal.SIGSTOP, name="stopped", timeout=1.0,
                                 poll_seconds=0.1)
    assert result.cause == "timed out after 1 s"


def test_startup_noise_is_dropped_and_the_rest_forwarded(capfd):
    result = runner.run_in_child(_print_noise_and_return, name="noisy")
    assert result.value == "done"
    err = capfd.readouterr().err
    assert "a real warning" in err
    assert "absl::InitializeLog" not in err and "oneDNN" not in err


_RACE = """
import concurrent.futures, multiprocessing, os, sys, time
from keras_sce.app import runner

def say(word):
    sys.stderr.write(f"child says {word}\\n")
    return word

if __name__ == "__main__":
    # A slow start widens the moment fd 2 is swapped, so the threads' starts overlap.
    process = multiprocessing.get_context("spawn").Process
    start = process.start
    process.start = lambda self: (time.sleep(0.3), start(self))[1]
    before = os.fstat(2)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        values = list(pool.map(lambda w: runner.run_in_child(say, w, name=w).value, "abcd"))
    after = os.fstat(2)
    print(values, (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino))
"""


def test_children_started_from_threads_at_once_leave_the_parent_stderr_alone(tmp_path):
    # Each start swaps the parent's fd 2 for a moment; unserialised, one thread could
    # keep another child's pipe as "the" stderr, whose forwarder then read back its own
    # lines forever (a benchmark's parent burnt a core so). In a fresh interpreter:
    # pytest's own capture also swaps fd 2.
    import subprocess

    script = tmp_path / "race.py"
    script.write_text(_RACE)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": root})
    assert done.stdout.strip() == "['a', 'b', 'c', 'd'] True", done.stderr[-2000:]
    said = sorted(line for line in done.stderr.splitlines() if line.startswith("child says"))
    assert said == [f"child says {w}" for w in "abcd"]


@pytest.mark.parametrize(
    ("exitcode", "text"),
    [
        pytest.param(-9, "killed by SIGKILL (likely out of memory)", id="sigkill"),
        pytest.param(-11, "killed by SIGSEGV (segmentation fault)", id="sigsegv"),
        pytest.param(-6, "killed by SIGABRT", id="sigabrt"),
        pytest.param(1, "exited with status 1 without a result", id="status-1"),
        pytest.param(None, "ended without a result (exit status unknown)", id="unknown"),
    ],
)
def test_describe_exit(exitcode, text):
    assert runner.describe_exit(exitcode) == text


@pytest.mark.parametrize("kind", ["sigkill", "raise", "exit"])
def test_fault_injection_only_hits_the_named_job(monkeypatch, kind):
    monkeypatch.setenv(runner.FAULT_ENV, f"other={kind}")
    runner.inject_fault_if_requested("mine")  # not named: nothing happens


def test_fault_injection_refuses_an_unknown_kind(monkeypatch):
    monkeypatch.setenv(runner.FAULT_ENV, "mine=explode")
    with pytest.raises(ValueError, match="unknown kind 'explode'"):
        runner.inject_fault_if_requested("mine")
