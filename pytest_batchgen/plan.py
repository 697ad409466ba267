"""The plan file: parsed into frozen dataclasses that remember their line numbers.

Structure comes from markdown-it-py's token stream (``token.map`` gives each block's lines),
so headings, lists and tables are found the way a Markdown renderer sees them. Only the
editor (:mod:`pytest_batchgen.planedit`) looks at raw bytes, and only on the lines of rows.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from types import MappingProxyType

from markdown_it.token import Token

from .defaults import DEFAULT_MAX_BYTES
from .errors import BatchgenError, PlanError
from .fasttable import ROW_TOKEN
from .fsutil import file_in_the_way, special_kind
from .mdparse import nesting_limit_reached, plan_parser
from .pricing import Price, parse_price_line

#: Aliases mapped to current model ids; override with a ``## Models`` section or the
#: ``batchgen_models`` ini option.
DEFAULT_MODELS: Mapping[str, str] = MappingProxyType(
    {
        "haiku": "claude-haiku-5-5",
        "sonnet": "claude-sonnet-5-5",
        "opus": "claude-opus-5-5",
    }
)

STATUSES = ("pending", "complete")
REQUIRED_COLUMNS = ("title", "filename", "model", "status")
#: the folder below the output directory where drafts wait (see :meth:`Plan.draft_path`)
DRAFTS_FOLDER = ".batchgen-drafts"
REQUIRED_SECTIONS = ("format reference", "output directory", "content rules", "validation checklist")
NOTES_SECTION = "batchgen notes"

# the number (or word) after "Phase", up to a space or a separator; a dot between digits is part
# of it ("Phase 1.5" is phase 1.5, not a second phase 1), one after a word ends it ("Phase IV. Extra")
_PHASE_RE = re.compile(r"^phase\s+((?:[^\s:.\-–—]|(?<=\d)\.(?=\d))+)", re.IGNORECASE)
# a heading that starts with the word "phase" (not "phases"): meant as a phase when the pattern misses it
_PHASE_WORD_RE = re.compile(r"^phase(?![^\W\d_])", re.IGNORECASE)

BOM = "\ufeff"
# markdown-it normalizes "\r\n", a lone "\r" and "\n" to one line break each (its core rule
# ``normalize``); the editor must count lines the same way or it edits the wrong row.
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def split_lines(text: str) -> list[str]:
    """Lines with their own endings, broken where markdown-it breaks them (``\\r\\n``, ``\\r``, ``\\n``).

    The one line model of the parser and the editor: line ``n`` of :func:`scan` is
    ``split_lines(text)[n - 1]``, whatever mix of endings the file has.
    """
    return _LINE_RE.findall(text)


_markdown = plan_parser  # block structure, one token per table row (see mdparse, fasttable)

#: a code span (its backtick runs matched), and a ``|`` not escaped: see :func:`reads_as_row`
_CODE_SPAN_RE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_UNESCAPED_PIPE_RE = re.compile(r"(?<!\\)\|")


def reads_as_row(line: str) -> bool:
    """Whether a line outside any table reads as a row of one: it starts with ``|``, or, outside
    its code spans, it has the three unescaped ``|`` of a four-column row written without outer
    pipes (GFM allows both spellings of a table, so a row split from either must be found)."""
    stripped = line.strip()
    if stripped.startswith("|"):
        return True
    if stripped.count("|") < 3:
        return False
    return len(_UNESCAPED_PIPE_RE.findall(_CODE_SPAN_RE.sub("", stripped))) >= 3


@dataclass(frozen=True)
class ListItem:
    """One bullet or numbered line of a section, with its 1-based line in the plan."""

    text: str
    line: int


@dataclass(frozen=True)
class TableRow:
    """A table body row as markdown-it parsed it: stripped cell texts and the row's line."""

    cells: tuple[str, ...]
    line: int
    #: the cells past the header's count, which markdown-it drops (see ``fasttable``)
    overflow: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    line: int
    rows: tuple[TableRow, ...]
    #: inside a blockquote (``> | a | b |``): its lines carry a prefix that is not a cell, so
    #: the editor cannot find a cell by counting pipes; phase tables may not be nested
    nested: bool = False


@dataclass(frozen=True)
class Section:
    """A ``##`` section: its heading, the heading's line and the blocks under it."""

    title: str
    line: int
    #: the heading's last line: ``line`` for ``## Title``, the ``---`` underline's line for a setext
    #: heading (``Title`` over ``---``), later still for a setext title of several lines. The
    #: editor keeps all of them as the heading: cutting after the first line unmade the heading
    heading_end: int
    end_line: int  # last line (1-based, inclusive) before the next ``##`` heading
    paragraphs: tuple[ListItem, ...]
    items: tuple[ListItem, ...]
    tables: tuple[Table, ...]
    #: lines that read as table rows but are in no table: after a blank line that ended the
    #: table, or behind a stray ``>`` (a phase's rows there would be silently left out)
    stray_rows: tuple[int, ...] = ()
    #: lines where an HTML comment at the top level starts: the notes marker is one, found
    #: there wherever the user put text above it (a marker quoted in a code block is not)
    comments: tuple[int, ...] = ()
    #: tables inside a list item (``- More outputs:`` then an indented table): a table of
    #: outputs there is in no phase, and :func:`load_plan` refuses it rather than skip its rows
    list_tables: tuple[Table, ...] = ()

    @property
    def key(self) -> str:
        return " ".join(self.title.lower().split())


@dataclass(frozen=True)
class LooseTable:
    """A table in no ``##`` section: before the first one, or under a ``#`` heading (``heading``,
    on ``heading_line``; ``None`` before any). Its rows belong to no phase."""

    table: Table
    heading: str | None
    heading_line: int | None


@dataclass(frozen=True)
class Unclosed:
    """A code fence or HTML comment at the top level that is never closed, so that everything
    after it is code to markdown-it (and to a renderer), and the heading it hides there."""

    kind: str  # "code fence" or "HTML comment"
    line: int
    closer: str  # what closes it: the fence's markup, or "-->"
    heading: str
    heading_line: int


