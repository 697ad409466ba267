"""benchmarks/bench_generation_count.py: what it counts, and the recording floor it compares to."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_generation_count import RECORDING, REFERENCE, base_env, counts, write_plan  # noqa: E402
from fakeapi import FakeAnthropic, Reply  # noqa: E402

from pytest_batchgen.cassettes import is_message_body, read_cassette  # noqa: E402

FORKED = """\
==4300== I   refs:      5,100,000,000
==4242== Cachegrind, a cache and branch-prediction profiler
==4242==
==4242== I   refs:      12,993,446,278
"""


def test_each_process_is_counted_in_pid_order() -> None:
    # the sending process (a fork: the larger pid) may end, and be reported, first
    assert counts(FORKED) == [12_993_446_278, 5_100_000_000]
    with pytest.raises(ValueError, match="no instruction count"):
        counts("==1== valgrind: the 'impossible' happened")


def test_the_recording_floor_writes_each_reply_and_a_cassette_that_replays_it(tmp_path: Path) -> None:
    """The floor must do what recording with vcrpy does at least: a cassette per reply, with
    the request's body and the reply's bytes, readable as a recording. A floor that skipped it
    would make the plugin's sending process look worse than it is."""
    rows = 3
    with FakeAnthropic(latency=0.0) as server:
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        write_plan(tmp_path, rows)
        (tmp_path / "script.py").write_text(RECORDING)
        (tmp_path / "bare-out").mkdir()
        cmd = [sys.executable, "script.py", str(rows), "8", "bare-out", "out/reference.md"]
        ran = subprocess.run(cmd, cwd=tmp_path, env=base_env(server), capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert len(server.messages_requests()) == rows
    for i in range(rows):
        assert (tmp_path / "bare-out" / f"term-{i}.md").read_text().startswith("---\nterm: Generated")
        interactions = read_cassette(tmp_path / "bare-out" / f"term-{i}.md.yaml")
        assert interactions is not None and len(interactions) == 1
        (recorded,) = interactions
        assert f"Term {i}" in json.loads(recorded.request["body"])["messages"][0]["content"]
        assert is_message_body(recorded.response["body"]["string"])
