"""The crash tests' fork server (``forkserver.py``): a forked run behaves as ``python -m pytest`` would."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import forkserver

pytestmark = pytest.mark.skipif(not forkserver.available(), reason="needs os.fork")

PROBE = """
import json, os, sys, threading, time


def test_probe():
    def late():  # a non-daemon thread still running when pytest returns
        time.sleep(0.2)
        open("thread-done", "w").close()

    threading.Thread(target=late).start()
    with open("probe.json", "w") as fh:
        json.dump({"pid": os.getpid(), "cwd": os.getcwd(), "env": os.environ.get("PROBE_VALUE"),
                   "path0": sys.path[0]}, fh)
    print("probe ran")
    if os.environ.get("PROBE_SLEEP"):
        time.sleep(30)
"""


def test_a_forked_run_has_its_own_process_the_callers_folder_and_environment(forks, tmp_path):
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "PROBE_VALUE": "from the caller"}
    child = forks.start(
        ["-q", "-s", "-p", "no:cacheprovider"], cwd=tmp_path, env=env, stdout=tmp_path / "out", stderr=tmp_path / "err"
    )
    assert child.wait() == 0
    out, _ = child.output()
    assert "probe ran" in out and "1 passed" in out, out
    assert "Warning" not in out, out  # as a fresh interpreter's run: no warning of the preloading
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["pid"] == child.pid != os.getpid()
    assert probe == {"pid": child.pid, "cwd": str(tmp_path), "env": "from the caller", "path0": str(tmp_path)}
    assert (tmp_path / "thread-done").exists()  # joined before the process ended, as at any exit


def test_a_forked_run_killed_reports_the_signal_as_subprocess_does(forks, tmp_path):
    (tmp_path / "test_probe.py").write_text(PROBE)
    child = forks.start(
        ["-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={**os.environ, "PROBE_SLEEP": "1"},
        stdout=tmp_path / "out",
        stderr=tmp_path / "err",
    )
    while not (tmp_path / "probe.json").exists():
        assert child.poll() is None
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    child.send_signal(signal.SIGKILL)  # ended and reaped: nothing is sent to its pid again
    # and a run left running by a failed test does not stop the next one, and is killed when
    # the test ends (the forks fixture's end_all)
    left = forks.start(
        ["-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={**os.environ, "PROBE_SLEEP": "1"},
        stdout=tmp_path / "out-left",
        stderr=tmp_path / "err-left",
    )
    again = forks.start(
        ["-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=tmp_path / "out",
        stderr=tmp_path / "err",
    )
    assert again.wait() == 0 and again.pid != child.pid
    assert left.poll() is None
    forks.end_all()
    assert left.poll() == -signal.SIGKILL


TOGETHER = """
import os, pathlib, time


def test_together():
    pathlib.Path(os.environ["PROBE_NAME"]).touch()
    deadline = time.monotonic() + 30
    while not all(pathlib.Path(name).exists() for name in ("a", "b")):
        assert time.monotonic() < deadline, "the other run never started"
        time.sleep(0.01)
"""


def test_forked_runs_go_at_once(forks, tmp_path):
    """Two runs of one plan started together (the crash tests of runs at once): each waits for
    the other to have started, so one run at a time would never end."""
    (tmp_path / "test_together.py").write_text(TOGETHER)
    runs = [
        forks.start(
            ["-q", "-p", "no:cacheprovider"],
            cwd=tmp_path,
            env={**os.environ, "PROBE_NAME": name},
            stdout=tmp_path / f"out-{name}",
            stderr=tmp_path / f"err-{name}",
        )
        for name in ("a", "b")
    ]
    assert [run.wait(timeout=60) for run in runs] == [0, 0], [run.output() for run in runs]
    assert len({run.pid for run in runs}) == 2
