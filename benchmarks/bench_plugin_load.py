"""What the installed plugin costs a pytest run that does not use it (no ``--batch-plan``).

pytest imports every installed plugin in every run. This script runs one small test module
(``--items`` trivial parametrised tests) with the plugin and with ``-p no:batchgen``, counts
each run's instructions with valgrind's cachegrind (the second of two runs, so bytecode caches
are warm) and prints the difference, with the modules the plugin's load added to
``sys.modules`` (a conftest records them at the session's end). Wall-clock medians of
``--runs`` runs each are printed too, as a rough figure: on a shared VM they move more than the
difference.

    python benchmarks/bench_plugin_load.py
    python benchmarks/bench_plugin_load.py --roots /tmp/before,.   # two checkouts

Without valgrind the instruction counts are left out and the rest is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_replay_count import cachegrind, instructions, run_checked  # noqa: E402
from bench_whole_run import offline_env  # noqa: E402

TESTS = """
import os
import pytest

@pytest.mark.parametrize("n", range(int(os.environ["BENCH_ITEMS"])))
def test_plain(n):
    assert n >= 0
"""

RECORDER = """
import json, sys

def pytest_sessionfinish(session):
    with open("modules.json", "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def run(folder: Path, root: Path, items: int, without: bool, valgrind: str | None = None) -> tuple[float, int | None]:
    """One run's wall time and (under valgrind) its instructions."""
    env = {**offline_env(), "PYTHONPATH": str(root), "BENCH_ITEMS": str(items)}
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-p", "no:batchgen"] if without else [])]
    cmd = cachegrind(valgrind, *args) if valgrind else [os.path.realpath(sys.executable), *args]
    start = time.perf_counter()
    ran = run_checked("pytest", cmd, folder, env)
    wall = time.perf_counter() - start
    return wall, instructions(ran.stderr) if valgrind else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--runs", type=int, default=10, help="wall-clock runs of each, interleaved")
    ap.add_argument("--roots", default=str(ROOT), help="checkouts of the plugin to compare, comma-separated")
    args = ap.parse_args()
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed: no instruction counts, wall-clock medians only")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_plain.py").write_text(TESTS)
        (folder / "conftest.py").write_text(RECORDER)
        for root in (Path(r).resolve() for r in args.roots.split(",")):
            modules = {}
            for without in (False, True):
                run(folder, root, args.items, without)
                modules[without] = set(json.loads((folder / "modules.json").read_text()))
            added = sorted(modules[False] - modules[True])
            ours = [m for m in added if m.split(".")[0] == "pytest_batchgen"]
            print(f"{root}: the plugin's load added {len(added)} modules, {len(ours)} of its own: {', '.join(ours)}")
            others = sorted({m.split(".")[0] for m in added} - {"pytest_batchgen"})
            print(f"  and from other packages: {', '.join(others) or 'none'}")
            if valgrind:
                counted = {
                    w: [run(folder, root, args.items, w, valgrind)[1] for _ in range(2)][-1] for w in (False, True)
                }
                with_it, without_it = counted[False], counted[True]
                assert with_it is not None and without_it is not None
                print(
                    f"  instructions, {args.items} items: {with_it / 1e9:.3f} G with the plugin, "
                    f"{without_it / 1e9:.3f} G without: +{(with_it - without_it) / 1e6:.0f} M "
                    f"({with_it / without_it:.3f} x)"
                )
            walls: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.runs):
                for without in (False, True):
                    walls[without].append(run(folder, root, args.items, without)[0])
            print(
                f"  wall, median of {args.runs}: {statistics.median(walls[False]):.3f} s with the plugin, "
                f"{statistics.median(walls[True]):.3f} s without",
                flush=True,
            )


if __name__ == "__main__":
    main()
