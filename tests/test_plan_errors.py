"""Bad plans through pytest itself (PRODUCT.md section 10): a usage error naming the plan and
the line, no traceback, and not one byte written to the plan or the output folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from genhelpers import draft, rows_for, rows_plan_text
from harness import Project
from planfactory import HEAD, PHASE_1, PHASE_2, line_of, plan_text


@dataclass
class Case:
    text: str | None  # the plan (None: no plan file at all)
    needle: str | None  # a text on the line the message must name (None: no line to name)
    words: tuple[str, ...]  # must appear in the message
    args: tuple[str, ...] = ()
    setup: Callable[[Path], None] | None = None
    reference: bool = True
    names_path: str | None = None  # a path below the project the message must name in full


def _plan_folder(root: Path) -> None:
    # it said "plan file not found" of a folder that is there
    (root / "plan.md").mkdir()
    for name in ("b.md", "a.md"):
        (root / "plan.md" / name).touch()


def _fifo_output(root: Path) -> None:
    # reading it waited for a writer for good: the run hung (an outside probe)
    os.mkfifo(root / "out" / "beta.md")


def _link_outside(root: Path) -> None:
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    (root / "out" / "link").symlink_to(outside, target_is_directory=True)


_DUPLICATE = plan_text(PHASE_1, PHASE_2.replace("gamma.md", "alpha.md"))
_TRACKS_A_ROW = plan_text(head=HEAD + "2. Output registered in `out/alpha.md`\n")
_MARKER = "<!-- Written by pytest-batchgen: one entry per row whose last check run failed. -->"
_TWO_NOTES = plan_text(
    tail=f"## Batchgen Notes\n\n{_MARKER}\n\n- `beta.md`: old\n\n## batchgen notes\n\n{_MARKER}\n\n- `alpha.md`: old\n"
)

CASES = {
    "missing-plan": Case(None, None, ("plan file not found",)),
    # it said "plan file not found" of a folder that is there
    "plan-is-a-folder": Case(
        None, None, ("the plan is a folder (it holds a.md, b.md); pass the path of a plan file",), setup=_plan_folder
    ),
    "empty-plan": Case("\n   \n", None, ("plan is empty",)),
    "no-phase-table": Case(HEAD + "\n## Model Selection Rules\n- Default: haiku\n", None, ("no phase table",)),
    "phase-heading-without-number": Case(
        plan_text(PHASE_1, PHASE_2.replace("## Phase 2", "## Phase2")), "## Phase2", ("'## Phase2'", "'## Phase N'")
    ),
    "phase-heading-level-1": Case(
        plan_text(PHASE_1, PHASE_2.replace("## Phase 2", "# Phase 2")),
        "# Phase 2",
        ("'# Phase 2' is a level-1 heading",),
    ),
    "phase-without-table": Case(plan_text("## Phase 1\nTo do.\n"), "## Phase 1", ("has no table",)),
    "missing-column": Case(
        plan_text(PHASE_1.replace("| Model |", "| Engine |")), "| # | Title | Filename | Engine", ("no Model column",)
    ),
    "missing-section": Case(plan_text().replace("## Content Rules", "## Rules"), None, ("'## Content Rules'",)),
    "duplicate-filename": Case(
        _DUPLICATE,
        "| 3 | Gamma | alpha.md",
        ("duplicate filename 'alpha.md'", f"first used on line {line_of(_DUPLICATE, '| 1 | Alpha | alpha.md')})"),
    ),
    "two-notes-sections": Case(
        _TWO_NOTES,
        "## batchgen notes",
        ("a second '## batchgen notes' section", f"the first is on line {line_of(_TWO_NOTES, '## Batchgen Notes')})"),
    ),
    "unknown-status": Case(
        plan_text(PHASE_1.replace("| beta.md | haiku | pending |", "| beta.md | haiku | in progress |")),
        "| beta.md |",
        ("unknown status 'in progress'",),
    ),
    "dotdot-filename": Case(
        plan_text(PHASE_1.replace("| beta.md |", "| ../x.md |")),
        "| ../x.md |",
        ("'../x.md'", "leaves the output directory"),
    ),
    "absolute-filename": Case(
        plan_text(PHASE_1.replace("| beta.md |", "| /tmp/x.md |")), "| /tmp/x.md |", ("'/tmp/x.md'", "absolute")
    ),
    "output-is-a-named-pipe": Case(
        plan_text(PHASE_1),
        "| 2 | Beta | beta.md",
        ("filename 'beta.md' is a named pipe, not a file: reading it could wait for ever; remove it",),
        setup=_fifo_output,
    ),
    "symlink-outside": Case(
        plan_text(PHASE_1.replace("| beta.md |", "| link/x.md |")),
        "| link/x.md |",
        ("'link/x.md'", "leaves the output directory"),
        setup=_link_outside,
    ),
    "missing-format-reference": Case(
        plan_text(),
        "out/ref.md",
        ("format reference 'out/ref.md' not found",),
        reference=False,
        names_path="out/ref.md",
    ),
    "empty-model-no-default": Case(
        plan_text(PHASE_1.replace("| beta.md | haiku |", "| beta.md |  |")), "| beta.md |", ("no model",)
    ),
    # the links appended to a row's output changed it after it was checked (in validate-only runs too)
    "tracking-file-is-a-row-output": Case(
        _TRACKS_A_ROW,
        "2. Output registered",
        (
            f"the tracking file 'out/alpha.md' is the output of row 'alpha.md' (line {line_of(_TRACKS_A_ROW, '| alpha.md')})",
            "name another file",
        ),
    ),
    "tracking-file-in-the-drafts-folder": Case(
        plan_text(head=HEAD + "2. Output registered in `out/.batchgen-drafts/INDEX.md`\n"),
        "2. Output registered",
        ("is a file in out/.batchgen-drafts/, the drafts folder",),
    ),
    "tracking-file-in-the-cassette-folder": Case(
        plan_text(head=HEAD + "2. Output registered in `cassettes/plan/INDEX.md`\n"),
        "2. Output registered",
        ("is a file in cassettes/plan/, the cassette folder",),
    ),
    # a draft would have replaced the plan
    "filename-is-the-plan": Case(
        plan_text(head=HEAD.replace("## Output Directory\nout/", "## Output Directory\n./")).replace(
            "| beta.md |", "| plan.md |"
        ),
        "| plan.md |",
        ("filename 'plan.md' is the plan itself",),
    ),
    "filename-in-the-drafts-folder": Case(
        plan_text(PHASE_1.replace("| beta.md |", "| .batchgen-drafts/alpha.md |")),
        "| .batchgen-drafts/alpha.md |",
        ("lies in .batchgen-drafts/, the folder where the plugin keeps the rows' drafts",),
    ),
    # found when the first output was written: after the whole session and its summary, exit 4
    "output-directory-is-a-file": Case(
        plan_text(head=HEAD.replace("## Output Directory\nout/", "## Output Directory\npytest.ini")),
        "pytest.ini",
        ("the output directory 'pytest.ini' is a file, not a folder", "name a folder"),
    ),
    "output-directory-below-a-file": Case(
        plan_text(head=HEAD.replace("## Output Directory\nout/", "## Output Directory\npytest.ini/sub/")),
        "pytest.ini/sub/",
        ("the output directory 'pytest.ini/sub/' cannot be made: pytest.ini is a file, not a folder",),
    ),
    "unknown-phase": Case(plan_text(), None, ("--batch-phase 7", "no such phase", "1, 2"), args=("--batch-phase", "7")),
    "bad-checklist-line": Case(
        plan_text().replace("1. Front matter includes", "1. Sparkles on every line of\n2. Front matter includes"),
        "1. Sparkles",
        ("Sparkles",),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_plan_is_a_usage_error(project: Project, name: str):
    case = CASES[name]
    project.ini()
    if case.text is not None:
        project.write_plan(case.text, reference=case.reference)
    else:
        project.write_plan("", reference=True).unlink()
    if case.setup:
        case.setup(project.path)
    outside = project.path.parent / f"{project.path.name}-outside"
    before = project.snapshot()

    result = project.run("--batch-validate-only", *case.args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + "\n" + result.stderr.str()
    assert "Traceback" not in output
    (message,) = [line for line in result.stderr.lines if line.startswith("ERROR: ")]
    plan = "plan.md"  # relative to the rootdir, as the user wrote it
    if case.needle is not None:
        assert case.text is not None
        assert f"ERROR: {plan}:{line_of(case.text, case.needle)}: " in message
    else:
        assert message.startswith(f"ERROR: {plan}: ")
    for words in case.words:
        assert words in message
    if case.names_path:
        assert str(project.path / case.names_path) in message
    assert "pytest-batchgen" not in result.stdout.str()  # no session, no summary
    assert project.snapshot() == before
    if outside.exists():
        assert list(outside.iterdir()) == []


def test_the_valid_plan_the_cases_start_from_passes(project: Project):
    """The control: without its defect, each case's plan is accepted (so the errors above are
    about the defect, not about the fixture)."""
    project.ini()
    project.write_plan(plan_text())
    project.write("out/alpha.md", "---\nterm: Alpha\ncategory: Alpha\ntags: [a, b]\n---\n\n## Definition\n\nA.\n")
    before = project.snapshot()
    result = project.run("--batch-validate-only", "--batch-readonly")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=2)
    assert "pytest-batchgen" in result.stdout.str()
    assert project.snapshot() == before
    result = project.run("--batch-validate-only", "--batch-phase", "2")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=1)


def test_two_plans_whose_rows_write_one_output_is_a_plan_error(project: Project):
    # each plan checked its own rows for a duplicate filename; across the plans of one run the
    # second row overwrote the first's output, and both rows became complete over one content
    project.write_rows(rows_for("quorum"))
    project.write("sensing.md", rows_plan_text(rows_for("beta", "quorum")))
    before = project.snapshot()

    result = project.pytest("--batch-plan", "plan.md", "--batch-plan", "sensing.md", "--batch-validate-only")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = line_of(project.read("sensing.md"), "| quorum.md |")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: sensing.md:{line}: 'quorum.md' writes output/quorum.md, which row 'quorum.md' of plan.md "
            "(line *) writes too; each output has one row in one plan"
        ]
    )
    assert project.snapshot() == before


@pytest.mark.parametrize(
    "tracking, what",
    [
        # links were appended to the other plan, under its last table
        ("sensing.md", "the plan sensing.md, another plan of this run"),
        ("output/beta.md", "the output of row 'beta.md' of sensing.md (line *)"),
        ("cassettes/sensing/INDEX.md", "a file in cassettes/sensing/, the cassette folder of sensing.md"),
    ],
)
def test_a_tracking_file_that_another_plan_of_the_run_owns_is_a_plan_error(project: Project, tracking, what):
    project.write_rows(rows_for("quorum"))
    project.edit("plan.md", "\n## Phase 1", f"5. Output registered in `{tracking}`\n\n## Phase 1")
    project.write("sensing.md", rows_plan_text(rows_for("beta")))
    project.write("output/quorum.md", draft("Quorum"))  # it passes: its link would be appended
    before = project.snapshot()

    result = project.pytest("--batch-plan", "plan.md", "--batch-plan", "sensing.md", "--batch-validate-only")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = line_of(project.read("plan.md"), "5. Output registered")
    result.stderr.fnmatch_lines(
        [f"ERROR: plan.md:{line}: the tracking file '{tracking}' is {what}: *; name another file*"]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert project.snapshot() == before


def test_a_row_whose_output_is_another_plan_of_the_run_is_a_plan_error(project: Project):
    # a draft would have replaced the other plan
    project.write_rows(rows_for("quorum", "sensing"))
    project.write("output/sensing.md", rows_plan_text(rows_for("beta")))
    before = project.snapshot()

    result = project.pytest("--batch-plan", "plan.md", "--batch-plan", "output/sensing.md", "--batch-validate-only")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = line_of(project.read("plan.md"), "| sensing.md |")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: plan.md:{line}: 'sensing.md' writes output/sensing.md, which is a plan of this run; name another file*"
        ]
    )
    assert project.snapshot() == before


def test_a_format_reference_above_the_output_limit_is_a_plan_error_and_nothing_is_sent(project: Project, fake):
    # its own row failed as too large, yet every prompt inlined it: a 30 MB reference was sent,
    # 22,500,581 input tokens and $38.25 a request
    project.write_rows(rows_for("quorum"), ini_extra="batchgen_max_output_bytes = 4000\n")
    reference = project.read("output/reference.md")
    project.write("output/reference.md", reference + "\nMore text.\n" * (4001 // 11))
    size = len(project.read("output/reference.md").encode())
    assert size > 4000
    before = project.snapshot()

    result = project.run()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = line_of(project.read("plan.md"), "output/reference.md")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: plan.md:{line}: format reference 'output/reference.md' is {size:,} bytes, above the 4,000-byte "
            "limit of an output (batchgen_max_output_bytes): every prompt inlines it, so nothing was sent; shorten it, "
            "or raise batchgen_max_output_bytes in the ini file"
        ]
    )
    assert fake.requests == []
    assert project.snapshot() == before
    # below the limit it is read as before
    project.write("output/reference.md", reference)
    assert project.run("--batch-validate-only").ret != pytest.ExitCode.USAGE_ERROR


def test_a_conftest_form_whose_builder_raises_is_a_usage_error_not_an_internalerror(project: Project):
    project.ini()
    text = plan_text().replace("## Phase 1", "4. At most many words\n\n## Phase 1", 1)
    project.write_plan(text)
    project.write(
        "conftest.py",
        "from pytest_batchgen import ChecklistForm\n"
        "def pytest_batchgen_checklist_forms():\n"
        "    return [ChecklistForm(name='max-words', pattern=r'at most (?P<n>\\w+) words',\n"
        "                          build=lambda m, ctx: int(m['n']))]\n",
    )

    result = project.run("--batch-validate-only")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    (message,) = [line for line in result.stderr.lines if line.startswith("ERROR: ")]
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "At most many words" in t)
    assert (
        f"plan.md:{line}: the checklist form 'max-words' failed to build a check for this line: ValueError" in message
    )


@pytest.mark.parametrize(
    ("conftest", "says"),
    [
        (
            "def pytest_batchgen_checklist_forms():\n    raise RuntimeError('no forms today')\n",
            "conftest.py:2: pytest_batchgen_checklist_forms raised RuntimeError: no forms today; fix the hook",
        ),
        (
            "def helper():\n    return {}['x']\n\ndef pytest_batchgen_checklist_forms():\n    return helper()\n",
            "conftest.py:5: pytest_batchgen_checklist_forms raised KeyError: 'x' (at line 2, in helper); fix the hook",
        ),
        (
            "from pytest_batchgen import ChecklistForm\n"
            "def pytest_batchgen_checklist_forms():\n"
            "    yield ChecklistForm(name='x', pattern='x', check=lambda c: None)\n"
            "    raise ValueError('the second form')\n",
            "conftest.py:4: pytest_batchgen_checklist_forms raised ValueError: the second form; fix the hook",
        ),
        # one that returns something else was named by what it returned only, with no file to
        # look in when several conftests implement the hook
        (
            "def pytest_batchgen_checklist_forms():\n    return ['no-todo']\n",
            "conftest.py:1: pytest_batchgen_checklist_forms returned str 'no-todo'; it must return a list of "
            "pytest_batchgen.ChecklistForm",
        ),
        (
            "from pytest_batchgen import ChecklistForm\n\n\n"
            "def pytest_batchgen_checklist_forms():\n    return [ChecklistForm(name='x', pattern='x', check=None), 42]\n",
            "conftest.py:4: pytest_batchgen_checklist_forms returned int 42; it must return a list of",
        ),
    ],
    ids=["raises", "a-helper-raises", "a-generator-raises", "returns-a-text", "returns-a-number-after-a-form"],
)
def test_a_forms_hook_that_fails_is_a_usage_error_at_its_line_not_an_internalerror(
    project: Project, conftest: str, says: str
):
    # the hook runs while the plugin is configured: this was an INTERNALERROR and pluggy's frames
    project.ini()
    project.write_plan(plan_text())
    project.write("conftest.py", conftest)

    result = project.run("--batch-validate-only")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    (message,) = [line for line in result.stderr.lines if line.startswith("ERROR: ")]
    assert message.startswith(f"ERROR: {says}"), message


@pytest.mark.parametrize("xdist", [False, True])
def test_a_check_that_raises_shows_its_own_frames_and_the_check_and_row(project: Project, xdist: bool):
    """The README's no_todo example on a missing output: the report names the checklist line and
    the row, and its traceback is the check's frames, not pytest's and pluggy's."""
    project.ini()
    text = plan_text(PHASE_1).replace("## Phase 1", "2. No TODO left\n\n## Phase 1", 1)
    project.write_plan(text)
    project.write(
        "conftest.py",
        "from pytest_batchgen import ChecklistForm, Failure\n"
        "def pytest_batchgen_checklist_forms():\n"
        "    def no_todo(ctx):\n"
        "        for number, line in enumerate(ctx.path.read_text().splitlines(), 1):\n"
        "            if 'TODO' in line:\n"
        "                return Failure('the output still contains TODO', line=number)\n"
        "        return None\n"
        "    return [ChecklistForm(name='no-todo', pattern=r'no TODO left', check=no_todo)]\n",
    )
    args = ["--batch-validate-only", "--batch-readonly", "-k", "alpha and no-todo"]
    result = project.run(*args, *(["-n", "1"] if xdist else []))
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    lines = out.split(" FAILURES ")[1].splitlines()[1:]
    report = "\n".join(lines[: next(i for i, ln in enumerate(lines) if ln.startswith("="))])
    assert "out/alpha.md: the check raised FileNotFoundError" in report
    assert f"  check: plan.md:{line_of(text, 'No TODO left')}: No TODO left" in report
    assert f"  row:   plan.md:{line_of(text, '| Alpha |')}: Alpha (alpha.md, complete)" in report
    assert "conftest.py:4" in report and "FileNotFoundError" in report
    assert "pluggy" not in report and "_pytest" not in report and "pytest_batchgen" not in report
    assert len(report.splitlines()) < 80