@dataclass(frozen=True)
class Scan:
    """A plan's level-2 sections, and the tables outside them (which :func:`load_plan` judges)."""

    sections: tuple[Section, ...]
    loose_tables: tuple[LooseTable, ...]
    #: fences and comments never closed that hide a heading the plugin reads (see :class:`Unclosed`)
    unclosed: tuple[Unclosed, ...] = ()
    #: a line where blocks are nested as deep as the parser reads: past it markdown-it skips
    #: the rest of the document (its ``maxNesting``); ``None`` when no block is that deep
    too_deep: int | None = None


def scan(text: str) -> tuple[Section, ...]:
    """Split a Markdown document into its level-2 sections, without judging them.

    Shared by the plan parser and the in-place editor, so both see the same rows at the
    same lines.
    """
    return scan_plan(text).sections


@lru_cache(maxsize=8)
def scan_plan(text: str) -> Scan:
    """:func:`scan`'s sections and the tables outside any section, from one parse.

    A table under a ``#`` heading or before the first ``##`` one was skipped unseen: a phase
    written ``# Phase 2`` lost its rows without a word, so the parser needs to see it.
    """
    # a UTF-8 BOM is not text: markdown-it would make it part of the first line, hiding a
    # heading there; dropping it moves no line
    text = text[1:] if text.startswith(BOM) else text
    md = _markdown()
    tokens = md.parse(text)
    lines = split_lines(text)
    unclosed: list[Unclosed] = []
    deepest = nesting_limit_reached(tokens, md.options["maxNesting"])
    too_deep = deepest.map[0] + 1 if deepest is not None and deepest.map else None
    n_lines = len(lines)
    sections: list[dict] = []
    current: dict | None = None
    loose: list[LooseTable] = []
    h1: tuple[str, int] | None = None  # the last '#' heading outside a section, for loose tables
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        # only a heading at the top level starts or ends a section: one inside a blockquote or a
        # list item (``> ## Tip``) is text of the section around it, as a renderer shows it
        if tok.type == "heading_open" and tok.tag == "h2" and tok.level == 0:
            if current is not None:
                current["end_line"] = tok.map[0] if tok.map else current["line"]
            current = {
                "title": tokens[i + 1].content.strip(),
                "line": tok.map[0] + 1 if tok.map else 0,
                "heading_end": tok.map[1] if tok.map else 0,
                "end_line": n_lines,
                "paragraphs": [],
                "items": [],
                "tables": [],
                "stray_rows": [],
                "comments": [],
                "list_tables": [],
            }
            sections.append(current)
            i += 3
            continue
        if tok.type == "heading_open" and tok.tag == "h1" and tok.level == 0:
            if current is not None:
                current["end_line"] = tok.map[0] if tok.map else current["line"]
                current = None
            h1 = (" ".join(tokens[i + 1].content.split()), tok.map[0] + 1 if tok.map else 0)
        if tok.level == 0 and tok.map and tok.type in ("fence", "html_block"):
            hidden = _unclosed(tok, lines)
            if hidden is not None:
                unclosed.append(hidden)
        if current is None:
            if tok.type == "table_open":  # at any depth: a list item or quote is in no section either
                table, i = _read_table(tokens, i)
                loose.append(LooseTable(table, *(h1 or (None, None))))
                continue
            i += 1
            continue
        if tok.type == "table_open":
            table, i = _read_table(tokens, i)
            current["tables"].append(table)
            continue
        if tok.type == "list_item_open":
            i = _read_list_item(tokens, i, current["items"], current["list_tables"], current["stray_rows"])
            continue
        if tok.type == "html_block" and tok.map and tok.level == 0 and tok.content.lstrip().startswith("<!--"):
            current["comments"].append(tok.map[0] + 1)
        elif tok.type in ("code_block", "html_block") and tok.map and not tok.content.lstrip().startswith("<!--"):
            # a row indented by a tab or 4 spaces is an indented code block, and an HTML block
            # (``<div>``) runs on over the rows after it: either hides rows from the table (an
            # HTML comment is the user's way to leave rows out on purpose, and stays allowed)
            for number in range(tok.map[0], tok.map[1]):
                if reads_as_row(lines[number]):
                    current["stray_rows"].append(number + 1)
        if tok.type == "paragraph_open":
            inline = tokens[i + 1]
            # split as markdown-it counted (str.splitlines also breaks on \f, \x1c, \u2028...)
            first_line = tok.map[0] + 1 if tok.map else 0
            for offset, line in enumerate(inline.content.split("\n")):
                if reads_as_row(line):
                    current["stray_rows"].append(first_line + offset)
                if line.strip() and tok.level == 0:
                    current["paragraphs"].append(ListItem(line.strip(), first_line + offset))
        i += 1
    return Scan(tuple(_section(s) for s in sections), tuple(loose), tuple(unclosed), too_deep)


#: a heading line as code holds it (``## Phase 2``, up to three spaces before it)
_HEADING_LINE_RE = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
#: the sections the plugin reads, besides the phases
_READ_SECTIONS = (*REQUIRED_SECTIONS, "models", "prices", "model selection rules")


def _unclosed(tok: Token, lines: list[str]) -> Unclosed | None:
    """The heading a never-closed fence or HTML comment hides, if it hides one the plugin reads.

    A renderer shows the rest of the plan as code, and markdown-it gives no token for what is
    in it: a ``## Phase 2`` there lost its rows without a word. Only a heading of a phase or a
    section the plugin reads counts; the notes section the plugin appends after a plan that
    ends inside an open fence stays the user's text (the README says so), and so does a closed
    fence quoting a plan."""
    assert tok.map is not None
    start, end = tok.map
    if tok.type == "fence":
        last = lines[end - 1].strip() if end - start >= 2 else ""
        if last and set(last) == {tok.markup[0]} and len(last) >= len(tok.markup):
            return None  # closed
        kind, closer = "code fence", tok.markup
    elif tok.content.lstrip().startswith("<!--") and "-->" not in tok.content:
        kind, closer = "HTML comment", "-->"
    else:
        return None
    for number in range(start + 1, end):
        m = _HEADING_LINE_RE.match(lines[number].rstrip("\r\n"))
        if m is None:
            continue
        title = m.group(1).strip()
        if _PHASE_WORD_RE.match(title) or " ".join(title.lower().split()) in _READ_SECTIONS:
            return Unclosed(kind, start + 1, closer, title, number + 1)
    return None


