"""The tracking file: a Markdown list of links to the outputs that passed.

Registration is idempotent (a link that already resolves to the output is not added twice)
and done under a cross-process lock, so concurrent workers may register at once.

What a registration guarantees (issue 12: a rewrite and fsync of the whole file per row made
10,000 registrations cost more than the checks):

- The first registration into a file in a process is a locked read-modify-rename with an
  fsync, as every write of the plugin: the file holds the old or the new text, never half.
- Later ones append the new line with one ``write`` on an ``O_APPEND`` descriptor, under the
  same lock; a failed or short write is truncated back, so the file again holds the old text
  or the old text plus whole lines. The bytes already in the file are never rewritten.
- Appended lines are fsynced once, when the process exits (``atexit``), not per row: a crash
  of the process (``kill -9``) loses nothing, the kernel has the bytes; a power loss may lose
  the lines appended since the last fsync, and the next run registers those outputs again
  (their checks pass, and registration is idempotent).
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import AbstractSet
from urllib.parse import unquote, urlsplit

from .fsutil import atomic_write, lock_for

_HREF_UNSAFE = frozenset(' ()<>#?%&:\\"\x7f')


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


def _links(text: str) -> list[str]:
    hrefs: list[str] = []
    for tok in _parser().parse(text):
        for child in tok.children or ():
            if child.type == "link_open":
                href = child.attrGet("href")
                if isinstance(href, str):
                    hrefs.append(href)
    return hrefs


def _target(tracking: Path, href: str) -> Path | None:
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    return (tracking.parent / unquote(parts.path)).resolve()


class TrackingError(Exception):
    """The tracking file cannot be read or written (a folder, not UTF-8, no permission)."""


#: per tracking file: its (size, mtime, inode) and the resolved targets of its links; the set
#: grows in place when this process registers (a copy per row would be quadratic)
_targets_cache: dict[Path, tuple[tuple[int, int, int], set[Path]]] = {}
_cache_lock = threading.Lock()


def _read(tracking: Path) -> str:
    try:
        return tracking.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except IsADirectoryError:
        raise TrackingError(f"{tracking} is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise TrackingError(f"{tracking} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TrackingError(f"{tracking} cannot be read: {exc.strerror or exc}") from None


def targets(tracking: Path) -> AbstractSet[Path]:
    """The resolved targets of the tracking file's links, parsed once per version of the file."""
    try:
        st = tracking.stat()
    except FileNotFoundError:
        return frozenset()
    except OSError as exc:
        raise TrackingError(f"{tracking} cannot be read: {exc.strerror or exc}") from None
    sig = (st.st_size, st.st_mtime_ns, st.st_ino)
    with _cache_lock:
        hit = _targets_cache.get(tracking)
    if hit is not None and hit[0] == sig:
        return hit[1]
    found = {t for t in (_target(tracking, h) for h in _links(_read(tracking))) if t is not None}
    with _cache_lock:
        _targets_cache[tracking] = (sig, found)
    return found


def is_registered(tracking: Path, output: Path) -> bool:
    """Whether the tracking file holds a Markdown link that resolves to ``output``."""
    return output.resolve() in targets(tracking)


#: tracking files this process has written once (later registrations append), and those
#: appended to since their last fsync
_written: set[Path] = set()
_unsynced: set[Path] = set()


def register(tracking: Path, output: Path, title: str) -> bool:
    """Append ``- [title](relative/path)`` unless a link to ``output`` is already there."""
    target = output.resolve()
    with lock_for(tracking):
        known = targets(tracking)
        if target in known:
            return False
        rel = Path(os.path.relpath(target, tracking.parent.resolve())).as_posix()
        safe_title = re.sub(r"([\\\[\]`<>])", r"\\\1", title)
        # percent-encode what a link destination would otherwise read as something else
        # (a fragment, a query, a scheme, an escape, an entity); _target unquotes it back
        href = "".join(f"%{ord(ch):02X}" if ch in _HREF_UNSAFE or ord(ch) < 0x20 else ch for ch in rel)
        line = f"- [{safe_title}]({href})\n"
        with _cache_lock:
            appending = tracking in _written
        if appending and tracking.is_file():
            _append(tracking, line.encode("utf-8"))
        else:
            text = _read(tracking)
            if text and not text.endswith("\n"):
                text += "\n"
            atomic_write(tracking, text + line)
        # we know what the new version links to: no re-parse when the next row registers
        st = tracking.stat()
        with _cache_lock:
            _written.add(tracking)
            known = set(known) if isinstance(known, frozenset) else known
            known.add(target)
            _targets_cache[tracking] = ((st.st_size, st.st_mtime_ns, st.st_ino), known)
        return True


def _append(tracking: Path, line: bytes) -> None:
    """Append whole lines with one write (after a newline when the file lacks its last one);
    on a failed or short write, cut the file back to its old length."""
    try:
        fd = os.open(tracking, os.O_RDWR | os.O_APPEND)
    except OSError as exc:
        raise TrackingError(f"{tracking} cannot be written: {exc.strerror or exc}") from None
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        try:
            if os.write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, "short write")
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    with _cache_lock:
        _unsynced.add(tracking)


@atexit.register
def sync_appended() -> None:
    """fsync the tracking files appended to (once, at exit, rather than once per row)."""
    with _cache_lock:
        paths = list(_unsynced)
        _unsynced.clear()
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
