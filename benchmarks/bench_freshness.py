"""Freshness within the validate-only target (issue 15).

Lays out the validate-only benchmark's plan (``bench_validate_only.make_plan``) with a recorded
cassette per row (vcrpy's layout, the request the plan sends today, a ~9 kB file like the
example's), and prints, as ratios to pytest's own time for the same number of trivial items:

- ``--batch-readonly`` without cassettes (freshness is shown in the summary: a stat per row),
- ``--batch-readonly`` with a cassette per row,
- ``--batch-readonly --batch-fail-stale`` with a cassette per row (one more item per row),
- and the time to judge every row's freshness alone, in process.

    python benchmarks/bench_freshness.py [--rows 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_validate_only import make_plan, run, write_trivial_tests  # noqa: E402

from pytest_batchgen.freshness import FreshnessBook  # noqa: E402
from pytest_batchgen.plan import load_plan  # noqa: E402
from pytest_batchgen.prompts import build_prompt  # noqa: E402


def write_cassettes(folder: Path) -> None:
    plan = load_plan(folder / "plan.md", folder)
    for row in plan.rows:
        params = build_prompt(plan, row).params()
        # the reply is the output as written (the common case: the row's output is its reply;
        # an output that is none of its replies, a hand edit, reads the whole cassette)
        output = plan.output_path(row)
        text = output.read_text(encoding="utf-8") if output.exists() else "x" * 6000
        reply = {
            "type": "message",
            "content": [{"type": "text", "text": text}],
            "usage": {"input_tokens": 40, "output_tokens": 300},
        }
        doc = {
            "interactions": [
                {
                    "request": {
                        "body": json.dumps(params),
                        "headers": {},
                        "method": "POST",
                        "uri": "https://api.anthropic.com/v1/messages",
                    },
                    "response": {
                        "body": {"string": json.dumps(reply)},
                        "headers": {},
                        "status": {"code": 200, "message": "OK"},
                    },
                }
            ],
            "version": 1,
        }
        path = plan.cassette_path(row)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    args = ap.parse_args()
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vo"
        make_plan(folder, args.rows)
        items = args.rows * 3
        base = min(run(pytest_cmd + [write_trivial_tests(folder, items)], folder)[0] for _ in range(2))
        four = write_trivial_tests(folder, args.rows * 4, "test_trivial4.py")
        base4 = min(run(pytest_cmd + [four], folder)[0] for _ in range(2))
        gate = pytest_cmd + ["--batch-plan", "plan.md", "--batch-readonly"]
        bare = min(run(gate, folder)[0] for _ in range(2))
        write_cassettes(folder)
        size = (folder / "cassettes" / "plan" / "e0.md.yaml").stat().st_size
        recorded = min(run(gate, folder)[0] for _ in range(2))
        failing = min(run(gate + ["--batch-fail-stale"], folder)[0] for _ in range(2))
        plan = load_plan(folder / "plan.md", folder)
        start = time.perf_counter()
        book = FreshnessBook(8192)
        states = {book.of(plan, row).state for row in plan.rows}
        judged = time.perf_counter() - start
        print(f"validate-only, {args.rows} rows x 3 rules = {items} items; cassettes of {size} bytes")
        print(f"  pytest, {items} trivial items:                         {base:.2f}s")
        print(f"  --batch-readonly, no cassettes:                       {bare:.2f}s  ratio {bare / base:.2f}")
        print(f"  --batch-readonly, a cassette per row:                 {recorded:.2f}s  ratio {recorded / base:.2f}")
        print(f"  pytest, {args.rows * 4} trivial items (rows x 4: the 'fresh' item too): {base4:.2f}s")
        print(
            f"  --batch-readonly --batch-fail-stale, cassettes:       {failing:.2f}s  ratio {failing / base4:.2f}"
            " (target <= 1.5)"
        )
        print(f"  judging {args.rows} rows' freshness in process: {judged:.2f}s ({states})")


if __name__ == "__main__":
    main()