def _section(s: dict) -> Section:
    return Section(
        title=s["title"],
        line=s["line"],
        heading_end=s["heading_end"],
        end_line=s["end_line"],
        paragraphs=tuple(s["paragraphs"]),
        items=tuple(s["items"]),
        tables=tuple(s["tables"]),
        stray_rows=tuple(s["stray_rows"]),
        comments=tuple(s["comments"]),
        list_tables=tuple(s["list_tables"]),
    )


def _read_list_item(tokens: list[Token], i: int, out: list[ListItem], tables: list[Table], stray: list[int]) -> int:
    """Take a list item's first paragraph (its text joined on one line), then each item nested in
    it as an item of its own, in the plan's order: a checklist line or content rule written under
    another was skipped, so its check never ran (or the prompt never had it). Other nested
    blocks are skipped, but their tables noted in ``tables`` (a table of outputs there would be
    skipped silently) and their lines that read as table rows in ``stray`` (``- | Z | z.md |``)."""
    start = tokens[i]
    slot = len(out)
    text = None
    j = i + 1
    while j < len(tokens):
        t = tokens[j]
        if t.type == "list_item_close":
            break
        if t.type == "list_item_open":
            j = _read_list_item(tokens, j, out, tables, stray)
            continue
        if t.type == "table_open":
            table, j = _read_table(tokens, j)
            tables.append(table)  # read, not skipped: the item's text stays as it was
            continue
        if t.type == "inline":
            if text is None:
                text = " ".join(part.strip() for part in t.content.split("\n"))
            first = t.map[0] + 1 if t.map else 0
            stray.extend(first + n for n, line in enumerate(t.content.split("\n")) if reads_as_row(line))
        elif t.type == "code_block" and t.map:
            stray.extend(t.map[0] + 1 + n for n, line in enumerate(t.content.split("\n")) if reads_as_row(line))
        j += 1
    if text is not None:
        out.insert(slot, ListItem(text.strip(), start.map[0] + 1 if start.map else 0))
    return j + 1


def _read_table(tokens: list[Token], i: int) -> tuple[Table, int]:
    table_map = tokens[i].map
    table_line = table_map[0] + 1 if table_map else 0
    nested = tokens[i].level > 0
    header: list[str] = []
    rows: list[TableRow] = []
    in_head = False
    cells: list[str] = []
    row_line = 0
    while i < len(tokens):
        t = tokens[i]
        if t.type == "table_close":
            break
        if t.type == "thead_open":
            in_head = True
        elif t.type == "thead_close":
            in_head = False
        elif t.type == "tr_open":
            cells = []
            row_line = t.map[0] + 1 if t.map else 0
        elif t.type == ROW_TOKEN:
            compact = tuple(c.strip() for c in t.meta["cells"])
            rows.append(TableRow(compact, t.map[0] + 1 if t.map else 0, t.meta.get("overflow", ())))
        elif t.type == "inline":
            cells.append(t.content.strip())
        elif t.type == "tr_close":
            if in_head:
                header = cells
            else:
                rows.append(TableRow(tuple(cells), row_line))
        i += 1
    return Table(tuple(header), table_line, tuple(rows), nested), i + 1


def unquoted_span(text: str) -> tuple[int, int]:
    """Where a cell's value lies in ``text``: inside its padding and one pair of quotes.

    A cell may wrap its value in backticks or quotes (`` `complete` ``, ``"Complete"``); the
    parser reads the word inside, and the editor must swap only that word, so both take its
    place from here.
    """
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    value = text[start:end]
    ticks = len(value) - len(value.lstrip("`"))
    if ticks > 1 and len(value) > 2 * ticks and value.endswith("`" * ticks) and value[-ticks - 1] != "`":
        # a code span of several backticks (``` ``a`b.md`` ```), as a renderer reads it
        inner = value[ticks:-ticks]
        word_start = start + ticks + len(inner) - len(inner.lstrip())
        return word_start, max(word_start, end - ticks - (len(inner) - len(inner.rstrip())))
    for q in ("`", '"', "'"):
        if end - start >= 2 and text[start] == q and text[end - 1] == q:
            inner = text[start + 1 : end - 1]
            word_start = start + 1 + len(inner) - len(inner.lstrip())
            word_end = end - 1 - (len(inner) - len(inner.rstrip()))
            return word_start, max(word_start, word_end)
    return start, end


def unquote(text: str) -> str:
    """A cell's value as the parser reads it: without its padding and quotes."""
    start, end = unquoted_span(text)
    return text[start:end]


@dataclass(frozen=True)
class PhaseTable:
    """A ``## Phase N`` section's table, as both the parser and the editor read it.

    ``header`` holds the column names as compared (unquoted, lower case); ``column(name)``
    is a column's index among a row's cells, or ``None``.
    """

    section: Section
    number: str
    table: Table
    header: tuple[str, ...]

    def column(self, name: str) -> int | None:
        return self.header.index(name) if name in self.header else None

    @property
    def complete_header(self) -> bool:
        """The header names every required column, so rows can be read (and edited)."""
        return all(c in self.header for c in REQUIRED_COLUMNS)

    def value(self, row: TableRow, name: str) -> str:
        """The unquoted text of ``row``'s cell in column ``name`` ("" when the row is short)."""
        index = self.column(name)
        if index is None or index >= len(row.cells):
            return ""
        return unquote(row.cells[index])


def phase_tables(sections: Iterable[Section]) -> Iterator[PhaseTable]:
    """The table of every phase section (its first table), in plan order.

    One definition of "a phase's table" for :func:`load_plan` and the editor; sections
    without a table are skipped here (the parser reports them).
    """
    for section in sections:
        m = _PHASE_RE.match(section.title)
        if m and section.tables:
            table = section.tables[0]
            yield PhaseTable(section, m.group(1), table, tuple(unquote(h).lower() for h in table.header))


