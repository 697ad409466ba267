"""The plan editor never edits the wrong cell (issue 11, items 1-6, 15-17; issue 10's
misspelled-section message).

Self-contained: a small local project writer, the plugin's own modules and Hypothesis. Each
regression test names the finding it holds; the properties at the end keep the class of bug
found (mixed line endings, BOMs, blockquotes, fences, comments, odd filenames).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_batchgen.checklist import compile_checklist
from pytest_batchgen.errors import BatchgenError, ChecklistError, PlanError
from pytest_batchgen.plan import load_plan, scan
from harness import RUN_OPTIONS
from planfactory import NOTE_ROWS, plan_text, user_notes_sections
from pytest_batchgen.planedit import NOTES_HEADING, NOTES_MARKER, RowUpdate, apply_updates, edit_text, read_notes
from pytest_batchgen.rules import BUILTIN_FORMS

HEAD = (
    "# Plan\n\n"
    "## Format Reference\nref.md\n\n"
    "## Output Directory\nout\n\n"
    "## Content Rules\n- Be brief.\n\n"
    "## Validation Checklist\n1. Front matter includes term\n\n"
)
PHASE = (
    "## Phase 1\n\n"
    "| Title | Filename | Model | Status |\n"
    "|---|---|---|---|\n"
    "| A | a.md | haiku | pending  |\n"
    "| B | b.md | haiku | pending  |\n"
)
PLAN = HEAD + PHASE


def write(root: Path, text: str | bytes) -> Path:
    """A project: the plan (bytes as given), its format reference and output folder."""
    (root / "ref.md").write_text("---\nterm: X\n---\n\n# X\n", encoding="utf-8")
    (root / "out").mkdir(exist_ok=True)
    plan = root / "plan.md"
    plan.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return plan


def statuses(root: Path, text: str) -> dict[str, str]:
    """Each row's status as the parser reads ``text``."""
    plan = write(root, text)
    return {r.filename: r.status for r in load_plan(plan, root).rows}


def with_endings(text: str, ending: str) -> str:
    return text.replace("\n", ending)


def mark(text: str, *names: str, status: str = "complete") -> str:
    return edit_text(text, {n: RowUpdate(status=status) for n in names})


def round_trip(text: str, name: str) -> str:
    """Complete ``name`` with a note, then undo both: a faithful editor gives back ``text``."""
    done = edit_text(text, {name: RowUpdate(status="complete", note="1 check failed\n- lint: MD041")})
    return edit_text(done, {name: RowUpdate(status="pending", note="")})


# -- 1: one line model -------------------------------------------------------------------------


def test_a_lone_carriage_return_does_not_shift_the_edit_to_another_row(tmp_path):
    text = PLAN.replace("# Plan\n", "# Plan\rsubtitle\n", 1)
    new = mark(text, "a.md")
    assert statuses(tmp_path, new) == {"a.md": "complete", "b.md": "pending"}
    assert new == text.replace("| a.md | haiku | pending  |", "| a.md | haiku | complete |")


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\r\r\n", "\n"], ids=["cr", "crlf", "cr-crlf", "lf"])
def test_every_line_ending_round_trips_and_edits_the_right_row(tmp_path, ending):
    # "\r\r\n" is two line breaks, so it would end the table: the rows keep a plain "\r\n"
    text = with_endings(HEAD, ending) + with_endings(PHASE, ending.replace("\r\r", "\r"))
    new = mark(text, "b.md")
    assert statuses(tmp_path, new) == {"a.md": "pending", "b.md": "complete"}
    assert new == text.replace("| b.md | haiku | pending  |", "| b.md | haiku | complete |")
    assert round_trip(text, "b.md") == text


