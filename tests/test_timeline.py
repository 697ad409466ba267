"""benchmarks/timeline.py: its probe stamps every step of a real run, in the order they happen."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from timeline import INTERVALS, PROBE, ROOT, one_run  # noqa: E402


def test_a_runs_timeline_has_every_step_in_order(tmp_path: Path) -> None:
    """The README's row "the end of a run" (and "from the end of the SDK's import to the first
    request" in benchmarks/HISTORY.md) come from these stamps: a renamed hook or preloader would
    leave a step unstamped."""
    (tmp_path / "batchgen_timeline_probe.py").write_text(PROBE)

    found = one_run(ROOT, rows=4, concurrency=2, probe_dir=tmp_path)

    order = [
        "start",
        "configure",
        "forked",
        "imported",
        "first-request",
        "last-reply",
        "session-end",
        "exit-handlers",
        "exit",
    ]
    assert set(order) <= set(found), found
    at = [found[name] for name in order]
    assert at == sorted(at), dict(zip(order, at))
    assert all(start in found and end in found for _, start, end in INTERVALS)
