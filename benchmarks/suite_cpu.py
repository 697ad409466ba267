"""Where the test suite's CPU goes, process by process (issue 12: the suite in under 2 minutes).

The suite is CPU-bound on 2 cores (three xdist workers keep both busy), so its time only
shrinks with its CPU, and most of that CPU is not in the workers' own tests but in the
processes they start. This script runs the suite (``pytest -n auto`` from the repository's
root, or the arguments given after ``--``) with a ``sitecustomize`` on ``PYTHONPATH`` that
logs each Python process's CPU (user and system) when it exits, and sums them by kind:

- the test process (xdist's controller) and its xdist workers;
- the sending processes the workers' in-process runs fork (``sender.py``), and other forks;
- the fork servers (``tests/forkserver.py``) and the runs they fork;
- fresh interpreters: the xdist workers of the runs the tests start with ``-n 2``, pytest in a
  process of its own (``runpytest_subprocess``), and the rest (linters, scripts).

A process started with ``python -I`` or ``-S`` loads no ``sitecustomize`` and is not counted:
the last line compares the logged total with the CPU of every process the suite left (the
kernel's count for this script's children). Linux only (``/proc/self/cmdline``).

    python benchmarks/suite_cpu.py                          # the README's test command
    python benchmarks/suite_cpu.py -- -n auto tests/test_batches_crash.py
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent

#: written to a temporary folder put first on the suite's PYTHONPATH
PROBE = """
import atexit, json, os, resource

_LOG = os.environ.get("BATCHGEN_SUITE_CPU_LOG")
_forked = []


def _log():
    if not _LOG:
        return
    try:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open("/proc/self/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\\0", b" ").decode(errors="replace")
        line = json.dumps([os.getpid(), os.getppid(), bool(_forked), usage.ru_utime + usage.ru_stime, cmdline])
        with open(_LOG, "a") as fh:
            fh.write(line + "\\n")
    except Exception:
        pass


os.register_at_fork(after_in_child=lambda: _forked.append(True))
atexit.register(_log)
_exit = os._exit


def _logged_exit(code):
    _log()
    _exit(code)


os._exit = _logged_exit
"""


class Process(NamedTuple):
    """One logged process."""

    ppid: int
    forked: bool
    cpu: float
    cmdline: str


def kind(pid: int, processes: dict[int, Process], top: int) -> str:
    """What the process ``pid`` is, from its parent, whether it was forked, and its command line
    (a forked process keeps its parent's). ``top`` is this script's pid."""
    me = processes[pid]
    parent = processes.get(me.ppid)

    def is_worker(p: Process | None) -> bool:
        """An exec'd child of the test process (whose parent is this script)."""
        test_process = processes.get(p.ppid) if p is not None else None
        return p is not None and not p.forked and test_process is not None and test_process.ppid == top

    if me.ppid == top:
        return "the test process (xdist's controller)"
    if is_worker(me):
        return "its xdist workers"
    if me.forked:
        if is_worker(parent):
            return "sending processes forked by the workers' in-process runs"
        if parent is not None and not parent.forked and "forkserver" in parent.cmdline:
            return "runs forked by the fork servers"
        return "other forked processes (the sending processes of runs in a process of their own)"
    if "forkserver" in me.cmdline:
        return "fork servers"
    if "exec(eval(sys.stdin.readline()))" in me.cmdline:
        return "xdist workers of the runs the tests start (-n 2)"
    if " -m pytest" in me.cmdline or " -mpytest" in me.cmdline:
        return "pytest in a fresh interpreter (runpytest_subprocess)"
    return "other fresh interpreters (linters, scripts)"


def _script(cmdline: str) -> str:
    """The script (or ``-c`` / ``-m`` target) a command line runs, for the tally of the others."""
    words = cmdline.split()
    for i, word in enumerate(words[1:], 1):
        if word in ("-c", "-m") and i + 1 < len(words):
            return f"{word} {words[i + 1][:30]}"
        if not word.startswith("-"):
            return Path(word).name
    return words[0] if words else "?"


def _largest(cpu: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(cpu.items(), key=lambda item: -item[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pytest_args", nargs="*", help="pytest's arguments (default: -n auto)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "sitecustomize.py").write_text(PROBE)
        log = Path(tmp, "processes.jsonl")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")])),
            "BATCHGEN_SUITE_CPU_LOG": str(log),
        }
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *(args.pytest_args or ["-n", "auto"]), "-q"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        lines = log.read_text().splitlines() if log.exists() else []
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else f"pytest exited {done.returncode}")
    processes: dict[int, Process] = {}
    for line in lines:
        pid, *fields = json.loads(line)
        processes[pid] = Process(*fields)
    top = os.getpid()
    kinds = {pid: kind(pid, processes, top) for pid in processes}
    totals: dict[str, float] = collections.defaultdict(float)
    counts: collections.Counter[str] = collections.Counter()
    others: dict[str, float] = collections.defaultdict(float)  # the other interpreters, by script
    for pid, process in processes.items():
        totals[kinds[pid]] += process.cpu
        counts[kinds[pid]] += 1
        if kinds[pid].startswith("other fresh"):
            others[_script(process.cmdline)] += process.cpu
    logged = sum(totals.values())
    print(f"wall {wall:.1f} s; CPU of the processes logged {logged:.1f} s ({len(processes)} processes)")
    for name, cpu in _largest(totals):
        print(f"  {cpu:7.1f} s  {100 * cpu / logged:4.1f}%  {counts[name]:4d} x  {name}")
    if others:
        print(
            "  of the other fresh interpreters: "
            + ", ".join(f"{name} {cpu:.1f} s" for name, cpu in _largest(others)[:5])
        )
    everything = children.ru_utime + children.ru_stime
    print(f"every process the suite left, as the kernel counts them: {everything:.1f} s of CPU")


if __name__ == "__main__":
    main()