def test_each_line_keeps_its_own_ending_and_added_notes_use_the_usual_one(tmp_path):
    text = "# Plan\r\n\r\n" + with_endings(PLAN[len("# Plan\n\n") :], "\r")
    new = edit_text(text, {"a.md": RowUpdate(status="complete", note="failed")})
    assert new.startswith(text.replace("| a.md | haiku | pending  |", "| a.md | haiku | complete |"))
    added = new[len(text) :]
    assert "\n" not in added and added.count("\r") >= 4  # the file's usual ending is a lone CR
    assert read_notes(new) == {"a.md": "failed"}
    assert statuses(tmp_path, new) == {"a.md": "complete", "b.md": "pending"}


# -- 2: a phase table inside a blockquote ------------------------------------------------------


QUOTED = HEAD + (
    "## Phase 1\n\n> | Title | Filename | Model | Status |\n> |---|---|---|---|\n> | A | a.md | haiku | pending |\n"
)


def test_a_phase_table_in_a_blockquote_is_refused_naming_its_line(tmp_path):
    plan = write(tmp_path, QUOTED)
    with pytest.raises(PlanError) as info:
        load_plan(plan, tmp_path)
    assert info.value.line == QUOTED.splitlines().index("> | Title | Filename | Model | Status |") + 1
    assert "blockquote" in info.value.message and "'>'" in info.value.message


def test_the_editor_never_writes_into_another_cell_of_a_quoted_table():
    assert edit_text(QUOTED, {"a.md": RowUpdate(status="complete")}) == QUOTED


# -- 3: a byte order mark ----------------------------------------------------------------------


def test_a_bom_before_the_first_heading_is_accepted_and_kept(tmp_path):
    text = "\ufeff" + PLAN[len("# Plan\n\n") :]  # the first line is '## Format Reference'
    plan = write(tmp_path, text)
    loaded = load_plan(plan, tmp_path)
    assert loaded.format_reference == (tmp_path / "ref.md").resolve()
    assert apply_updates(plan, {"a.md": RowUpdate(status="complete", note="x")})
    raw = plan.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf## Format Reference\n")
    assert {r.filename: r.status for r in load_plan(plan, tmp_path).rows} == {"a.md": "complete", "b.md": "pending"}
    apply_updates(plan, {"a.md": RowUpdate(status="pending", note="")})
    assert plan.read_bytes() == text.encode("utf-8")


# -- 4: filenames with backticks in the notes --------------------------------------------------


@pytest.mark.parametrize("name", ["a`b.md", "a``b.md", "`a.md", "a.md`", "a ` b.md"])
def test_a_note_for_any_filename_is_read_back_and_replaced(name):
    text = PLAN.replace("a.md", name)
    once = edit_text(text, {name: RowUpdate(note="1 check failed")})
    assert read_notes(once) == {name: "1 check failed"}
    assert edit_text(once, {name: RowUpdate(note="1 check failed")}) == once  # no growth
    assert edit_text(once, {name: RowUpdate(note="")}) == text  # no stale entry


# -- 5: a plan that ends inside an open block --------------------------------------------------


@pytest.mark.parametrize(
    "tail", ["\n```python\nx = 1\n", "\n<!-- to do\nmore\n", "\n~~~\n"], ids=["fence", "comment", "tilde"]
)
def test_notes_after_an_unclosed_block_are_found_again(tail):
    text = PLAN + tail
    runs = [text]
    for n in range(3):
        runs.append(edit_text(runs[-1], {"a.md": RowUpdate(note=f"failed {n}")}))
        assert runs[-1].count(NOTES_HEADING) == 1
        assert read_notes(runs[-1]) == {"a.md": f"failed {n}"}
    assert edit_text(runs[-1], {"a.md": RowUpdate(note="")}) == text


def test_a_notes_heading_inside_a_closed_code_block_is_the_users_text():
    example = f"\n```\n{NOTES_HEADING}\n\n<!-- x -->\n```\n"
    text = PLAN + example
    new = edit_text(text, {"a.md": RowUpdate(note="failed")})
    assert new.startswith(text) and read_notes(new) == {"a.md": "failed"}


# -- 15, 16: files the plan names --------------------------------------------------------------


