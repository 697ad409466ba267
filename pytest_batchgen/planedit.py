"""The plan's in-place editor: change status cells and the plugin's notes, nothing else.

Users hand-format their plans (aligned columns, comments, extra sections); a tool that
re-renders the file would fight them in every diff. So edits are byte-level and minimal: the
word in a status cell is swapped (taking or giving back one space of padding so aligned
columns stay aligned), and the notes live in one section the plugin owns. Many edits go in one
write, under a cross-process lock, through a temporary file and a rename.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .fsutil import atomic_write, lock_for
from .plan import NOTES_SECTION, Section, phase_tables, scan, split_lines, unquote, unquoted_span

NOTES_HEADING = "## Batchgen Notes"
#: an ATX heading line (a sub-heading the user put in the notes section)
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|\r?\n|\r|$)")
NOTES_MARKER = (
    "<!-- Written by pytest-batchgen: one entry per row whose last check run failed. "
    "Entries are replaced on the next run. -->"
)


@dataclass(frozen=True)
class RowUpdate:
    """What to change for one row (keyed by filename). ``None`` leaves a field alone.

    ``note=""`` removes the row's note; a multi-line note becomes an entry with sub-lines.
    """

    status: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class RowLocation:
    line_index: int  # 0-based index in split_lines(text)
    status_cell: int  # index of the status cell among the row's cells
    #: the Status cell's text as the parser read it; the editor writes only into a cell whose
    #: bytes say the same, so a line it cannot split like the parser is left alone
    status_text: str | None = None


def locate_rows(text: str) -> dict[str, RowLocation]:
    """Where each row's status cell is, by filename, from the same scan the parser uses.

    Tables inside a blockquote are skipped: their lines start with ``>``, which is no cell
    (the parser refuses such a phase table, so no run gets this far with one).
    """
    found: dict[str, RowLocation] = {}
    for table in phase_tables(scan(text)):
        scol = table.column("status")
        if table.table.nested or not table.complete_header or scol is None:
            continue
        for row in table.table.rows:
            filename = table.value(row, "filename")
            if filename:
                status = row.cells[scol] if scol < len(row.cells) else None
                found.setdefault(filename, RowLocation(row.line - 1, scol, status))
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
    """Swap the word of cell ``cell`` for ``word``, keeping the cell's width where padding allows.

    Only the word changes: quotes or backticks around it (`` `pending` ``) stay, as the parser
    reads the word inside them.
    """
    spans = cell_spans(line)
    start, end = spans[cell]
    raw = line[start:end]
    content_end = len(raw.rstrip(" \t"))  # Markdown's padding: not a no-break space, which strip() takes
    trail = len(raw) - content_end
    word_start, word_end = unquoted_span(raw)
    old = raw[word_start:word_end]
    new = _styled(word, old)
    delta = len(new) - len(old)
    # the padding is kept as written: spaces are taken or given back on the right, and a
    # padding with a tab (which aligns to its tab stop by itself) is left as it is
    padding = raw[content_end:]
    if delta > 0 and "\t" not in padding:
        # take padding from the right, keeping at least one space when there was one
        padding = padding[min(delta, max(trail - 1, 0)) :]
    elif delta < 0 and trail > 0 and "\t" not in padding:
        padding += " " * -delta
    new_raw = raw[:word_start] + new + raw[word_end:content_end] + padding
    return line[:start] + new_raw + line[end:]


@dataclass(frozen=True)
class Notes:
    """The plugin's notes lines ``[start, end)`` (``None`` when there are none) and their entries.

    ``end`` is the end of the plugin's own lines (heading, marker, entries, blank lines), not of
    the section: text the user put under the heading after them stays, and so does the heading
    (``user_text``) when the notes are removed. When the user wrote text between the heading and
    the marker, the plugin's lines start at the marker (``heading_lines`` is 0): the heading and
    that text are the user's, kept above the entries.
    """

    start: int | None
    end: int | None
    entries: Mapping[str, str] = field(default_factory=dict)
    user_text: bool = False
    #: how many lines from ``start`` the heading takes: two for a setext heading (``Batchgen
    #: Notes`` over ``---``), which is rewritten as written, never split from its underline
    heading_lines: int = 1
    #: runs of entries ``[start, end)`` further down the section, below text the user wrote
    #: after the marker: read with the others, and moved up into the plugin's lines when it
    #: rewrites them (see :func:`_entries_below_text`)
    strays: tuple[tuple[int, int], ...] = ()


def code_span(text: str) -> str:
    """``text`` as a CommonMark code span that reads back as exactly ``text``.

    The fence is one backtick longer than the longest run inside, and a space pads a text that
    starts or ends with a backtick (CommonMark strips one such space from each side), so any
    filename survives, ``a`b.md`` included.
    """
    longest = max((len(run) for run in _backtick_runs(text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ")) else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _backtick_runs(text: str) -> list[str]:
    runs, current = [], ""
    for ch in text:
        if ch == "`":
            current += ch
        elif current:
            runs.append(current)
            current = ""
    if current:
        runs.append(current)
    return runs


