"""Validate-only overhead, the plan editor at scale, and what validate-only imports.

Prints the ratios of PRODUCT.md section 9:
- validate-only time / pytest's own time for the same number of trivial parametrised items
  (target <= 1.5), over a plan of N rows x 3 checklist rules (front matter, a value, sections);
- updating the plan for 10,000 rows (every status flipped, one write) (target <= 1 s);
- peak memory of a 10,000-row validate-only run (target <= 300 MB);
- whether the anthropic SDK or vcrpy was imported in validate-only mode (must be "no");
- the registration rule over many rows, and a real linter run per file against per batch.

    python benchmarks/bench_validate_only.py [--rows 2000] [--big 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENTRY = (
    "---\nterm: Entry {i}\ncategory: Alpha\ntags: [one, two]\n---\n\n"
    "## Definition\n\nText {i}.\n\n## Details\n\nMore.\n"
)

CHECKLIST = (
    "1. Front matter includes term, category and at least 2 tags\n"
    "2. category is one of the values listed in Content Rules\n"
    "3. Definition and Details sections present, in that order\n"
)

IMPORT_PROBE = """
import sys
def pytest_sessionfinish(session):
    heavy = sorted(m for m in ("anthropic", "vcr", "httpx2") if m in sys.modules)
    print("HEAVY-IMPORTS:", ",".join(heavy) or "none")
"""


def make_plan(folder: Path, rows: int, write_outputs: bool = True, extra_rule: str = "") -> None:
    out = folder / "out"
    out.mkdir(parents=True)
    for i in range(rows if write_outputs else 1):
        (out / f"e{i}.md").write_text(ENTRY.format(i=i))
    table = "\n".join(f"| Entry {i} | e{i}.md | haiku | pending |" for i in range(rows))
    (folder / "plan.md").write_text(
        "## Format Reference\nout/e0.md\n\n## Output Directory\nout/\n\n"
        "## Content Rules\n- category must be one of: Alpha, Beta\n\n"
        f"## Validation Checklist\n{CHECKLIST}{extra_rule}\n"
        f"## Phase 1\n| Title | Filename | Model | Status |\n|---|---|---|---|\n{table}\n"
    )
    (folder / "conftest.py").write_text(IMPORT_PROBE)


def write_trivial_tests(folder: Path, items: int, name: str = "test_trivial.py") -> str:
    """A test file of ``items`` trivial parametrised tests: pytest's own floor for as many
    items as a run has. Its name, to pass to pytest."""
    (folder / name).write_text(
        f"import pytest\n\n@pytest.mark.parametrize('i', range({items}))\ndef test_trivial(i):\n    assert i >= 0\n"
    )
    return name


class Ran(NamedTuple):
    """One benchmark process: when it started (monotonic clock), its wall seconds, its own peak
    RSS in KiB, its output, and the CPU seconds it used (user + system, all its threads).

    The peak and the CPU come from ``wait4``: the ``RUSAGE_CHILDREN`` figures would add up (or,
    for the peak, take the largest of) every run so far. CPU seconds close to the wall seconds
    say a run is bound by its work under one interpreter lock, not by waiting; on two cores no
    split of that work into processes could take less than half of it."""

    start: float
    wall: float
    peak_kib: int
    text: str
    cpu: float


def run_process(cmd: list[str], cwd: Path, env: dict[str, str]) -> Ran:
    """Run ``cmd`` to its end (a failure stops the benchmark, with its output)."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if code != 0:
        print(text[-3000:])
        raise SystemExit(f"benchmark run failed ({code}): {' '.join(cmd)}")
    return Ran(start, wall, usage.ru_maxrss, text, usage.ru_utime + usage.ru_stime)


