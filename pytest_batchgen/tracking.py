"""The tracking file: a Markdown list of links to the outputs that passed.

Registration is idempotent (a link that already resolves to the output is not added twice)
and atomic (a locked read-modify-rename), so concurrent workers may register at once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .fsutil import atomic_write, lock_for

_HREF_UNSAFE = frozenset(' ()<>#?%&:\\"\x7f')


def _links(text: str) -> list[str]:
    from markdown_it import MarkdownIt

    hrefs: list[str] = []
    tokens = MarkdownIt("commonmark").parse(text)
    for tok in tokens:
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


def is_registered(tracking: Path, output: Path) -> bool:
    """Whether the tracking file holds a Markdown link that resolves to ``output``."""
    try:
        text = tracking.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    output = output.resolve()
    return any(_target(tracking, href) == output for href in _links(text))


def register(tracking: Path, output: Path, title: str) -> bool:
    """Append ``- [title](relative/path)`` unless a link to ``output`` is already there."""
    with lock_for(tracking):
        if is_registered(tracking, output):
            return False
        try:
            text = tracking.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        rel = Path(os.path.relpath(output.resolve(), tracking.parent.resolve())).as_posix()
        safe_title = re.sub(r"([\\\[\]`<>])", r"\\\1", title)
        # percent-encode what a link destination would otherwise read as something else
        # (a fragment, a query, a scheme, an escape, an entity); _target unquotes it back
        href = "".join(f"%{ord(ch):02X}" if ch in _HREF_UNSAFE or ord(ch) < 0x20 else ch for ch in rel)
        if text and not text.endswith("\n"):
            text += "\n"
        atomic_write(tracking, text + f"- [{safe_title}]({href})\n")
        return True