def read_code_span(text: str) -> tuple[str, str] | None:
    """Split ``text`` that starts with a code span into (the span's content, the rest).

    The span closes at the first backtick run exactly as long as the opening one (CommonMark),
    found in one pass, so a long line costs linear time.
    """
    n = len(text) - len(text.lstrip("`"))
    if n == 0:
        return None
    i = n
    while True:
        start = text.find("`", i)
        if start < 0:
            return None
        end = start
        while end < len(text) and text[end] == "`":
            end += 1
        if end - start == n:
            content = text[n:start]
            if len(content) >= 2 and content.startswith(" ") and content.endswith(" ") and content.strip(" "):
                content = content[1:-1]
            return content, text[end:]
        i = end


def _entry(line: str) -> tuple[str, str] | None:
    """A notes entry line ``- `file`: note`` as (filename, first line of the note)."""
    if not line.startswith("- "):
        return None
    span = read_code_span(line[2:])
    if span is None or not span[0]:
        return None
    filename, rest = span
    rest = rest.removeprefix(":")
    if rest.startswith((" ", "\t")):
        rest = rest[1:]
    return filename, rest


def _body(line: str) -> str:
    return line.rstrip("\r\n")


def _is_marker(line: str) -> bool:
    """The notes marker, whatever spaces an editor left after it (else a second one was added)."""
    return line.rstrip() == NOTES_MARKER


#: how a note's sub-line starts: the plugin's two spaces, or a tab an editor turned them into
#: (Markdown reads either as more of the entry above)
_SUB_LINE = ("  ", "\t")


def _sub_line(line: str) -> str:
    """A sub-line's text without its indent (see :data:`_SUB_LINE`)."""
    body = _body(line)
    return body[1:] if body.startswith("\t") else body[2:]


def find_notes(text: str, lines: list[str] | None = None) -> Notes:
    """The plugin's notes section in ``text``: the one reader of notes, for the editor and tools.

    Found as a ``## Batchgen Notes`` section of the same scan the parser uses; when the plan
    ends inside a block that swallows the lines after it (an unclosed code fence or ``<!--``),
    the section the plugin appended there is found by its heading and marker lines instead,
    so a run never appends a second one.
    """
    if lines is None:
        lines = split_lines(text)
    for section in scan(text):
        if section.key == NOTES_SECTION:
            start = section.line - 1
            body = section.heading_end  # the line after the heading (a setext one ends at its underline)
            end = _notes_end(lines, body, section.end_line)
            marker = _marker_below_text(section, lines, body, end)
            if marker is not None:
                start, body, end = marker, marker, _notes_end(lines, marker, section.end_line)
            # (only below an empty block: entries above the user's text are the plugin's, and a
            # list the user wrote after them, in the same shape, is the user's)
            block_entries = any(_entry(_body(line)) for line in lines[body:end])
            strays = () if block_entries else _entries_below_text(section, lines, end)
            entries = _read_entries(lines[body:end] + [line for a, b in strays for line in ["\n", *lines[a:b]]])
            if marker is not None:
                return Notes(marker, end, entries, user_text=True, heading_lines=0, strays=strays)
            return Notes(
                start,
                end,
                entries,
                user_text=end < section.end_line,
                heading_lines=body - start,
                strays=strays,
            )
    hidden = _swallowed_notes_start(text, lines)
    if hidden is None:
        return Notes(None, None)
    hidden_end = _swallowed_notes_end(lines, hidden)
    # ours only if the user's own text (everything but this section) still ends inside an open
    # block: a heading in a closed example block, or a closed-after one, is the user's text
    if not _ends_open("".join(lines[:hidden] + lines[hidden_end:])):
        return Notes(None, None)
    return Notes(hidden, hidden_end, _read_entries(lines[hidden + 1 : hidden_end]))


def _marker_below_text(section: Section, lines: list[str], body: int, end: int) -> int | None:
    """The marker's index when text the user wrote separates it from the heading, else ``None``.

    The plugin's lines were taken to run from the heading only: text the user put there (a
    remark above the entries) ended them before the marker, so the entries were never read, a
    passing row's entry stayed, and a new failure put a second marker and list above the text.
    """
    if any(_is_marker(line) for line in lines[body:end]):
        return None
    return next((n - 1 for n in section.comments if n - 1 >= end and _is_marker(lines[n - 1])), None)


