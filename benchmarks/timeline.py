"""Where a generating run's wall time goes, as a timeline: the README's row "the end of a run",
and "from the end of the SDK's import to the first request" in benchmarks/HISTORY.md.

Single runs on a shared machine are one draw each (the SDK's import alone varied from 1.3 to
2.4 s in one hour here), so this script times the steps inside each run instead: a probe plugin
(written to a temporary folder, loaded with ``-p``) stamps the moment the sending process
finished importing the SDK, the session's end and the interpreter's exit handlers; the loopback
server (tests/fakeapi.py, in this process) stamps the first request and the last reply. It
prints the median of each interval over ``--runs`` runs.

``--roots`` compares checkouts of the plugin, run in turn (``PYTHONPATH`` first): a git
worktree of an older commit against this one, say.

    python benchmarks/timeline.py                      # 1,000 rows, concurrency 8, 6 runs
    python benchmarks/timeline.py --rows 48 --concurrency 16 --runs 8
    git worktree add /tmp/before HEAD~3 && python benchmarks/timeline.py --roots /tmp/before,.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_generation import REFERENCE, write_plan  # noqa: E402
from bench_whole_run import base_env, pytest_cmd  # noqa: E402
from fakeapi import FakeAnthropic, Reply  # noqa: E402

#: the probe: stamps (name, wall clock) lines into $BATCHGEN_TIMELINE. It wraps the plugin's
#: preloader (the SDK's import, in the sending process or on the pytest process's thread), and
#: stamps pytest's configure and the fork of the sending process (the first fork: a process the
#: sending process forks in turn would stamp again, and ``one_run`` keeps the first of a name)
PROBE = """
import atexit, os, time
import pytest

def stamp(name):
    with open(os.environ["BATCHGEN_TIMELINE"], "a") as out:
        out.write(f"{name} {time.time()!r}\\n")

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    stamp("configure")  # before the plugin's own configure, which forks the sending process
    # imported here, not with this module: the plugin imports its core in its configure, and a
    # probe importing it earlier would move that time out of "configure -> forked"
    from pytest_batchgen import preload

    _run_here = preload.Preloader.run_here

    def run_here(self):
        _run_here(self)
        if "anthropic" in self.modules:
            stamp("imported")

    preload.Preloader.run_here = run_here

os.register_at_fork(after_in_child=lambda: stamp("forked"))  # in the sending process, as it starts

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    stamp("session-end")

atexit.register(stamp, "exit-handlers")  # registered first: the last handler to run
"""

#: the intervals printed: (label, from, to); "start" is the process's start, "exit" its end
INTERVALS = (
    ("start -> pytest's configure", "start", "configure"),
    ("pytest's configure -> the sending process forked", "configure", "forked"),
    ("the sending process forked -> the SDK imported", "forked", "imported"),
    ("start -> the SDK imported (in the sending process)", "start", "imported"),
    ("the SDK imported -> the first request at the server", "imported", "first-request"),
    ("start -> the first request", "start", "first-request"),
    ("the first request -> the last reply", "first-request", "last-reply"),
    ("the last reply -> the session's end", "last-reply", "session-end"),
    ("the session's end -> the exit handlers", "session-end", "exit-handlers"),
    ("the exit handlers -> the process's exit", "exit-handlers", "exit"),
    ("the last reply -> the process's exit", "last-reply", "exit"),
)


def one_run(root: Path, rows: int, concurrency: int, probe_dir: Path) -> dict[str, float]:
    """The stamps of one run, in seconds since its process started."""
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(latency=0.0) as server:
        folder = Path(tmp)
        write_plan(folder, rows)
        server.default = lambda body: Reply.ok(REFERENCE.replace("Reference", "Generated"))
        stamps = folder / "timeline.txt"
        env = base_env(server)
        env["PYTHONPATH"] = f"{probe_dir}:{root}:{env['PYTHONPATH']}"
        env["BATCHGEN_TIMELINE"] = str(stamps)
        cmd = pytest_cmd("--batch-plan", "plan.md", "--batch-concurrency", str(concurrency), "--rootdir", tmp)
        wall, mono = time.time(), time.monotonic()
        done = subprocess.run(
            [*cmd, "-p", "batchgen_timeline_probe"], cwd=folder, env=env, capture_output=True, text=True
        )
        ended = time.monotonic() - mono
        if done.returncode != 0:
            raise SystemExit(f"the run failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        logged = server.messages_requests()
        found = {"start": 0.0, "exit": ended}
        found["first-request"] = min(e.started for e in logged) - mono
        found["last-reply"] = max(e.finished or e.started for e in logged) - mono
        for line in stamps.read_text().splitlines():
            name, at = line.split()
            found.setdefault(name, float(at) - wall)
        return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--roots", default=str(ROOT), help="checkouts of the plugin to compare, comma-separated")
    args = ap.parse_args()
    roots = [Path(r).resolve() for r in args.roots.split(",")]
    runs: dict[Path, list[dict[str, float]]] = {root: [] for root in roots}
    with tempfile.TemporaryDirectory() as probe_dir:
        (Path(probe_dir) / "batchgen_timeline_probe.py").write_text(PROBE)
        for n in range(args.runs):
            for root in roots if n % 2 == 0 else roots[::-1]:  # interleaved, in turn
                runs[root].append(one_run(root, args.rows, args.concurrency, Path(probe_dir)))
    print(f"{args.rows} rows, zero latency, concurrency {args.concurrency}: medians of {args.runs} runs (min to max)")
    for root in roots:
        print(f"  {root}")
        for label, start, end in INTERVALS:
            spans = [r[end] - r[start] for r in runs[root] if start in r and end in r]
            if not spans:
                print(f"    {label:58s} not stamped")
                continue
            print(f"    {label:58s} {statistics.median(spans):6.3f} s  ({min(spans):.3f} to {max(spans):.3f})")


if __name__ == "__main__":
    main()