def run(cmd: list[str], cwd: Path) -> tuple[float, str, int]:
    """Wall time, output and peak RSS in KiB of ``cmd`` with this tree's plugin (whatever the
    editable install points at), as CI runs it."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ran = run_process(cmd, cwd, {**os.environ, "CI": "true", "PYTHONPATH": path})
    return ran.wall, ran.text, ran.peak_kib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--big", type=int, default=10000)
    ap.add_argument("--registered", type=int, default=1000)
    ap.add_argument("--linted", type=int, default=30)
    args = ap.parse_args()
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vo"
        make_plan(folder, args.rows)
        items = args.rows * 3
        base = min(run(pytest_cmd + [write_trivial_tests(folder, items)], folder)[0] for _ in range(2))
        ours, out, _ = min(
            (run(pytest_cmd + ["--batch-plan", "plan.md", "--batch-readonly"], folder) for _ in range(2)),
            key=lambda r: r[0],
        )
        heavy = next(
            (ln.split("HEAVY-IMPORTS:", 1)[1].strip() for ln in out.splitlines() if "HEAVY-IMPORTS:" in ln), "?"
        )
        print(f"validate-only: {args.rows} rows x 3 rules = {items} items")
        print(f"  pytest, {items} trivial parametrised items: {base:.2f}s")
        print(f"  pytest --batch-plan --batch-readonly:       {ours:.2f}s")
        print(f"  ratio (target <= 1.5): {ours / base:.2f}")
        print(f"  heavy modules imported in validate-only: {heavy}")

    with tempfile.TemporaryDirectory() as tmp:
        # the registration rule over many rows: the first run registers every output
        folder = Path(tmp)
        make_plan(folder, args.registered, extra_rule="4. Output registered in `out/INDEX.md`\n")
        items = args.registered * 4
        floor = run(pytest_cmd + [write_trivial_tests(folder, items)], folder)[0]
        first, _, peak_kib = run(pytest_cmd + ["--batch-plan", "plan.md", "--batch-validate-only"], folder)
        again = run(pytest_cmd + ["--batch-plan", "plan.md", "--batch-readonly"], folder)[0]
        print(
            f"registration rule, {args.registered} rows x 4 rules: "
            f"{first:.1f}s registering all, {again:.1f}s all registered"
        )
        print(
            f"RATIO registering {args.registered} rows / pytest floor ({items} trivial items, {floor:.1f}s): "
            f"{first / floor:.2f} (target <= 1.5), peak RSS {peak_kib / 1024:.0f} MB (target <= 300 MB)"
        )

    if shutil.which("pymarkdown", path=str(Path(sys.executable).parent)) or shutil.which("pymarkdown"):
        # a real linter once per file ({path}) against once per batch ({paths})
        timings = {}
        for form in ("{path}", "{paths}"):
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                shutil.copy(ROOT / ".pymarkdown.json", folder)
                rule = f"4. Linter passes: `pymarkdown --config .pymarkdown.json scan {form}`\n"
                make_plan(folder, args.linted, extra_rule=rule)
                timings[form] = run(pytest_cmd + ["--batch-plan", "plan.md", "--batch-readonly"], folder)[0]
        print(
            f"linter over {args.linted} outputs: {timings['{path}']:.1f}s once per file, "
            f"{timings['{paths}']:.1f}s once per batch"
        )

    with tempfile.TemporaryDirectory() as tmp:
        # a cold parse: a fresh process loading a plan of --big rows (the import is not counted)
        folder = Path(tmp)
        make_plan(folder, args.big, write_outputs=False)
        probe = (
            "import sys, time; from pathlib import Path; from pytest_batchgen.plan import load_plan; "
            "t = time.perf_counter(); load_plan(Path('plan.md'), Path('.'), {}); print(time.perf_counter() - t)"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        took = min(
            float(
                subprocess.run(
                    [sys.executable, "-c", probe], cwd=folder, env=env, capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(3)
        )
        print(f"RATIO cold parse of a {args.big}-row plan (s): {took:.2f} (target <= 1.0)")

    from pytest_batchgen.plan import scan
    from pytest_batchgen.planedit import RowUpdate, apply_updates

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_plan(folder, args.big, write_outputs=False)
        plan = folder / "plan.md"
        updates = {f"e{i}.md": RowUpdate(status="complete") for i in range(args.big)}
        start = time.perf_counter()
        apply_updates(plan, updates)
        cold = time.perf_counter() - start
        assert plan.read_text().count("| complete |") == args.big
        # in a run the plan was parsed when it was loaded; the editor's scan of the same text is cached
        text = plan.read_text()
        scan(text)
        start = time.perf_counter()
        apply_updates(plan, {k: RowUpdate(status="pending") for k in updates})
        warm = time.perf_counter() - start
        print(
            f"plan update: {args.big} rows flipped in one write: {cold:.3f}s with a cold parse, "
            f"{warm:.3f}s as in a run (plan parsed at load) (target <= 1 s)"
        )

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_plan(folder, args.big)
        took, out, peak_kib = run(pytest_cmd + ["--batch-plan", "plan.md", "--batch-readonly"], folder)
        print(
            f"validate-only of {args.big} rows ({args.big * 3} items): {took:.1f}s, "
            f"peak RSS {peak_kib / 1024:.0f} MB (target <= 300 MB)"
        )


if __name__ == "__main__":
    main()