def _entries_below_text(section: Section, lines: list[str], end: int) -> tuple[tuple[int, int], ...]:
    """The runs of entries in the section after ``end`` (the end of the plugin's own lines),
    when text the user wrote below the marker separates them from it.

    The plugin's lines ended at that text, so the entries after it were never read: a passing
    row's entry stayed for ever, and a changed one was written a second time above the text.
    Only the first list after that text counts, and only when every item of it reads as an
    entry and no heading comes before it (a ``### History`` of the user's own, in the same
    shape, stays theirs); an entry quoted in a code block or a blockquote is the user's text."""
    first = next((item.line - 1 for item in section.items if item.line - 1 >= end), None)
    if first is None or _entry(_body(lines[first])) is None:
        return ()
    if any(_HEADING.match(line) for line in lines[end:first]):
        return ()
    run_end = _notes_end(lines, first, section.end_line)
    last = run_end
    while last > first and not lines[last - 1].strip():
        last -= 1
    after = next((item.line - 1 for item in section.items if item.line - 1 >= last), None)
    if after is not None and not any(line.strip() for line in lines[last:after]):
        return ()  # the list goes on with an item that is no entry: a list of the user's
    return ((first, run_end),)


def _without_strays(lines: list[str], strays: tuple[tuple[int, int], ...], offset: int) -> list[str]:
    """``lines`` (which start at line ``offset`` of the plan) without the runs ``strays``; a run
    at the end of the file takes the blank line before it too, as the plugin's block does."""
    if not strays:
        return lines
    gone = {i - offset for a, b in strays for i in range(a, b)}
    kept = [line for i, line in enumerate(lines) if i not in gone]
    a, b = strays[-1]
    if b - offset >= len(lines) and kept and len(kept) == a - offset and not kept[-1].strip():
        kept.pop()
    return kept


def _swallowed_notes_start(text: str, lines: list[str]) -> int | None:
    """The last notes heading (with its marker) after the last heading the scan can see."""
    last_visible = max((s.line - 1 for s in scan(text)), default=-1)
    for i in range(len(lines) - 3, last_visible, -1):
        if _body(lines[i]) == NOTES_HEADING and not lines[i + 1].strip() and _is_marker(lines[i + 2]):
            return i
    return None


def _swallowed_notes_end(lines: list[str], start: int) -> int:
    """The plugin's lines from ``start``: heading, marker, entries and blank lines, nothing else."""
    return _notes_end(lines, start + 3, len(lines))


def _notes_end(lines: list[str], start: int, stop: int) -> int:
    """The end of the plugin's lines from ``start`` (before ``stop``): marker, entries, blank lines.

    What follows is the user's (a paragraph, a ``### Appendix``), never rewritten or removed. So
    is an indented paragraph after a blank line: Markdown reads it as more of the entry above,
    but the plugin never writes one (its sub-lines follow their entry directly), and taking it
    as the plugin's deleted it at the next rewrite. Entries after such text are read and moved
    up (:func:`_entries_below_text`).
    """
    end = last = start  # last: the end of the plugin's last line that is not blank
    attached = False  # the line before is an entry or one of its sub-lines
    while end < stop:
        line = lines[end]
        entry = _entry(_body(line)) is not None
        if not line.strip():
            attached = False
        elif entry or _is_marker(line):
            attached, last = entry, end + 1
        elif attached and line.startswith(_SUB_LINE):
            last = end + 1
        else:
            break
        end += 1
    end = last
    while end < stop and not lines[end].strip():
        end += 1
    return end


def _ends_open(text: str) -> bool:
    """Whether ``text`` ends inside a block that would swallow a heading after it (a fence, ``<!--``)."""
    ending = "" if not text or text.endswith(("\n", "\r")) else "\n"
    return not any(s.title == "Batchgen Probe" for s in scan(text + ending + "\n## Batchgen Probe\n"))


