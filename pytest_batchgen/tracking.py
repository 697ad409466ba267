"""The tracking file: a Markdown list of links to the outputs that passed.

Registration is idempotent (a link that already resolves to the output is not added twice)
and done under a cross-process lock, so concurrent workers may register at once. What a
registration guarantees (a rewrite and fsync of the whole file per row made 10,000
registrations cost more than the checks):

- A registration that inserts an entry among others, and the first one into a file in a
  process, is a locked read-modify-rename with an fsync, as every write of the plugin: the file
  holds the old or the new text, never half.
- Later ones that go at the end append the new line with one ``write`` on an ``O_APPEND``
  descriptor, under the same lock; a failed or short write is truncated back, so the file holds
  the old text or the old text plus whole lines. The bytes already in the file are not rewritten.
- Appended lines are fsynced once, with the run's other deferred writes
  (:func:`pytest_batchgen.fsutil.sync_deferred`: at the end of a generation, at the latest at
  exit): a ``kill -9`` loses nothing (the kernel has the bytes); a power loss may lose the lines
  appended since, and the next run registers those outputs again (their checks pass;
  registration is idempotent).

The plugin edits only *entries*: list items whose whole text is one link (``- [Title](path)``,
the form it writes). An entry's link text can be updated (:func:`retitle`, when a row's title
changed); new entries are placed in the plan's order (:func:`register`).
A link to an output anywhere else (in prose, a table, a reference definition) still counts as
registered and is never edited: it is the user's text.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from markdown_it.helpers import parseLinkLabel
from markdown_it.rules_inline import StateInline

from .fsutil import Signature, atomic_write, defer_sync, lock_for, signature, special_kind
from .mdparse import inline_parser

_HREF_UNSAFE = frozenset(' ()<>#?%&:\\"\x7f')
# markdown-it's own line model: "\r\n", "\r" and "\n" each end a line
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


class TrackingError(Exception):
    """The tracking file cannot be read or written (a folder, not UTF-8, no permission)."""


@dataclass(frozen=True)
class _Entry:
    """A list item that is one link and nothing else: what the plugin may edit."""

    line: int  # 0-based line of the item's text
    content: str  # the item's raw inline text, e.g. ``[Title](path)``
    #: what precedes the text on its line (blockquote marks, indent, list marker: ``> 1. ``) and
    #: the line's ending ("" for a last line without one): a new entry beside it copies both, so
    #: it joins the same list (a ``- `` line at the margin would end a quote or an outer list)
    prefix: str = "- "
    ending: str = ""

    def reads(self, label: str) -> bool:
        """Whether the link text is ``label``, or cannot be changed (a reference link's text is
        its key). ``label`` is as :func:`_label` writes it: no unescaped bracket or backtick
        inside, so its first ``]`` closes it."""
        inline = self.content.endswith(")")  # [text](destination)
        return not inline or self.content.startswith(label + "(")


@dataclass
class _Index:
    """One version of a tracking file, as this process knows it. Mutable: this process's own
    appends update it in place (a copy per registered row would be quadratic)."""

    targets: set[Path]
    entries: dict[Path, tuple[_Entry, ...]]
    n_lines: int = 0  # a last line without its ending counts
    newline: str = "\n"
    last: _Entry | None = None  # the entry on the file's last line, if that line is one


_index_cache: dict[Path, tuple[Signature, _Index]] = {}
_cache_lock = threading.Lock()


def _lines(text: str) -> list[str]:
    return _LINE_RE.findall(text)


def _ending(line: str) -> str:
    return line[len(line.rstrip("\r\n")) :]


def _target(tracking: Path, href: str) -> Path | None:
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    return (tracking.parent / unquote(parts.path)).resolve()


_ENTRY_SHAPE = ["list_item_open", "paragraph_open", "inline", "paragraph_close", "list_item_close"]


def _parse(tracking: Path, text: str) -> _Index:
    """Every link's resolved target, and the entries (sole-link list items) by target."""
    # a BOM is no text (a renderer drops it): read, it made an entry on the first line a
    # paragraph, and a file of a BOM alone a line to add the entries after
    text = text.removeprefix("\ufeff")
    tokens = inline_parser().parse(text)
    lines = _lines(text)
    targets: set[Path] = set()
    entries: dict[Path, list[_Entry]] = {}
    for i, tok in enumerate(tokens):
        if tok.type != "inline" or not tok.children:
            continue
        found: list[Path | None] = []
        for child in tok.children:
            if child.type == "link_open":
                href = child.attrGet("href")
                found.append(_target(tracking, href) if isinstance(href, str) else None)
        targets.update(t for t in found if t is not None)
        first = found[0] if len(found) == 1 else None
        para = tokens[i - 1]
        if (
            first is not None
            and i >= 2
            and [t.type for t in tokens[i - 2 : i + 3]] == _ENTRY_SHAPE
            and para.map
            and para.map[1] - para.map[0] == 1
            and tok.children[0].type == "link_open"
            and tok.children[-1].type == "link_close"
        ):
            line = lines[para.map[0]]
            parts = _split_entry(line, _Entry(para.map[0], tok.content))
            prefix = parts[0] if parts is not None else "- "
            entries.setdefault(first, []).append(_Entry(para.map[0], tok.content, prefix, _ending(line)))
    newline = (_ending(lines[0]) if lines else "") or "\n"  # the file's own line ending
    last = next((e for found in entries.values() for e in found if e.line == len(lines) - 1), None)
    return _Index(targets, {k: tuple(v) for k, v in entries.items()}, len(lines), newline, last)


