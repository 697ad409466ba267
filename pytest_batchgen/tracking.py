"""The tracking file: a Markdown list of links to the outputs that passed.

Registration is idempotent (a link that already resolves to the output is not added twice)
and atomic (a locked read-modify-rename), so concurrent workers may register at once.
"""

from __future__ import annotations

import os
import re
import threading
from functools import lru_cache
from pathlib import Path
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


_targets_cache: dict[Path, tuple[tuple[int, int, int], frozenset[Path]]] = {}
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


def targets(tracking: Path) -> frozenset[Path]:
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
    found = frozenset(t for t in (_target(tracking, h) for h in _links(_read(tracking))) if t is not None)
    with _cache_lock:
        _targets_cache[tracking] = (sig, found)
    return found


def is_registered(tracking: Path, output: Path) -> bool:
    """Whether the tracking file holds a Markdown link that resolves to ``output``."""
    return output.resolve() in targets(tracking)


def register(tracking: Path, output: Path, title: str) -> bool:
    """Append ``- [title](relative/path)`` unless a link to ``output`` is already there."""
    with lock_for(tracking):
        if is_registered(tracking, output):
            return False
        text = _read(tracking)
        rel = Path(os.path.relpath(output.resolve(), tracking.parent.resolve())).as_posix()
        safe_title = re.sub(r"([\\\[\]`<>])", r"\\\1", title)
        # percent-encode what a link destination would otherwise read as something else
        # (a fragment, a query, a scheme, an escape, an entity); _target unquotes it back
        href = "".join(f"%{ord(ch):02X}" if ch in _HREF_UNSAFE or ord(ch) < 0x20 else ch for ch in rel)
        if text and not text.endswith("\n"):
            text += "\n"
        known = targets(tracking)
        atomic_write(tracking, text + f"- [{safe_title}]({href})\n")
        # we know what the new version links to: no re-parse when the next row registers
        st = tracking.stat()
        with _cache_lock:
            _targets_cache[tracking] = ((st.st_size, st.st_mtime_ns, st.st_ino), known | {output.resolve()})
        return True