def test_the_tracking_file_may_not_be_the_format_reference(tmp_path):
    text = PLAN.replace("1. Front matter includes term\n", "1. Output registered in `ref.md`\n")
    plan = load_plan(write(tmp_path, text), tmp_path)
    with pytest.raises(ChecklistError) as info:
        compile_checklist(plan, BUILTIN_FORMS)
    assert info.value.line == text.splitlines().index("1. Output registered in `ref.md`") + 1
    assert "format reference" in info.value.message


def test_a_format_reference_name_over_255_bytes_is_a_plan_error(tmp_path):
    long = "r" * 300 + ".md"
    text = PLAN.replace("\nref.md\n", f"\n{long}\n")
    with pytest.raises(PlanError) as info:
        load_plan(write(tmp_path, text), tmp_path)
    assert info.value.line == text.splitlines().index(long) + 1


def test_output_symlinks_pointing_at_each_other_are_a_plan_error(tmp_path):
    plan = write(tmp_path, PLAN)
    os.symlink("b.md", tmp_path / "out" / "a.md")
    os.symlink("a.md", tmp_path / "out" / "b.md")
    with pytest.raises(PlanError) as info:
        load_plan(plan, tmp_path)
    assert info.value.line == PLAN.splitlines().index("| A | a.md | haiku | pending  |") + 1
    assert "symlink loop" in info.value.message


# -- 17: linear matching -----------------------------------------------------------------------


def test_a_long_almost_default_line_is_read_in_linear_time(tmp_path):
    # quadratic backtracking took minutes at 40,000 spaces; this line is 200,000 characters
    rules = "## Model Selection Rules\n- Default" + " " * 200_000 + "x\n- Default model :  sonnet\n\n"
    plan = load_plan(write(tmp_path, HEAD + rules + PHASE.replace("haiku", "")), tmp_path)
    assert plan.default_model == plan.models["sonnet"]
    assert {r.model for r in plan.rows} == {plan.models["sonnet"]}


def test_long_model_and_price_lines_are_refused_in_linear_time(tmp_path):
    spaces = " " * 200_000
    text = PLAN + f"\n## Models\n- fast:{spaces}x{spaces}y\n"
    with pytest.raises(PlanError, match="cannot read model alias line"):
        load_plan(write(tmp_path, text), tmp_path)
    text = PLAN + f"\n## Prices\n- claude-haiku: 1{spaces},{spaces}2{spaces}x\n"
    with pytest.raises(PlanError, match="cannot read price line"):
        load_plan(write(tmp_path, text), tmp_path)


# -- issue 10: a misspelled section heading ----------------------------------------------------


@pytest.mark.parametrize(
    "right, wrong",
    [
        ("Validation Checklist", "Validaton Checklist"),
        ("Format Reference", "Format Refrence"),
        ("Output Directory", "Output Directroy"),
        ("Content Rules", "Contents Rules"),
    ],
)
def test_a_misspelled_section_points_at_the_heading_it_probably_is(tmp_path, right, wrong):
    text = PLAN.replace(f"## {right}\n", f"## {wrong}\n")
    with pytest.raises(PlanError) as info:
        load_plan(write(tmp_path, text), tmp_path)
    line = text.splitlines().index(f"## {wrong}") + 1
    assert f"plan has no '## {right}'" in info.value.message
    assert f"did you mean '## {wrong}' on line {line}?" in info.value.message
    assert info.value.line == line


def test_ini_price_and_model_lines_are_usage_errors_not_value_errors():
    from pytest_batchgen.plan import ini_models
    from pytest_batchgen.pricing import ini_prices

    with pytest.raises(BatchgenError, match="batchgen_prices: cannot read 'haiku: cheap'"):
        ini_prices(["haiku: cheap"])
    with pytest.raises(BatchgenError, match="batchgen_models: cannot read 'just-a-word'"):
        ini_models(["just-a-word"])
    assert ini_models(["Haiku = claude-x", "", "opus: claude-y"]) == {"haiku": "claude-x", "opus": "claude-y"}


# -- 6: properties -----------------------------------------------------------------------------