def _read(tracking: Path) -> str:
    try:
        kind = special_kind(tracking.stat().st_mode)
        if kind is not None:
            raise TrackingError(f"{tracking} is {kind}, not a file: reading it could wait for ever; remove it")
        return tracking.read_bytes().decode("utf-8")  # not read_text: its newline translation would rewrite "\r\n"
    except FileNotFoundError:
        return ""
    except IsADirectoryError:
        raise TrackingError(f"{tracking} is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise TrackingError(f"{tracking} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TrackingError(f"{tracking} cannot be read: {exc.strerror or exc}") from None


def _index(tracking: Path) -> _Index:
    """The tracking file's links, parsed once per version (signature) of the file."""
    sig = signature(tracking)
    if sig is None:  # missing (no links yet), or unreadable: _read says which
        text = _read(tracking)
        return _parse(tracking, text)
    with _cache_lock:
        hit = _index_cache.get(tracking)
    if hit is not None and hit[0] == sig:
        return hit[1]
    found = _parse(tracking, _read(tracking))
    with _cache_lock:
        _index_cache[tracking] = (sig, found)
    return found


def _remember(tracking: Path, index: _Index | None) -> None:
    """Cache what the version just written holds (None: forget it, the next reader parses)."""
    sig = signature(tracking)
    with _cache_lock:
        if index is None or sig is None:
            _index_cache.pop(tracking, None)
        else:
            _index_cache[tracking] = (sig, index)


def targets(tracking: Path) -> Set[Path]:
    """The resolved targets of the tracking file's links, parsed once per version of the file."""
    return _index(tracking).targets


def is_registered(tracking: Path, output: Path) -> bool:
    """Whether the tracking file holds a Markdown link that resolves to ``output``."""
    return output.resolve() in targets(tracking)


def _label(title: str) -> str:
    return "[" + re.sub(r"([\\\[\]`<>])", r"\\\1", title) + "]"


def _href(tracking: Path, output: Path) -> str:
    rel = Path(os.path.relpath(output.resolve(), tracking.parent.resolve())).as_posix()
    # percent-encode what a link destination would otherwise read as something else
    # (a fragment, a query, a scheme, an escape, an entity); _target unquotes it back
    return "".join(f"%{ord(ch):02X}" if ch in _HREF_UNSAFE or ord(ch) < 0x20 else ch for ch in rel)


def _insertion_place(index: _Index, target: Path, order: Sequence[Path], n_lines: int) -> tuple[int, _Entry | None]:
    """Where a new entry goes so the plugin's entries follow ``order`` (the plan's rows):
    after the entry of the nearest earlier output, else before that of the nearest later one,
    else at the end; and that neighbouring entry (None at the end), whose form the new one takes.
    Registration order then does not depend on which xdist worker ran first.

    The row's place comes from a position map, and the neighbours are looked at one by one
    from it (usually the previous row is the one): ``order.index`` and a slice per row made
    10,000 registrations quadratic (31 s of a 58 s run)."""
    at = _positions(order).get(target)
    if at is None:
        return n_lines, None
    for i in range(at - 1, -1, -1):
        found = index.entries.get(order[i])
        if found:
            return found[-1].line + 1, found[-1]
    for i in range(at + 1, len(order)):
        found = index.entries.get(order[i])
        if found:
            return found[0].line, found[0]
    return n_lines, None


#: the position map of each plan order seen (a tuple: built once per plan); the order itself is
#: kept beside its map, so its id cannot be reused by another object while the entry lives
_orders: dict[int, tuple[Sequence[Path], dict[Path, int]]] = {}


def _positions(order: Sequence[Path]) -> dict[Path, int]:
    hit = _orders.get(id(order))
    if hit is not None and hit[0] is order:
        return hit[1]
    positions: dict[Path, int] = {}
    for i, path in enumerate(order):
        positions.setdefault(path, i)  # the first place, as order.index gave
    if isinstance(order, tuple):  # immutable: safe to keep
        with _cache_lock:
            _orders[id(order)] = (order, positions)
    return positions


def register(tracking: Path, output: Path, title: str, order: Sequence[Path] = ()) -> bool:
    """Add ``- [title](relative/path)`` unless a link to ``output`` is already there.

    ``order`` is the plan's outputs, resolved, in plan order: the entry is placed among the
    entries of the other outputs by that order (at the end when it has no neighbour). An
    existing link is left as it is, whatever its text: :func:`retitle` updates that.
    """
    target = output.resolve()
    with lock_for(tracking):
        known = _index(tracking)
        if target in known.targets:
            return False
        label, href = _label(title), _href(tracking, output)
        at, beside = _insertion_place(known, target, order, known.n_lines)
        if beside is None and at == known.n_lines:
            beside = known.last  # at the end, after an entry: one more of that list
        # written as the entry it goes beside is (its quote marks, indent, marker, line ending)
        prefix, ending = (beside.prefix, beside.ending or known.newline) if beside else ("- ", known.newline)
        entry = _Entry(at, f"{label}({href})", prefix, ending)
        with _cache_lock:
            appending = tracking in _written
        line = f"{prefix}{entry.content}{ending}"
        appended = beside is not None and appending and at == known.n_lines and _append(tracking, line, known.newline)
        if not appended:
            text = _read(tracking)
            bom = "\ufeff" if text.startswith("\ufeff") else ""  # it stays first, before an entry put on line 1
            lines = _lines(text.removeprefix(bom))
            if lines and not _ending(lines[-1]):
                lines[-1] += known.newline
            lines.insert(at, line)
            new = bom + "".join(lines)
            if beside is None:
                # at the end, after whatever the user's file ends with: a block opened earlier and
                # never closed (a code fence, an HTML block or comment) would swallow the line,
                # and every run would append it again. Beside an entry, it is one of that list.
                parsed = _parse(tracking, new)
                if target not in parsed.targets:
                    raise TrackingError(_swallowed(tracking, new, at))
            atomic_write(tracking, new)
            for t, found in known.entries.items():  # the entries below move down a line
                known.entries[t] = tuple(e if e.line < at else _moved(e) for e in found)
            if known.last is not None and known.last.line >= at:
                known.last = _moved(known.last)
        # this process knows what the new version links to: no re-parse when the next row registers
        known.targets.add(target)
        known.entries[target] = (*known.entries.get(target, ()), entry)
        known.n_lines += 1
        if at == known.n_lines - 1:
            known.last = entry
        _remember(tracking, known)
        with _cache_lock:
            _written.add(tracking)
        return True


def _moved(entry: _Entry) -> _Entry:
    """``entry`` a line further down (a line was inserted above it)."""
    return _Entry(entry.line + 1, entry.content, entry.prefix, entry.ending)


def _swallowed(tracking: Path, text: str, at: int) -> str:
    """Why a link put on line ``at`` (0-based) of ``text`` is not read as one: the block around it."""
    for token in inline_parser().parse(text):
        if token.map and token.map[0] <= at < token.map[1] and token.type in _SWALLOWING:
            return (
                f"{tracking}:{token.map[0] + 1}: this line opens {_SWALLOWING[token.type]} that nothing "
                f"closes, so a link added at the end (line {at + 1}) is not read as a link; close it "
                "(or add the link yourself), then run again"
            )
    return (
        f"{tracking}:{at + 1}: a link added here is not read as a link (what the file ends with takes it in); "
        "close what the file ends with (or add the link yourself), then run again"
    )


#: the blocks that take in the lines after them until closed, by token type
_SWALLOWING = {"fence": "a code block", "code_block": "a code block", "html_block": "an HTML block (or a comment)"}

#: tracking files this process has written (later registrations at the end append)
_written: set[Path] = set()


def _append(tracking: Path, text: str, newline: str) -> bool:
    """Append a whole line with one write (after a line ending when the file lacks its last
    one); on a failed or short write, cut the file back to its old length. False when the file
    may not be opened for writing (a read-only file in a writable folder): the caller rewrites
    it through a rename, as the first registration did, so every row of the run is registered
    (appends refused after a first registration succeeded registered one row per run)."""
    line, end = text.encode(), newline.encode()
    try:
        fd = os.open(tracking, os.O_RDWR | os.O_APPEND)
    except PermissionError:
        return False
    except OSError as exc:
        raise TrackingError(f"{tracking} cannot be written: {exc.strerror or exc}") from None
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) not in (b"\n", b"\r"):
            line = end + line
        try:
            if os.write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, "short write")
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    defer_sync(tracking)  # fsynced once with the run's other deferred writes, not once per row
    return True


