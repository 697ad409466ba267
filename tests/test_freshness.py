"""Issue 15: which rows a plan change makes stale, and why (the mutation test), without a run.

A project of four rows is "recorded": each row's cassette holds the request the plan sends
today (written in vcrpy's YAML layout, as the recorder writes it; ``test_freshness_e2e.py``
checks that a real recording is judged fresh). Then one input is mutated and every row's
freshness is read again:

* changing an input that enters a prompt (each section the prompt uses, the format reference's
  bytes, a row's title and model, max_tokens, the prompt template) flags exactly the rows it
  enters, with exactly its reason;
* changing anything else (a status cell, the notes, another row, an extra column, the Model
  Selection Rules prose, the checklist, whitespace outside the prompt's inputs) flags none.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from harness import Project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_batchgen import prompts
from pytest_batchgen.freshness import (
    FRESH,
    MISSING,
    STALE,
    UNRECORDED,
    FreshnessBook,
    UnreadableRecording,
    changes,
    estimates,
    read_recording,
)
from pytest_batchgen.plan import load_plan
from pytest_batchgen.planedit import RowUpdate, edit_text
from pytest_batchgen.pricing import PriceTable

MAX_TOKENS = 8192

REFERENCE = """\
---
term: Reference
category: A
tags: [one, two]
---

## Definition

The reference entry.

## Details

Details of it.
"""

PLAN = """\
# Freshness plan

## Format Reference
out/ref.md

## Output Directory
out/

## Content Rules
- category must be one of: A, B
- Include Definition and Details sections, in that order

## Validation Checklist
1. Front matter includes term, category, and at least 2 tags
2. Definition and Details sections present, in that order

## Models
- fast: claude-haiku-5-5

## Phase 1
| # | Title | Filename | Model | Status | Owner |
|---|-------|----------|-------|--------|-------|
| 1 | Alpha | alpha.md | haiku | complete | ann |
| 2 | Beta | beta.md | fast | pending | bob |
| 3 | Gamma | gamma.md |  | complete | cy |

## Phase 2
| # | Title | Filename | Model | Status | Owner |
|---|-------|----------|-------|--------|-------|
| 4 | Delta vs Alpha | delta.md | sonnet | complete | dee |