ENDINGS = st.sampled_from(["\n", "\r\n", "\r", "\r\r\n"])
_NAME_CHARS = st.sampled_from(list("ab`_-*$é ") + ["\\", "<", "#"])
NAMES = st.text(_NAME_CHARS, min_size=1, max_size=8).map(lambda s: f"f{s}.md")
TITLES = st.text(st.sampled_from(list("Tx `*_é")), max_size=6)
STATUS_WORDS = st.sampled_from(["pending", "complete", "Pending", "COMPLETE"])
NOTES = st.lists(
    st.text(st.sampled_from(list("ab:-1 ")), min_size=1, max_size=8).map(str.strip).filter(bool), min_size=1, max_size=3
).map("\n".join)


@st.composite
def plans(draw):
    """A plan's logical lines, joined with a random ending each, and the names of its rows."""
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    quoted = draw(st.lists(NAMES.map(lambda n: "q" + n), max_size=2, unique=True))
    columns = draw(st.permutations(["Title", "Filename", "Model", "Status"]))
    pad = draw(st.sampled_from(["", " ", "  "]))
    trailing_pipe = draw(st.booleans())

    def row(cells: dict[str, str], prefix: str = "") -> str:
        line = prefix + "|" + "|".join(f"{pad}{cells[c]}{pad}" for c in columns)
        return line + ("|" if trailing_pipe else "")

    lines = HEAD.split("\n")[:-1]
    lines += ["## Phase 1", "", row({c: c for c in columns}), row({c: "---" for c in columns})]
    for name in names:
        cells = {"Title": draw(TITLES) or "T", "Filename": name, "Model": "haiku", "Status": draw(STATUS_WORDS)}
        lines.append(row(cells))
    if draw(st.booleans()):  # a fake row in a fenced block and in a comment: the user's text
        lines += ["", "```", row({"Title": "X", "Filename": names[0], "Model": "m", "Status": "pending"}), "```"]
        lines += ["", "<!--", row({"Title": "X", "Filename": names[0], "Model": "m", "Status": "pending"}), "-->"]
    if quoted:
        lines += ["", "## Phase 2", "", row({c: c for c in columns}, "> "), row({c: "---" for c in columns}, "> ")]
        lines += [row({"Title": "Q", "Filename": q, "Model": "haiku", "Status": "pending"}, "> ") for q in quoted]
    lines += draw(st.sampled_from([[], ["", "## After", "Text."], ["", "```", "open fence"], ["", "<!-- open"]]))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    endings = [draw(ENDINGS) for _ in lines]
    final = draw(st.booleans())
    text = bom + "".join(line + end for line, end in zip(lines, endings))
    if not final:
        text = text[: -len(endings[-1])]
    return text, names, quoted


@st.composite
def edits(draw, names, quoted):
    chosen = draw(st.lists(st.sampled_from(names + quoted), unique=True))
    return {
        name: RowUpdate(
            status=draw(st.sampled_from([None, "pending", "complete"])),
            note=draw(st.one_of(st.none(), st.just(""), NOTES)),
        )
        for name in chosen
    }


def table_rows(text: str) -> dict[str, tuple[int, tuple[str, ...], int]]:
    """Top-level phase rows by filename: (line, cells, index of the Status cell)."""
    from pytest_batchgen.plan import phase_tables

    out = {}
    for table in phase_tables(scan(text)):
        if table.table.nested or not table.complete_header:
            continue
        for row in table.table.rows:
            out.setdefault(table.value(row, "filename"), (row.line, row.cells, table.column("status")))
    return out


