"""Replay against validate-only, counted in instructions rather than timed.

On a shared VM the wall-clock ratio of one replay to one validate-only run of the same outputs
moved from 1.2 to 2.35 x over 15 pairs (``bench_whole_run.py --replay-pairs``), so a change of
5% in either could not be seen. The instructions a run executes do not depend on its
neighbours: counted by valgrind's cachegrind (``--cache-sim=no``), the same run gives the same
count to within 0.1%. The count leaves out what a run waits for (the disk's fsyncs, the other
core) and weighs every instruction alike: it measures the work, not the time.

It records ``--rows`` rows once against the loopback server (tests/fakeapi.py, in this
process), then counts, each run in a fresh copy of that folder (plan pending, outputs deleted
for the replay):

- ``validate``: ``--batch-validate-only`` of the recorded outputs, the issue's reference;
- ``replay``: ``--batch-record-mode none``, offline, no key, in the pytest process
  (``batchgen_sender = thread``): a run that forks replays in its sending process, whose count
  would start with everything the pytest process did before the fork (cachegrind copies its
  counters into the child), so its work is counted where it is all in one process. The fork's
  own price (a message a draft each way, and the result) shows in ``bench_whole_run.py``'s
  times, not here;
- the floor of a replay, two runs of validate-only with one item more per row, collected from the
  ``conftest.py`` of ``replay_floor.py`` (shared with ``bench_whole_run.py``, which times them): ``+ item`` runs a trivial item (pytest's own cost of one
  item more, the ``generate`` item's share; run as the checkout runs its own items, through
  ``pytest_batchgen.protocol`` where the checkout has it), ``+ item, read, write`` reads the row's cassette
  with PyYAML's C loader and writes its reply to a file, which is the least a replay must do.

Each figure is printed as a ratio to ``validate``, with the instructions a row over it at the
two sizes (``--rows`` and a fifth of it), so that the fixed part cancels out. Python's
``--rows`` rows run about 50 times slower under valgrind: 1,000 rows take some 10 minutes.

    python benchmarks/bench_replay_count.py                  # 1,000 rows (and 200)
    python benchmarks/bench_replay_count.py --rows 200       # a quicker look
    python benchmarks/bench_replay_count.py --roots /tmp/before,.   # two checkouts, same folder

valgrind is not a dependency of the project (``apt install valgrind``); without it the script
says so and stops.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_generation import REFERENCE, write_plan  # noqa: E402
from bench_validate_only import run_process  # noqa: E402
from bench_whole_run import base_env, offline_env, pytest_cmd  # noqa: E402
from fakeapi import FakeAnthropic, Reply  # noqa: E402
from replay_floor import add_floor  # noqa: E402

#: what each counted run adds to ``pytest --batch-plan plan.md``
RUNS = {
    "validate": (["--batch-validate-only"], {}),
    # in the pytest process: where it forks, the child's count starts with all the parent did
    # before the fork (valgrind's counters are copied with it), so the two could not be summed
    "replay": (["--batch-record-mode", "none", "-o", "batchgen_sender=thread"], {}),
    "+ item": (["--batch-validate-only", "floor.txt"], {"BATCHGEN_FLOOR": "item"}),
    "+ item, read, write": (["--batch-validate-only", "floor.txt"], {"BATCHGEN_FLOOR": "read-write"}),
}


def find_valgrind() -> str:
    """valgrind's path, or the script stops saying it is missing."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed: this benchmark counts instructions with its cachegrind tool")
    return valgrind


def cachegrind(valgrind: str, *args: str) -> list[str]:
    """The command running Python with ``args`` under cachegrind: the interpreter itself, not a
    shell shim such as pyenv's (valgrind counts what it runs)."""
    return [
        valgrind,
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        os.path.realpath(sys.executable),
        *args,
    ]


def run_checked(name: str, cmd: list[str], folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``folder``; a failed run stops the script with its output."""
    ran = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    if ran.returncode != 0:
        raise SystemExit(f"{name}: the run failed ({ran.returncode}):\n{ran.stdout[-2000:]}{ran.stderr[-2000:]}")
    return ran


def instructions(report: str) -> int:
    """The ``I refs`` total of cachegrind's summary (of the first process it reports)."""
    found = re.search(r"I\s+refs:\s+([\d,]+)", report)
    if found is None:
        raise ValueError(f"no instruction count in valgrind's report: {report[-500:]!r}")
    return int(found.group(1).replace(",", ""))


def record(folder: Path, rows: int) -> None:
    """The recorded folder: ``rows`` rows generated once, their cassettes and outputs."""
    write_plan(folder, rows)
    with FakeAnthropic() as server:
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        run_process(
            pytest_cmd("--batch-plan", "plan.md", "--batch-concurrency", "16", "--rootdir", str(folder)),
            folder,
            base_env(server),
        )
    add_floor(folder)


def count(recorded: Path, rows: int, name: str, root: Path, valgrind: str) -> int:
    """The instructions of one run ``name`` of :data:`RUNS`, in a fresh copy of ``recorded``.

    The run is made twice and the second one counted: the first compiles and caches the bytecode
    of whatever changed (a checkout's edited modules, the conftest), which a user's run does not."""
    extra, env_extra = RUNS[name]
    env = {**offline_env(), **env_extra, "PYTHONPATH": str(root)}
    cmd = cachegrind(valgrind, *pytest_cmd("--batch-plan", "plan.md", *extra, "--rootdir", ".")[1:])
    found = 0
    for _ in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "run"
            shutil.copytree(recorded, folder)
            if name == "replay":
                for i in range(rows):
                    (folder / "out" / f"term-{i}.md").unlink()
            write_plan(folder, rows)  # every row pending again (the outputs stay)
            found = instructions(run_checked(name, cmd, folder, env).stderr)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--roots", default=str(ROOT), help="checkouts of the plugin to count, comma-separated")
    args = ap.parse_args()
    valgrind = find_valgrind()
    sizes = (max(args.rows // 5, 1), args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        recorded = {n: Path(tmp) / f"rows-{n}" for n in sizes}
        for n, folder in recorded.items():
            folder.mkdir()
            record(folder, n)
        for root in (Path(r).resolve() for r in args.roots.split(",")):
            counts = {(name, n): count(recorded[n], n, name, root, valgrind) for name in RUNS for n in sizes}
            small, large = sizes
            base = counts["validate", large]
            per_row_base = (base - counts["validate", small]) / (large - small)
            print(f"{root}: {large} rows, instructions (cachegrind), ratio to validate-only, per row", flush=True)
            for name in RUNS:
                total = counts[name, large]
                per_row = (total - counts[name, small]) / (large - small)
                print(
                    f"  {name:22s} {total / 1e9:7.3f} G  {total / base:5.3f} x  "
                    f"{per_row / 1e6:6.2f} M a row ({per_row / per_row_base:.2f} x)",
                    flush=True,
                )
            print(
                f"RATIO replay/validate-only {large} rows, instructions: {counts['replay', large] / base:.3f} (target <= 1.3)"
            )


if __name__ == "__main__":
    main()