## Model Selection Rules
- Default: haiku
- Use sonnet for any task that compares two terms
"""

ROWS = ("alpha.md", "beta.md", "gamma.md", "delta.md")


def record(project: Project, max_tokens: int = MAX_TOKENS) -> None:
    """Write each row's cassette with the request the plan sends now (vcrpy's layout)."""
    plan = load_plan(project.path / "plan.md", project.path)
    for row in plan.rows:
        params = prompts.build_prompt(plan, row, max_tokens).params()
        reply = {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "x"}],
            "usage": {
                "input_tokens": 40,
                "output_tokens": 300,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 200,
            },
        }
        cassette = {
            "interactions": [
                {
                    "request": {
                        "body": json.dumps(params, separators=(",", ":")),
                        "headers": {},
                        "method": "POST",
                        "uri": "https://api.anthropic.com/v1/messages",
                    },
                    "response": {
                        "body": {"string": json.dumps(reply)},
                        "headers": {},
                        "status": {"code": 200, "message": "OK"},
                    },
                }
            ],
            "version": 1,
        }
        project.write(f"cassettes/plan/{row.filename}.yaml", yaml.safe_dump(cassette))


@pytest.fixture
def recorded(tmp_path: Path) -> Project:
    project = Project(tmp_path)
    project.write("out/ref.md", REFERENCE)
    project.write("plan.md", PLAN)
    for name in ROWS:
        project.write(f"out/{name}", f"output of {name}\n")
    record(project)
    return project


def judge(project: Project, max_tokens: int = MAX_TOKENS) -> dict[str, tuple[str, tuple[str, ...]]]:
    plan = load_plan(project.path / "plan.md", project.path)
    book = FreshnessBook(max_tokens)
    return {row.filename: (book.of(plan, row).state, book.of(plan, row).reasons) for row in plan.rows}


def stale(project: Project, max_tokens: int = MAX_TOKENS) -> dict[str, tuple[str, ...]]:
    """Only the stale rows, with their reasons."""
    out = {}
    for name, (state, reasons) in judge(project, max_tokens).items():
        assert state in (FRESH, STALE) or name not in ROWS, (name, state)
        if state == STALE:
            out[name] = reasons
    return out


def test_a_recording_of_today_s_request_is_fresh(recorded: Project):
    assert judge(recorded) == dict.fromkeys(ROWS, (FRESH, ()))


# -- inputs that enter a prompt: exactly the affected rows, with exactly the reason ------------


def edit_plan(old: str, new: str) -> Callable[[Project], None]:
    return lambda p: p.edit("plan.md", old, new)


def move_reference(p: Project) -> None:
    p.write("docs/ref.md", p.read("out/ref.md"))
    p.edit("plan.md", "## Format Reference\nout/ref.md", "## Format Reference\ndocs/ref.md")


def move_outputs(p: Project) -> None:
    for name in ROWS:
        p.write(f"gen/{name}", p.read(f"out/{name}"))
    p.write("gen/ref.md", p.read("out/ref.md"))
    p.edit("plan.md", "## Output Directory\nout/", "## Output Directory\ngen/")
    p.edit("plan.md", "## Format Reference\nout/ref.md", "## Format Reference\ngen/ref.md")


ALL = dict.fromkeys(ROWS)

AFFECTING: dict[str, tuple[Callable[[Project], None], dict[str, tuple[str, ...]]]] = {
    "reference: one byte": (
        lambda p: p.edit("out/ref.md", "The reference entry.", "The reference entry!"),
        {n: ("format reference",) for n in ALL},
    ),
    "reference: a section added": (
        lambda p: p.write("out/ref.md", REFERENCE + "\n## Examples\n\nOne.\n"),
        {n: ("format reference",) for n in ALL},
    ),
    "reference: front matter key": (
        lambda p: p.edit("out/ref.md", "tags: [one, two]", "tags: [one, two, three]"),
        {n: ("format reference",) for n in ALL},
    ),
    "format reference section: another file, same bytes": (move_reference, {n: ("format reference",) for n in ALL}),
    "content rules: a rule reworded": (
        edit_plan("- category must be one of: A, B", "- category must be one of: A, B, C"),
        {n: ("content rules",) for n in ALL},
    ),
    "content rules: a rule added": (
        edit_plan("in that order\n\n## Validation", "in that order\n- Keep it short\n\n## Validation"),
        {n: ("content rules",) for n in ALL},
    ),
    "output directory section": (move_outputs, {n: ("format reference", "output path") for n in ALL}),
    "title of one row": (edit_plan("| Beta |", "| Beta Prime |"), {"beta.md": ("title",)}),
    "model cell of one row": (edit_plan("| delta.md | sonnet |", "| delta.md | opus |"), {"delta.md": ("model",)}),
    "model alias in the Models section": (
        edit_plan("- fast: claude-haiku-5-5", "- fast: claude-haiku-4-5"),
        {"beta.md": ("model",)},
    ),
    "default model (rows with an empty model cell)": (
        edit_plan("- Default: haiku", "- Default: sonnet"),
        {"gamma.md": ("model",)},
    ),
    "title and model of one row": (
        edit_plan("| Alpha | alpha.md | haiku |", "| Alpha One | alpha.md | sonnet |"),
        {"alpha.md": ("title", "model")},
    ),
}


@pytest.mark.parametrize("mutation", list(AFFECTING))
def test_a_change_to_a_prompt_input_flags_exactly_the_rows_it_enters(recorded: Project, mutation: str):
    mutate, expected = AFFECTING[mutation]
    mutate(recorded)
    assert stale(recorded) == expected


def test_max_tokens_flags_every_row(recorded: Project):
    assert stale(recorded, max_tokens=4096) == {n: ("max_tokens",) for n in ROWS}


def test_the_prompt_template_flags_every_row(recorded: Project, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(prompts, "INSTRUCTIONS", prompts.INSTRUCTIONS + " Be brief.")
    assert stale(recorded) == {n: ("prompt template",) for n in ROWS}


def test_the_user_message_template_flags_every_row(recorded: Project, monkeypatch: pytest.MonkeyPatch):
    original = prompts.render_user
    monkeypatch.setattr(prompts, "render_user", lambda title, path: original(title, path) + " Thank you.")
    assert stale(recorded) == {n: ("prompt template",) for n in ROWS}


def test_the_request_shape_flags_every_row(recorded: Project, monkeypatch: pytest.MonkeyPatch):
    """The same texts without the cache breakpoint are another request: the template changed."""
    original = prompts.Prompt.params

    def params(self, history=()):
        out = original(self, history)
        out["system"] = [{"type": "text", "text": self.system}]
        return out

    monkeypatch.setattr(prompts.Prompt, "params", params)
    assert stale(recorded) == {n: ("prompt template",) for n in ROWS}


# -- everything else: no row is flagged ------------------------------------------------------


def add_notes(p: Project) -> None:
    updates = {"alpha.md": RowUpdate(status=None, note="1 check failed\n- sections: missing Details")}
    p.write("plan.md", edit_text(p.read("plan.md"), updates))


NEUTRAL: dict[str, Callable[[Project], None]] = {
    "a status cell": edit_plan("| beta.md | fast | pending |", "| beta.md | fast | complete |"),
    "every status cell": lambda p: p.write("plan.md", p.read("plan.md").replace("| complete |", "| pending |")),
    "the notes": add_notes,
    "an extra column's cell": edit_plan("| ann |", "| anne |"),
    "an extra column added": lambda p: p.write(
        "plan.md",
        p.read("plan.md")
        .replace(
            "| Owner |\n|---|-------|----------|-------|--------|-------|",
            "| Owner | Due |\n|---|-------|----------|-------|--------|-------|-----|",
        )
        .replace("| ann |", "| ann | May |")
        .replace("| bob |", "| bob | May |")
        .replace("| cy |", "| cy | May |"),
    ),
    "the # column": edit_plan("| 2 | Beta |", "| 7 | Beta |"),
    "the Model Selection Rules prose": edit_plan(
        "- Use sonnet for any task that compares two terms", "- Use sonnet to compare"
    ),
    "the validation checklist": edit_plan("2. Definition and Details", "2. The Definition and Details"),
    "the plan's title": edit_plan("# Freshness plan", "# Freshness plan, revised"),
    "a new row": edit_plan(
        "| 3 | Gamma | gamma.md |  | complete | cy |\n",
        "| 3 | Gamma | gamma.md |  | complete | cy |\n| 5 | Eps | eps.md | haiku | pending | ed |\n",
    ),
    "blank lines between sections": lambda p: p.write("plan.md", p.read("plan.md").replace("\n## ", "\n\n\n## ")),
    "spaces around table cells": edit_plan(
        "| 1 | Alpha | alpha.md | haiku |", "|  1  |   Alpha   |  alpha.md  |  haiku  |"
    ),
    "trailing spaces on list lines": edit_plan(
        "- category must be one of: A, B\n", "- category must be one of: A, B   \n"
    ),
    "CRLF line endings in the plan": lambda p: p.write("plan.md", p.read("plan.md").replace("\n", "\r\n")),
    "trailing blank lines of the format reference": lambda p: p.write("out/ref.md", REFERENCE + "\n\n\n"),
    # a checkout with core.autocrlf, and an editor that saves a BOM: the same text to the model
    "CRLF line endings in the format reference": lambda p: p.write("out/ref.md", REFERENCE.replace("\n", "\r\n")),
    "a BOM at the start of the format reference": lambda p: p.write("out/ref.md", "\ufeff" + REFERENCE),
    "an output's content": lambda p: p.write("out/alpha.md", "rewritten by hand\n"),
}


@pytest.mark.parametrize("mutation", list(NEUTRAL))
def test_a_change_outside_the_prompt_flags_no_row(recorded: Project, mutation: str):
    NEUTRAL[mutation](recorded)
    assert stale(recorded) == {}


def test_another_row_s_change_leaves_this_row_fresh(recorded: Project):
    recorded.edit("plan.md", "| Gamma |", "| Gamma Ray |")
    found = judge(recorded)
    assert found.pop("gamma.md") == (STALE, ("title",))
    assert found == dict.fromkeys(("alpha.md", "beta.md", "delta.md"), (FRESH, ()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    title=st.text(
        st.characters(blacklist_characters="|\\`\r\n", blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
        min_size=1,
        max_size=40,
    )
)
def test_any_title_change_names_the_title_and_nothing_else(recorded: Project, title: str):
    title = " ".join(title.split())
    plan = load_plan(recorded.path / "plan.md", recorded.path)
    row = plan.row("beta.md")
    old = prompts.build_prompt(plan, row, MAX_TOKENS).params()
    new = prompts.build_prompt(plan, type(row)(**{**row.__dict__, "title": title}), MAX_TOKENS).params()
    assert changes(old, new) == (() if title == row.title else ("title",))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, len(REFERENCE.rstrip()) - 1), char=st.characters(blacklist_categories=("Cs",)))
def test_any_byte_of_the_reference_names_the_format_reference(recorded: Project, at: int, char: str):
    text = REFERENCE.rstrip()
    mutated = text[:at] + char + text[at + 1 :]
    plan = load_plan(recorded.path / "plan.md", recorded.path)
    row = plan.row("alpha.md")
    rules = "\n".join(f"- {i.text}" for i in plan.content_rules)
    old = prompts.build_prompt(plan, row, MAX_TOKENS).params()
    new = {**old, "system": [{**old["system"][0], "text": prompts.render_system("out/ref.md", mutated, rules)}]}
    assert changes(old, new) == (() if mutated == text else ("format reference",))


# -- the other states, and unreadable recordings -----------------------------------------------


def test_unrecorded_and_missing(recorded: Project):
    (recorded.path / "cassettes/plan/alpha.md.yaml").unlink()
    (recorded.path / "out/beta.md").unlink()  # its recording matches: a replay would make it
    (recorded.path / "out/gamma.md").unlink()
    (recorded.path / "cassettes/plan/gamma.md.yaml").unlink()
    found = judge(recorded)
    assert found == {
        "alpha.md": (UNRECORDED, ()),
        "beta.md": (MISSING, ()),
        "gamma.md": (MISSING, ()),
        "delta.md": (FRESH, ()),
    }


@pytest.mark.parametrize(
    "content",
    [
        b"interactions: [\n  - {",
        b"<<<<<<< HEAD\ninteractions: []\n",
        b"\xff\xfe",
        b"interactions: []\n",
        b"just text\n",
    ],
    ids=["truncated", "conflict", "binary", "empty-list", "not-a-cassette"],
)
def test_an_unreadable_recording_is_named_and_never_stale(recorded: Project, content: bytes):
    path = recorded.write("cassettes/plan/alpha.md.yaml", content)
    with pytest.raises(UnreadableRecording):
        read_recording(path)
    plan = load_plan(recorded.path / "plan.md", recorded.path)
    found = FreshnessBook(MAX_TOKENS).of(plan, plan.row("alpha.md"))
    assert (found.state, found.recording) == (UNRECORDED, "unreadable")
    assert "cassettes/plan/alpha.md.yaml" in found.note


def test_a_blank_recording_is_no_recording(recorded: Project):
    recorded.write("cassettes/plan/alpha.md.yaml", "  \n")
    assert judge(recorded)["alpha.md"] == (UNRECORDED, ())


# -- the estimate --------------------------------------------------------------------------------


def test_the_estimate_scales_the_recorded_usage_to_today_s_prompt(recorded: Project):
    recorded.write("out/ref.md", REFERENCE + "\n## Examples\n\n" + "Longer now. " * 200 + "\n")
    plan = load_plan(recorded.path / "plan.md", recorded.path)
    book = FreshnessBook(MAX_TOKENS)
    (alpha_f, alpha_e), *_ = estimates(book, [(plan, plan.row("alpha.md"))], PriceTable())
    prompt = book.prompt(plan, plan.row("alpha.md"))
    recording = read_recording(alpha_f.cassette)
    scale = (len(prompt.system) + len(prompt.user)) / recording.latest_prompt_chars
    assert scale > 2
    assert alpha_e.basis == "recorded"
    assert alpha_e.usage.output_tokens == 300
    assert alpha_e.usage.input_tokens == round(40 * scale)
    assert alpha_e.usage.cache_read_input_tokens == round(200 * scale)


def test_the_estimate_without_recordings_is_characters_over_four(tmp_path: Path):
    project = Project(tmp_path)
    project.write("out/ref.md", REFERENCE)
    project.write("plan.md", PLAN)
    plan = load_plan(project.path / "plan.md", project.path)
    book = FreshnessBook(MAX_TOKENS)
    rows = [(plan, plan.row(n)) for n in ("alpha.md", "beta.md", "delta.md")]
    (fa, a), (_, b), (_, d) = estimates(book, rows, PriceTable())
    assert (fa.state, a.basis) == (MISSING, "estimated")
    prompt = book.prompt(plan, plan.row("alpha.md"))
    prefix = len(prompt.system) // 4
    output = len(REFERENCE) // 4
    # the first row of a model writes the cached prefix, the next ones read it
    assert (a.usage.cache_creation_input_tokens, a.usage.cache_read_input_tokens) == (prefix, 0)
    assert (b.usage.cache_creation_input_tokens, b.usage.cache_read_input_tokens) == (0, prefix)
    assert (d.usage.cache_creation_input_tokens, d.usage.cache_read_input_tokens) == (prefix, 0)  # sonnet
    assert a.usage.input_tokens == len(prompt.user) // 4
    assert a.usage.output_tokens == b.usage.output_tokens == output
    assert a.cost == pytest.approx(PriceTable().cost("claude-haiku-5-5", a.usage))


# -- the max_tokens ini and the validate-only imports, in real runs ------------------------------


def test_the_max_tokens_ini_flags_every_row_in_a_dry_run(project: Project):
    project.write("out/ref.md", REFERENCE)
    project.write("plan.md", PLAN)
    for name in ROWS:
        project.write(f"out/{name}", f"output of {name}\n")
    project.ini("batchgen_max_tokens = 8192\n")
    record(project)
    result = project.run("--batch-dry-run")
    assert sum("  fresh  " in line for line in result.stdout.lines) == 4
    project.ini("batchgen_max_tokens = 4000\n")
    result = project.run("--batch-dry-run")
    assert sum("  stale  max_tokens  " in line for line in result.stdout.lines) == 4


IMPORT_PROBE = """
import sys
def pytest_sessionfinish(session):
    heavy = sorted(m for m in ("anthropic", "vcr", "httpx2") if m in sys.modules)
    print("HEAVY-IMPORTS:", ",".join(heavy) or "none")