@dataclass(frozen=True)
class Row:
    """One output to produce: a table row of a phase."""

    phase: str
    line: int
    title: str
    filename: str
    model_cell: str
    model: str
    status: str
    columns: Mapping[str, str] = field(compare=False)

    @property
    def complete(self) -> bool:
        return self.status == "complete"


@dataclass(frozen=True)
class Phase:
    number: str
    title: str
    line: int
    header: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Plan:
    """A validated plan. Paths are absolute; lines are 1-based lines of ``path``."""

    path: Path
    rootdir: Path
    format_reference: Path
    format_reference_line: int
    format_reference_text: str  # read once at load: every prompt inlines it
    output_dir: Path
    output_dir_line: int
    content_rules: tuple[ListItem, ...]
    checklist: tuple[ListItem, ...]
    phases: tuple[Phase, ...]
    models: Mapping[str, str]
    default_model: str | None
    checklist_line: int
    content_rules_line: int
    #: the plan's ``## Prices`` overrides, by model id, prefix or alias (empty without the section)
    prices: Mapping[str, Price] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def rows(self) -> tuple[Row, ...]:
        return tuple(r for p in self.phases for r in p.rows)

    def row(self, filename: str) -> Row:
        for r in self.rows:
            if r.filename == filename:
                return r
        raise KeyError(filename)

    def output_path(self, row: Row) -> Path:
        return self.output_dir / row.filename

    def draft_path(self, row: Row) -> Path:
        """Where a new draft goes while the row's output passes: it never replaces a good output."""
        return self.drafts_dir / row.filename

    @property
    def drafts_dir(self) -> Path:
        """The plan's drafts: ``<output directory>/.batchgen-drafts/``."""
        return self.output_dir / DRAFTS_FOLDER

    def cassette_path(self, row: Row) -> Path:
        """The row's recording: ``<plan folder>/cassettes/<plan name>/<filename>.yaml``."""
        return self.cassette_dir / f"{row.filename}.yaml"

    @cached_property
    def cassette_dir(self) -> Path:
        """The plan's recordings: ``<plan folder>/cassettes/<plan name>/`` (made once: each row's
        cassette path is made from it at every turn of the row, three joins each)."""
        return self.path.parent / "cassettes" / self.name

    def rel(self, path: Path) -> str:
        """``path`` relative to the rootdir when it lies below it (for messages and prompts)."""
        return _shown(path, self.rootdir)


def _section_value(section: Section, plan_path: Path, what: str) -> ListItem:
    candidates = list(section.paragraphs) + list(section.items)
    candidates.sort(key=lambda it: it.line)
    if not candidates:
        raise PlanError(
            f"the '## {section.title}' section is empty; write the {what} on the line below the heading",
            plan_path,
            section.line,
        )
    first = candidates[0]
    return ListItem(unquote(first.text), first.line)


_MODEL_LINE_RE = re.compile(r"^\s*`?([A-Za-z0-9_.\-]+)`?\s*(?::|->|→|=)\s*`?([A-Za-z0-9_.\-@:/]+)`?\s*$")
# "default" and "model" are each followed by their own optional spaces: two adjacent "\s*" around
# an optional word could split a run of spaces in n ways, and a 40,000-space line took minutes
_DEFAULT_RE = re.compile(r"^\s*default(?:\s*model)?\s*[:=]\s*`?([A-Za-z0-9_.\-]+)`?", re.IGNORECASE)


def parse_model_line(text: str) -> tuple[str, str] | None:
    """``alias: model-id`` (or ``alias = model-id``, ``alias -> model-id``) as (lower-case alias, id).

    The one reader of alias lines, for a plan's ``## Models`` section and the ``batchgen_models``
    ini option; ``None`` when the line is not one.
    """
    m = _MODEL_LINE_RE.match(text)
    return (m.group(1).lower(), m.group(2)) if m else None


def ini_models(lines: Iterable[str]) -> dict[str, str]:
    """The ``batchgen_models`` ini option's lines, read like a ``## Models`` section's.

    Raises :class:`BatchgenError` naming the option and the line that cannot be read.
    """
    models: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            continue
        parsed = parse_model_line(line)
        if parsed is None:
            raise BatchgenError(f"batchgen_models: cannot read {line.strip()!r}; write 'alias = model-id'")
        models[parsed[0]] = parsed[1]
    return models


def parse_models(section: Section | None, plan_path: Path) -> dict[str, str]:
    """Read ``alias: model-id`` lines (bullets, or a two-column table) of a ``## Models`` section."""
    models: dict[str, str] = {}
    if section is None:
        return models
    for item in list(section.items) + list(section.paragraphs):
        parsed = parse_model_line(item.text)
        if parsed is None:
            raise PlanError(
                f"cannot read model alias line {item.text!r}; write it as 'alias: model-id'",
                plan_path,
                item.line,
            )
        models[parsed[0]] = parsed[1]
    for table in section.tables:
        for row in table.rows:
            if len(row.cells) >= 2 and row.cells[0]:
                models[unquote(row.cells[0]).lower()] = unquote(row.cells[1])
    return models


def parse_prices(section: Section | None, plan_path: Path) -> dict[str, Price]:
    """A ``## Prices`` section: lines ``model: input, output[, cache_write, cache_read]``."""
    out: dict[str, Price] = {}
    if section is None:
        return out
    for item in sorted(list(section.items) + list(section.paragraphs), key=lambda it: it.line):
        parsed = parse_price_line(item.text)
        if parsed is None:
            raise PlanError(
                f"cannot read price line {item.text!r}; write 'model: input, output[, cache_write, cache_read]' "
                "in dollars per million tokens",
                plan_path,
                item.line,
            )
        out[parsed[0]] = parsed[1]
    return out