def lines_of(text: str) -> list[str]:
    # an independent oracle of markdown-it's line model: "\r\n", "\r" and "\n" each end a line
    out, i, start = [], 0, 0
    while i < len(text):
        if text[i] == "\r":
            i += 2 if text[i + 1 : i + 2] == "\n" else 1
            out.append(text[start:i])
            start = i
        elif text[i] == "\n":
            i += 1
            out.append(text[start:i])
            start = i
        else:
            i += 1
    if start < len(text):
        out.append(text[start:])
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_edit_changes_only_status_cells_and_the_notes(data):
    text, names, quoted = data.draw(plans())
    updates = data.draw(edits(names, quoted))
    before = table_rows(text)
    statuses_only = {n: RowUpdate(status=u.status) for n, u in updates.items() if u.status}
    notes_only = {n: RowUpdate(note=u.note) for n, u in updates.items() if u.note is not None}

    # status edits: the same lines; a changed line differs only in its Status cell
    edited = edit_text(text, statuses_only)
    old_lines, new_lines = lines_of(text), lines_of(edited)
    assert len(old_lines) == len(new_lines)
    expected = {
        before[n][0] - 1
        for n, u in statuses_only.items()
        if n in before and before[n][1][before[n][2]].lower() != u.status
    }
    assert {i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b} == expected
    after = table_rows(edited)
    assert set(after) == set(before)
    for name, (line, cells, col) in before.items():
        new_line, new_cells, _ = after[name]
        assert new_line == line
        want = statuses_only[name].status if name in statuses_only else cells[col].lower()
        assert new_cells[col].lower() == want  # the Status cell of this very row
        assert new_cells[:col] + new_cells[col + 1 :] == cells[:col] + cells[col + 1 :]
        a, b = old_lines[line - 1].split("|"), new_lines[line - 1].split("|")
        assert len(a) == len(b) and [x for k, x in enumerate(a) if k != col + 1] == [
            x for k, x in enumerate(b) if k != col + 1
        ]

    # notes: added after every byte of the plan, found again, removed exactly
    noted = edit_text(edited, notes_only)
    wanted = {n: u.note for n, u in notes_only.items() if u.note}
    assert read_notes(noted) == wanted
    assert noted.startswith(edited) if wanted else noted == edited
    assert edit_text(noted, {n: RowUpdate(note="") for n in notes_only}) == edited
    assert edit_text(text, updates) == noted  # one edit or two: the same bytes

    # a second edit with the same updates changes nothing; undoing everything gives the plan back
    assert edit_text(noted, updates) == noted
    undo = {n: RowUpdate(status=before[n][1][before[n][2]].lower() if n in before else None, note="") for n in updates}
    restored = edit_text(noted, undo)
    assert table_rows(restored) == table_rows(text) and read_notes(restored) == {}
    assert len(lines_of(restored)) == len(old_lines) and NOTES_HEADING not in restored


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_notes_merge_over_several_runs_and_are_always_found(data):
    text, names, quoted = data.draw(plans())
    current, notes = text, {}
    for _ in range(3):
        updates = data.draw(edits(names, quoted))
        current = edit_text(current, updates)
        for name, update in updates.items():
            if update.note:
                notes[name] = update.note
            elif update.note == "":
                notes.pop(name, None)
        assert read_notes(current) == notes
        assert current.count(NOTES_HEADING) == (1 if notes else 0)
    cleared = edit_text(current, {n: RowUpdate(note="") for n in names + quoted})
    assert read_notes(cleared) == {} and NOTES_HEADING not in cleared
    assert table_rows(cleared) == table_rows(current)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=user_notes_sections(), data=st.data())
def test_the_users_notes_section_keeps_its_shape_over_several_runs(section, data):
    # a setext heading, a remark above the marker or an indented paragraph after the entries
    # each lost the entries or the user's text to a rewrite
    text = plan_text(tail=section.text)
    assert read_notes(text) == section.entries
    current, notes = text, dict(section.entries)
    heading = section.heading  # the user's, until the plugin drops the section (then its own)
    for _ in range(3):
        updates = {
            name: RowUpdate(note=data.draw(st.sampled_from(["", "1 check failed", "3 checks failed\n- x: y"])))
            for name in data.draw(st.lists(st.sampled_from(NOTE_ROWS), unique=True))
        }
        current = edit_text(current, updates)
        for name, update in updates.items():
            if update.note:
                notes[name] = update.note
            else:
                notes.pop(name, None)
        assert read_notes(current) == notes
        assert current.startswith(plan_text())
        assert current.count(NOTES_MARKER) == 1 if notes else current.count(NOTES_MARKER) <= 1
        kept = current[len(plan_text()) :].splitlines()
        found = iter(kept)  # in order: each line is looked for after the one before
        stays = heading if notes or section.user_lines else []
        assert all(line in found for line in [*stays, *section.user_lines]), kept
        if not stays:
            assert current == plan_text()  # the section and the blank line before it are gone
            heading = ["## Batchgen Notes"]  # a later note opens a section of the plugin's own


