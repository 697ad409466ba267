"""A generating run against the bare SDK script, counted in instructions a row, per process.

``bench_whole_run.py`` times the two; on this shared 2-core VM the same pair of runs moved by a
third from one run to the next. This script counts the work instead, with valgrind's cachegrind
(which follows the fork into the sending process), at two sizes so that the fixed costs (the
interpreter, the imports) cancel out of the figure a row:

- ``bare``: the bare asyncio script of ``bench_whole_run.py`` (one process);
- ``bare + cassette``: the same, also writing each reply as a vcrpy cassette beside its file
  (vcrpy's request, its YAML serializer, the reply's raw bytes and headers): the least a run
  that records its calls with vcrpy can do;
- ``pytest alone``: pytest running four trivial items a row (a generating run's item count for
  three checklist lines), with no plugin work: the least the pytest process can do;
- ``ours``: ``pytest --batch-plan``, record mode ``once``, concurrency 8, zero latency: the pytest
  process and the sending process, each counted.

Both of our processes run side by side on two cores (with the loopback server), so the run's
time follows the larger of the two and the server's share, not their sum. Unlike a replay's
count, these move with timing: every process here waits on the network or on the other, and
how many replies an event loop finds ready at each turn, or how often the pytest process polls
for results, depends on the moment (the bare script's figure a row differed by 6% between two
runs). Compare figures of one run with each other; run it twice before reading a few percent.

    python benchmarks/bench_generation_count.py                 # 50 and 250 rows, some 15 minutes
    python benchmarks/bench_generation_count.py --rows 100      # 20 and 100 rows
    python benchmarks/bench_generation_count.py --roots /tmp/before,.

valgrind is not a dependency of the project (``apt install valgrind``); without it the script
says so and stops.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_generation import REFERENCE, write_plan  # noqa: E402
from bench_replay_count import cachegrind, find_valgrind, run_checked  # noqa: E402
from bench_whole_run import BARE, base_env, pytest_cmd  # noqa: E402
from fakeapi import FakeAnthropic, Reply  # noqa: E402

#: the bare script, also writing each reply as vcrpy would record it
RECORDING = BARE.replace(
    """            message = await client.messages.create(
                model="claude-haiku-5-5",
                max_tokens=8192,
                system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                messages=[{"role": "user", "content": f"Write the output for the row 'Term {i}' (file term-{i}.md)."}],
            )
""",
    """            params = dict(
                model="claude-haiku-5-5",
                max_tokens=8192,
                system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                messages=[{"role": "user", "content": f"Write the output for the row 'Term {i}' (file term-{i}.md)."}],
            )
            raw = await client.messages.with_raw_response.create(**params)
            message = await raw.parse()
        import json
        from vcr.request import Request
        from vcr.serialize import serialize
        from vcr.serializers import yamlserializer

        reply = raw.http_response
        cassette = {
            "requests": [Request("POST", str(reply.request.url), json.dumps(params).encode(), {"content-type": "application/json"})],
            "responses": [{
                "status": {"code": reply.status_code, "message": reply.reason_phrase},
                "headers": {k: [v] for k, v in reply.headers.items()},
                "body": {"string": reply.content},
            }],
        }
        (out / f"term-{i}.md.yaml").write_text(serialize(cassette, yamlserializer))
""",
)
assert RECORDING != BARE, "the bare script changed: update RECORDING"

#: pytest alone: ``BENCH_ITEMS`` trivial items
TRIVIAL = """
import os
import pytest

@pytest.mark.parametrize("n", range(int(os.environ["BENCH_ITEMS"])))
def test_item(n):
    pass
"""

VARIANTS = ("bare", "bare + cassette", "pytest alone", "ours")


def counts(stderr: str) -> list[int]:
    """Each process's ``I refs``, in pid order (a parent's pid is below its fork's)."""
    found = sorted(
        (int(pid), int(n.replace(",", ""))) for pid, n in re.findall(r"==(\d+)== I\s+refs:\s+([\d,]+)", stderr)
    )
    if not found:
        raise ValueError(f"no instruction count in valgrind's report: {stderr[-500:]!r}")
    return [n for _, n in found]


def count(variant: str, rows: int, root: Path, valgrind: str) -> list[int]:
    """The instructions of one run, per process (the second of two runs: bytecode caches warm)."""
    found: list[int] = []
    with FakeAnthropic(latency=0.0) as server:
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        env = {**base_env(server), "PYTHONPATH": str(root), "BENCH_ITEMS": str(4 * rows)}
        for _ in range(2):
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                write_plan(folder, rows)
                if variant == "ours":
                    cmd = cachegrind(
                        valgrind,
                        *pytest_cmd("--batch-plan", "plan.md", "--batch-concurrency", "8", "--rootdir", tmp)[1:],
                    )
                elif variant == "pytest alone":
                    (folder / "test_items.py").write_text(TRIVIAL)
                    cmd = cachegrind(valgrind, *pytest_cmd("test_items.py", "-p", "no:batchgen", "--rootdir", tmp)[1:])
                else:
                    (folder / "script.py").write_text(BARE if variant == "bare" else RECORDING)
                    (folder / "bare-out").mkdir()
                    cmd = cachegrind(valgrind, "script.py", str(rows), "8", "bare-out", "out/reference.md")
                found = counts(run_checked(variant, cmd, folder, env).stderr)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=250)
    ap.add_argument("--roots", default=str(ROOT), help="checkouts of the plugin to count, comma-separated")
    args = ap.parse_args()
    valgrind = find_valgrind()
    small, large = max(args.rows // 5, 1), args.rows
    for root in (Path(r).resolve() for r in args.roots.split(",")):
        print(f"{root}: instructions a row ({small} and {large} rows, zero latency, concurrency 8)", flush=True)
        per_row: dict[str, list[float]] = {}
        for variant in VARIANTS:
            a, b = count(variant, small, root, valgrind), count(variant, large, root, valgrind)
            if len(a) != len(b):
                raise SystemExit(f"{variant}: {len(a)} processes at {small} rows, {len(b)} at {large}")
            per_row[variant] = [(y - x) / (large - small) for x, y in zip(a, b, strict=True)]
            names = ["the pytest process", "the sending process"] if variant == "ours" else [variant]
            shown = ", ".join(
                f"{name} {n / 1e6:.2f} M a row, {(total - n * large) / 1e9:.2f} G fixed"
                for name, n, total in zip(names, per_row[variant], b, strict=True)
            )
            print(f"  {variant}: {shown}", flush=True)
        bare = per_row["bare"][0]
        parent, *child = per_row["ours"]
        print(
            f"  RATIO a row / bare: bare + cassette {per_row['bare + cassette'][0] / bare:.2f}, "
            f"pytest alone {per_row['pytest alone'][0] / bare:.2f}, "
            f"ours: the pytest process {parent / bare:.2f}"
            + (f", the sending process {child[0] / bare:.2f}" if child else " (no sending process)"),
            flush=True,
        )


if __name__ == "__main__":
    main()
