"""Where a generation run's CPU goes: the table in the README's "Why the whole-run targets are
not met", from one profiled run.

Runs ``pytest --batch-plan`` on ``--rows`` rows at zero latency against the loopback server
(tests/fakeapi.py, in this process) under ``py-spy record --gil``, which samples only the
thread holding the interpreter lock: nearly all of a run's work happens under that one lock, so
the samples split the run's CPU between its parts. Each sample goes to the first part, in the
order below, that one of its frames belongs to. The bare SDK script of ``bench_whole_run.py``
runs too, unprofiled, for its CPU seconds.

py-spy is not a dependency of the project: ``pip install py-spy`` first (it needs to be allowed
to read another process's memory: root, or ``ptrace_scope`` 0). Without it the script says so.

    python benchmarks/profile_budget.py                 # 1,000 rows, concurrency 8
    python benchmarks/profile_budget.py --rows 200 --raw /tmp/run.raw   # keep the samples
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_generation import REFERENCE, write_plan  # noqa: E402
from bench_validate_only import run_process  # noqa: E402
from bench_whole_run import BARE, base_env, pytest_cmd  # noqa: E402
from fakeapi import FakeAnthropic, Reply  # noqa: E402

#: (part, what marks a sample as that part: a frame's function name). Each sample counts once,
#: for the first part in this order that one of its frames marks; the main thread is the mark
#: ``thread-main``, so what the main thread does inside the other parts' frames is theirs.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("importing the SDK (the preload thread)", ("Preloader._run",)),
    ("recording (vcrpy's cassette, its YAML dump, the file)", ("Recorder.commit", "Recorder.record")),
    ("writing each draft and parsing it for its checks", ("_write_draft",)),
    ("the SDK's requests (our transports included)", ("AsyncMessages.create",)),
    ("pytest on the main thread (items, reports, collection, summary)", ("thread-main",)),
)
REST = "the rest (event loop, pacing, results, other threads)"


def part_of(stack: str, main_thread: str) -> str:
    """The part one py-spy raw stack (``thread (tid): name;frame;frame;...``) belongs to."""
    frames = stack.split(";")
    names = {frame.split(" (", 1)[0] for frame in frames[1:]}
    if frames[0].split(":", 1)[0] == main_thread:
        names.add("thread-main")
    for part, marks in PARTS:
        if names.intersection(marks):
            return part
    return REST


def budget(raw: Path) -> Counter[str]:
    """Samples per part of a ``py-spy record -f raw --threads`` file (a stack and a count per
    line). The main thread is named on most lines and unnamed on a few (at exit): it is known
    by its thread id."""
    lines = [line.rpartition(" ") for line in raw.read_text().splitlines()]
    main_thread = next(
        (
            s.split(";", 1)[0].split(":", 1)[0]
            for s, _, _ in lines
            if s.startswith("thread (") and s.split(";", 1)[0].endswith(": MainThread")
        ),
        "",
    )
    counts: Counter[str] = Counter()
    for stack, _, n in lines:
        if stack:
            counts[part_of(stack, main_thread)] += int(n)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--raw", type=Path, help="keep py-spy's raw samples here")
    args = ap.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    reply = Reply.ok(REFERENCE.replace("Reference", "Generated"))
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(latency=0.0) as server:
        folder = Path(tmp)
        write_plan(folder, args.rows)
        server.default = lambda body: reply
        raw = args.raw.resolve() if args.raw else folder / "samples.raw"
        cmd = pytest_cmd("--batch-plan", "plan.md", "--batch-concurrency", str(args.concurrency), "--rootdir", tmp)
        spied = [spy, "record", "-r", str(args.rate), "-f", "raw", "--gil", "--threads", "-o", str(raw), "--", *cmd]
        ran = run_process(spied, folder, base_env(server))
        counts = budget(raw)
        (folder / "bare.py").write_text(BARE)
        (folder / "bare-out").mkdir()
        bare_cmd = [sys.executable, "bare.py", str(args.rows), str(args.concurrency), "bare-out", "out/reference.md"]
        bare = run_process(bare_cmd, folder, base_env(server))
    held = sum(counts.values()) / args.rate
    print(
        f"{args.rows} rows, zero latency, concurrency {args.concurrency}: {ran.wall:.2f}s under py-spy, "
        f"{ran.cpu:.2f}s CPU (py-spy's own included), {held:.2f}s sampled with the lock held"
    )
    for part in [p for p, _ in PARTS] + [REST]:
        seconds = counts[part] / args.rate
        per_row = "" if part == PARTS[0][0] else f"  {seconds / args.rows * 1000:5.2f} ms a row"  # once a run
        print(f"  {part:66s} {seconds:6.2f}s{per_row}")
    print(f"the bare SDK script on the same rows: {bare.wall:.2f}s, {bare.cpu:.2f}s CPU")


if __name__ == "__main__":
    main()
