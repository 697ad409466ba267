"""Two processes editing one plan at the same time lose none of each other's edits."""

from __future__ import annotations

import multiprocessing

from harness import Project
from planfactory import edit_worker, line_of, plan_text
from pytest_batchgen.plan import load_plan
from pytest_batchgen.planedit import read_notes, split_lines

ITERATIONS = 30


def test_two_processes_update_different_rows(tmp_path):
    text = plan_text()
    path = Project(tmp_path).write_plan(text)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    jobs = [
        ctx.Process(target=edit_worker, args=(str(path), 0, "beta.md", ITERATIONS, barrier)),
        ctx.Process(target=edit_worker, args=(str(path), 1, "gamma.md", ITERATIONS, barrier)),
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    for job in jobs:
        if job.is_alive():
            job.kill()
    assert [job.exitcode for job in jobs] == [0, 0]

    final = path.read_text(encoding="utf-8")
    # every update of both processes is in the file: all 2 x 30 note entries...
    notes = read_notes(final)
    assert sorted(notes) == sorted(f"w{w}-{i:03d}.md" for w in (0, 1) for i in range(ITERATIONS))
    assert notes["w1-017.md"] == "worker 1 iteration 17"
    # ...and each row's last status (iteration 29 is odd: pending; 28 set complete before it)
    plan = load_plan(path, tmp_path)
    assert {r.filename: r.status for r in plan.rows} == {
        "alpha.md": "complete",
        "beta.md": "pending" if ITERATIONS % 2 == 0 else "complete",
        "gamma.md": "pending" if ITERATIONS % 2 == 0 else "complete",
    }
    # nothing else moved: apart from the two rows' lines, the plan's own lines are intact
    old, new = split_lines(text), split_lines(final)
    rows = {line_of(text, "| beta.md |") - 1, line_of(text, "| gamma.md |") - 1}
    assert [new[i] for i in range(len(old)) if i not in rows] == [old[i] for i in range(len(old)) if i not in rows]
    assert new[line_of(text, "| beta.md |") - 1] == "| 2 | Beta | beta.md | haiku | pending  |\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
