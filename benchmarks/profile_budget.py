"""Where a generation run's CPU goes: the table under "Why the whole-run targets are not met" in
benchmarks/HISTORY.md (the README's figures until 2026-12-06), from one profiled run.

Runs ``pytest --batch-plan`` on ``--rows`` rows at zero latency against the loopback server
(tests/fakeapi.py, in this process) under ``py-spy record --gil --subprocesses``, which samples
only the thread holding each process's interpreter lock: nearly all of a process's work happens
under its lock, so the samples split the run's CPU between its parts, in the pytest process and
in the sending process it forks (``--sender thread`` profiles the run without it). Each sample goes to the first part, in the
order below, that one of its frames belongs to. The bare SDK script of ``bench_whole_run.py``
runs under py-spy too, split into its import of the SDK and the rest, so the two are measured
alike (py-spy's sampling slows both).

py-spy is not a dependency of the project: ``pip install py-spy`` first (it needs to be allowed
to read another process's memory: root, or ``ptrace_scope`` 0). Without it the script says so.

    python benchmarks/profile_budget.py                 # 1,000 rows, concurrency 8
    python benchmarks/profile_budget.py --rows 200 --raw /tmp/run.raw   # keep the samples
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_generation import REFERENCE, write_plan  # noqa: E402
from bench_validate_only import Ran, run_process  # noqa: E402
from bench_whole_run import BARE, base_env, pytest_cmd  # noqa: E402
from fakeapi import FakeAnthropic, Reply  # noqa: E402

#: a mark: (function name, the end of its file's path as py-spy prints it). Only the function's
#: own name is compared: py-spy 0.4 prints ``Class.method`` on Python 3.11 and later, ``method``
#: before. ``thread-main`` marks the main thread.
Mark = tuple[str, str]
MAIN: Mark = ("thread-main", "")
#: parts: (name, its marks, whether it is paid once a run rather than per row)
Parts = tuple[tuple[str, tuple[Mark, ...], bool], ...]

#: Each sample counts once, for the first part in this order that one of its frames marks, so
#: what the main thread does inside the other parts' frames is theirs.
PARTS: Parts = (
    (
        "importing the SDK (the sending process, or the preload thread)",
        (("run_here", "pytest_batchgen/preload.py"),),
        True,
    ),
    (
        "importing vcrpy (its own thread, at the first reply)",
        (("_import_quietly", "pytest_batchgen/preload.py"),),
        True,
    ),
    (
        "recording (vcrpy's cassette, its YAML dump, the file)",
        (("commit", "pytest_batchgen/recording.py"), ("record", "pytest_batchgen/recording.py")),
        False,
    ),
    (
        "writing each draft, parsing it and checking it (in the pytest process when the child asks)",
        (
            ("write_draft", "pytest_batchgen/dispatch.py"),
            ("draft", "pytest_batchgen/sender.py"),
            ("_answer", "pytest_batchgen/sender.py"),
        ),
        False,
    ),
    ("the SDK's requests (our transports included)", (("create", "anthropic/resources/messages/messages.py"),), False),
    ("the main thread (pytest's items, reports, start, collection, summary)", (MAIN,), False),
)
REST = "the rest (event loop, pacing, results and their pipe, other threads)"

#: the bare script's two parts: its import of the SDK, and everything else
BARE_PARTS: Parts = (("bare: importing the SDK", (("_find_and_load", "<frozen importlib._bootstrap>"),), True),)
BARE_REST = "bare: its requests and files"

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")


def marks_of(frame: str) -> Mark | None:
    """``(function, file)`` of one py-spy frame, ``Class.method (path/file.py:12)``."""
    found = FRAME.match(frame)
    if found is None:
        return None
    return found["function"].rsplit(".", 1)[-1], found["file"]


#: where a sample was taken: the process pytest runs in, or the sending process it forked
PYTEST, SENDING = "pytest process", "sending process"


def part_of(stack: str, main_threads: set[str], parts: Parts, rest: str) -> tuple[str, str]:
    """The process and the part one py-spy raw stack belongs to. With ``--subprocesses`` a
    stack starts with its processes, outermost first (``process 12:"cmd";process 13:"cmd";``
    for the forked child), then ``thread (tid): name;frame;frame;...``."""
    frames = stack.split(";")
    nested = 0
    while frames and frames[0].startswith("process "):
        frames.pop(0)
        nested += 1
    where = SENDING if nested > 1 else PYTEST
    seen = [m for m in map(marks_of, frames[1:]) if m is not None]
    if frames and frames[0].split(":", 1)[0] in main_threads:
        seen.append(MAIN)
    for part, marks, _ in parts:
        if any(function == mf and file.endswith(ff) for function, file in seen for mf, ff in marks):
            return where, part
    return where, rest


def budget(raw: Path, parts: Parts = PARTS, rest: str = REST) -> Counter[tuple[str, str]]:
    """Samples per (process, part) of a ``py-spy record -f raw --threads`` file (a stack and a
    count per line). A main thread is named on most lines and unnamed on a few (at exit): it is
    known by its thread id."""
    lines = [line.rpartition(" ") for line in raw.read_text().splitlines()]
    main_threads = set()
    for stack, _, _ in lines:
        thread = next((f for f in stack.split(";") if f.startswith("thread (")), "")
        if thread.endswith(": MainThread"):
            main_threads.add(thread.split(":", 1)[0])
    counts: Counter[tuple[str, str]] = Counter()
    for stack, _, n in lines:
        if stack:
            counts[part_of(stack, main_threads, parts, rest)] += int(n)
    return counts


def spy(spy_bin: str, rate: int, raw: Path, cmd: list[str], folder: Path, env: dict[str, str]) -> Ran:
    """Run ``cmd`` under ``py-spy record --gil``, its samples into ``raw``."""
    spied = [
        spy_bin,
        "record",
        "-r",
        str(rate),
        "-f",
        "raw",
        "--gil",
        "--threads",
        "--subprocesses",
        "-o",
        str(raw),
        "--",
        *cmd,
    ]
    return run_process(spied, folder, env)


def show(counts: Counter[tuple[str, str]], parts: Parts, rest: str, rate: int, rows: int) -> None:
    for where in (PYTEST, SENDING):
        held = sum(n for (w, _), n in counts.items() if w == where) / rate
        if not held:
            continue
        print(f"  {where}: {held:.2f}s with its lock held")
        for part, _, once in (*parts, (rest, (), False)):
            seconds = counts[(where, part)] / rate
            if seconds:
                per_row = "" if once else f"  {seconds / rows * 1000:5.2f} ms a row"
                print(f"    {part:73s} {seconds:6.2f}s{per_row}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--raw", type=Path, help="keep py-spy's raw samples here")
    ap.add_argument("--sender", choices=("process", "thread"), default="process", help="batchgen_sender")
    args = ap.parse_args()
    spy_bin = shutil.which("py-spy")
    if spy_bin is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    reply = Reply.ok(REFERENCE.replace("Reference", "Generated"))
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(latency=0.0) as server:
        folder = Path(tmp)
        write_plan(folder, args.rows)
        server.default = lambda body: reply
        raw = args.raw.resolve() if args.raw else folder / "samples.raw"
        cmd = pytest_cmd(
            "--batch-plan", "plan.md", "--batch-concurrency", str(args.concurrency), "--rootdir", tmp,
            "-o", f"batchgen_sender={args.sender}",
        )  # fmt: skip
        ours = spy(spy_bin, args.rate, raw, cmd, folder, base_env(server))
        counts = budget(raw)
        (folder / "bare.py").write_text(BARE)
        (folder / "bare-out").mkdir()
        bare_cmd = [sys.executable, "bare.py", str(args.rows), str(args.concurrency), "bare-out", "out/reference.md"]
        bare = spy(spy_bin, args.rate, folder / "bare.raw", bare_cmd, folder, base_env(server))
        bare_counts = budget(folder / "bare.raw", BARE_PARTS, BARE_REST)
    for name, ran, found, parts, rest in (
        ("pytest --batch-plan", ours, counts, PARTS, REST),
        ("the bare SDK script", bare, bare_counts, BARE_PARTS, BARE_REST),
    ):
        held = sum(found.values()) / args.rate  # both processes
        print(
            f"{name}, {args.rows} rows, zero latency, concurrency {args.concurrency}: {ran.wall:.2f}s under py-spy, "
            f"{ran.cpu:.2f}s CPU (py-spy's own included), {held:.2f}s sampled with the lock held"
        )
        show(found, parts, rest, args.rate, args.rows)
        missing = [part for part, _, _ in parts if not any(n for (_, p), n in found.items() if p == part)]
        if missing:  # a mark that no longer names a frame (a renamed function, another SDK)
            print(f"  no sample found for: {', '.join(missing)}")


if __name__ == "__main__":
    main()
