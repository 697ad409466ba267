"""Generation overhead: time beyond a zero-latency run, against ceil(rows/concurrency) x latency.

PRODUCT.md section 9 asks for  (T(latency) - T(0)) / (ceil(rows / concurrency) x latency) <= 1.1.
Both runs use the same plan, the same loopback server (tests/fakeapi.py) and the real SDK; only
the server's per-request latency differs, so the difference is the time spent waiting on the
model, and the ratio shows how well the dispatcher overlaps requests.

    python benchmarks/bench_generation.py [--rows 48] [--concurrency 8] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakeapi import FakeAnthropic, Reply  # noqa: E402

REFERENCE = """---
term: Reference
category: Alpha
tags: [one, two]
---

## Definition

A reference entry.

## Details

Some details.
"""


def write_plan(folder: Path, rows: int, status: str = "pending") -> None:
    """The benchmarks' plan: ``rows`` rows of one phase, three rules, a short format reference
    (shared by the benchmark scripts, so their figures are about the same work)."""
    (folder / "out").mkdir(exist_ok=True)
    (folder / "out" / "reference.md").write_text(REFERENCE)
    table = "\n".join(f"| Term {i} | term-{i}.md | haiku | {status} |" for i in range(rows))
    (folder / "plan.md").write_text(
        "## Format Reference\nout/reference.md\n\n## Output Directory\nout/\n\n"
        "## Content Rules\n- category must be one of: Alpha, Beta\n\n"
        "## Validation Checklist\n1. Front matter includes term, category and at least 2 tags\n"
        "2. category is one of the values listed in Content Rules\n"
        "3. Definition and Details sections present, in that order\n\n"
        f"## Phase 1\n| Title | Filename | Model | Status |\n|---|---|---|---|\n{table}\n"
    )


def timed_run(rows: int, concurrency: int, latency: float) -> float:
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(latency=latency) as server:
        folder = Path(tmp)
        write_plan(folder, rows)
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        env = {**os.environ, "ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "bench"}
        env.pop("CI", None)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--batch-plan",
            "plan.md",
            "--batch-concurrency",
            str(concurrency),
            "--batch-record-mode",
            "all",
            "--rootdir",
            tmp,
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit("benchmark run failed")
        logged = server.messages_requests()
        assert len(logged) == rows
        server.wait_idle()
        span = max(e.finished for e in logged) - min(e.started for e in logged)
        return elapsed, span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    zero = min(timed_run(args.rows, args.concurrency, 0.0)[0] for _ in range(args.repeat))
    slow, span = min(timed_run(args.rows, args.concurrency, args.latency) for _ in range(args.repeat))
    ideal = math.ceil(args.rows / args.concurrency) * args.latency
    ratio = (slow - zero) / ideal
    print(f"rows={args.rows} concurrency={args.concurrency} latency={args.latency}s")
    print(f"zero-latency run: {zero:.2f}s   with latency: {slow:.2f}s   ideal extra: {ideal:.2f}s")
    print(f"generation ratio (target <= 1.1): {ratio:.3f}")
    # the run's checks overlap the waiting, which can push the ratio under 1; the server's view
    # (first request in to last reply out) isolates the dispatcher
    print(f"dispatch span at the server: {span:.2f}s = {span / ideal:.3f} x ceil(rows/concurrency) x latency")


if __name__ == "__main__":
    main()
