"""What the plan's items cost with the lean protocol and with pytest's own, in instructions.

The plugin runs its own items without pytest's per-phase hooks (``pytest_batchgen/protocol.py``)
unless something could tell the difference, for one a ``conftest.py`` implementing
``pytest_runtest_setup``. This script counts the same ``--batch-validate-only --batch-readonly``
run of a plan (3 checklist lines a row, every output present and passing) both ways:

- ``lean``: as a user's run goes;
- ``pytest's protocol``: with a conftest whose ``pytest_runtest_setup`` does nothing, which makes
  every item fall back.

Each run is counted by valgrind's cachegrind (the same count to within 0.1% whatever else the
machine runs), the second of two (bytecode caches warm), at two sizes, so that the fixed part
cancels out: it prints the instructions an item and their ratio.

    python benchmarks/bench_item_protocol.py               # 500 rows (and 100): a few minutes
    python benchmarks/bench_item_protocol.py --rows 200

valgrind is not a dependency of the project (``apt install valgrind``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # bench_replay_count puts tests/ on the path

from bench_replay_count import cachegrind, find_valgrind, instructions, run_checked  # noqa: E402
from bench_validate_only import make_plan  # noqa: E402
from bench_whole_run import offline_env, pytest_cmd  # noqa: E402

RULES_A_ROW = 3  # bench_validate_only's checklist
#: added to the plan's conftest: a per-phase hook of the user's, so every item takes pytest's path
FULL_PROTOCOL_CONFTEST = "\n\ndef pytest_runtest_setup(item):\n    pass\n"
VARIANTS = ("lean", "pytest's protocol")


def count(variant: str, rows: int, valgrind: str) -> int:
    """The instructions of one validate-only run of ``rows`` rows (the second of two)."""
    found = 0
    env = {**offline_env(), "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            make_plan(folder, rows)
            if variant != "lean":
                with (folder / "conftest.py").open("a") as conftest:
                    conftest.write(FULL_PROTOCOL_CONFTEST)
            cmd = pytest_cmd("--batch-plan", "plan.md", "--batch-validate-only", "--batch-readonly", "--rootdir", tmp)
            found = instructions(run_checked(variant, cachegrind(valgrind, *cmd[1:]), folder, env).stderr)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500)
    args = ap.parse_args()
    valgrind = find_valgrind()
    small, large = max(args.rows // 5, 1), args.rows
    per_item = {}
    for variant in VARIANTS:
        a, b = count(variant, small, valgrind), count(variant, large, valgrind)
        per_item[variant] = (b - a) / ((large - small) * RULES_A_ROW)
        print(
            f"{variant}: {per_item[variant] / 1e6:.2f} M instructions an item "
            f"({small} and {large} rows, {RULES_A_ROW} items a row; {b / 1e9:.2f} G at {large})",
            flush=True,
        )
    lean, full = per_item["lean"], per_item["pytest's protocol"]
    print(f"RATIO lean / pytest's protocol, an item: {lean / full:.2f} ({(full - lean) / 1e6:.2f} M less)")


if __name__ == "__main__":
    main()
