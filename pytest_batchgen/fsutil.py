"""Atomic file writes, cross-process locks and file signatures.

Every file the plugin writes (outputs, the plan, the tracking file, cassettes) goes through
:func:`atomic_write` so that a crash or ``kill -9`` leaves either the old or the new content,
never half of it. Its temporary files and the locks of :func:`lock_for` are hidden files beside
the file they serve, named so that two ``.gitignore`` lines cover them::

    .*.batchgen-tmp-*
    .*.batchgen-lock

The files the user names for the reports go through :func:`write_through`, which follows a
symlink and writes a FIFO or a device rather than replacing it.

Durability: a write is atomic at once (the rename), and on disk (fsynced) either at once or, for
the many files a generation run writes (outputs and cassettes, ``sync=False``), in one pass at
the end of the run (:func:`sync_deferred`, before the plan says the rows are complete, and at
exit). A crash or ``kill -9`` loses nothing either way, since the kernel holds the bytes; a
power failure before that pass may lose recent outputs or recordings of rows the plan still
calls pending, which the next run generates again. One fsync per file was a tenth of a
1,000-row run; that pass syncs each file system once where it can (``syncfs``, Linux).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from filelock import FileLock, Timeout

#: (size, mtime_ns, inode): changes whenever the file does (atomic writes make a new inode)
Signature = tuple[int, int, int]

TMP_MARK = ".batchgen-tmp-"
LOCK_SUFFIX = ".batchgen-lock"
#: a temporary untouched for this long belongs to a write that died (a write takes well under a
#: second); age is used rather than the writer's pid, which means nothing to another container or
#: host sharing the same work tree
STALE_TMP_SECONDS = 10 * 60

_swept: set[Path] = set()
_swept_lock = threading.Lock()

#: files written with ``sync=False`` (or appended to) and not yet fsynced: see :func:`sync_deferred`
_unsynced: set[Path] = set()
_unsynced_lock = threading.Lock()


def signature(path: Path) -> Signature | None:
    """The file's (size, mtime_ns, inode), or None when it cannot be stat'ed (missing, no access).

    The stat caches (parsed documents, tracking-file links, linter verdicts) reuse a result only
    while the signature is unchanged.
    """
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def sweep_stale_temporaries(folder: Path, max_age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete this plugin's temporaries in ``folder`` that were last written over ``max_age`` ago.

    They are what a ``kill -9`` during :func:`atomic_write` leaves behind. Only names carrying
    :data:`TMP_MARK` are touched; a file that another process removes first is not an error.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and TMP_MARK in entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or now - entry.stat(follow_symlinks=False).st_mtime < max_age:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _sweep_once(folder: Path) -> None:
    """Sweep a folder on this process's first write into it (later writes skip the listing)."""
    if folder in _swept:  # as written: resolving every time cost a realpath per output
        return
    key = folder.resolve()
    with _swept_lock:
        if key in _swept:
            _swept.add(folder)
            return
        _swept.update((key, folder))
    sweep_stale_temporaries(key)


def _create_temporary(path: Path) -> tuple[int, str]:
    """Open a new hidden temporary beside ``path``, with the mode a new file gets (0666 & ~umask).

    ``mkstemp`` would create it 0600, and that mode would survive the rename; opening with 0666
    lets the kernel apply the umask (and any default ACL) as it does for every other tool.
    """
    while True:
        tmp = path.parent / f".{path.name}{TMP_MARK}{os.urandom(4).hex()}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), str(tmp)
        except FileExistsError:
            continue


