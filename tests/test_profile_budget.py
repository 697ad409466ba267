"""benchmarks/profile_budget.py: each py-spy sample goes to the part the table in benchmarks/HISTORY.md names."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from profile_budget import BARE_PARTS, BARE_REST, PARTS, PYTEST, REST, SENDING, budget  # noqa: E402

IMPORT, VCRPY, RECORDING, DRAFT, REQUESTS, MAIN = (part for part, _, _ in PARTS)

#: py-spy 0.4 names methods ``Class.method`` on Python 3.11 and later, ``method`` before
RAW = """\
thread (7): MainThread;<module> (pytest/__main__.py:9);{pytest_runtestloop} (_pytest/main.py:380) 40
thread (9): batchgen-preload;{Thread.run} (threading.py:982);{Preloader.run_here} (pytest_batchgen/preload.py:90);<module> (anthropic/__init__.py:5) 25
thread (10): batchgen-import;{Thread.run} (threading.py:982);_import_quietly (pytest_batchgen/preload.py:110) 3
thread (8): batchgen-dispatch;{Handle._run} (asyncio/events.py:80);{AsyncMessages.create} (anthropic/resources/messages/messages.py:900);{_RecordingTransport.handle_async_request} (pytest_batchgen/recording.py:300) 11
thread (8): batchgen-dispatch;{Dispatcher._generate} (pytest_batchgen/dispatch.py:336);{ModelClient.complete} (pytest_batchgen/client.py:200);{Recorder.commit} (pytest_batchgen/recording.py:250);{Recorder.record} (pytest_batchgen/recording.py:260) 6
thread (8): batchgen-dispatch;{Dispatcher._generate} (pytest_batchgen/dispatch.py:336);write_draft (pytest_batchgen/dispatch.py:51) 4
thread (8): batchgen-dispatch;{BaseEventLoop._run_once} (asyncio/base_events.py:1922) 3
thread (7): MainThread 1
thread (7);_run_finalizers (multiprocessing/util.py:300) 2
thread (12);{Thread.run} (threading.py:982);{Other._run} (elsewhere/preload.py:3) 1
"""


def qualified(name: str) -> str:
    return name


def bare_name(name: str) -> str:
    return name.rsplit(".", 1)[-1]


@pytest.mark.parametrize("style", [qualified, bare_name], ids=["python-3.11", "python-3.10"])
def test_each_sample_goes_to_its_part_and_none_is_lost(tmp_path: Path, style) -> None:
    raw = tmp_path / "samples.raw"
    raw.write_text(re.sub(r"\{([^}]+)\}", lambda m: style(m[1]), RAW))
    counts = budget(raw)
    # a function of the same name in another file (Other._run) is not the preloader's
    parts = {MAIN: 43, IMPORT: 25, VCRPY: 3, REQUESTS: 11, RECORDING: 6, DRAFT: 4, REST: 4}
    assert counts == {(PYTEST, part): n for part, n in parts.items()}
    # the recorder's frames win over the request under which they could run
    raw.write_text(
        "thread (8): batchgen-dispatch;create (anthropic/resources/messages/messages.py:1);"
        "record (pytest_batchgen/recording.py:2) 5\n"
    )
    assert budget(raw) == {(PYTEST, RECORDING): 5}


def test_with_subprocesses_each_sample_goes_to_its_process(tmp_path: Path) -> None:
    """``py-spy --subprocesses`` names the processes first; the forked child is the nested one,
    and its main thread (also named MainThread) is a main thread of its own."""
    parent, child = 'process 10:"python -m pytest"', 'process 11:"python -m pytest"'
    raw = tmp_path / "samples.raw"
    raw.write_text(
        f"{parent};thread (7): MainThread;pytest_runtestloop (_pytest/main.py:380) 40\n"
        f"{parent};{child};thread (17): MainThread;_generate (pytest_batchgen/sender.py:9) 2\n"
        f"{parent};{child};thread (17): MainThread;run_here (pytest_batchgen/preload.py:90) 25\n"
        f"{parent};{child};thread (18): batchgen-dispatch;create (anthropic/resources/messages/messages.py:1) 11\n"
        f"{parent};thread (8): batchgen-sender-results;_read (pytest_batchgen/sender.py:5) 3\n"
    )
    assert budget(raw) == {
        (PYTEST, MAIN): 40,
        (PYTEST, REST): 3,
        (SENDING, MAIN): 2,
        (SENDING, IMPORT): 25,
        (SENDING, REQUESTS): 11,
    }


def test_the_bare_scripts_import_is_told_from_its_requests(tmp_path: Path) -> None:
    raw = tmp_path / "bare.raw"
    raw.write_text(
        "thread (5): MainThread;<module> (bare.py:3);_find_and_load (<frozen importlib._bootstrap>:1178) 30\n"
        "thread (5): MainThread;<module> (bare.py:20);run (asyncio/runners.py:190) 12\n"
    )
    assert budget(raw, BARE_PARTS, BARE_REST) == {(PYTEST, BARE_PARTS[0][0]): 30, (PYTEST, BARE_REST): 12}
