"""``benchmarks/bench_item_protocol.py`` counts what it says: its two runs differ only in the
protocol the plan's items take (checked without valgrind, in-process)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_item_protocol import FULL_PROTOCOL_CONFTEST, RULES_A_ROW  # noqa: E402
from bench_validate_only import make_plan  # noqa: E402
from harness import OBSERVER, Project, phase_hooks  # noqa: E402


def test_the_benchmarks_two_runs_take_the_two_protocols_on_the_same_passing_items(project: Project):
    make_plan(project.path, 4)
    project.plan = "plan.md"
    conftest = (project.path / "conftest.py").read_text()

    project.write("conftest.py", conftest + OBSERVER)
    lean = project.run("--batch-validate-only", "--batch-readonly")
    project.write("conftest.py", conftest + OBSERVER + FULL_PROTOCOL_CONFTEST)
    full = project.run("--batch-validate-only", "--batch-readonly")

    assert lean.counts() == full.counts() == {"passed": 4 * RULES_A_ROW}
    assert set(phase_hooks(lean).values()) == {False}
    assert set(phase_hooks(full).values()) == {True}
