"""benchmarks/bench_whole_run.py's floor of "first request, ours - bare": its probe stamps a
plugin's import and configure hook in a real ``pytest --batch-plan`` start, and a bare
interpreter's first line."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_whole_run import plugin_start  # noqa: E402


def test_the_start_probe_stamps_a_plugins_import_then_its_configure_and_a_bare_first_line() -> None:
    """The README's floor of the first request is ``configure - first line``: a probe that never
    reached its configure hook (a renamed hook, the process ending first) would leave no stamp,
    and stamps from the wrong process would not come in this order."""
    imported, configured, first_line = plugin_start(runs=1)

    assert first_line > 0
    assert 0 < imported <= configured