# -- through pytest ----------------------------------------------------------------------------


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*RUN_OPTIONS, "--batch-plan", "plan.md", *args)


@pytest.mark.parametrize(
    "text",
    [PLAN.replace("# Plan\n", "# Plan\rsubtitle\n", 1), with_endings(PLAN, "\r")],
    ids=["stray-cr", "old-mac"],
)
def test_a_validate_only_run_marks_the_row_whose_output_passed(pytester: pytest.Pytester, text):
    plan = write(pytester.path, text)
    (pytester.path / "out" / "a.md").write_text("---\nterm: A\n---\n\n# A\n", encoding="utf-8")
    result = run(pytester, "--batch-validate-only")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.OK, output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    done = text.replace("| a.md | haiku | pending  |", "| a.md | haiku | complete |")
    assert plan.read_bytes() == done.encode("utf-8")


def test_a_symlink_loop_is_a_usage_error_naming_the_row(pytester: pytest.Pytester):
    plan = write(pytester.path, PLAN)
    os.symlink("b.md", pytester.path / "out" / "a.md")
    os.symlink("a.md", pytester.path / "out" / "b.md")
    result = run(pytester, "--batch-validate-only")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = PLAN.splitlines().index("| A | a.md | haiku | pending  |") + 1
    assert f"plan.md:{line}: filename 'a.md' cannot be resolved: symlink loop" in output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    assert plan.read_bytes() == PLAN.encode("utf-8")


@pytest.mark.parametrize(
    "old, new",
    [("\nref.md\n", "\n" + "r" * 300 + ".md\n"), ("| a.md |", "| " + "a" * 300 + ".md |")],
    ids=["format-reference", "output"],
)
def test_a_name_over_255_bytes_is_a_usage_error_naming_its_line(pytester: pytest.Pytester, old, new):
    text = PLAN.replace(old, new)
    plan = write(pytester.path, text)
    result = run(pytester, "--batch-validate-only")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "r" * 300 in s or "a" * 300 in s)
    assert f"plan.md:{line}: " in output and "File name too long" in output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    assert plan.read_bytes() == text.encode("utf-8")


def test_notes_after_a_last_line_ending_in_a_lone_cr_are_removed_exactly():
    """Found by the property above: the blank line put before the notes section was a "\n"
    right after the plan's final lone "\r", which reads as one "\r\n" ending, so removing the
    notes left a "\n" the user never wrote."""
    text = PLAN_HEAD_FOR_CR + "|T|t.md|haiku|pending\n|Q|q.md|haiku|pending\r"
    noted = edit_text(text, {"t.md": RowUpdate(note="fails")})
    assert read_notes(noted) == {"t.md": "fails"}
    assert edit_text(noted, {"t.md": RowUpdate(note="")}) == text


PLAN_HEAD_FOR_CR = (
    "# Plan\n\n## Format Reference\nref.md\n\n## Output Directory\nout\n\n"
    "## Validation Checklist\n1. Front matter includes term\n\n## Phase 1\n\n"
    "|Title|Filename|Model|Status\n|---|---|---|---\n"
)