def _split_entry(line: str, entry: _Entry) -> tuple[str, str] | None:
    """(what precedes the entry's text on its line, what follows it), or None if it moved."""
    rest = line.rstrip()
    if not rest.endswith(entry.content):
        return None
    return rest[: len(rest) - len(entry.content)], line[len(rest) :]


def retitle(tracking: Path, output: Path, title: str) -> bool:
    """Make every entry that links to ``output`` read ``title``; True if the file changed.

    Only the link text is rewritten; the list marker, the link's destination (and anything
    after it) and the line ending stay. A link outside an entry is never edited. Cheap when
    nothing changes: the cached parse answers without the lock.
    """
    label = _label(title)
    target = output.resolve()

    def stale(index: _Index) -> tuple[_Entry, ...]:
        return tuple(e for e in index.entries.get(target, ()) if not e.reads(label))

    if not stale(_index(tracking)):
        return False
    with lock_for(tracking):
        text = _read(tracking)
        lines = _lines(text)
        for entry in stale(_parse(tracking, text)):
            parts = _split_entry(lines[entry.line], entry)
            # where the old link text ends, found the way markdown-it finds it (escapes, code spans)
            end = parseLinkLabel(StateInline(entry.content, inline_parser(), {}, []), 0)
            if parts is not None and end > 0 and entry.content[end + 1 : end + 2] == "(":
                lines[entry.line] = parts[0] + label + entry.content[end + 1 :] + parts[1]
        new = "".join(lines)
        if new == text:
            return False
        atomic_write(tracking, new)
        _remember(tracking, None)
        return True
