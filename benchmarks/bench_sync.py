"""The end of a run's fsyncs: each file one by one against each file system once (``syncfs``).

A generating run writes two files a row without an fsync (output and recording) and makes
them durable in one pass at its end (``fsutil.sync_deferred``). This script times that pass
for ``--files`` new files in a temporary folder, both ways, alternating: ``fsutil``'s per-file
path (eight at a time, then the folder) and one ``syncfs`` of the folder's file system. Then
the same with ``--dirty`` MB written by "another program" (a file of this script's, not synced)
just before: ``syncfs`` waits for those too, which is why ``sync_deferred`` falls back to the
per-file path when other programs have more than ``fsutil.SYNCFS_OTHERS_LIMIT`` waiting.

    python benchmarks/bench_sync.py                    # 2,000 files, 3 rounds, then 1,000 MB dirty
    python benchmarks/bench_sync.py --files 10000 --dirty 0
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_batchgen import fsutil  # noqa: E402


def one_pass(files: int, how: str, dirty_mb: int) -> float:
    """Seconds to make ``files`` new files durable, ``how`` = "per-file" or "syncfs"."""
    with tempfile.TemporaryDirectory() as tmp:
        os.sync()  # nothing of earlier rounds left to write back
        fsutil.sync_deferred()
        for i in range(files):
            fsutil.atomic_write(Path(tmp, f"out-{i}.md"), "x" * 1500, sync=False)
        if dirty_mb:
            with open(Path(tmp, "other-program.bin"), "wb") as other:
                for _ in range(dirty_mb):
                    other.write(b"x" * (1 << 20))
        with fsutil._unsynced_lock:
            paths = list(fsutil._unsynced)
            fsutil._unsynced.clear()
        started = time.perf_counter()
        if how == "syncfs":
            syncfs = fsutil._syncfs()
            assert syncfs is not None, "no syncfs here (Linux only)"
            fd = os.open(tmp, os.O_RDONLY)
            try:
                syncfs(fd)
            finally:
                os.close(fd)
        else:
            _per_file(paths)
        return time.perf_counter() - started


def _per_file(paths: list[Path]) -> None:
    """``sync_deferred``'s path below ``SYNCFS_FROM`` files: each file, eight at a time, then the folders."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(fsutil._fsync, paths))
        list(pool.map(fsutil._fsync, {p.parent for p in paths}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dirty", type=int, default=1000, help="MB another program wrote just before (0: skip)")
    args = ap.parse_args()
    if fsutil._syncfs() is None:
        raise SystemExit("no syncfs here: sync_deferred fsyncs each file on this system")
    for dirty in [0] + ([args.dirty] if args.dirty else []):
        times: dict[str, list[float]] = {"per-file": [], "syncfs": []}
        for _ in range(args.rounds):
            for how in times:
                times[how].append(one_pass(args.files, how, dirty))
        per, whole = (statistics.median(times[h]) for h in ("per-file", "syncfs"))
        print(
            f"{args.files} files, {dirty} MB of another program's not yet on disk: one by one {per:.3f} s, "
            f"syncfs {whole:.3f} s (medians of {args.rounds}; {', '.join(f'{t:.3f}' for t in times['syncfs'])})",
            flush=True,
        )


if __name__ == "__main__":
    main()