def test_a_notes_sub_line_indented_by_a_tab_goes_with_its_entry():
    # an editor that turns indents into tabs left "\t- lint: x" behind when a.md's entry went:
    # it then read as part of b.md's entry, for good (an outside probe)
    text = PLAN + f"\n{NOTES_HEADING}\n\n{NOTES_MARKER}\n\n- `a.md`: 1 check failed\n\t- lint: x\n"
    assert read_notes(text) == {"a.md": "1 check failed\n- lint: x"}
    edited = edit_text(text, {"a.md": RowUpdate(status="complete", note=""), "b.md": RowUpdate(note="2 failed")})
    assert "lint: x" not in edited
    assert read_notes(edited) == {"b.md": "2 failed"}


def test_a_notes_marker_with_trailing_spaces_is_still_the_marker():
    # an editor's trailing spaces made the plugin add a second marker above the first
    text = PLAN + f"\n{NOTES_HEADING}\n\n{NOTES_MARKER}  \n\n- `a.md`: old\n"
    edited = edit_text(text, {"b.md": RowUpdate(note="new")})
    assert edited.count("<!-- Written by pytest-batchgen") == 1
    assert read_notes(edited) == {"a.md": "old", "b.md": "new"}


@pytest.mark.parametrize(
    "space", ["\xa0", "\u3000", "\x1f"], ids=["no-break-space", "ideographic-space", "unit-separator"]
)
def test_a_status_edit_keeps_a_character_python_strips_but_markdown_does_not(space):
    # Python's strip() took these for padding and the editor deleted them when the longer word
    # needed room (an outside probe); Markdown trims only spaces and tabs around a cell
    table = (
        f"| Title | Filename | Model | Status | X |\n|---|---|---|---|---|\n| A | a.md | haiku | pending{space} | x |\n"
    )
    edited = edit_text(HEAD + "## Phase 1\n\n" + table, {"a.md": RowUpdate(status="complete")})
    assert edited.endswith(f"| A | a.md | haiku | complete{space} | x |\n")


# -- any failure's text, through the note, leaves a plan that reads the same -----------------------

#: any text a check, a linter, a judge or a server may put in a failure: control characters,
#: line breaks of every kind, lone surrogates, the notes' own syntax
_FAILURE_TEXT = st.lists(
    st.one_of(
        st.characters(codec=None),
        st.sampled_from(["\x00", "\x1b[31m", "\r", "\r\n", "\x85", "\u2028", "\x0c", "`", "- `a.md`: ", "<!--", "|"]),
    ),
    max_size=30,
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_FAILURE_TEXT, detail=st.one_of(st.none(), _FAILURE_TEXT), check=_FAILURE_TEXT)
def test_a_note_of_any_failure_leaves_a_plan_that_reads_the_same(message, detail, check, tmp_path_factory):
    # a NUL in a judge's reason went into the notes as it came, and the next run refused the plan
    from pytest_batchgen.results import ItemFailure, RowTally, note_for

    tally = RowTally("a.md", "pending", failures=[ItemFailure(check, message, 3, "out/a.md", 2, detail)])
    note = note_for(tally)
    edited = edit_text(PLAN, {"a.md": RowUpdate(note=note)})

    assert edited.startswith(PLAN)  # nothing before the notes moves
    unshown = [
        c for c in edited[len(PLAN) :] if c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")
    ]
    assert unshown == [], repr(edited)
    edited.encode("utf-8")  # no lone surrogate: the plan can be written
    root = tmp_path_factory.getbasetemp() / "a-note-of-any-failure"  # one folder for every example
    root.mkdir(exist_ok=True)
    rows = load_plan(write(root, edited), root).rows  # no "plan contains a NUL byte"
    assert [(r.filename, r.status, r.line) for r in rows] == [("a.md", "pending", 19), ("b.md", "pending", 20)]
    assert read_notes(edited) == {"a.md": "\n".join(line.rstrip() for line in note.split("\n"))}
    assert "plan line 3" in note  # the first line kept whole, whatever the check's name holds
    assert edit_text(edited, {"a.md": RowUpdate(note=note)}) == edited  # the next run's same note: no change
    assert edit_text(edited, {"a.md": RowUpdate(note="")}) == PLAN