"""


def test_validate_only_with_the_gate_imports_neither_the_sdk_nor_vcrpy(project: Project):
    project.write("out/ref.md", REFERENCE)
    project.write("plan.md", PLAN)
    for name in ROWS:
        project.write(f"out/{name}", f"output of {name}\n")
    project.ini()
    record(project)
    project.edit("plan.md", "| Beta |", "| Beta Prime |")
    project.write("conftest.py", IMPORT_PROBE)
    result = project.run(
        "--batch-readonly",
        "--batch-fail-stale",
        "--batch-report",
        "r.json",
        "--batch-summary",
        "s.md",
        "-s",
        subprocess=True,
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # beta is stale (and the outputs fail their checks)
    result.stdout.fnmatch_lines(["*HEAVY-IMPORTS: none*"])
    result.stdout.fnmatch_lines(["FAILED plan.md::beta.md::fresh - *stale: the title changed*"])
    assert not any(line.startswith("FAILED plan.md::alpha.md::fresh") for line in result.stdout.lines)
    assert "stale (title)" in project.read("s.md")


# -- the Markdown summary ---------------------------------------------------------------------


def test_the_summary_folds_diffs_in_a_fence_longer_than_any_in_them():
    from pytest_batchgen.baseline import Change
    from pytest_batchgen.freshness import Freshness
    from pytest_batchgen.stepsummary import markdown

    diff = "--- a/out/x.md\n+++ b/out/x.md\n@@ -1 +1 @@\n-````python\n+```python\n"
    change = Change(
        plan="plan.md",
        filename="x.md",
        before={"verdict": "passed", "failed_checks": [], "usage": None, "cost_usd": 0.01},
        after={
            "verdict": "failed",
            "failed_checks": ["lint|x"],
            "outcome": "failed",
            "usage": {},
            "cost_usd": 0.02,
            "kept_previous": True,
        },
        diff=diff,
        regression=True,
        freshness_before=Freshness(STALE, ("title",), "differs"),
    )
    text = markdown([], {}, [change], PriceTable())
    assert "`````diff\n" + diff + "`````\n</details>" in text
    assert "- `plan.md::x.md`: passed before, fails now (lint\\|x)" in text
    assert (
        "<summary>plan.md::x.md: passed → failed (new draft set aside; previous output kept); stale: title; cost $0.0100 → $0.0200</summary>"
        in text
    )
    # a backtick in a filename (the plan allows one) closed the code span halfway
    from dataclasses import replace

    text = markdown([], {}, [replace(change, filename="a`b.md")], PriceTable())
    assert "- ``plan.md::a`b.md``: passed before, fails now" in text