def _read_entries(section_lines: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in section_lines:
        entry = _entry(_body(raw))
        if entry:
            current = entries.setdefault(entry[0], [])
            current.append(entry[1])
        elif current is not None and raw.startswith(_SUB_LINE) and raw.strip():
            current.append(_sub_line(raw))
        else:
            current = None
    return {k: "\n".join(v) for k, v in entries.items()}


def read_notes(text: str) -> dict[str, str]:
    """The plugin's notes in a plan, by filename (what :func:`edit_text` reads and merges)."""
    return dict(find_notes(text).entries)


def _render_notes(entries: Mapping[str, str], newline: str) -> list[str]:
    out = [NOTES_HEADING + newline, newline, NOTES_MARKER + newline, newline]
    for filename, note in entries.items():
        first, *rest = note.split("\n")
        out.append(f"- {code_span(filename)}: {first}".rstrip() + newline)
        # a blank line would end the entry: what follows it would read as the user's text
        out.extend(f"  {line}".rstrip() + newline for line in rest if line.strip())
    return out


def _as_written(note: str) -> str:
    """``note`` as :func:`_render_notes` writes it and :func:`read_notes` reads it back: without
    blank lines after its first, which would end its entry; compared so as to rewrite no
    unchanged note."""
    first, *rest = note.split("\n")
    return "\n".join([first.rstrip(), *(line.rstrip() for line in rest if line.strip())])


def edit_text(text: str, updates: Mapping[str, RowUpdate]) -> str:
    """Apply ``updates`` to a plan's text; unknown filenames are ignored (the row was removed)."""
    lines = split_lines(text)
    newline = _usual_ending(lines)
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
        if loc.status_text is not None and current != loc.status_text:
            continue  # the bytes disagree with the parser's cell: never write into another cell
        if unquote(current).lower() == update.status:
            continue  # compared as the parser reads it: `complete` and "Complete" are complete
        lines[loc.line_index] = replace_cell_word(line, loc.status_cell, update.status)

    note_updates = {f: u.note for f, u in updates.items() if u.note is not None}
    if not note_updates:
        return "".join(lines)
    notes = find_notes(text, lines)
    start, end, entries = notes.start, notes.end, dict(notes.entries)
    merged = dict(entries)
    for filename, note in note_updates.items():
        if note:
            merged[filename] = _as_written(note)
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
            # (after a lone "\r", a blank "\n" would read as the "\r\n" of the line before)
            lines.append("\r" if lines[-1].endswith("\r") and newline.startswith("\n") else newline)
        body = _render_notes(merged, newline)
        if unterminated:
            body[-1] = _strip_newline(body[-1])
        return "".join(lines + body)
    assert end is not None
    tail = _without_strays(lines[end:], notes.strays, end)
    head = lines[:start]
    if not notes.heading_lines:
        # the plugin's lines start at its marker: the heading and the user's text above stay
        if not merged:  # the entries go, and the one blank line between the user's text and the marker
            return _without_the_block(head, tail, unterminated)
        block = _render_notes(merged, newline)[2:]  # the marker, a blank line, the entries
        if tail:
            block.append(newline)
        elif unterminated:
            block[-1] = _strip_newline(block[-1])
        return "".join(head + block + tail)
    # the heading as the user wrote it (a '## batchgen notes' stays lower case, a setext heading
    # keeps its underline); only the last line's ending is the file's, as a line added after it is
    *heading, last = lines[start : start + notes.heading_lines]
    heading.append(_body(last) + newline)
    if not merged:
        if notes.user_text:
            # the section holds the user's text: keep its heading, and one blank line before the text
            return "".join([*head, *heading, newline, *tail])
        return _without_the_block(head, tail, unterminated)  # and the one blank line put before it
    body = [*heading, *_render_notes(merged, newline)[1:]]
    if tail:
        body.append(newline)  # the section's blank lines are its own: the tail starts with text
    elif unterminated:
        body[-1] = _strip_newline(body[-1])
    return "".join(head + body + tail)


def _usual_ending(lines: list[str]) -> str:
    """The file's most common line ending (the first line's on a tie), for the lines it adds."""
    endings = Counter(ending for line in lines if (ending := line[len(_body(line)) :]))
    if not endings:
        return "\n"
    best = max(endings.values())
    return next(line[len(_body(line)) :] for line in lines if endings.get(line[len(_body(line)) :]) == best)


def _without_the_block(head: list[str], tail: list[str], unterminated: bool) -> str:
    """The plan without the plugin's block: at the end of the file, the one blank line before
    it goes too (the plugin put it there), and a file that did not end in a newline still does
    not."""
    if not tail:
        if head and not head[-1].strip():
            head.pop()
        if unterminated and head:
            head[-1] = _strip_newline(head[-1])
    return "".join(head + tail)


def _strip_newline(line: str) -> str:
    for ending in ("\r\n", "\n", "\r"):
        if line.endswith(ending):
            return line[: -len(ending)]
    return line


def apply_updates(path: Path, updates: Mapping[str, RowUpdate]) -> bool:
    """Edit the plan at ``path`` in place; return whether its bytes changed.

    The file is re-read under the lock, so concurrent processes (pytest-xdist workers, two
    runs) each apply their own edits to the latest content and none is lost; the edit made
    before locking is kept when no other process changed the file meanwhile (an edit of a
    10,000-row plan takes a tenth of a second).
    """
    if not updates:
        return False
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    new = edit_text(text, updates)
    if new == text:
        return False  # checked before locking: a run that changes nothing leaves no lock file beside the plan
    with lock_for(path):
        latest = path.read_bytes()
        if latest != raw:  # another process edited the plan since: edit what it wrote
            text = latest.decode("utf-8")
            new = edit_text(text, updates)
            if new == text:
                return False
        atomic_write(path, new.encode("utf-8"))
        return True