def test_a_check_that_raises_fails_its_own_item_not_the_registration(project: Project):
    # the registration asked whether the row's other checks pass and got the exception: its item
    # failed with "the check raised ValueError ..." under the registration's checklist line, and
    # the plan's note blamed the registration
    project.ini()
    text = plan_text(PHASE_1).replace(
        "## Phase 1", "2. Never fine\n3. Output registered in `out/INDEX.md`\n\n## Phase 1", 1
    )
    project.write_plan(text)
    project.write(
        "conftest.py",
        "from pytest_batchgen import ChecklistForm\n"
        "def pytest_batchgen_checklist_forms():\n"
        "    def boom(ctx):\n"
        "        raise ValueError('boom in check')\n"
        "    return [ChecklistForm(name='never-fine', pattern=r'never fine', check=boom)]\n",
    )
    project.write("out/beta.md", "---\nterm: Beta\ncategory: Beta\ntags: [one, two]\n---\n\n## Definition\n\nB.\n")
    result = project.run("--batch-validate-only", "-k", "beta")
    outcomes = result.outcomes()
    assert outcomes["beta.md::front-matter"] == "passed"
    assert outcomes["beta.md::never-fine"] == "failed"
    assert "ValueError: boom in check" in result.failure("beta.md::never-fine")
    assert outcomes["beta.md::registered"] != "failed" or "boom" not in result.failure("beta.md::registered")


