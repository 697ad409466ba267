"""Plan texts for the tests: a small valid plan to vary by hand, and Hypothesis strategies.

Not a test module: the parser, editor and plan-error tests import it, and so do the processes
``test_concurrent_edits.py`` spawns (:func:`edit_worker`): ``tests/`` is on ``sys.path``
through ``pythonpath`` in pyproject.toml, and spawned processes inherit that ``sys.path``.
``harness.Project.write_plan`` writes these plans with their format reference.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLAN = REPO / "plans" / "glossary.md"
#: The example plan as shipped (rows 2-9 pending), frozen: the Quick start completes the live one.
SHIPPED_EXAMPLE = Path(__file__).resolve().parent / "data" / "glossary" / "plan-as-shipped.md"

#: The sections every plan needs, with the format reference at ``out/ref.md``.
HEAD = """\
# Test plan

## Format Reference
out/ref.md

## Output Directory
out/

## Content Rules
- Every output needs front matter: term, category, tags
- category must be one of: Alpha, Beta

## Validation Checklist
1. Front matter includes term, category, and at least 2 tags
"""

PHASE_1 = """\
## Phase 1
| # | Title | Filename | Model | Status |
|---|-------|----------|-------|--------|
| 1 | Alpha | alpha.md | haiku | complete |
| 2 | Beta | beta.md | haiku | pending |
"""

PHASE_2 = """\
## Phase 2
| # | Title | Filename | Model | Status |
|---|-------|----------|-------|--------|
| 3 | Gamma | gamma.md | sonnet | pending |
"""

REFERENCE = """\
---
term: Alpha
category: Alpha
tags: [one, two]
---

## Definition

Alpha.
"""


#: the smallest runnable plan: one complete row, ``ref.md``, which is also its format reference
#: (:func:`lay_out_small_plan` writes it); tests add rows after the last line
SMALL_PLAN = """\
# Plan

## Format Reference
out/ref.md

## Output Directory
out/

## Content Rules
- Be brief.

## Validation Checklist
1. Front matter includes term

## Phase 1

