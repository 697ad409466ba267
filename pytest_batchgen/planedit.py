"""The plan's in-place editor: change status cells and the plugin's notes, nothing else.

Users hand-format their plans (aligned columns, comments, extra sections); a tool that
re-renders the file would fight them in every diff. So edits are byte-level and minimal: the
word in a status cell is swapped (taking or giving back one space of padding so aligned
columns stay aligned), and the notes live in one section the plugin owns. Many edits go in one
write, under a cross-process lock, through a temporary file and a rename.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .fsutil import atomic_write, lock_for
from .plan import NOTES_SECTION, REQUIRED_COLUMNS, _PHASE_RE, _unquote, scan

NOTES_HEADING = "## Batchgen Notes"
NOTES_MARKER = (
    "<!-- Written by pytest-batchgen: one entry per row whose last check run failed. "
    "Entries are replaced on the next run. -->"
)
_LINE_RE = re.compile(r"[^\n]*\n|[^\n]+\Z")
_ENTRY_RE = re.compile(r"^- `([^`]+)`:?\s?(.*)$")


@dataclass(frozen=True)
class RowUpdate:
    """What to change for one row (keyed by filename). ``None`` leaves a field alone.

    ``note=""`` removes the row's note; a multi-line note becomes an entry with sub-lines.
    """

    status: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class RowLocation:
    line_index: int  # 0-based index in the file's lines
    status_cell: int  # index of the status cell among the row's cells


def locate_rows(text: str) -> dict[str, RowLocation]:
    """Where each row's status cell is, by filename, from the same scan the parser uses."""
    found: dict[str, RowLocation] = {}
    for section in scan(text):
        if not _PHASE_RE.match(section.title) or not section.tables:
            continue
        table = section.tables[0]
        header = [_unquote(h).lower() for h in table.header]
        if not all(c in header for c in REQUIRED_COLUMNS):
            continue
        fcol, scol = header.index("filename"), header.index("status")
        for row in table.rows:
            if fcol < len(row.cells):
                found.setdefault(_unquote(row.cells[fcol]), RowLocation(row.line - 1, scol))
    return found


def cell_spans(line: str) -> list[tuple[int, int]]:
    """Character spans of a table line's cells, between unescaped pipes (as markdown-it splits them)."""
    pipes = [i for i, ch in enumerate(line) if ch == "|" and not _escaped(line, i)]
    body_end = len(line.rstrip("\r\n"))
    spans: list[tuple[int, int]] = []
    start = 0
    first = True
    for p in pipes:
        if first and not line[:p].strip():
            start = p + 1
            first = False
            continue
        first = False
        spans.append((start, p))
        start = p + 1
    if line[start:body_end].strip():
        spans.append((start, body_end))
    return spans


def _escaped(line: str, i: int) -> bool:
    # markdown-it's table rule (escapedSplit) treats a pipe right after a backslash as part
    # of the cell, even after "\\"; counting the same way keeps the editor on the parser's cells
    return i > 0 and line[i - 1] == "\\"


def _styled(word: str, like: str) -> str:
    """Write ``word`` in the case style of what the user wrote (``Pending`` -> ``Complete``)."""
    if like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word.capitalize()
    return word


def replace_cell_word(line: str, cell: int, word: str) -> str:
    """Swap the text of cell ``cell`` for ``word``, keeping the cell's width where padding allows."""
    spans = cell_spans(line)
    start, end = spans[cell]
    raw = line[start:end]
    lead = len(raw) - len(raw.lstrip())
    content = raw.strip()
    trail = len(raw) - lead - len(content)
    new = _styled(word, content)
    delta = len(new) - len(content)
    if delta > 0:
        # take padding from the right, keeping at least one space when there was one
        take = min(delta, max(trail - 1, 0))
        trail -= take
    elif delta < 0 and trail > 0:
        trail -= delta
    new_raw = " " * lead + new + " " * trail
    return line[:start] + new_raw + line[end:]