def test_without_batch_plan_an_ordinary_run_is_untouched(pytester: pytest.Pytester, project: Project):
    project.ini()
    project.write_plan(plan_text())  # a plan lying around is not picked up
    pytester.makepyfile(test_ordinary="def test_one():\n    assert 1 + 1 == 2\n")
    before = project.snapshot()
    result = project.pytest()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    assert "pytest-batchgen" not in result.stdout.str()
    assert "plan.md" not in result.stdout.str()
    assert project.snapshot() == before
    # the plugin is installed, and its options are there (so "untouched" is not "absent")
    help_result = project.pytest("--help")
    assert "--batch-plan" in help_result.stdout.str()


def test_ini_model_aliases_reach_the_rows(pytester: pytest.Pytester, project: Project):
    """``batchgen_models`` in the ini file is the ``models=`` of load_plan: it beats the
    defaults, and a plan's ``## Models`` section beats it."""
    project.ini("batchgen_models =\n    haiku = ini-haiku\n    sonnet = ini-sonnet\n")
    project.write_plan(plan_text(tail="## Models\n- sonnet: plan-sonnet\n"))
    pytester.makeconftest(
        """
        def pytest_report_collectionfinish(config, start_path, items):
            found = set()
            for item in items:
                mark = item.get_closest_marker("batchgen")
                if mark is not None:
                    found.add(f"MODEL {mark.kwargs['filename']} {mark.kwargs['model']}")
            return sorted(found)
        """
    )
    result = project.run("--batch-readonly", "--collect-only")
    assert result.ret == pytest.ExitCode.OK
    assert [line for line in result.stdout.lines if line.startswith("MODEL ")] == [
        "MODEL alpha.md ini-haiku",
        "MODEL beta.md ini-haiku",
        "MODEL gamma.md plan-sonnet",
    ]


