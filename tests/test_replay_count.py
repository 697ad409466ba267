"""benchmarks/bench_replay_count.py: what it counts; replay_floor.py: the floor items it (and
bench_whole_run.py) compare a replay to."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_replay_count import instructions  # noqa: E402
from replay_floor import FLOOR_CONFTEST  # noqa: E402

CACHEGRIND = """\
==4242== Cachegrind, a cache and branch-prediction profiler
==4242== Command: /usr/bin/python3 -m pytest
==4242==
==4242==
==4242== I   refs:      12,993,446,278
"""


def test_the_count_is_cachegrinds_instruction_total() -> None:
    assert instructions(CACHEGRIND) == 12_993_446_278
    with pytest.raises(ValueError, match="no instruction count"):
        instructions("==1== valgrind: the 'impossible' happened")


def _cassette(path: Path, text: str) -> None:
    """A one-interaction cassette, as vcrpy writes it."""
    from vcr.request import Request
    from vcr.serialize import serialize
    from vcr.serializers import yamlserializer

    body = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": text}]}
    reply = {
        "status": {"code": 200, "message": "OK"},
        "headers": {"content-type": ["application/json"]},
        "body": {"string": json.dumps(body).encode()},
    }
    cassette = {"requests": [Request("POST", "https://api.anthropic.com/v1/messages", b"{}", {})], "responses": [reply]}
    path.write_text(serialize(cassette, yamlserializer), encoding="utf-8")


@pytest.mark.parametrize("floor", ["item", "read-write"])
def test_the_floor_has_an_item_per_cassette_that_reads_it_and_writes_its_reply(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, floor: str
) -> None:
    """The floor a replay is compared to must do a replay's least per row: an item, and (the
    second floor) the row's cassette read and its reply written. A floor that skipped either
    would make the replay look worse than it is."""
    (pytester.path / "cassettes" / "plan").mkdir(parents=True)
    for name in ("a", "b"):
        _cassette(pytester.path / "cassettes" / "plan" / f"{name}.md.yaml", f"reply of {name}")
    pytester.makeconftest(FLOOR_CONFTEST)
    pytester.makefile(".txt", floor="")
    monkeypatch.setenv("BATCHGEN_FLOOR", floor)

    result = pytester.runpytest_inprocess("floor.txt", "-p", "no:randomly")

    result.assert_outcomes(passed=2)
    written = {p.name: p.read_text() for p in (pytester.path / "floor-out").iterdir()}
    assert written == ({} if floor == "item" else {"a.md": "reply of a", "b.md": "reply of b"})