def _split_notes(lines: list[str], text: str) -> tuple[int | None, int | None, dict[str, str]]:
    """Find the notes section's line range and its entries (filename -> note text)."""
    for section in scan(text):
        if section.key == NOTES_SECTION:
            start, end = section.line - 1, section.end_line
            entries: dict[str, list[str]] = {}
            current: list[str] | None = None
            for raw in lines[start + 1 : end]:
                m = _ENTRY_RE.match(raw.rstrip("\r\n"))
                if m:
                    current = entries.setdefault(m.group(1), [])
                    current.append(m.group(2))
                elif current is not None and raw.startswith("  ") and raw.strip():
                    current.append(raw.rstrip("\r\n")[2:])
                else:
                    current = None
            return start, end, {k: "\n".join(v) for k, v in entries.items()}
    return None, None, {}


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split on ``\\n`` only (as markdown-it counts lines)."""
    return _LINE_RE.findall(text)


def read_notes(text: str) -> dict[str, str]:
    """The plugin's notes in a plan, by filename."""
    lines = split_lines(text)
    return _split_notes(lines, text)[2]


def _render_notes(entries: Mapping[str, str], newline: str) -> list[str]:
    out = [NOTES_HEADING + newline, newline, NOTES_MARKER + newline, newline]
    for filename, note in entries.items():
        first, *rest = note.split("\n")
        out.append(f"- `{filename}`: {first}".rstrip() + newline)
        out.extend(f"  {line}".rstrip() + newline for line in rest)
    return out


def edit_text(text: str, updates: Mapping[str, RowUpdate]) -> str:
    """Apply ``updates`` to a plan's text; unknown filenames are ignored (the row was removed)."""
    lines = split_lines(text)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    where = locate_rows(text)
    for filename, update in updates.items():
        loc = where.get(filename)
        if update.status is None or loc is None:
            continue
        line = lines[loc.line_index]
        spans = cell_spans(line)
        if loc.status_cell >= len(spans):
            continue
        current = line[spans[loc.status_cell][0] : spans[loc.status_cell][1]].strip()
        if current.lower() == update.status:
            continue
        lines[loc.line_index] = replace_cell_word(line, loc.status_cell, update.status)

    note_updates = {f: u.note for f, u in updates.items() if u.note is not None}
    if not note_updates:
        return "".join(lines)
    start, end, entries = _split_notes(lines, text)
    merged = dict(entries)
    for filename, note in note_updates.items():
        if note:
            merged[filename] = note
        else:
            merged.pop(filename, None)
    if merged == entries:
        return "".join(lines)
    # A file without a final newline keeps ending without one, so that removing the notes
    # gives back the user's bytes exactly.
    unterminated = bool(lines) and not lines[-1].endswith(("\n", "\r"))
    if start is None:
        if not merged:
            return "".join(lines)
        if unterminated:
            lines[-1] += newline
        if lines:
            # always exactly one blank line before the section, so that removing it is exact
            lines.append(newline)
        body = _render_notes(merged, newline)
        if unterminated:
            body[-1] = _strip_newline(body[-1])
        return "".join(lines + body)
    assert end is not None
    tail = lines[end:]
    head = lines[:start]
    if not merged:
        if not tail:
            # drop the section and the one blank line the plugin put before it
            if head and not head[-1].strip():
                head.pop()
            if unterminated and head:
                head[-1] = _strip_newline(head[-1])
        return "".join(head + tail)
    body = _render_notes(merged, newline)
    if tail:
        body.append(newline)
    elif unterminated:
        body[-1] = _strip_newline(body[-1])
    return "".join(head + body + tail)


def _strip_newline(line: str) -> str:
    for ending in ("\r\n", "\n", "\r"):
        if line.endswith(ending):
            return line[: -len(ending)]
    return line


def apply_updates(path: Path, updates: Mapping[str, RowUpdate]) -> bool:
    """Edit the plan at ``path`` in place; return whether its bytes changed.

    The file is re-read under the lock, so concurrent processes (pytest-xdist workers, two
    runs) each apply their own edits to the latest content and none is lost.
    """
    if not updates:
        return False
    text = path.read_bytes().decode("utf-8")
    if edit_text(text, updates) == text:
        return False  # checked before locking: a run that changes nothing leaves no lock file beside the plan
    with lock_for(path):
        raw = path.read_bytes()
        text = raw.decode("utf-8")
        new = edit_text(text, updates)
        if new == text:
            return False
        atomic_write(path, new.encode("utf-8"))
        return True