def resolve_model(cell: str, models: Mapping[str, str]) -> str:
    """An alias resolves through ``models``; anything else is taken as a full model id."""
    return models.get(cell.lower(), cell)


def load_plan(
    path: Path | str,
    rootdir: Path | str,
    models: Mapping[str, str] | None = None,
    max_reference_bytes: int = DEFAULT_MAX_BYTES,
) -> Plan:
    """Read and validate a plan; raise :class:`PlanError` naming the line and the fix.

    ``models`` are alias overrides from the ini file; a ``## Models`` section in the plan wins
    over them, and both win over :data:`DEFAULT_MODELS`. ``max_reference_bytes`` bounds the
    format reference (``batchgen_max_output_bytes``): every prompt inlines it.
    """
    plan_path = Path(path)
    root = Path(rootdir).resolve()
    if not plan_path.is_absolute():
        plan_path = root / plan_path
    plan_path = plan_path.resolve()  # one spelling of the path, whatever '..' or links the user wrote
    if plan_path.is_dir():
        plans = sorted(p.name for p in plan_path.glob("*.md"))[:5]
        hint = f" (it holds {', '.join(plans)})" if plans else ""
        raise PlanError(f"the plan is a folder{hint}; pass the path of a plan file to --batch-plan", plan_path)
    if not plan_path.is_file():
        raise PlanError(
            "plan file not found; pass the path of an existing plan to --batch-plan "
            "(relative to the current folder or to the rootdir)",
            plan_path,
        )
    try:
        text = plan_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"plan is not UTF-8 text ({exc.reason} at byte {exc.start})", plan_path) from None
    if not text.strip():
        raise PlanError(
            "plan is empty; a plan needs the sections Format Reference, Output Directory, "
            "Content Rules, Validation Checklist and at least one '## Phase N' table",
            plan_path,
        )
    nul = text.find("\x00")
    if nul >= 0:
        # markdown-it reads it as U+FFFD: a filename with one passed the control-character check
        raise PlanError("plan contains a NUL byte; remove it", plan_path, len(split_lines(text[: nul + 1])))
    scanned = scan_plan(text)
    _refuse_hidden_headings(scanned, plan_path)
    sections = scanned.sections
    by_key: dict[str, Section] = {}
    for s in sections:
        by_key.setdefault(s.key, s)
    notes = [s for s in sections if s.key == NOTES_SECTION]
    if len(notes) > 1:
        # (a merge of two branches) the editor reads and rewrites the first only: the second's
        # entries would stay for good, even for rows that pass
        raise PlanError(
            f"a second '## {notes[1].title}' section (the first is on line {notes[0].line}); the plugin "
            "keeps its notes in one: move this one's entries into the first and delete this heading",
            plan_path,
            notes[1].line,
        )

    missing = [name for name in REQUIRED_SECTIONS if name not in by_key]
    if missing:
        _missing_sections(missing, sections, plan_path)

    ref_item = _section_value(by_key["format reference"], plan_path, "path of the format reference")
    out_item = _section_value(by_key["output directory"], plan_path, "output folder")
    format_reference = _inside_rootdir(ref_item, root, plan_path, "format reference")
    output_dir = _inside_rootdir(out_item, root, plan_path, "output directory")
    blocking = file_in_the_way(output_dir)
    if blocking is not None:
        # found only when the first output was written: after the whole session had run
        what = "is a file" if blocking == output_dir else f"cannot be made: {_shown(blocking, root)} is a file"
        raise PlanError(
            f"the output directory {out_item.text!r} {what}, not a folder; name a folder (it is made if missing)",
            plan_path,
            out_item.line,
        )
    try:
        is_file = format_reference.is_file()
    except OSError as exc:  # e.g. a name over 255 bytes (ENAMETOOLONG): is_file only hides ENOENT
        raise PlanError(
            f"format reference {ref_item.text!r} cannot be read: {exc.strerror or exc}; fix the path",
            plan_path,
            ref_item.line,
        ) from None
    if not is_file:
        raise PlanError(
            f"format reference {ref_item.text!r} not found (looked for {format_reference}); "
            "write the hand-made output first, or fix the path",
            plan_path,
            ref_item.line,
        )
    try:
        size = format_reference.stat().st_size
    except OSError:
        size = 0  # the read below says why
    if size > max_reference_bytes:
        # its own row failed as too large, yet every prompt inlined it: 30 MB cost $38 a request
        raise PlanError(
            f"format reference {ref_item.text!r} is {size:,} bytes, above the {max_reference_bytes:,}-byte "
            "limit of an output (batchgen_max_output_bytes): every prompt inlines it, so nothing was sent; "
            "shorten it, or raise batchgen_max_output_bytes in the ini file",
            plan_path,
            ref_item.line,
        )
    try:
        # "utf-8-sig": a BOM (an editor's, invisible) is no text for the model, and saving one
        # must not make every row's prompt differ (freshness would call all of them stale);
        # read_text's newline translation does the same for a checkout's "\r\n"
        reference_text = format_reference.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PlanError(
            f"format reference {ref_item.text!r} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            plan_path,
            ref_item.line,
        ) from None
    except OSError as exc:
        raise PlanError(
            f"format reference {ref_item.text!r} cannot be read: {exc.strerror or exc}", plan_path, ref_item.line
        ) from None

    alias_map = {k.lower(): v for k, v in DEFAULT_MODELS.items()}
    alias_map.update({k.lower(): v for k, v in (models or {}).items()})
    alias_map.update(parse_models(by_key.get("models"), plan_path))

    default_model = None
    selection = by_key.get("model selection rules")
    if selection is not None:
        for item in list(selection.items) + list(selection.paragraphs):
            m = _DEFAULT_RE.match(item.text)
            if m:
                default_model = resolve_model(m.group(1), alias_map)
                break

    phases: list[Phase] = []
    #: each output path in lower case -> (the path, the filename as written, its line)
    seen: dict[str, tuple[Path, str, int]] = {}
    tables = {id(t.section): t for t in phase_tables(sections)}
    for s in sections:
        _refuse_list_tables(s, plan_path)
        if not _PHASE_RE.match(s.title):
            _refuse_unread_rows(s, plan_path)
            continue
        if id(s) not in tables:
            raise PlanError(
                f"'## {s.title}' has no table; add one with the columns Title | Filename | Model | Status",
                plan_path,
                s.line,
            )
        if len(s.tables) > 1:
            raise PlanError(
                f"'## {s.title}' has a second table; a phase has one table: merge the two, or give "
                "the second a '## Phase' section of its own",
                plan_path,
                s.tables[1].line,
            )
        if s.stray_rows:
            raise PlanError(
                f"this line of '## {s.title}' reads as a table row but is in no table: a blank line, "
                "text, a stray '>', an indent of a tab or 4 spaces or an HTML block ends a table; "
                "remove what splits it",
                plan_path,
                s.stray_rows[0],
            )
        phases.append(_read_phase(tables[id(s)], plan_path, output_dir, alias_map, default_model, seen))
    _refuse_loose_tables(scanned.loose_tables, plan_path)
    if not phases:
        raise PlanError(
            "plan has no phase table; add a '## Phase 1' section with a table of Title | Filename | Model | Status",
            plan_path,
        )

    checklist = by_key["validation checklist"]
    rules = by_key["content rules"]
    return Plan(
        path=plan_path,
        rootdir=root,
        format_reference=format_reference,
        format_reference_text=reference_text,
        format_reference_line=ref_item.line,
        output_dir=output_dir,
        output_dir_line=out_item.line,
        content_rules=rules.items,
        checklist=checklist.items,
        phases=tuple(phases),
        models=MappingProxyType(alias_map),
        default_model=default_model,
        checklist_line=checklist.line,
        content_rules_line=rules.line,
        prices=MappingProxyType(parse_prices(by_key.get("prices"), plan_path)),
    )