def atomic_write(path: Path, data: bytes | str, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    An existing file keeps its mode; a new one gets ``0666 & ~umask``. With ``sync=False`` the
    fsync is left to :func:`sync_deferred` (see the module's docstring).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        _sweep_once(path.parent)
        fd, tmp = _create_temporary(path)
    except FileNotFoundError:  # the folder does not exist yet: made on the first write only
        for tries_left in reversed(range(3)):
            path.parent.mkdir(parents=True, exist_ok=True)
            _sweep_once(path.parent)
            try:
                fd, tmp = _create_temporary(path)
                break
            except FileNotFoundError:
                # another thread removed the folder as it emptied it (the drafts folder, when a
                # finished draft's write removes the last partial one: dispatch.discard_partial)
                # between the mkdir and the create: made again
                if not tries_left:
                    raise
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        # an existing file keeps its mode; a new one has the umask's, applied at creation
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if not sync:
        defer_sync(path)


def write_through(path: Path, data: bytes | str) -> None:
    """Write a file the user named (``--batch-report``, ``--batch-summary``) as a shell's ``>``
    would, where :func:`atomic_write` would replace whatever is at ``path``:

    - a symlink is followed: the file it points at is written (atomically) and the link stays; a
      link to nothing creates the file it names;
    - a FIFO or a character device (``/dev/stdout``, a terminal) is opened and written, never
      replaced (a FIFO's writer waits for a reader, as a shell's would);
    - a missing or regular file is written with :func:`atomic_write`.

    The plugin's own files (outputs, plans, recordings) keep :func:`atomic_write`: a link among
    them is replaced, never written through.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        _write_in_place(path, data)
        return
    if not os.path.islink(path):
        atomic_write(path, data)
        return
    target = Path(os.path.realpath(path))
    if st is not None and signature(target) != (st.st_size, st.st_mtime_ns, st.st_ino):
        # a link the kernel resolves by itself (/proc/self/fd/N to a file): its text names no
        # path that is the same file, so the file is written where it is
        _write_in_place(path, data)
        return
    atomic_write(target, data)


def _write_in_place(path: Path, data: bytes) -> None:
    """Open the existing ``path`` (never created, nor replaced) and write ``data`` into it."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def defer_sync(path: Path) -> None:
    """``path`` was written without an fsync: :func:`sync_deferred` makes it durable."""
    with _unsynced_lock:
        _unsynced.add(path)


#: from how many files :func:`sync_deferred` syncs each file system once (``syncfs``) rather
#: than each file: a run's outputs and recordings, not a file or two
SYNCFS_FROM = 32
#: ``syncfs`` writes back every dirty page of the file system, other programs' too (1 GB written
#: by another process and not yet on disk: 0.4 to 0.6 s here, where fsyncing the run's files one
#: by one waited for none of it; ``benchmarks/bench_sync.py``). With more than this much dirty
#: data beyond the run's own files (a download, a build), the files are fsynced one by one
SYNCFS_OTHERS_LIMIT = 64 << 20
#: what a new small file may hold dirty: its data page, its inode's and its folder's share
DIRTY_PER_FILE = 8 << 10


def sync_deferred(*, parallel: bool = True) -> int:
    """fsync the files written with ``sync=False`` since the last call, then their folders (so
    the renames are on disk too); how many files. Several at once: the file system commits
    concurrent fsyncs together (one by one at exit, when no new thread may start).

    From :data:`SYNCFS_FROM` files on, where the system has ``syncfs`` (Linux), each file
    system they are on is synced once instead, which makes all of them durable, renames
    included, in one journal commit: 2,000 files (a 1,000-row run's outputs and recordings)
    took 0.03 s so, against 0.36 to 0.39 s one by one, eight at a time, at the end of every
    generating run. A file system whose sync fails has its files fsynced one by one, and so do
    all of them while other programs have much data waiting to be written
    (:data:`SYNCFS_OTHERS_LIMIT`)."""
    with _unsynced_lock:
        paths = list(_unsynced)
        _unsynced.clear()
    count = len(paths)
    folders = {p.parent for p in paths}
    if count >= SYNCFS_FROM:
        paths, folders = _sync_file_systems(paths, folders)  # (what is left: none, normally)
    if not paths and not folders:
        return count
    if parallel:
        with ThreadPoolExecutor(8, thread_name_prefix="batchgen-fsync") as pool:
            list(pool.map(_fsync, paths))
            list(pool.map(_fsync, folders))
    else:
        for path in [*paths, *folders]:
            _fsync(path)
    return count


@lru_cache(maxsize=1)
def _syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs(fd)`` (Linux), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast("Callable[[int], int]", function)


def _dirty_bytes() -> int | None:
    """The page cache's data not yet on disk, in the whole system (``/proc/meminfo``), or None."""
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            lines = [line.split() for line in meminfo if line.startswith((b"Dirty:", b"Writeback:"))]
        return sum(int(line[1]) * 1024 for line in lines) if len(lines) == 2 else None
    except (OSError, ValueError, IndexError):
        return None


def _sync_file_systems(paths: list[Path], folders: set[Path]) -> tuple[list[Path], set[Path]]:
    """Sync, once each, the file systems that ``folders`` are on; the paths and folders on those
    that could not be synced (all of them where there is no ``syncfs``, or much dirty data that
    is not the run's: :data:`SYNCFS_OTHERS_LIMIT`), to fsync one by one."""
    syncfs = _syncfs()
    dirty = _dirty_bytes()
    if syncfs is None or dirty is None or dirty - DIRTY_PER_FILE * len(paths) > SYNCFS_OTHERS_LIMIT:
        return paths, folders
    by_device: dict[int, list[Path]] = {}
    for folder in folders:
        try:
            by_device.setdefault(os.stat(folder).st_dev, []).append(folder)
        except OSError:
            continue  # gone since (a discarded drafts folder): nothing in it to keep
    unsynced: set[Path] = set()
    for on_device in by_device.values():
        try:
            fd = os.open(on_device[0], os.O_RDONLY)
        except OSError:
            unsynced.update(on_device)
            continue
        try:
            if syncfs(fd) != 0:
                unsynced.update(on_device)
        finally:
            os.close(fd)
    return [p for p in paths if p.parent in unsynced], unsynced


@atexit.register
def _sync_at_exit() -> None:
    """What a run wrote after its last :func:`sync_deferred` (a judge's recording, say)."""
    sync_deferred(parallel=False)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # gone since (a discarded draft): nothing to keep
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_problem(folder: Path) -> str | None:
    """Why nothing can be written in ``folder`` (made if missing), or None when a file can be:
    a hidden temporary is created and removed, as :func:`atomic_write` would create one (so a
    read-only folder, an immutable one or a read-only file system all say so)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check{TMP_MARK}{os.urandom(4).hex()}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        return exc.strerror or str(exc)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


#: what a path that is neither a file nor a folder is, by its mode (see :func:`special_kind`)
_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def special_kind(mode: int) -> str | None:
    """What a file of ``mode`` is when it is a named pipe, a socket or a device, else None.
    Reading one waits for a writer that may never come (a FIFO hung a run for good) or never
    ends (a device): an output or a tracking file that is one is refused, never read."""
    return next((name for test, name in _SPECIAL_KINDS if test(mode)), None)


def file_in_the_way(folder: Path) -> Path | None:
    """The file (not a folder) at ``folder`` or at the nearest of its parents that exists, if
    any: a folder there cannot be made. ``folder`` is resolved."""
    for path in (folder, *folder.parents):
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:  # not this function's to judge: a write says why, naming the folder
            return None
        return None if stat.S_ISDIR(mode) else path
    return None


def failed_file(exc: OSError) -> Path | None:
    """The file an OSError of a write is about, as the user knows it: a temporary of
    :func:`atomic_write` (``.name.batchgen-tmp-XXXXXXXX``, gone once the write failed) is shown
    as the file it was to become; a lock file as itself."""
    name = exc.filename2 if exc.filename2 is not None else exc.filename
    if name is None:
        return None
    path = Path(os.fsdecode(name))
    if path.name.startswith(".") and TMP_MARK in path.name:
        return path.with_name(path.name[1 : path.name.index(TMP_MARK)])
    return path


def lock_path(path: Path) -> Path:
    """The lock file of ``path``: hidden, beside the (resolved) file it guards.

    Beside the file rather than in ``$TMPDIR``, so that every process that can see the file sees
    the lock, whatever its own ``TMPDIR`` (two containers sharing a work tree, for instance).
    """
    return Path(_lock_file(str(path)))


@lru_cache(maxsize=256)
def _lock_file(path: str) -> str:
    """The lock file of ``path``, resolved once per spelling: a registration takes it per row."""
    resolved = Path(path).resolve()
    return str(resolved.parent / f".{resolved.name}{LOCK_SUFFIX}")


def lock_for(path: Path, timeout: float = 60.0) -> FileLock:
    """A lock shared by every process that edits ``path`` (see :func:`lock_path`).

    The lock file stays after release: deleting it would let a process that opened the old one
    and a process that creates a new one both hold "the" lock.
    """
    from filelock import FileLock  # (17 ms to import: only once a run edits a shared file)

    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock), timeout=timeout)


def lock_timeout() -> type[Timeout]:
    """The error of a :func:`lock_for` lock another process held past its timeout (filelock's
    ``Timeout``, a ``TimeoutError``), for an ``except`` clause: imported only once one is raised."""
    from filelock import Timeout

    return Timeout
