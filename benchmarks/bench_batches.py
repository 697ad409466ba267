"""Message Batches at scale: N rows through ``--batch-api batches`` against the loopback server.

The server (tests/fakeapi.py, in this process) answers every request of a batch at once and
ends the batch on its first poll, so what is measured is the client side: building and
journaling the requests, the create, polling, streaming the results, filing each in its
row's cassette, writing and checking each output, and the plan update. The same outputs are
then checked again with ``--batch-validate-only`` (no model, no batch) to show what the batch
path adds to pytest's own work. Peak memory is the pytest process's maximum resident set.

    python benchmarks/bench_batches.py [--rows 5000]
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

from bench_generation import REFERENCE, write_plan  # noqa: E402
from fakeapi import FakeAnthropic, Reply  # noqa: E402

MEASURE = (
    "import resource, runpy, sys; "
    "sys.argv = ['pytest'] + sys.argv[1:]; "
    "code = 0\n"
    "try:\n    runpy.run_module('pytest', run_name='__main__')\n"
    "except SystemExit as exc:\n    code = exc.code or 0\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)"
)


def run(folder: Path, env: dict[str, str], *args: str) -> tuple[float, int, str]:
    cmd = [
        sys.executable,
        "-c",
        MEASURE,
        "-q",
        "-p",
        "no:cacheprovider",
        "--batch-plan",
        "plan.md",
        "--rootdir",
        str(folder),
        *args,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit("benchmark run failed")
    peak = int(proc.stderr.rsplit("PEAK_KB", 1)[1].split()[0])
    return elapsed, peak, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(batch_polls_until_ended=1) as server:
        folder = Path(tmp)
        write_plan(folder, args.rows)
        (folder / "pytest.ini").write_text("[pytest]\nbatchgen_batch_poll_start = 0.05\nbatchgen_batch_poll_max = 1\n")
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        env = {**os.environ, "ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "bench"}
        # this checkout's plugin, whatever the installed one points at
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env.pop("CI", None)
        batch_time, batch_peak, out = run(folder, env, "--batch-api", "batches", "--batch-report", "report.json")
        created = len(server.batches)
        sent = sum(len(b.requests) for b in server.batches.values())
        assert sent == args.rows, (sent, out[-2000:])
        report = json.loads((folder / "report.json").read_text())
        check_time, check_peak, _ = run(folder, env, "--batch-validate-only")
        cassettes = sum(1 for _ in (folder / "cassettes" / "plan").glob("*.yaml"))
    print(f"rows={args.rows}: {created} batch(es), {sent} requests, {cassettes} cassettes")
    print(f"batch mode run:        {batch_time:7.2f}s wall, peak RSS {batch_peak / 1024:7.1f} MB")
    print(f"validate-only (same):  {check_time:7.2f}s wall, peak RSS {check_peak / 1024:7.1f} MB")
    print(
        f"batch path adds:       {batch_time - check_time:7.2f}s = {(batch_time - check_time) / args.rows * 1000:.2f} ms a row, "
        f"{(batch_peak - check_peak) / 1024:.1f} MB"
    )
    print(
        f"estimated cost {report['totals']['cost_usd']:.4f} USD; Message Batches saved {report['totals'].get('batch_saved_usd', 0):.4f} USD"
    )


if __name__ == "__main__":
    main()
