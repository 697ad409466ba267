"""benchmarks/profile_budget.py: each py-spy sample goes to the part the README's table names."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from profile_budget import PARTS, REST, budget  # noqa: E402

IMPORT, RECORDING, DRAFT, REQUESTS, MAIN = (part for part, _ in PARTS)

RAW = """\
thread (7): MainThread;<module> (pytest/__main__.py:9);pytest_runtestloop (_pytest/main.py:380) 40
thread (9): batchgen-preload;Thread.run (threading.py:982);Preloader._run (pytest_batchgen/preload.py:90);<module> (anthropic/__init__.py:5) 25
thread (8): batchgen-dispatch;Handle._run (asyncio/events.py:80);AsyncMessages.create (anthropic/messages.py:900);_RecordingTransport.handle_async_request (pytest_batchgen/recording.py:300) 11
thread (8): batchgen-dispatch;Dispatcher._generate (pytest_batchgen/dispatch.py:336);ModelClient.complete (pytest_batchgen/client.py:200);Recorder.commit (pytest_batchgen/recording.py:250);Recorder.record (pytest_batchgen/recording.py:260) 6
thread (8): batchgen-dispatch;Dispatcher._generate (pytest_batchgen/dispatch.py:336);_write_draft (pytest_batchgen/dispatch.py:51) 4
thread (8): batchgen-dispatch;BaseEventLoop._run_once (asyncio/base_events.py:1922) 3
thread (7);_run_finalizers (multiprocessing/util.py:300) 2
thread (12);Thread.run (threading.py:982) 1
"""


def test_each_sample_goes_to_its_part_and_none_is_lost(tmp_path: Path) -> None:
    raw = tmp_path / "samples.raw"
    raw.write_text(RAW)
    counts = budget(raw)
    assert counts == {MAIN: 42, IMPORT: 25, REQUESTS: 11, RECORDING: 6, DRAFT: 4, REST: 4}
    # the recorder's frames win over the request under which a repair's draft could be checked
    raw.write_text("thread (8): batchgen-dispatch;AsyncMessages.create (m.py:1);Recorder.record (r.py:2) 5\n")
    assert budget(raw) == {RECORDING: 5}