def test_unreadable_ini_model_line_is_a_usage_error(project: Project):
    project.ini("batchgen_models =\n    just-a-word\n")
    project.write_plan(plan_text())
    before = project.snapshot()
    result = project.run("--batch-validate-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "batchgen_models" in result.stderr.str() and "'just-a-word'" in result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert project.snapshot() == before


def test_a_forms_hook_returning_no_form_is_named_past_a_wrapper_of_the_hook(project: Project):
    """Review round: to find the implementation that returned no form, each one was called again
    alone, wrappers too: a wrapper's generator, run on its own, gave ``None`` and was named
    instead of the implementation at fault (its code run once more besides)."""
    project.ini()
    project.write_plan(plan_text())
    project.write(
        "wrapmod.py",
        "import pytest\n\n\n"
        "@pytest.hookimpl(wrapper=True)\n"
        "def pytest_batchgen_checklist_forms():\n"
        "    return (yield)\n",
    )
    project.write(
        "conftest.py",
        "pytest_plugins = ['wrapmod']\n\n\ndef pytest_batchgen_checklist_forms():\n    return ['no-todo']\n",
    )

    result = project.run("--batch-validate-only")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (message,) = [line for line in result.stderr.lines if line.startswith("ERROR: ")]
    assert message.startswith("ERROR: conftest.py:4: pytest_batchgen_checklist_forms returned str 'no-todo'"), message