def _refuse_hidden_headings(scanned: Scan, plan_path: Path) -> None:
    """Raise where markdown-it stops reading what follows: a fence or comment never closed
    that hides a heading the plugin reads, or blocks nested past the parser's limit."""
    if scanned.unclosed:
        block = scanned.unclosed[0]
        raise PlanError(
            f"this {block.kind} is never closed, so everything after it is code, the heading "
            f"'{block.heading}' on line {block.heading_line} included, and the plugin would leave it out; "
            f"close it with '{block.closer}' where it ends",
            plan_path,
            block.line,
        )
    if scanned.too_deep is not None:
        raise PlanError(
            "blocks here are nested as deep as the Markdown parser reads (lists or quotes inside one "
            "another): it skips the rest of the plan after them, so its rows would be left out; nest less deep",
            plan_path,
            scanned.too_deep,
        )


def _refuse_unread_rows(section: Section, plan_path: Path) -> None:
    """Raise for a section that is no phase but reads as one: its rows would be silently skipped.

    A heading the phase pattern misses (``## Phase2``, ``## Phase``) or a table of outputs under
    another heading is never generated or checked, and the run passes; an error names the fix.
    """
    if _PHASE_WORD_RE.match(section.title):
        raise PlanError(
            f"'## {section.title}' is not a phase heading the plugin can read, so its rows would be "
            "left out; write it as '## Phase N' (a space, then the phase's number or word: '## Phase 2')",
            plan_path,
            section.line,
        )
    for table in section.tables:
        if _outputs_table(table):
            raise PlanError(
                f"the table of '## {section.title}' has the columns Title, Filename, Model and Status, but "
                f"'## {section.title}' is no phase, so its rows would never be generated or checked; "
                "put them under a '## Phase N' heading, or rename a column if they are not outputs to generate",
                plan_path,
                table.line,
            )


def _outputs_table(table: Table) -> bool:
    """The table has the columns Title, Filename, Model and Status: a table of outputs."""
    header = {unquote(h).lower() for h in table.header}
    return all(c in header for c in REQUIRED_COLUMNS)


def _refuse_list_tables(section: Section, plan_path: Path) -> None:
    """Raise for a table of outputs inside a list item: the parser reads a phase's table only at
    the top level of its section (the editor edits cells by counting pipes), so its rows would be
    skipped without a word, a phase's second table included."""
    for table in section.list_tables:
        if _outputs_table(table):
            raise PlanError(
                f"this table of '## {section.title}' has the columns Title, Filename, Model and Status but is "
                "inside a list item, so its rows would never be generated or checked; a phase's table stands "
                "at the top level under its '## Phase N' heading: remove the bullet and the indent before it",
                plan_path,
                table.line,
            )


def _refuse_loose_tables(tables: Iterable[LooseTable], plan_path: Path) -> None:
    """Raise for a table of outputs in no ``##`` section: under a ``#`` heading (``# Phase 2``,
    one '#' short) or before the first ``##`` heading, its rows would be skipped without a word.

    Under a ``#`` heading that reads like a phase, a table with a Filename column is refused too
    (a phase missing a column is an error under ``## Phase 2``); other tables there, and a
    ``# Phase 1 plan`` title over no such table, are the user's.
    """
    for loose in tables:
        header = {unquote(h).lower() for h in loose.table.header}
        phase_like = loose.heading is not None and _PHASE_WORD_RE.match(loose.heading)
        if phase_like and "filename" in header:
            raise PlanError(
                f"'# {loose.heading}' is a level-1 heading, so the table under it is in no phase and its rows "
                "would be left out; a phase heading has two '#': write it as '## Phase N' ('## Phase 2')",
                plan_path,
                loose.heading_line,
            )
        if _outputs_table(loose.table):
            where = f"under '# {loose.heading}'" if loose.heading is not None else "before the first '##' heading"
            raise PlanError(
                f"this table has the columns Title, Filename, Model and Status but is {where}, in no "
                "'## Phase N' section, so its rows would never be generated or checked; put it under a "
                "'## Phase N' heading, or rename a column if they are not outputs to generate",
                plan_path,
                loose.table.line,
            )


