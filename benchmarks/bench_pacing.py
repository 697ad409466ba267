"""Pacing at the account's limit: 500 rows at --batch-concurrency 64 against a rate-limited server.

The loopback server (tests/fakeapi.py) enforces the API's per-minute limits as token buckets,
with ``--window`` seconds standing for the minute, and sends the ``anthropic-ratelimit-*``
headers and ``retry-after`` like the API. The same plan is generated three times: twice with
pacing (the default), once with ``--batch-no-pacing`` (a fixed 64 in flight, 429s left to the
SDK's two retries). The first paced run knows nothing of the account, so its first wave is sent
blind; the second starts from the limits the first left in the user's cache folder (a folder
of the script's, not yours), as any later run on an account does. For each run the script
prints, counted at the server and in the JSON report:

* rows in error (target 0),
* the share of requests answered 429 (target <= 2 %),
* throughput as a share of the tightest limit (target >= 90 %): what the admitted requests
  consumed of that budget, over what a token bucket of that size and refill can admit at most
  in the time between the first and the last admitted request (capacity + rate x span).

    python benchmarks/bench_pacing.py [--rows 500] [--concurrency 64] [--tightest requests|input]

``--tightest requests`` limits requests to ``--rpm`` per window (input and output far above);
``--tightest input`` limits input tokens so that they bind first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_generation import REFERENCE  # noqa: E402
from bench_generation import write_plan as write_shared_plan  # noqa: E402
from fakeapi import FakeAnthropic, RateLimits, Reply  # noqa: E402

MAX_TOKENS = 1024


def write_plan(folder: Path, rows: int) -> None:
    write_shared_plan(folder, rows)
    (folder / "pytest.ini").write_text(f"[pytest]\nbatchgen_max_tokens = {MAX_TOKENS}\n")


def one_run(
    args: argparse.Namespace, server: FakeAnthropic, limits: RateLimits, pacing: bool, cache: str, label: str
) -> dict:
    """One generation of the plan against ``server``, its buckets full and its prompt cache empty
    at the start; ``cache`` is the user's cache folder (where the account's limits are kept)."""
    server.limits = limits  # full buckets
    server.reset_cache()
    server.reset_log()
    server.admitted.clear()
    server.limited = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_plan(folder, args.rows)
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        env = {
            **os.environ,
            "ANTHROPIC_BASE_URL": server.base_url,
            "ANTHROPIC_API_KEY": "bench",
            "XDG_CACHE_HOME": cache,
        }
        env.pop("CI", None)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--batch-plan",
            "plan.md",
            "--batch-concurrency",
            str(args.concurrency),
            "--batch-record-mode",
            "all",
            "--batch-report",
            "report.json",
            "--rootdir",
            tmp,
        ]
        if not pacing:
            cmd.append("--batch-no-pacing")
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        server.wait_idle()
        report_path = folder / "report.json"
        if not report_path.exists():
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit("benchmark run failed: no report")
        report = json.loads(report_path.read_text())
        rows = [r for plan in report["plans"] for r in plan["rows"]]
        errors = sum(1 for r in rows if r["generation"] and r["generation"]["outcome"] == "error")
        logged = server.messages_requests()
        limited = sum(1 for e in logged if e.status == 429)
        admitted = server.admitted
        span = (admitted[-1][0] - admitted[0][0]) if admitted else 0.0
        # what the admitted requests finally consumed of each budget (after the API's refunds),
        # against what a bucket of that size and refill admits at most over the span
        utilisation = {
            k: sum(charge[k] for _, charge in admitted) / (cap + cap / limits.window * span)
            for k, cap in limits.kinds().items()
        }
        return {
            "label": label,
            "elapsed": elapsed,
            "rows": len(rows),
            "errors": errors,
            "requests": len(logged),
            "limited": limited,
            "span": span,
            "utilisation": utilisation,
            "returncode": proc.returncode,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per request")
    ap.add_argument("--window", type=float, default=3.0, help="seconds that stand for the API's minute")
    ap.add_argument("--rpm", type=float, default=60, help="requests per window the tightest limit allows")
    ap.add_argument("--tightest", choices=("requests", "input"), default="requests")
    ap.add_argument("--no-comparison", action="store_true", help="skip the run without pacing")
    args = ap.parse_args()
    if args.tightest == "requests":
        limits = RateLimits(requests=args.rpm, input_tokens=10_000_000, output_tokens=10_000_000, window=args.window)
    else:
        # a row's prompt counts about 41 input tokens once the shared prefix is cached
        limits = RateLimits(requests=10_000, input_tokens=args.rpm * 41, output_tokens=10_000_000, window=args.window)
    rate = {k: v / args.window for k, v in limits.kinds().items()}
    print(
        f"rows={args.rows} concurrency={args.concurrency} latency={args.latency}s; the server's 'minute' is "
        f"{args.window:g}s; limits per minute: {limits.kinds()} (per second: {rate})"
    )
    print(f"unpaced, the server could take {args.concurrency / args.latency:.0f} requests/s")
    with FakeAnthropic(latency=args.latency) as server, tempfile.TemporaryDirectory() as cache:
        # the first run on this account sends its first wave blind; the second starts from the
        # limits the first one left in the user's cache folder (pytest_batchgen/limitstore.py)
        runs = [one_run(args, server, limits, True, cache, "paced (default), first run on the account")]
        time.sleep(args.window)  # the buckets the first run drained are full again
        runs.append(one_run(args, server, limits, True, cache, "paced (default), limits known from the run before"))
        if not args.no_comparison:
            runs.append(one_run(args, server, limits, False, cache, "fixed concurrency (--batch-no-pacing)"))
    tightest = {"requests": "requests", "input": "input_tokens"}[args.tightest]
    for r in runs:
        share = 100 * r["limited"] / max(1, r["requests"])
        util = 100 * r["utilisation"][tightest]
        print(f"\n{r['label']}: {r['elapsed']:.1f}s wall, admitted over {r['span']:.1f}s")
        print(f"  rows in error:            {r['errors']} of {r['rows']} (target 0)")
        print(f"  requests answered 429:    {r['limited']} of {r['requests']} = {share:.1f}% (target <= 2%)")
        print(f"  throughput vs {tightest} limit: {util:.1f}% (target >= 90%)")
        print("  all budgets: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["utilisation"].items()))


if __name__ == "__main__":
    main()
