"""``Linter passes: `cmd {paths}` ``: one linter run per batch of files, with exact verdicts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pytest_batchgen.checklist import compile_checklist
from pytest_batchgen.document import DocumentCache
from pytest_batchgen.errors import ChecklistError
from pytest_batchgen.plan import load_plan
from pytest_batchgen.rules import BUILTIN_FORMS, LinterBatch
from pytest_batchgen.run import PlanRun

# A linter that logs each invocation, then reports every file containing BAD (by path, with a
# line), or prints an unattributable error when any file contains CRASH.
LINTER = """
import os
import sys
with open("lint.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
bad = False
for path in sys.argv[1:]:
    text = open(path).read()
    if "CRASH" in text and len(sys.argv) > 2:
        print("internal error")
        sys.exit(2)
    for n, line in enumerate(text.splitlines(), 1):
        if "BAD" in line:
            print(f"{path}:{n}: BAD found")
            bad = True
sys.exit(1 if bad else 0)
"""

GOOD = "---\nterm: X\n---\n\n## Definition\n\nfine\n"


def make(tmp_path: Path, outputs: dict[str, str], command: str = "{paths}", outdir: str = "out") -> PlanRun:
    (tmp_path / "lint.py").write_text(LINTER)
    (tmp_path / outdir).mkdir(exist_ok=True)
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "ref.md").write_text(GOOD)
    for name, text in outputs.items():
        (tmp_path / outdir / name).write_text(text)
    rows = "\n".join(f"| {n} | {n} | haiku | pending |" for n in outputs)
    (tmp_path / "plan.md").write_text(
        f"## Format Reference\nout/ref.md\n\n## Output Directory\n{outdir}/\n\n## Content Rules\n- none\n\n"
        f"## Validation Checklist\n1. Linter passes: `{sys.executable} lint.py {command}`\n\n"
        f"## Phase 1\n| Title | Filename | Model | Status |\n|---|---|---|---|\n{rows}\n"
    )
    plan = load_plan(tmp_path / "plan.md", tmp_path)
    rules = compile_checklist(plan, BUILTIN_FORMS)
    return PlanRun(plan=plan, rules=rules, rows=plan.rows, docs=DocumentCache())


def verdicts(run: PlanRun) -> dict[str, object]:
    return {row.filename: run.evaluate(row, run.rules[0]) for row in run.rows}


def invocations(tmp_path: Path) -> list[str]:
    return (tmp_path / "lint.log").read_text().splitlines()


def test_many_files_are_linted_in_one_run_and_failures_go_to_their_own_file(tmp_path):
    outputs = {f"e{i}.md": GOOD for i in range(12)}
    outputs["e3.md"] = GOOD + "\nBAD line\n"
    outputs["e7.md"] = GOOD + "\nok\nBAD again\n"
    run = make(tmp_path, outputs)
    got = verdicts(run)
    assert len(invocations(tmp_path)) == 1
    assert {n for n, f in got.items() if f is not None} == {"e3.md", "e7.md"}
    assert got["e3.md"].line == 9 and "BAD found" in got["e3.md"].detail
    assert "e7.md" not in got["e3.md"].detail  # only its own lines
    assert got["e7.md"].line == 10


@pytest.mark.parametrize("outdir", [".", "out"])
def test_a_path_inside_another_files_path_is_not_blamed_for_its_lines(tmp_path, outdir):
    # with the outputs in the rootdir, the linter's "data.md:8: BAD found" contains "a.md"
    run = make(
        tmp_path, {"a.md": GOOD, "data.md": GOOD + "BAD\n", "b.md": GOOD + "BAD\n", "xb.md": GOOD}, outdir=outdir
    )
    got = verdicts(run)
    assert len(invocations(tmp_path)) == 1
    assert got["a.md"] is None and got["xb.md"] is None
    assert got["data.md"] is not None and got["data.md"].line == 8
    assert got["b.md"] is not None and "xb.md" not in got["b.md"].detail


def test_verdicts_are_reused_until_a_file_changes(tmp_path):
    run = make(tmp_path, {"a.md": GOOD, "b.md": GOOD})
    assert set(verdicts(run).values()) == {None}
    assert set(verdicts(run).values()) == {None}
    assert len(invocations(tmp_path)) == 1
    (tmp_path / "out" / "b.md").write_text(GOOD + "BAD\n")
    run.docs.forget(tmp_path / "out" / "b.md")
    got = verdicts(run)
    assert got["a.md"] is None and got["b.md"] is not None
    assert invocations(tmp_path)[-1].endswith("out/b.md")  # only the changed file again


def test_an_unattributable_failure_falls_back_to_one_run_per_file(tmp_path):
    run = make(tmp_path, {"a.md": GOOD, "b.md": GOOD + "CRASH\n", "c.md": GOOD + "BAD\n"})
    got = verdicts(run)
    # the batch failed without naming a file; each file is then linted alone
    assert len(invocations(tmp_path)) == 1 + 3
    assert got["a.md"] is None and got["b.md"] is None
    assert got["c.md"] is not None and got["c.md"].line == 8


def test_paths_must_stand_alone(tmp_path):
    with pytest.raises(ChecklistError, match="paths"):
        make(tmp_path, {"a.md": GOOD}, command="{paths} {path}")


def test_chunks_bound_the_command_line(tmp_path):
    run = make(tmp_path, {f"e{i}.md": GOOD for i in range(5)})
    batch = run.rules[0].check.__self__
    assert isinstance(batch, LinterBatch)
    batch.chunk = 2
    assert set(verdicts(run).values()) == {None}
    assert [len(line.split()) for line in invocations(tmp_path)] == [2, 2, 1]


def test_linters_run_a_few_at_once_however_many_drafts_are_checked(monkeypatch):
    # drafts are checked as many at once as requests are in flight (judge calls wait on the
    # network), but each linter takes a core: at most the executor's old width run at once
    import threading
    import time

    from pytest_batchgen import rules

    running, peak, lock = 0, 0, threading.Lock()

    def fake_invoke(args, cwd, timeout):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return None, 0, ""

    monkeypatch.setattr(rules, "_invoke_now", fake_invoke)
    threads = [threading.Thread(target=rules._invoke, args=(["lint"], Path("."), 5.0)) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == min(32, (os.cpu_count() or 1) + 4)