def _missing_sections(missing: list[str], sections: tuple[Section, ...], plan_path: Path) -> None:
    """Raise for absent required sections, pointing at the heading each one probably is.

    A misspelled heading (``## Validaton Checklist``) is the usual cause; naming it and its
    line turns "has no section" into a one-character fix.
    """
    known = set(REQUIRED_SECTIONS) | {NOTES_SECTION, "models", "prices", "model selection rules"}
    candidates = [s for s in sections if s.key not in known and not _PHASE_RE.match(s.title)]
    parts: list[str] = []
    first_line: int | None = None
    for name in missing:
        text = f"'## {name.title()}'"
        close = difflib.get_close_matches(name, [s.key for s in candidates], n=1, cutoff=0.6)
        if close:
            guess = next(s for s in candidates if s.key == close[0])
            text += f" (did you mean '## {guess.title}' on line {guess.line}?)"
            first_line = first_line or guess.line
        parts.append(text)
    raise PlanError(
        f"plan has no {', '.join(parts)} section; add it or fix its heading (see the plan format in the README)",
        plan_path,
        first_line,
    )


def _inside_rootdir(item: ListItem, root: Path, plan_path: Path, what: str) -> Path:
    """Plan paths are relative to the rootdir and may not leave it (no absolute path, no '..')."""
    target = _resolve(root / item.text, f"the {what} {item.text!r}", plan_path, item.line)
    if Path(item.text).is_absolute() or (target != root and root not in target.parents):
        raise PlanError(
            f"the {what} {item.text!r} lies outside the rootdir {root}; write a path inside the project",
            plan_path,
            item.line,
        )
    return target


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to the rootdir ``root`` when it lies below it, as messages name paths
    (:meth:`Plan.rel`, and :func:`load_plan` before there is a plan)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _resolve(path: Path, what: str, plan_path: Path, line: int) -> Path:
    """``path.resolve()``, with its failures (a symlink loop, a name the system refuses) as plan errors."""
    try:
        resolved = path.resolve()
        resolved.exists()  # raises for names the system refuses (over 255 bytes), not for absent ones
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way
        raise PlanError(f"{what} cannot be resolved: symlink loop; fix or remove the link", plan_path, line) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PlanError(f"{what} cannot be resolved: {reason}; fix the path", plan_path, line) from None
    return resolved