| Title | Filename | Model | Status |
|---|---|---|---|
| Ref | ref.md | haiku | complete |
"""


def lay_out_small_plan(folder: Path, plan: str = SMALL_PLAN) -> None:
    """Write ``plan`` as ``folder/plan.md`` and its format reference ``out/ref.md``, which passes."""
    (folder / "plan.md").write_text(plan, encoding="utf-8")
    (folder / "out").mkdir(exist_ok=True)
    (folder / "out" / "ref.md").write_text("---\nterm: Ref\n---\n\n## Definition\n\nR.\n", encoding="utf-8")


def plan_text(*phases: str, head: str = HEAD, tail: str = "") -> str:
    """A plan: ``head``, then the phase sections (default: two phases), then ``tail``."""
    if not phases:
        phases = (PHASE_1, PHASE_2)
    return "\n".join([head, *phases]) + ("\n" + tail if tail else "")


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based number of the ``occurrence``-th line containing ``needle``."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} (occurrence {occurrence}) not in the text")


# -- Hypothesis: generated plans -------------------------------------------------------------

REQUIRED = ("title", "filename", "model", "status")
EXTRA_NAMES = ("#", "Notes", "Owner", "Priority", "Due")


@dataclass
class GenRow:
    title: str
    filename: str
    model: str  # the Model cell as written (maybe empty, then the plan has a default)
    status: str  # the word as written, in its case style
    extras: dict[str, str]
    line: int = 0  # 1-based, filled in by the renderer
    quote: str = ""  # around the word in the Status cell: "", "`" or '"'

    @property
    def status_cell(self) -> str:
        return f"{self.quote}{self.status}{self.quote}"


@dataclass
class GenPlan:
    text: str
    newline: str
    rows: list[GenRow]
    status_col: dict[str, int]  # filename -> index of the status cell in its row
    default_model: str | None = None
    phase_lines: list[int] = field(default_factory=list)

    def row(self, filename: str) -> GenRow:
        return next(r for r in self.rows if r.filename == filename)


def _styled(word: str, style: str) -> str:
    return {"lower": word.lower(), "upper": word.upper(), "title": word.capitalize()}[style]


_STATUS_CELLS = st.builds(
    _styled, st.sampled_from(("pending", "complete")), st.sampled_from(("lower", "upper", "title"))
)


def status_cells() -> st.SearchStrategy[str]:
    """A status word as a Status cell may spell it: pending, COMPLETE, Pending, ... (one strategy,
    built once: Hypothesis validates each strategy object at its first draw, and building them
    again for every draw made validating them a sixth of the plan properties' time)"""
    return _STATUS_CELLS


_TITLE_MIDDLE = st.characters(
    categories=("L", "N", "P", "Zs", "S"),
    exclude_characters="|\\`'\"\u2028\u2029\x85",
)
_ALNUM = st.characters(categories=("L", "N"), exclude_characters="\u2028\u2029")
_EXTRA_CHARS = st.sampled_from("abcXYZ0189")


@st.composite
def titles(draw) -> str:
    """Titles without pipes, backslashes, quotes or newlines; they start with a letter or digit."""
    first = draw(_ALNUM)
    middle = draw(st.text(_TITLE_MIDDLE, max_size=20))
    last = draw(st.text(_ALNUM, max_size=1))
    return (first + middle + last).strip()


_TITLES = titles()


@st.composite
def generated_plans(draw, *, allow_crlf: bool = True, ending: bool = False) -> GenPlan:
    """A valid plan with 1-3 phases; each table has its own column order, extra columns,
    per-cell padding (spaces, or tabs in a table with outer pipes), outer pipes or not; statuses
    in random case styles, some in backticks or quotes; maybe a quoted ``> ## Batchgen Notes``
    heading in the preamble (text, not a section).

    ``ending=True`` also varies how the file ends (no final newline, trailing blank lines).
    """
    newline = draw(st.sampled_from(("\n", "\r\n"))) if allow_crlf else "\n"
    # padding widths (0-3 spaces each side of every cell) come from a seeded generator: many
    # cheap draws, and shrinking them would not make a failure any clearer than the seed does
    pads = random.Random(draw(st.integers(0, 2**32 - 1)))
    has_default = draw(st.booleans())
    default_alias = draw(st.sampled_from(("haiku", "sonnet", "opus")))
    lines: list[str] = [
        "# Generated plan",
        "",
        *draw(st.sampled_from(([], ["> ## Batchgen Notes", "> - `row-1.md`: quoted, not a note", ""]))),
        draw(st.sampled_from(("## Format Reference", "## FORMAT REFERENCE", "## format reference"))),
        draw(st.sampled_from(("out/ref.md", "`out/ref.md`"))),
        "",
        draw(st.sampled_from(("## Output Directory", "## output directory"))),
        "out/",
        "",
        "## Content Rules",
        "- Every output needs front matter: term, category, tags",
        "",
        "## Validation Checklist",
        "1. Front matter includes term, category, and at least 2 tags",
        "",
    ]
    rows: list[GenRow] = []
    status_col: dict[str, int] = {}
    phase_lines: list[int] = []
    counter = 0
    for number in range(1, draw(st.integers(1, 3)) + 1):
        heading = draw(st.sampled_from(("Phase", "PHASE", "phase"))) + f" {number}"
        heading += draw(st.sampled_from(("", ": Comparisons", " - singles", " (synthesis)")))
        lines.append("## " + heading)
        phase_lines.append(len(lines))
        extras = draw(st.lists(st.sampled_from(EXTRA_NAMES), unique=True, max_size=2))
        columns = draw(st.permutations([*REQUIRED, *extras]))
        header_names = {
            c: (c if c in extras else draw(st.sampled_from((c, c.capitalize(), c.upper())))) for c in columns
        }
        outer = draw(st.booleans())
        n_rows = draw(st.integers(1, 4))
        table_rows: list[GenRow] = []
        for _ in range(n_rows):
            counter += 1
            model_choices = ["haiku", "Sonnet", "opus", "claude-x-9-1"] + ([""] if has_default else [])
            backticked = draw(st.booleans())
            row = GenRow(
                title=draw(_TITLES),
                filename=f"row-{counter}.md",
                model=draw(st.sampled_from(tuple(model_choices))),
                status=draw(status_cells()),
                extras={e: draw(st.text(_EXTRA_CHARS, min_size=1, max_size=6)) for e in extras},
                quote=draw(st.sampled_from(("", "", "`", '"'))),
            )
            row.extras["_filename_cell"] = f"`{row.filename}`" if backticked else row.filename
            table_rows.append(row)

        def cell_text(row: GenRow, column: str) -> str:
            if column == "title":
                return row.title
            if column == "filename":
                return row.extras["_filename_cell"]
            if column == "model":
                return row.model
            if column == "status":
                return row.status_cell
            return row.extras[column]

        # an empty first or last cell needs its outer pipe; and a line may not start with
        # something Markdown reads as a block of its own ("# |" is a heading, "1. x" a list)
        if columns[0] in ("title", "#") or any(
            not cell_text(r, columns[0]) or not cell_text(r, columns[-1]) for r in table_rows
        ):
            outer = True

        # a tab before the first cell of a line without an outer pipe would make it code
        pad = draw(st.sampled_from((" ", " ", "\t"))) if outer else " "

        def render(cells: list[str]) -> str:
            padded = [pad * pads.randint(0, 3) + c + pad * pads.randint(0, 3) for c in cells]
            body = "|".join(padded)
            return f"|{body}|" if outer else body

        lines.append(render([header_names[c] for c in columns]))
        # without outer pipes, "- |" would start a list: no single-dash delimiter then
        delimiters = ["---", ":--", "--:", ":-:"] + (["-"] if outer else [])
        lines.append(render([draw(st.sampled_from(tuple(delimiters))) for _ in columns]))
        for row in table_rows:
            lines.append(render([cell_text(row, c) for c in columns]))
            row.line = len(lines)
            status_col[row.filename] = columns.index("status")
            rows.append(row)
        lines.append("")
    if has_default:
        lines += ["## Model Selection Rules", f"- Default: {default_alias} for single terms", ""]
    text = newline.join(lines)  # ends with exactly one newline (the last line is blank)
    if ending:
        choice = draw(st.sampled_from(("one", "none", "blank")))
        if choice == "none":
            text = text[: -len(newline)]
        elif choice == "blank":
            text += newline
    for row in rows:
        row.extras.pop("_filename_cell", None)
    return GenPlan(
        text=text,
        newline=newline,
        rows=rows,
        status_col=status_col,
        default_model=default_alias if has_default else None,
        phase_lines=phase_lines,
    )


# -- Hypothesis: notes sections the user has shaped ------------------------------------------

#: the rows of :func:`plan_text`'s default plan, for notes entries
NOTE_ROWS = ("alpha.md", "beta.md", "gamma.md")


@dataclass
class GenNotes:
    """A ``## Batchgen Notes`` section as the plugin wrote it and the user then edited it."""

    text: str  # the section, to pass as ``plan_text(tail=...)``
    entries: dict[str, str]  # what read_notes should find
    heading: list[str]  # the heading's lines, kept as written while the section stays
    user_lines: list[str]  # the user's text above and below the plugin's lines, kept in order for good


@st.composite
def user_notes_sections(draw) -> GenNotes:
    """A notes section with an ATX or setext heading, maybe a remark between the heading and the
    marker, entries, and maybe text after them (a paragraph, an indented one, a ``###``)."""
    from pytest_batchgen.planedit import NOTES_MARKER, code_span

    heading = draw(
        st.sampled_from([["## Batchgen Notes"], ["Batchgen Notes", "--------------"], ["## batchgen notes"]])
    )
    before = draw(st.sampled_from(([], ["My remark about these notes."])))
    after = draw(st.sampled_from(([], ["Ask Dana."], ["  Dana: alpha needs a source."], ["### Appendix", "Sources."])))
    names = draw(st.lists(st.sampled_from(NOTE_ROWS), unique=True, min_size=1, max_size=3))
    entries = {n: draw(st.sampled_from(("1 check failed", "2 checks failed\n- lint: MD058"))) for n in names}
    lines = [*heading, ""]
    if before:
        lines += [*before, ""]
    lines += [NOTES_MARKER, ""]
    for name, note in entries.items():
        first, *rest = note.split("\n")
        lines += [f"- {code_span(name)}: {first}", *(f"  {r}" for r in rest)]
    if after:
        lines += ["", *after]
    return GenNotes("\n".join(lines) + "\n", entries, heading, [*before, *after])


# -- worker for the concurrency test (spawned processes import it from here) ------------------


def edit_worker(plan: str, worker: int, filename: str, iterations: int, barrier) -> None:
    """Toggle ``filename``'s status and add one note entry per iteration, after a barrier.

    Raises (so the process exits non-zero) if one of its own earlier entries has vanished.
    """
    from pytest_batchgen.planedit import RowUpdate, apply_updates, read_notes

    path = Path(plan)
    barrier.wait(timeout=60)
    for i in range(iterations):
        status = "complete" if i % 2 == 0 else "pending"
        apply_updates(
            path,
            {
                filename: RowUpdate(status=status),
                f"w{worker}-{i:03d}.md": RowUpdate(note=f"worker {worker} iteration {i}"),
            },
        )
        # read without the lock: a rename is atomic, so the file is always whole
        notes = read_notes(path.read_bytes().decode("utf-8"))
        missing = [j for j in range(i + 1) if f"w{worker}-{j:03d}.md" not in notes]
        if missing:
            raise AssertionError(f"worker {worker}: entries {missing} lost after iteration {i}")
