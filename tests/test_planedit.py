"""The in-place editor (pytest_batchgen.planedit) and the atomic writes under it (fsutil)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import Project
from planfactory import HEAD, PHASE_1, SHIPPED_EXAMPLE, generated_plans, line_of, plan_text
from pytest_batchgen import fsutil, planedit
from pytest_batchgen.plan import load_plan, scan
from pytest_batchgen.planedit import (
    NOTES_HEADING,
    NOTES_MARKER,
    RowUpdate,
    apply_updates,
    cell_spans,
    edit_text,
    read_notes,
    replace_cell_word,
    split_lines,
)

EXAMPLE = SHIPPED_EXAMPLE.read_text(encoding="utf-8")


def changed_lines(old: str, new: str) -> dict[int, tuple[str, str]]:
    a, b = split_lines(old), split_lines(new)
    assert len(a) == len(b)
    return {i + 1: (x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y}


# -- cells ------------------------------------------------------------------------------------


def test_cell_spans_with_outer_pipes():
    line = "| 1 | Quorum | quorum.md | haiku | pending |\n"
    assert [line[a:b] for a, b in cell_spans(line)] == [" 1 ", " Quorum ", " quorum.md ", " haiku ", " pending "]


def test_cell_spans_without_outer_pipes_and_with_crlf():
    line = "Quorum | quorum.md|haiku |  pending  \r\n"
    assert [line[a:b] for a, b in cell_spans(line)] == ["Quorum ", " quorum.md", "haiku ", "  pending  "]


def test_cell_spans_keep_escaped_pipes_inside_a_cell():
    line = r"| a \| b | x.md | c \\| d |" + "\n"
    # like markdown-it's table rule, any pipe right after a backslash is part of the cell
    assert [line[a:b] for a, b in cell_spans(line)] == [r" a \| b ", " x.md ", r" c \\| d "]


def test_a_cell_ending_in_two_backslashes_does_not_shift_the_edit():
    # markdown-it reads "a\\| b" as ONE cell, so Status is the 4th cell: "pending".
    # Splitting there (as if "\\" escaped the backslash) made the editor overwrite "haiku".
    text = (
        "## Phase 1\n| Title | Filename | Model | Status | Extra |\n|---|---|---|---|---|\n"
        "| a\\\\| b | f.md | haiku | pending |\n"
    )
    new = edit_text(text, {"f.md": RowUpdate(status="complete")})
    assert new.endswith("| a\\\\| b | f.md | haiku | complete |\n")


_ROW_CHARS = st.text(st.sampled_from(["a", "b", " ", "\\", "|", "`", "é"]), max_size=25)


@settings(max_examples=300, deadline=None)
@given(body=_ROW_CHARS, outer=st.booleans(), ending=st.sampled_from(["\n", "\r\n"]))
def test_cell_spans_agree_with_the_parser(body, outer, ending):
    """The editor's cells are the parser's cells, whatever mix of pipes and backslashes."""
    row = "|" + body if outer else "a" + body
    text = "## Phase 1\n| A | B | C | D |\n|---|---|---|---|\n" + row + ending
    sections = scan(text)
    rows = sections[0].tables[0].rows if sections[0].tables else ()
    if not rows:
        return  # the line did not make a row (e.g. blank after trimming)
    parsed = rows[0].cells
    spans = cell_spans(row + ending)
    mine = [row[a:b].replace("\\|", "|").strip() for a, b in spans]
    mine = (mine + [""] * len(parsed))[: len(parsed)]
    assert mine == list(parsed)


@pytest.mark.parametrize(
    "line, word, expected",
    [
        ("| x | pending  |\n", "complete", "| x | complete |\n"),  # width kept: one pad taken
        ("| x | pending |\n", "complete", "| x | complete |\n"),  # a single space is kept
        ("| x |pending|\n", "complete", "| x |complete|\n"),
        ("| x | complete |\n", "pending", "| x | pending  |\n"),  # width kept: one pad given
        ("| x |complete|\n", "pending", "| x |pending|\n"),
        ("| x | Pending   |\n", "complete", "| x | Complete  |\n"),
        ("| x | PENDING  |\r\n", "complete", "| x | COMPLETE |\r\n"),
        ("x | pending\n", "complete", "x | complete\n"),
        # tabs are padding as written: kept, never turned into spaces
        ("|\t1\t|\tpending\t|\n", "complete", "|\t1\t|\tcomplete\t|\n"),
        ("|\t1\t|\tcomplete\t|\n", "pending", "|\t1\t|\tpending\t|\n"),
        ("| x | pending \t|\n", "complete", "| x | complete \t|\n"),
        ("| x |\tpending  \t|\n", "complete", "| x |\tcomplete  \t|\n"),
    ],
)
def test_replace_cell_word(line, word, expected):
    assert replace_cell_word(line, 1, word) == expected


# -- statuses ---------------------------------------------------------------------------------


def test_edit_example_changes_only_the_rows_status_cells():
    new = edit_text(
        EXAMPLE, {"quorum.md": RowUpdate(status="complete"), "cap-theorem.md": RowUpdate(status="complete")}
    )
    changes = changed_lines(EXAMPLE, new)
    quorum, cap = line_of(EXAMPLE, "| quorum.md |"), line_of(EXAMPLE, "| cap-theorem.md |")
    assert set(changes) == {quorum, cap}
    old_q, new_q = changes[quorum]
    assert old_q.replace("| pending |", "| complete |") == new_q


def test_setting_the_current_status_changes_nothing():
    text = plan_text(PHASE_1.replace("| complete |", "| COMPLETE |"))
    assert edit_text(text, {"alpha.md": RowUpdate(status="complete")}) == text
    assert edit_text(text, {"beta.md": RowUpdate(status="pending")}) == text


QUOTED = PHASE_1.replace("| complete |", "| `complete` |").replace("| pending |", '| "Pending" |')


def test_a_quoted_status_that_does_not_change_is_left_alone(tmp_path):
    # the parser reads `complete` and "Pending" as the words inside; comparing the raw cell
    # rewrote both on every run, dropping the quotes
    text = plan_text(QUOTED)
    assert edit_text(text, {"alpha.md": RowUpdate(status="complete"), "beta.md": RowUpdate(status="pending")}) == text
    path = Project(tmp_path).write_plan(text)
    assert apply_updates(path, {"alpha.md": RowUpdate(status="complete")}) is False


@pytest.mark.parametrize(
    "cell, status, expected",
    [
        ("`pending`", "complete", "`complete`"),
        ('"Pending"', "complete", '"Complete"'),
        ("'COMPLETE'", "pending", "'PENDING' "),  # a space given back: the column stays aligned
        ("` pending `", "complete", "` complete `"),
    ],
)
def test_a_quoted_status_that_changes_keeps_its_quotes_and_case(tmp_path, cell, status, expected):
    text = plan_text(PHASE_1.replace("| pending |", f"| {cell} |"))
    new = edit_text(text, {"beta.md": RowUpdate(status=status)})
    (line,) = changed_lines(text, new).values()
    assert line[1] == f"| 2 | Beta | beta.md | haiku | {expected} |\n"
    root = tmp_path
    Project(root).write_plan(new)
    assert load_plan("plan.md", root).row("beta.md").status == status


def test_unknown_filenames_and_empty_updates_change_nothing():
    assert edit_text(EXAMPLE, {"no-such.md": RowUpdate(status="complete", note="")}) == EXAMPLE
    assert edit_text(EXAMPLE, {"quorum.md": RowUpdate()}) == EXAMPLE
    assert edit_text(EXAMPLE, {}) == EXAMPLE


def test_the_edit_keeps_the_case_style_of_the_cell():
    text = plan_text(PHASE_1.replace("| complete |", "| Complete |").replace("| pending |", "| PENDING |"))
    new = edit_text(text, {"alpha.md": RowUpdate(status="pending"), "beta.md": RowUpdate(status="complete")})
    assert "| 1 | Alpha | alpha.md | haiku | Pending  |" in new
    assert "| 2 | Beta | beta.md | haiku | COMPLETE |" in new


def test_rows_outside_phases_or_in_tables_without_the_columns_are_not_touched():
    other = "## Summary\n| Title | Filename | Model | Status |\n|---|---|---|---|\n| S | s.md | haiku | pending |\n"
    odd = "## Phase 3\n| Title | File | Model | Status |\n|---|---|---|---|\n| T | t.md | haiku | pending |\n"
    text = plan_text(PHASE_1, other, odd)
    assert edit_text(text, {"s.md": RowUpdate(status="complete"), "t.md": RowUpdate(status="complete")}) == text


def test_a_row_too_short_for_its_status_cell_is_left_alone():
    text = "## Phase 1\n| Title | Filename | Model | Status |\n|---|---|---|---|\n| A | a.md | haiku\n"
    assert edit_text(text, {"a.md": RowUpdate(status="complete")}) == text


def test_a_title_with_an_escaped_pipe():
    phase = PHASE_1.replace("| Beta |", r"| Be \| ta |")
    text = plan_text(phase)
    new = edit_text(text, {"beta.md": RowUpdate(status="complete")})
    assert r"| 2 | Be \| ta | beta.md | haiku | complete |" in new
    assert set(changed_lines(text, new)) == {line_of(text, "beta.md")}


# -- notes ------------------------------------------------------------------------------------


def test_notes_are_appended_in_their_own_section():
    new = edit_text(EXAMPLE, {"quorum.md": RowUpdate(note="2 checks failed\n- lint: MD058\n- sections: missing")})
    assert new.startswith(EXAMPLE)
    assert new[len(EXAMPLE) :] == (
        f"\n{NOTES_HEADING}\n\n{NOTES_MARKER}\n\n"
        "- `quorum.md`: 2 checks failed\n  - lint: MD058\n  - sections: missing\n"
    )
    assert read_notes(new) == {"quorum.md": "2 checks failed\n- lint: MD058\n- sections: missing"}


def test_notes_are_replaced_merged_and_removed():
    one = edit_text(EXAMPLE, {"quorum.md": RowUpdate(note="first")})
    two = edit_text(one, {"quorum.md": RowUpdate(note="second"), "cap-theorem.md": RowUpdate(note="other")})
    assert read_notes(two) == {"quorum.md": "second", "cap-theorem.md": "other"}
    assert two.count(NOTES_HEADING) == 1
    three = edit_text(two, {"quorum.md": RowUpdate(note="")})
    assert read_notes(three) == {"cap-theorem.md": "other"}
    assert edit_text(three, {"cap-theorem.md": RowUpdate(note="")}) == EXAMPLE
    # removing a note that is not there changes nothing
    assert edit_text(EXAMPLE, {"quorum.md": RowUpdate(note="")}) == EXAMPLE


def test_status_and_note_in_one_edit():
    new = edit_text(EXAMPLE, {"quorum.md": RowUpdate(status="complete", note="")})
    assert read_notes(new) == {}
    failed = edit_text(EXAMPLE, {"quorum.md": RowUpdate(note="1 check failed")})
    done = edit_text(failed, {"quorum.md": RowUpdate(status="complete", note="")})
    assert done == new
    assert set(changed_lines(EXAMPLE, done)) == {line_of(EXAMPLE, "| quorum.md |")}


def test_notes_section_followed_by_other_sections_stays_in_place():
    text = plan_text(tail=f"{NOTES_HEADING}\n\n{NOTES_MARKER}\n\n- `beta.md`: old\n\n## Afterword\nKeep me.\n")
    new = edit_text(text, {"beta.md": RowUpdate(note="new\n- detail"), "alpha.md": RowUpdate(note="x")})
    assert new.endswith("- `beta.md`: new\n  - detail\n- `alpha.md`: x\n\n## Afterword\nKeep me.\n")
    assert read_notes(new) == {"beta.md": "new\n- detail", "alpha.md": "x"}
    gone = edit_text(new, {"beta.md": RowUpdate(note=""), "alpha.md": RowUpdate(note="")})
    assert NOTES_HEADING not in gone
    assert gone.endswith("\n## Afterword\nKeep me.\n")
    assert gone.startswith(plan_text())


def test_a_quoted_notes_heading_is_the_users_text():
    # '> ## Batchgen Notes' quoted in the preamble was taken for the notes section: the first
    # note overwrote the quote and the user's paragraph after it
    preamble = (
        f"When a row fails, the plugin writes:\n\n> {NOTES_HEADING}\n> - `x.md`: 1 check failed\n\nAsk Dana first.\n"
    )
    text = plan_text(head=preamble + "\n" + HEAD)
    assert read_notes(text) == {}
    new = edit_text(text, {"beta.md": RowUpdate(note="1 check failed")})
    assert new.startswith(text)  # every byte of the plan kept, the notes appended
    assert read_notes(new) == {"beta.md": "1 check failed"}
    assert edit_text(new, {"beta.md": RowUpdate(note="")}) == text


APPENDIX = "### Appendix: sources\nSee https://example.org/sources (keep!)\n"


def test_the_users_text_under_the_notes_heading_is_kept():
    # the notes' rewrite replaced the whole section: an appendix the user added after the
    # entries was deleted with them
    notes = f"{NOTES_HEADING}\n\n{NOTES_MARKER}\n\n- `alpha.md`: 1 check failed\n\n"
    text = plan_text(tail=notes + APPENDIX)
    changed = edit_text(text, {"alpha.md": RowUpdate(note="2 checks failed"), "beta.md": RowUpdate(note="x")})
    assert changed == plan_text(
        tail=f"{NOTES_HEADING}\n\n{NOTES_MARKER}\n\n- `alpha.md`: 2 checks failed\n- `beta.md`: x\n\n" + APPENDIX
    )
    removed = edit_text(changed, {"alpha.md": RowUpdate(note=""), "beta.md": RowUpdate(note="")})
    assert removed == plan_text(tail=f"{NOTES_HEADING}\n\n" + APPENDIX)  # the appendix keeps its section
    assert read_notes(removed) == {}
    assert edit_text(removed, {"alpha.md": RowUpdate(note="1 check failed")}) == text


def test_a_notes_section_the_user_wrote_keeps_its_heading_and_text():
    text = plan_text(tail="## batchgen notes\n\nRows that failed go here; ask Dana.\n")
    added = edit_text(text, {"beta.md": RowUpdate(note="1 check failed")})
    assert added == plan_text(
        tail=f"## batchgen notes\n\n{NOTES_MARKER}\n\n- `beta.md`: 1 check failed\n\nRows that failed go here; ask Dana.\n"
    )
    assert read_notes(added) == {"beta.md": "1 check failed"}
    assert edit_text(added, {"beta.md": RowUpdate(note="")}) == plan_text(
        tail="## batchgen notes\n\nRows that failed go here; ask Dana.\n"
    )


@pytest.mark.parametrize(
    "heading", ["Batchgen Notes\n--------------", "Batchgen\nNotes\n---"], ids=["setext", "two-lines"]
)
def test_a_setext_notes_heading_is_kept_with_its_underline(heading):
    # the editor took the heading's first line for all of it: it read no entries and wrote the
    # notes between the text and its underline, unmaking the heading, so the old entries stayed
    # for good and every later run appended another section
    text = plan_text(tail=f"{heading}\n\n{NOTES_MARKER}\n\n- `alpha.md`: old failure\n")
    assert read_notes(text) == {"alpha.md": "old failure"}
    changed = edit_text(text, {"alpha.md": RowUpdate(note="new failure"), "beta.md": RowUpdate(note="x")})
    assert changed == plan_text(tail=f"{heading}\n\n{NOTES_MARKER}\n\n- `alpha.md`: new failure\n- `beta.md`: x\n")
    assert [s.title for s in scan(changed)][-1].split() == ["Batchgen", "Notes"]
    assert read_notes(changed) == {"alpha.md": "new failure", "beta.md": "x"}
    assert edit_text(changed, {"alpha.md": RowUpdate(note=""), "beta.md": RowUpdate(note="")}) == plan_text()
    # with the user's text after the entries, the heading stays when the last note goes
    kept = edit_text(text + "\nAsk Dana.\n", {"alpha.md": RowUpdate(note="")})
    assert kept == plan_text(tail=f"{heading}\n\nAsk Dana.\n")


@pytest.mark.parametrize("after", ["", "\nAsk Dana.\n"], ids=["end", "text-after"])
def test_the_users_text_between_the_notes_heading_and_the_marker_is_kept(after):
    # the plugin's lines were taken to start at the heading: a remark above the marker ended
    # them, so the entries were never read, a passing row's entry stayed, and a new failure put
    # a second marker and list above the remark
    remark = f"{NOTES_HEADING}\n\nMy remark about these notes.\n\n"
    text = plan_text(tail=f"{remark}{NOTES_MARKER}\n\n- `alpha.md`: 1 check failed\n{after}")
    assert read_notes(text) == {"alpha.md": "1 check failed"}
    changed = edit_text(text, {"alpha.md": RowUpdate(note="2 checks failed"), "beta.md": RowUpdate(note="x")})
    assert changed == plan_text(
        tail=f"{remark}{NOTES_MARKER}\n\n- `alpha.md`: 2 checks failed\n- `beta.md`: x\n{after}"
    )
    assert changed.count(NOTES_MARKER) == 1
    removed = edit_text(changed, {"alpha.md": RowUpdate(note=""), "beta.md": RowUpdate(note="")})
    assert removed == plan_text(tail=remark.rstrip("\n") + "\n" + after)
    assert read_notes(removed) == {}


@pytest.mark.parametrize("after", ["", "\nAsk Dana.\n"], ids=["end", "text-after"])
def test_entries_below_the_users_text_under_the_marker_are_read_and_moved_up(after):
    # the plugin's lines ended at a remark below the marker, so the entries after it were never
    # read: a passing row's entry stayed for ever, and a changed one was written a second time
    # above the remark ("- `alpha.md`: 2 checks failed" over "- `alpha.md`: 1 check failed")
    head = f"{NOTES_HEADING}\n\n{NOTES_MARKER}\n\n"
    remark = "My remark about these notes.\n\n"
    text = plan_text(tail=f"{head}{remark}- `alpha.md`: 1 check failed\n  - lint\n- `beta.md`: x\n{after}")
    assert read_notes(text) == {"alpha.md": "1 check failed\n- lint", "beta.md": "x"}
    changed = edit_text(text, {"alpha.md": RowUpdate(note="2 checks failed")})
    assert changed == plan_text(
        tail=f"{head}- `alpha.md`: 2 checks failed\n- `beta.md`: x\n\n{remark.rstrip()}\n{after}"
    )
    assert read_notes(changed) == {"alpha.md": "2 checks failed", "beta.md": "x"}
    assert edit_text(changed, {"alpha.md": RowUpdate(note="2 checks failed")}) == changed
    # a passing row's entry goes where it is, and the remark stays when the last one goes
    passed = edit_text(text, {"alpha.md": RowUpdate(note="")})
    assert passed == plan_text(tail=f"{head}- `beta.md`: x\n\n{remark.rstrip()}\n{after}")
    removed = edit_text(text, {"alpha.md": RowUpdate(note=""), "beta.md": RowUpdate(note="")})
    assert removed == plan_text(tail=f"{NOTES_HEADING}\n\n{remark.rstrip()}\n{after}")
    assert read_notes(removed) == {}


@pytest.mark.parametrize("between", ["### History\n\n", "Renames we did:\n\n"], ids=["sub-heading", "paragraph"])
def test_a_list_of_the_users_below_the_entries_stays_theirs(between):
    # read as entries below the user's text (3bb015d), it was moved up into the plugin's lines,
    # then deleted with beta's note
    head = f"{NOTES_HEADING}\n\n{NOTES_MARKER}\n\n- `alpha.md`: 1 check failed\n\n"
    users = f"{between}- `beta.md`: renamed from b.md in March\n"
    text = plan_text(tail=head + users)
    assert read_notes(text) == {"alpha.md": "1 check failed"}
    changed = edit_text(text, {"alpha.md": RowUpdate(note=""), "beta.md": RowUpdate(note="")})
    assert changed == plan_text(tail=f"{NOTES_HEADING}\n\n{users}")


def test_a_list_of_the_users_that_only_starts_with_an_entry_stays_theirs():
    head = f"{NOTES_HEADING}\n\n{NOTES_MARKER}\n\nMy remark.\n\n"
    users = "- `beta.md`: renamed from b.md\n- and the links updated\n"
    text = plan_text(tail=head + users)
    assert read_notes(text) == {}
    assert edit_text(text, {"beta.md": RowUpdate(note="")}) == text


def test_an_indented_paragraph_between_the_marker_and_the_entries_is_the_users():
    # it was taken into the plugin's lines: removing the last note deleted it with them
    head = f"{NOTES_HEADING}\n\n{NOTES_MARKER}\n\n"
    text = plan_text(tail=f"{head}  Dana: see the wiki.\n\n- `alpha.md`: 1 check failed\n")
    assert read_notes(text) == {"alpha.md": "1 check failed"}
    removed = edit_text(text, {"alpha.md": RowUpdate(note="")})
    assert removed == plan_text(tail=f"{NOTES_HEADING}\n\n  Dana: see the wiki.\n")


def test_an_entry_quoted_in_the_users_text_below_the_marker_is_not_read():
    quoted = f"{NOTES_HEADING}\n\n{NOTES_MARKER}\n\nThe plugin writes:\n\n> - `alpha.md`: example\n\n```\n- `beta.md`: example\n```\n"
    text = plan_text(tail=quoted)
    assert read_notes(text) == {}
    added = edit_text(text, {"gamma.md": RowUpdate(note="x")})
    assert added == plan_text(tail=quoted.replace(f"{NOTES_MARKER}\n\n", f"{NOTES_MARKER}\n\n- `gamma.md`: x\n\n"))


def test_a_marker_quoted_in_a_code_block_under_the_notes_heading_is_the_users_text():
    quoted = f"{NOTES_HEADING}\n\nThe plugin writes:\n\n```\n{NOTES_MARKER}\n\n- `alpha.md`: example\n```\n"
    text = plan_text(tail=quoted)
    assert read_notes(text) == {}
    added = edit_text(text, {"beta.md": RowUpdate(note="x")})
    # the marker and entries go in above the user's text, as in a section the user wrote
    user = quoted.removeprefix(f"{NOTES_HEADING}\n\n")
    assert added == plan_text(tail=f"{NOTES_HEADING}\n\n{NOTES_MARKER}\n\n- `beta.md`: x\n\n{user}")
    assert read_notes(added) == {"beta.md": "x"}


def test_an_indented_paragraph_after_the_last_entry_is_the_users():
    # Markdown reads it as more of the last entry, and the plugin took it as its own: the next
    # rewrite of the notes deleted it
    notes = f"{NOTES_HEADING}\n\n{NOTES_MARKER}\n\n- `alpha.md`: 1 check failed\n\n"
    text = plan_text(tail=notes + "  Dana: alpha needs a source.\n")
    assert read_notes(text) == {"alpha.md": "1 check failed"}
    changed = edit_text(text, {"alpha.md": RowUpdate(note="2 checks failed\n- lint")})
    assert changed == plan_text(
        tail=notes.replace("1 check failed", "2 checks failed\n  - lint") + "  Dana: alpha needs a source.\n"
    )
    removed = edit_text(changed, {"alpha.md": RowUpdate(note="")})
    assert removed == plan_text(tail=f"{NOTES_HEADING}\n\n  Dana: alpha needs a source.\n")


def test_a_note_with_a_blank_line_is_written_without_it_and_read_back_whole():
    # a blank line ended the entry: the lines after it were not read back with the note
    note = "1 check failed\n- custom: assert 1 == 2\n\n  where 1 = f()"
    added = edit_text(plan_text(), {"alpha.md": RowUpdate(note=note)})
    assert read_notes(added) == {"alpha.md": "1 check failed\n- custom: assert 1 == 2\n  where 1 = f()"}
    assert "\n\n  where" not in added
    assert edit_text(added, {"alpha.md": RowUpdate(note=note)}) == added
    assert edit_text(added, {"alpha.md": RowUpdate(note="")}) == plan_text()


@pytest.mark.parametrize("ending", ["\n", "", "\n\n"], ids=["newline", "no-final-newline", "blank-line"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_adding_then_removing_notes_is_byte_identical(ending, newline):
    text = (plan_text().rstrip("\n") + ending).replace("\n", newline)
    added = edit_text(text, {"beta.md": RowUpdate(note="1 check failed\n- lint: MD058")})
    assert read_notes(added) == {"beta.md": "1 check failed\n- lint: MD058"}
    assert added.startswith(text)
    if newline == "\r\n":
        assert "\n" not in added.replace("\r\n", "")
    changed = edit_text(added, {"beta.md": RowUpdate(note="2 checks failed"), "alpha.md": RowUpdate(note="y")})
    assert read_notes(changed) == {"beta.md": "2 checks failed", "alpha.md": "y"}
    assert edit_text(changed, {"beta.md": RowUpdate(note=""), "alpha.md": RowUpdate(note="")}) == text


# -- apply_updates and the atomic write -------------------------------------------------------


def test_apply_updates_writes_in_place(tmp_path):
    path = Project(tmp_path).write_plan(EXAMPLE)
    os.chmod(path, 0o640)
    assert apply_updates(path, {"quorum.md": RowUpdate(status="complete")}) is True
    text = path.read_text(encoding="utf-8")
    assert "| 2 | Quorum | quorum.md | haiku | complete |" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".batchgen-lock")) == [
        "out",
        "plan.md",
    ]  # no temporary left
    assert text == EXAMPLE.replace("| quorum.md | haiku | pending |", "| quorum.md | haiku | complete |")


def test_apply_updates_without_a_change_does_not_write(tmp_path):
    path = Project(tmp_path).write_plan(EXAMPLE)
    before = path.stat()
    assert apply_updates(path, {}) is False
    assert apply_updates(path, {"idempotency.md": RowUpdate(status="complete")}) is False
    assert apply_updates(path, {"gone.md": RowUpdate(status="complete", note="")}) is False
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_apply_updates_edits_the_plan_once_when_no_other_process_wrote_it(tmp_path, monkeypatch):
    # the edit made before locking is written: a 10,000-row plan's edit is a tenth of a second
    path = Project(tmp_path).write_plan(EXAMPLE)
    edits = []

    def counted(text, updates):
        edits.append(len(updates))
        return edit_text(text, updates)

    monkeypatch.setattr(planedit, "edit_text", counted)
    assert apply_updates(path, {"quorum.md": RowUpdate(status="complete")}) is True
    assert edits == [1]
    assert "| 2 | Quorum | quorum.md | haiku | complete |" in path.read_text(encoding="utf-8")


def test_apply_updates_edits_what_another_process_wrote_while_it_waited_for_the_lock(tmp_path, monkeypatch):
    # given: another run marks a row complete between this run's first read and its lock
    path = Project(tmp_path).write_plan(EXAMPLE)
    real_lock = planedit.lock_for

    def lock_after_another_run(target):
        other = edit_text(path.read_text(encoding="utf-8"), {"quorum.md": RowUpdate(status="complete")})
        path.write_text(other, encoding="utf-8")
        return real_lock(target)

    monkeypatch.setattr(planedit, "lock_for", lock_after_another_run)

    # when
    assert apply_updates(path, {"backpressure.md": RowUpdate(status="complete", note="")}) is True

    # then: both edits are in the plan, and nothing else changed
    both = {"quorum.md": RowUpdate(status="complete"), "backpressure.md": RowUpdate(status="complete", note="")}
    assert path.read_text(encoding="utf-8") == edit_text(EXAMPLE, both)
    assert "| quorum.md | haiku | complete |" in path.read_text(encoding="utf-8")


def test_apply_updates_keeps_crlf_bytes(tmp_path):
    raw = EXAMPLE.replace("\n", "\r\n").encode()
    path = Project(tmp_path).write_plan(raw)
    assert apply_updates(path, {"quorum.md": RowUpdate(status="complete", note="")}) is True
    assert path.read_bytes() == raw.replace(
        b"| 2 | Quorum | quorum.md | haiku | pending |", b"| 2 | Quorum | quorum.md | haiku | complete |"
    )


def test_atomic_write_failure_leaves_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "plan.md"
    path.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fsutil.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        fsutil.atomic_write(path, "new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.md"]


def test_atomic_write_creates_folders_and_accepts_text(tmp_path):
    path = tmp_path / "a" / "b" / "out.md"
    fsutil.atomic_write(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode()


def test_lock_is_per_resolved_path(tmp_path, monkeypatch):
    a = tmp_path / "plan.md"
    a.write_text("x")
    monkeypatch.chdir(tmp_path)
    assert fsutil.lock_for(Path("plan.md")).lock_file == fsutil.lock_for(a).lock_file
    assert fsutil.lock_for(a).lock_file != fsutil.lock_for(tmp_path / "other.md").lock_file
    assert not list(tmp_path.glob("*.lock"))


# -- properties over generated plans ----------------------------------------------------------


#: The word the editor writes into a status cell, by the cell's old text and the new status:
#: the old cell's case style is kept. Written out, not computed, so that it is not a copy of
#: the editor's rule; these are every spelling ``planfactory.status_cells`` generates.
RESTYLED = {
    ("pending", "complete"): "complete",
    ("Pending", "complete"): "Complete",
    ("PENDING", "complete"): "COMPLETE",
    ("complete", "pending"): "pending",
    ("Complete", "pending"): "Pending",
    ("COMPLETE", "pending"): "PENDING",
}


@pytest.mark.parametrize(("old", "new"), list(RESTYLED))
def test_the_restyled_table_is_what_the_editor_writes(old, new):
    # (the cell's width is another matter: test_replace_cell_word)
    assert replace_cell_word(f"| x | {old} |\n", 1, new).split("|")[2].strip() == RESTYLED[old, new]


@st.composite
def plans_and_edits(draw):
    gen = draw(generated_plans())
    chosen = draw(st.lists(st.sampled_from([r.filename for r in gen.rows]), unique=True))
    edits = {f: draw(st.sampled_from(["pending", "complete"])) for f in chosen}
    return gen, edits


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=plans_and_edits())
def test_status_edits_touch_only_their_cells(case, tmp_path_factory):
    gen, edits = case
    old = gen.text
    new = edit_text(old, {f: RowUpdate(status=s) for f, s in edits.items()})
    old_lines, new_lines = split_lines(old), split_lines(new)
    assert len(old_lines) == len(new_lines)

    # (a) only the lines of rows whose status really changes differ
    expected_changed = {gen.row(f).line for f, s in edits.items() if gen.row(f).status.lower() != s}
    assert {i + 1 for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b} == expected_changed

    # (c) on an edited line, everything outside the status cell is byte for byte the same
    for f, word in edits.items():
        row = gen.row(f)
        if row.line not in expected_changed:
            continue
        a, b = old_lines[row.line - 1], new_lines[row.line - 1]
        col = gen.status_col[f]
        (s0, e0), (s1, e1) = cell_spans(a)[col], cell_spans(b)[col]
        assert s0 == s1 and a[:s0] == b[:s1]
        assert a[e0:] == b[e1:]  # the rest of the line, its ending included
        old_cell, new_cell = a[s0:e0], b[s1:e1]
        assert new_cell.strip() == f"{row.quote}{RESTYLED[row.status, word]}{row.quote}"  # quotes kept
        lead = len(old_cell) - len(old_cell.lstrip())
        assert new_cell[:lead] == old_cell[:lead] and not new_cell[lead].isspace()
        trail = len(old_cell) - len(old_cell.rstrip())
        grows = len(word) > len(row.status)
        if "\t" in old_cell[len(old_cell) - trail :]:
            assert new_cell[len(new_cell) - trail :] == old_cell[len(old_cell) - trail :]  # tabs kept as written
        elif grows:
            assert len(new_cell) == len(old_cell) + (0 if trail >= 2 else 1)
        else:
            assert len(new_cell) == len(old_cell) - (0 if trail >= 1 else 1)

    # (b) parsing the edited plan gives back exactly the edits
    root = tmp_path_factory.mktemp("edit")
    Project(root).write_plan(new)
    plan = load_plan("plan.md", root)
    assert [(r.filename, r.line) for r in plan.rows] == [(r.filename, r.line) for r in gen.rows]
    for parsed, row in zip(plan.rows, gen.rows):
        assert parsed.status == edits.get(row.filename, row.status.lower())
        assert parsed.title == row.title

    # editing is idempotent
    assert edit_text(new, {f: RowUpdate(status=s) for f, s in edits.items()}) == new


_NOTE_TEXT = st.text(
    st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="\u2028\u2029\x85"), max_size=30
)
_ALNUM = st.characters(categories=("L", "N"))


@st.composite
def note_lines(draw) -> str:
    return (draw(_ALNUM) + draw(_NOTE_TEXT)).strip()


_NOTE_LINE = note_lines()
_MORE_NOTE_LINES = st.lists(st.one_of(_NOTE_LINE, _NOTE_LINE.map(lambda s: "- " + s)), max_size=3)


@st.composite
def notes(draw) -> str:
    # (strategies built once: Hypothesis validates each new strategy object at its first draw)
    return "\n".join([draw(_NOTE_LINE), *draw(_MORE_NOTE_LINES)])


_NOTES = notes()


@st.composite
def plans_and_notes(draw):
    gen = draw(generated_plans(ending=True))
    names = [r.filename for r in gen.rows] + ["not-a-row.md"]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, min_size=1))
    return gen, {f: draw(_NOTES) for f in chosen}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=plans_and_notes(), data=st.data())
def test_notes_round_trip(case, data, tmp_path_factory):
    gen, wanted = case
    text = gen.text
    added = edit_text(text, {f: RowUpdate(note=n) for f, n in wanted.items()})
    assert added.startswith(text)  # nothing before the notes moves
    assert read_notes(added) == wanted
    if gen.newline == "\r\n":
        assert "\n" not in added.replace("\r\n", "")

    # the plan still parses to the same rows
    root = tmp_path_factory.mktemp("notes")
    Project(root).write_plan(added)
    plan = load_plan("plan.md", root)
    assert [(r.filename, r.line, r.status) for r in plan.rows] == [
        (r.filename, r.line, r.status.lower()) for r in gen.rows
    ]

    # remove some, then the rest: the original comes back byte for byte
    some = data.draw(st.lists(st.sampled_from(sorted(wanted)), unique=True))
    partial = edit_text(added, {f: RowUpdate(note="") for f in some})
    assert read_notes(partial) == {f: n for f, n in wanted.items() if f not in some}
    assert edit_text(partial, {f: RowUpdate(note="") for f in wanted}) == text