def _read_phase(
    phase: PhaseTable,
    plan_path: Path,
    output_dir: Path,
    alias_map: Mapping[str, str],
    default_model: str | None,
    seen: dict[str, tuple[Path, str, int]],
) -> Phase:
    section, number, table, header = phase.section, phase.number, phase.table, phase.header
    if table.nested:
        raise PlanError(
            f"the table of '## {section.title}' is inside a blockquote; the plugin edits its Status "
            "cells in place and only does that in a table at the top level: remove the '>' before its lines",
            plan_path,
            table.line,
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        cols = ", ".join(c.title() for c in missing)
        raise PlanError(
            f"the table of '## {section.title}' has no {cols} column; its header must name "
            "Title, Filename, Model and Status (any order, extra columns allowed)",
            plan_path,
            table.line,
        )
    col = {name: header.index(name) for name in REQUIRED_COLUMNS}
    rows: list[Row] = []
    parents: dict[Path, Path] = {}  # resolved folders of the filenames, one resolve per folder
    for tr in table.rows:
        if any(tr.overflow):
            lost = ", ".join(repr(c) for c in tr.overflow if c)
            raise PlanError(
                f"this row has {len(tr.cells) + len(tr.overflow)} cells but its table {len(header)} columns, so "
                f"{lost} would be left out and the cells before it read shifted: a '|' splits a cell even inside "
                "backticks; write it as '\\|' (or add a column to the header)",
                plan_path,
                tr.line,
            )
        cells = tuple(tr.cells) + ("",) * (len(header) - len(tr.cells))

        def cell(name: str, cells: tuple[str, ...] = cells) -> str:
            return unquote(cells[col[name]])

        filename = cell("filename")
        if not filename:
            raise PlanError("row has an empty Filename cell; name the output file", plan_path, tr.line)
        # two spellings of one file ('a.md', './a.md', 'sub//a.md') are one output: compared
        # by the path the row writes, named as the user spelled them; and in lower case, since
        # where names are compared without case (macOS, Windows) 'a.md' and 'A.md' are one file
        target = _check_filename(filename, output_dir, plan_path, tr.line, parents)
        earlier = seen.setdefault(str(target).lower(), (target, filename, tr.line))
        if earlier[2] != tr.line:
            first_target, first, first_line = earlier
            if first_target == target:
                alias = "" if first == filename else f", as {first!r}"
                message = f"duplicate filename {filename!r} (first used on line {first_line}{alias}); "
                message += "each row must write its own file"
            else:
                message = (
                    f"filename {filename!r} differs from {first!r} (line {first_line}) only in case: on macOS "
                    "and Windows they are one file, which both rows would write; rename one"
                )
            raise PlanError(message, plan_path, tr.line)
        status = cell("status").lower()
        if status not in STATUSES:
            raise PlanError(
                f"unknown status {cell('status')!r} for {filename!r}; use 'pending' or 'complete'",
                plan_path,
                tr.line,
            )
        model_cell = cell("model")
        if model_cell:
            model = resolve_model(model_cell, alias_map)
        elif default_model:
            model = default_model
        else:
            raise PlanError(
                f"row {filename!r} has no model and the plan names no default; fill the Model cell "
                "or add '- Default: haiku' under '## Model Selection Rules'",
                plan_path,
                tr.line,
            )
        rows.append(
            Row(
                phase=number,
                line=tr.line,
                title=cells[col["title"]].strip(),  # as written: a title may open and close with a code span
                filename=filename,
                model_cell=model_cell,
                model=model,
                status=status,
                columns=MappingProxyType(
                    {h: c.strip() if h == "title" else unquote(c) for h, c in zip(header, cells, strict=False)}
                ),
            )
        )
    return Phase(number=number, title=section.title, line=section.line, header=header, rows=tuple(rows))


def _resolve_below(base: Path, pure: Path, what: str, plan_path: Path, line: int, parents: dict[Path, Path]) -> Path:
    """``(base / pure).resolve()`` for a ``base`` already resolved, at one ``lstat`` per row.

    ``Path.resolve()`` checks every component of the path (a third of a cold 10,000-row load);
    the folder part is resolved once per folder (``parents``) and the last component only
    needs to not be a link. Anything else (``..``, a link, a name the system refuses) takes
    the full :func:`_resolve`, with its errors."""
    if not pure.parts or ".." in pure.parts:
        return _resolve(base / pure, what, plan_path, line)
    folder = pure.parent
    real = parents.get(folder)
    if real is None:
        real = parents[folder] = base if folder == Path(".") else _resolve(base / folder, what, plan_path, line)
    candidate = real / pure.name
    try:
        mode = os.lstat(candidate).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return candidate
    except OSError:
        return _resolve(base / pure, what, plan_path, line)
    if stat.S_ISLNK(mode):
        resolved = _resolve(base / pure, what, plan_path, line)
        with contextlib.suppress(OSError):
            _refuse_special_file(os.stat(resolved).st_mode, what, plan_path, line)
        return resolved
    _refuse_special_file(mode, what, plan_path, line)
    return candidate


def _refuse_special_file(mode: int, what: str, plan_path: Path, line: int) -> None:
    """Raise for an output that is a named pipe, a socket or a device (:func:`special_kind`),
    found by the ``lstat`` the row's path takes anyway, before anything reads it."""
    kind = special_kind(mode)
    if kind is not None:
        raise PlanError(f"{what} is {kind}, not a file: reading it could wait for ever; remove it", plan_path, line)


#: the control characters (Unicode category Cc): C0, DEL and C1
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
#: a Windows drive letter, and a path from a drive's root (compiled once: checked for every row)
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_DRIVE_ROOT_RE = re.compile(r"^[A-Za-z]:[/\\]")


def _check_filename(
    filename: str, output_dir: Path, plan_path: Path, line: int, parents: dict[Path, Path] | None = None
) -> Path:
    """Refuse names that would write outside the output directory (``..``, absolute, links);
    return the resolved path the row writes, one spelling per file.

    ``output_dir`` is resolved; ``parents`` caches the resolved folders across a table's rows.

    Also refused: a control character (an invalid ``--junitxml``, a name no terminal shows),
    ``::`` (a row's node id, ``plan.md::FILENAME::check``, is split there: it could not be passed
    back to pytest, nor matched by ``--lf``) and a leading drive letter (``d:e.md`` is a
    Windows path relative to drive D's current folder, outside the output directory there)."""
    control = _CONTROL_RE.search(filename)
    if control is not None:
        raise PlanError(
            f"filename {filename!r} contains a control character (U+{ord(control.group()):04X}); remove it",
            plan_path,
            line,
        )
    if "::" in filename:
        raise PlanError(
            f"filename {filename!r} contains '::', which separates the parts of a pytest node id "
            "(plan.md::FILENAME::check); rename the file (e.g. one ':' or '-')",
            plan_path,
            line,
        )
    pure = Path(filename)
    if pure.is_absolute() or filename.startswith(("/", "\\")) or _DRIVE_ROOT_RE.match(filename):
        raise PlanError(
            f"filename {filename!r} is absolute; write it relative to the output directory",
            plan_path,
            line,
        )
    if _DRIVE_RE.match(filename):
        raise PlanError(
            f"filename {filename!r} begins with a drive letter ({filename[:2]!r}): on Windows it names a "
            f"file outside the output directory; rename it (e.g. {filename[0] + '-' + filename[2:]!r})",
            plan_path,
            line,
        )
    target = _resolve_below(
        output_dir, pure, f"filename {filename!r}", plan_path, line, {} if parents is None else parents
    )
    if target != output_dir and output_dir not in target.parents:
        raise PlanError(
            f"filename {filename!r} leaves the output directory {output_dir}; "
            "write a path inside it (no '..', no link pointing outside)",
            plan_path,
            line,
        )
    if target == output_dir:
        raise PlanError(f"filename {filename!r} names the output directory itself", plan_path, line)
    if target == plan_path:
        # a generated draft would replace the plan, and a check run reads the plan as an output
        raise PlanError(
            f"filename {filename!r} is the plan itself; name another file in the output directory",
            plan_path,
            line,
        )
    if str(target).startswith(f"{output_dir}{os.sep}{DRAFTS_FOLDER}{os.sep}"):  # no Path made per row
        # the plugin keeps the rows' drafts there: another row's draft would land on this output
        raise PlanError(
            f"filename {filename!r} lies in {DRAFTS_FOLDER}/, the folder where the plugin keeps the rows' "
            "drafts; name a file outside it",
            plan_path,
            line,
        )
    return target


def check_shared_outputs(plans: Sequence[Plan]) -> None:
    """Two plans of one run whose rows write the same output file: each plan checks its own
    rows for a duplicate filename, so across plans the second row's output overwrote the
    first's, and both rows became complete over one plan's content. A :class:`PlanError` at
    the second row, naming the first. So is a row whose output is another plan of the run (a
    draft would replace that plan; its own plan is refused by :func:`load_plan`). One plan has
    nothing to compare: its rows are not resolved again (a path resolve a row, every run)."""
    if len(plans) < 2:
        return
    seen: dict[Path, tuple[Plan, Row]] = {}
    plan_paths = {plan.path for plan in plans}
    for plan in plans:
        for row in plan.rows:
            target = plan.output_path(row).resolve()
            first = seen.setdefault(target, (plan, row))
            if target in plan_paths:
                raise PlanError(
                    f"{row.filename!r} writes {plan.rel(target)}, which is a plan of this run; name another "
                    "file in the output directory",
                    plan.path,
                    row.line,
                )
            if first[0] is not plan:
                other, other_row = first
                raise PlanError(
                    f"{row.filename!r} writes {plan.rel(target)}, which row {other_row.filename!r} of "
                    f"{other.rel(other.path)} (line {other_row.line}) writes too; each output has one row "
                    "in one plan",
                    plan.path,
                    row.line,
                )
