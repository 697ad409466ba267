"""End to end (issue #3): ``--batch-validate-only`` and ``--batch-readonly`` in real pytest runs.

Two projects are copied into the ``project`` fixture's folder:

* the repository's example (``plans/glossary.md``, ``output/idempotency.md``, ``output/INDEX.md``,
  ``.pymarkdown.json``), linted by the real pymarkdown;
* ``tests/data/changelog``: an API changelog in another domain, with its own format reference,
  content rules, a Python linter script and outputs that each break one rule:

  ==========  =========  =====================================================================
  row         status     what its output does
  ==========  =========  =====================================================================
  v1.0.0.md   complete   the format reference: passes everything, already in INDEX.md
  v1.1.0.md   pending    passes everything, not yet in INDEX.md
  v1.2.0.md   pending    ``category: fix`` (the value is ``Fix``)
  v1.3.0.md   pending    ``### Endpoints`` instead of ``## Endpoints``
  v1.4.0.md   pending    ``tags: [headers, ""]``: one non-blank tag of the two needed
  v1.5.0.md   pending    a tab and a 103-character line (line 16): the linter exits 1
  v1.6.0.md   pending    Endpoints before Breaking Changes and Migration
  v1.7.0.md   pending    front matter with an unclosed ``[``: invalid YAML
  v2.0.0.md   complete   ``status: Published`` (the value is ``published``)
  v2.1.0.md   pending    no output yet
  v2.2.0.md   complete   passes; an extra section sits between the required ones
  ==========  =========  =====================================================================
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import CHANGELOG, Project
from pytest_batchgen.plan import load_plan
from pytest_batchgen.planedit import RowUpdate, edit_text

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

GLOSSARY = "plans/glossary.md"
JUDGE_CASSETTE = "plans/cassettes/glossary/idempotency.md.judge.yaml"
JUDGE = "judge-definition-explains-term-other-words"


@pytest.fixture
def glossary(project: Project) -> Project:
    # the judge line's recorded verdict on the format reference replays offline (issue #14)
    for rel in ("plans/glossary.md", "output/idempotency.md", ".pymarkdown.json", JUDGE_CASSETTE):
        project.copy(REPO / rel, rel)
    project.plan = GLOSSARY
    # the example as shipped, even after the Quick start ran in this checkout: only the format
    # reference complete and registered, no notes
    rows = load_plan(project.path / GLOSSARY, project.path).rows
    updates = {
        r.filename: RowUpdate(status="complete" if r.filename == "idempotency.md" else "pending", note="") for r in rows
    }
    project.write(GLOSSARY, edit_text(project.read(), updates))
    project.write("output/INDEX.md", "- [Idempotency](idempotency.md)\n")
    return project


@pytest.fixture
def changelog(project: Project) -> Project:
    return project.lay_out_changelog()


# -- the repository's example ----------------------------------------------------------------------


def test_example_plan_idempotency_passes_and_pending_rows_are_skipped(glossary: Project):
    before = glossary.snapshot()
    result = glossary.run("--batch-validate-only", "-v")
    assert result.ret == pytest.ExitCode.OK
    assert result.counts() == {"passed": 6, "skipped": 48}
    for check in ("front-matter", "category-value", "sections", "lint", JUDGE, "registered"):
        result.stdout.fnmatch_lines([f"*glossary.md::idempotency.md::{check} PASSED*"])
    result.stdout.fnmatch_lines(
        [
            "*SKIPPED [[]6[]] *pending row without an output (output/quorum.md); validate-only makes no model call",
            "*SKIPPED [[]6[]] *pending row without an output (output/vector-clocks-vs-lamport-timestamps.md)*",
        ]
    )
    # nothing to record: idempotency was complete and registered, the rest were skipped
    assert glossary.snapshot() == before
    assert glossary.statuses()["quorum.md"] == "pending"


@pytest.mark.parametrize("mode", ["--batch-validate-only", "--batch-readonly"])
def test_a_pending_rows_skipped_checks_and_custom_tests_fold_into_one_line(
    pytester: pytest.Pytester, glossary: Project, mode: str
):
    # the custom tests were skipped without "; validate-only makes no model call": two lines a row
    pytester.makepyfile(test_terms="def test_term(batch_output):\n    assert batch_output.metadata['term']\n")

    result = glossary.run(mode, "-rs", "test_terms.py")

    assert result.ret == pytest.ExitCode.OK
    skipped = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
    assert len(skipped) == 8, skipped  # one line per pending row
    assert (
        "SKIPPED [7] plans/glossary.md:27: pending row without an output (output/quorum.md); "
        "validate-only makes no model call"
    ) in skipped


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["plans/glossary.md::quorom.md"],
            "ERROR: not found: plans/glossary.md::quorom.md: plans/glossary.md has no row with Filename quorom.md "
            "(did you mean 'plans/glossary.md::quorum.md'?)",
        ),
        (
            ["--batch-phase", "1", "plans/glossary.md::cap-theorem.md"],
            "ERROR: not found: plans/glossary.md::cap-theorem.md: row cap-theorem.md is in phase 2, and "
            "--batch-phase selects 1; add --batch-phase 2 or leave the option out",
        ),
        (
            ["plans/glossary.md::quorum.md::front-mater"],
            "ERROR: not found: plans/glossary.md::quorum.md::front-mater: row quorum.md has no item front-mater "
            "(did you mean front-matter? its items: front-matter, category-value, *",
        ),
    ],
    ids=["no such row", "outside --batch-phase", "no such item"],
)
def test_a_named_node_that_selects_nothing_is_a_usage_error(glossary: Project, args, expected):
    # pytest says "not found" for a node id that matches nothing; a plan's node deselected every
    # item instead, and the run exited 5 ("no tests ran") without saying why
    result = glossary.run("--batch-validate-only", *args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert "passed" not in result.stdout.str() and "deselected" not in result.stdout.str()


def test_naming_the_generate_item_of_a_complete_row_is_a_usage_error(glossary: Project):
    # a complete row has no generate item: the run deselected all and exited 5 without a word
    result = glossary.run("--batch-record-mode", "none", "plans/glossary.md::idempotency.md::generate")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: not found: plans/glossary.md::idempotency.md::generate: row idempotency.md "
            "has no item generate (its items: front-matter, *, registered)"
        ]
    )


def test_example_plan_selects_a_row_or_a_check_with_k(glossary: Project):
    glossary.copy(DATA / "glossary" / "quorum.draft1.md", "output/quorum.md")
    glossary.copy(DATA / "glossary" / "backpressure.md", "output/backpressure.md")

    result = glossary.run("--batch-validate-only", "-k", "quorum")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # the draft has `category: Consistent`: only that check fails, registration waits for it, and
    # the judge is not asked (its item skips)
    assert result.counts() == {"passed": 3, "failed": 2, "skipped": 1, "deselected": 48}
    result.stdout.fnmatch_lines(
        [
            "FAILED plans/glossary.md::quorum.md::category-value*",
            "FAILED plans/glossary.md::quorum.md::registered*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "output/quorum.md:3: category is 'Consistent', expected one of: Consistency, Concurrency, Scalability, Reliability"
        ]
    )
    assert "backpressure" not in glossary.read("output/INDEX.md")
    note = glossary.notes()["quorum.md"]
    assert note.startswith("2 checks failed\n- category-value (plan line 17): output/quorum.md:3: ")
    assert glossary.statuses()["quorum.md"] == "pending"

    result = glossary.run("--batch-validate-only", "-k", "category")
    assert result.counts() == {"passed": 2, "failed": 1, "skipped": 6, "deselected": 45}
    result.stdout.fnmatch_lines(["FAILED plans/glossary.md::quorum.md::category-value*"])
    # backpressure passed the one check that ran; its other checks did not run, so it stays pending
    assert glossary.statuses()["backpressure.md"] == "pending"
    assert "backpressure.md" not in glossary.notes()


FENCING_TOKEN = """\
---
term: Fencing Token
category: Consistency
tags: [locking, leases]
---

## Definition

A fencing token is a number that grows with every lock grant.

## Details
| Aspect | Value |
|--------|-------|
| Issued by | The lock service |

## Related Terms

Leases and quorums.
"""


def test_example_plan_real_linter_failure_is_shown_and_noted(glossary: Project):
    # the table sits right under its heading: pymarkdown reports MD022 and MD058 (.pymarkdown.json)
    glossary.write("output/fencing-token.md", FENCING_TOKEN)
    result = glossary.run("--batch-validate-only", "-k", "fencing")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.counts() == {"passed": 3, "failed": 2, "skipped": 1, "deselected": 48}
    result.stdout.fnmatch_lines(
        [
            "output/fencing-token.md:11: linter exited 1: *pymarkdown --config .pymarkdown.json scan output/fencing-token.md",
            "*output of the check:*",
            "*output/fencing-token.md:11:1: MD022: *",
            "*output/fencing-token.md:12:1: MD058: *",
        ]
    )
    note = glossary.notes()["fencing-token.md"]
    assert note.splitlines()[1].startswith("- lint (plan line 19): output/fencing-token.md:11: linter exited 1: ")
    assert glossary.statuses()["fencing-token.md"] == "pending"


@pytest.mark.parametrize(
    ("content", "options"),
    [
        (b"", []),
        (b"---\nterm: Backpressure\n---\n\0\0\0", []),
        ("---\nterm: Backpressure\n---\n\n## Definition\n\nCaf\u00e9\n".encode("latin-1"), []),
        (FENCING_TOKEN.encode() * 8, ["-o", "batchgen_max_output_bytes=2000"]),  # the reference is 1,533
    ],
    ids=["empty", "binary", "not UTF-8", "over the size limit"],
)
@pytest.mark.parametrize("mode", ["--batch-validate-only", "--batch-readonly"])
def test_an_unreadable_output_is_not_registered_until_its_other_checks_pass(
    glossary: Project, content: bytes, options: list[str], mode: str
):
    # it said "output/INDEX.md has no Markdown link to output/backpressure.md", as if the link were the fix
    glossary.write("output/backpressure.md", content)

    result = glossary.run(mode, "--tb=line", "-k", "backpressure", *options)

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.outcomes()["backpressure.md::registered"] == "failed"
    result.stdout.fnmatch_lines(
        [
            "plans/glossary.md:21: output/backpressure.md: not registered in output/INDEX.md: "
            "the output is registered once its other checks pass"
        ]
    )
    assert "has no Markdown link" not in result.stdout.str()


# -- the changelog project: statuses, notes, registration ------------------------------------------

EXPECTED_FAILURES = {
    "v1.2.0.md": [
        "category-value (plan line 21): changelog/v1.2.0.md:5: category is 'fix', expected one of: "
        "Feature, Fix, Deprecation, Security (values are case-sensitive: did you mean 'Fix'?)",
    ],
    "v1.3.0.md": [
        "sections (plan line 23): changelog/v1.3.0.md: missing section 'Endpoints' (level-2 headings found: "
        "'Summary', 'Breaking Changes and Migration'); ### 'Endpoints' at line 18 is close but not the same",
    ],
    "v1.4.0.md": [
        "front-matter (plan line 20): changelog/v1.4.0.md:7: front matter: tags has 1 non-blank item "
        "(['headers', '']), expected at least 2",
    ],
    "v1.5.0.md": ["lint (plan line 24): changelog/v1.5.0.md:16: linter exited 1: "],
    "v1.6.0.md": [
        "sections (plan line 23): changelog/v1.6.0.md:14: sections out of order: found Summary, Endpoints, "
        "Breaking Changes and Migration; expected Summary, Breaking Changes and Migration, Endpoints",
    ],
    "v1.7.0.md": [
        "front-matter (plan line 20): changelog/v1.7.0.md:8: front matter is not valid YAML",
        "category-value (plan line 21): changelog/v1.7.0.md:8: front matter is not valid YAML",
        "status-value (plan line 22): changelog/v1.7.0.md:8: front matter is not valid YAML",
    ],
}
UNREGISTERED = (
    "registered (plan line 25): changelog/{name}: not registered in changelog/INDEX.md: "
    "the output is registered once its other checks pass"
)


def test_changelog_statuses_notes_and_registration(changelog: Project):
    # given: the changelog project as copied (see the table at the top)
    plan_before = changelog.read()
    outputs_before = versions(changelog.snapshot())

    # when
    result = changelog.run("--batch-validate-only")

    # then: the failures are shown...
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # 11 rows x 6 checks; v2.1.0 has no output (6 skipped); 6 rows fail 1-3 checks plus registration;
    # v2.0.0 fails a check while listed in INDEX.md, so its registration fails too
    assert result.counts() == {"passed": 44, "failed": 16, "skipped": 6}
    result.stdout.fnmatch_lines(["*pending row without an output (changelog/v2.1.0.md)*"])
    # the linter's own output is shown under the failure
    result.stdout.fnmatch_lines(
        ["*output of the check:*", "*changelog/v1.5.0.md:16: tab character*", "*changelog/v1.5.0.md:16: line is 103*"]
    )
    # ...the statuses and notes recorded, the newly passing output registered...
    assert changelog.statuses() == {
        "v1.0.0.md": "complete",
        "v1.1.0.md": "complete",  # every check passed: complete, and registered
        "v1.2.0.md": "pending",
        "v1.3.0.md": "pending",
        "v1.4.0.md": "pending",
        "v1.5.0.md": "pending",
        "v1.6.0.md": "pending",
        "v1.7.0.md": "pending",
        "v2.0.0.md": "complete",  # failed, but a complete row stays complete
        "v2.1.0.md": "pending",
        "v2.2.0.md": "complete",
    }
    assert_changelog_notes(changelog.notes())
    # the tracking file gained exactly the newly passing output, in the plan's order
    assert changelog.read("changelog/INDEX.md").splitlines()[-4:] == [
        "- [v1.0.0: First stable release](v1.0.0.md)",
        "- [v1.1.0: Order search](v1.1.0.md)",
        "- [v2.0.0: Orders v2](./v2.0.0.md)",
        "- [v2.2.0: Token leak fix](v2.2.0.md#summary)",
    ]
    # ...with a minimal edit of the plan, and outputs are never touched in validate-only mode
    assert_one_status_cell_then_notes(plan_before, changelog.read())
    assert versions(changelog.snapshot()) == outputs_before

    # when it runs again, then it finds the same failures and changes nothing
    after_first = changelog.snapshot()
    result = changelog.run("--batch-validate-only")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.counts() == {"passed": 44, "failed": 16, "skipped": 6}
    assert changelog.snapshot() == after_first


def versions(snapshot: dict[str, bytes]) -> dict[str, bytes]:
    """The changelog's entries (``changelog/v*``) of a snapshot."""
    return {k: v for k, v in snapshot.items() if k.startswith("changelog/v")}


def assert_changelog_notes(got: dict[str, str]) -> None:
    """One note per failing row: its failures in checklist order, then the registration that waited."""
    assert set(got) == set(EXPECTED_FAILURES) | {"v2.0.0.md"}
    for name, expected in EXPECTED_FAILURES.items():
        lines = got[name].splitlines()
        entries = [line for line in lines[1:] if line.startswith("- ")]  # under each, a linter's lines
        n = len(expected) + 1
        assert lines[0] == f"{n} checks failed", name
        assert len(entries) == n, name
        for want, have in zip(expected, entries):
            assert have.startswith("- " + want), (name, have)
        assert entries[-1] == "- " + UNREGISTERED.format(name=name)
    assert got["v2.0.0.md"] == (
        "2 checks failed (the row was complete and stays complete: fix changelog/v2.0.0.md by hand, "
        "or set its Status to pending to generate it again)\n"
        "- status-value (plan line 22): changelog/v2.0.0.md:4: status is 'Published', expected one of: "
        "draft, review, published (values are case-sensitive: did you mean 'published'?)\n"
        "- registered (plan line 25): changelog/v2.0.0.md: changelog/INDEX.md lists changelog/v2.0.0.md, "
        "which fails its other checks: fix the output, or remove its entry"
    )


def assert_one_status_cell_then_notes(plan_before: str, plan_after: str) -> None:
    """The plan was edited minimally: one status cell (padding kept), then the notes at the end."""
    old, new = plan_before.splitlines(), plan_after.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
    assert [(old[i], new[i]) for i in changed] == [
        (
            "| 2  | v1.1.0: Order search           | v1.1.0.md | haiku | pending  | ben    |",
            "| 2  | v1.1.0: Order search           | v1.1.0.md | haiku | complete | ben    |",
        )
    ]
    assert new[len(old) :][:2] == ["", "## Batchgen Notes"]


def test_fixing_an_output_completes_its_row_and_drops_its_note(changelog: Project):
    changelog.run("--batch-validate-only")
    assert "v1.2.0.md" in changelog.notes()
    changelog.edit("changelog/v1.2.0.md", "category: fix", "category: Fix")
    result = changelog.run("--batch-validate-only", "-k", "v1.2.0")
    assert result.ret == pytest.ExitCode.OK
    assert result.counts() == {"passed": 6, "deselected": 60}
    assert changelog.statuses()["v1.2.0.md"] == "complete"
    assert "v1.2.0.md" not in changelog.notes()
    assert "v1.3.0.md" in changelog.notes()  # other rows' notes are kept
    assert "- [v1.2.0: Webhook retries](v1.2.0.md)" in changelog.read("changelog/INDEX.md")


def test_readonly_changes_no_file_at_all(changelog: Project):
    before = changelog.snapshot()
    result = changelog.run("--batch-readonly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # v1.1.0 passes everything else but is not in INDEX.md, and read-only mode does not add it
    assert result.counts() == {"passed": 43, "failed": 17, "skipped": 6}
    result.stdout.fnmatch_lines(
        [
            "changelog/v1.1.0.md: changelog/INDEX.md has no Markdown link to changelog/v1.1.0.md",
            "FAILED plans/changelog.md::v1.1.0.md::registered*",
        ]
    )
    result.stdout.fnmatch_lines(["*plan unchanged (read-only)*"])
    assert changelog.snapshot() == before


def test_deselected_checks_keep_a_passing_row_pending(changelog: Project):
    result = changelog.run("--batch-validate-only", "-k", "not lint")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.counts()["deselected"] == 11
    got = changelog.statuses()
    assert got["v1.1.0.md"] == "pending"  # passed all it ran, but its lint check did not run
    assert got["v1.0.0.md"] == got["v2.2.0.md"] == "complete"
    got_notes = changelog.notes()
    assert "v1.1.0.md" not in got_notes
    assert got_notes["v1.2.0.md"].startswith("2 checks failed\n- category-value")
    # v1.5.0's lint item did not run, so the note does not list it; registration still waited
    # for the linter's verdict, as it does for every check of the row
    assert got_notes["v1.5.0.md"] == "1 check failed\n- " + UNREGISTERED.format(name="v1.5.0.md")


def test_custom_test_with_batch_output_counts_toward_completion(pytester: pytest.Pytester, changelog: Project):
    pytester.makepyfile(
        test_titles="""
        def test_title_starts_with_version(batch_output):
            meta = batch_output.metadata
            assert str(meta.get("title", "")).startswith("v" + str(meta.get("version"))), meta.get("title")

        def test_row_is_a_plan_row(batch_row):
            assert batch_row.filename.endswith(".md")
        """
    )
    result = changelog.run("--batch-validate-only", "test_titles.py", "-v")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # parametrised over every row of the plan, with the row's filename as the id
    result.stdout.fnmatch_lines(
        [
            "test_titles.py::test_title_starts_with_version[[]v1.0.0.md[]] PASSED*",
            "test_titles.py::test_title_starts_with_version[[]v1.1.0.md[]] FAILED*",
            "test_titles.py::test_title_starts_with_version[[]v2.1.0.md[]] SKIPPED*",
            "test_titles.py::test_row_is_a_plan_row[[]v2.2.0.md[]] PASSED*",
        ]
    )
    got = changelog.statuses()
    # v1.1.0 passes every checklist line, but its title ('Order search') fails the custom test
    assert got["v1.1.0.md"] == "pending"
    assert got["v1.0.0.md"] == got["v2.2.0.md"] == "complete"
    note = changelog.notes()["v1.1.0.md"]
    assert note.startswith("2 checks failed\n")  # the custom test, and so its registration
    assert "\n- test_title_starts_with_version[v1.1.0.md]: AssertionError" in note
    assert "\n- registered (plan line" in note
    assert "v1.0.0.md" not in changelog.notes()
    # the tracking file lists the outputs that pass: a custom test's failure counts (run-last
    # rules run after every other item); it was registered all the same
    assert result.outcomes()["v1.1.0.md::registered"] == "failed"
    index = changelog.read("changelog/INDEX.md")
    assert "v1.1.0.md" not in index and "v1.0.0.md" in index


def test_custom_test_note_keeps_the_assertion_message(pytester: pytest.Pytester, changelog: Project):
    pytester.makepyfile(
        test_titles="""
        def test_title_starts_with_version(batch_output):
            title = str(batch_output.metadata.get("title", ""))
            assert title.startswith("v"), "title does not start with the version: " + title
        """
    )
    changelog.run("--batch-validate-only", "test_titles.py", "-k", "v1.1.0")
    note = changelog.notes()["v1.1.0.md"]
    assert "title does not start with the version: Order search" in note


def test_a_custom_tests_note_carries_no_memory_address_so_a_second_run_changes_nothing(
    pytester: pytest.Pytester, changelog: Project
):
    # pytest's assertion rewriting explains ``meta.get("title")`` with the bound method's repr,
    # whose address changes from process to process
    pytester.makepyfile(
        test_titles="""
        def test_name_is_the_title(batch_output):
            assert batch_output.metadata.get("name") == batch_output.row.title
        """
    )
    changelog.run("--batch-validate-only", "test_titles.py", "-k", "v1.1.0")
    first = changelog.read()
    note = changelog.notes()["v1.1.0.md"]
    assert "test_name_is_the_title[v1.1.0.md]: AssertionError: assert None == 'v1.1.0: Order search'" in note
    assert "where None = <built-in method get of mappingproxy object>('name')" in note
    assert "0x" not in note

    changelog.run("--batch-validate-only", "test_titles.py", "-k", "v1.1.0")

    assert changelog.read() == first


def test_control_characters_in_a_failure_reach_the_note_escaped_and_the_plan_stays_readable(
    pytester: pytest.Pytester, changelog: Project
):
    # a linter's colours (FORCE_COLOR in CI), a check's or a judge's message: a NUL written into
    # the notes made the next run refuse the plan ("plan contains a NUL byte"), and an escape
    # sequence or a lone CR landed in plan.md as it came
    pytester.makepyfile(
        test_titles="""
        def test_title(batch_output):
            assert False, "colour \\x1b[31mred\\x1b[0m nul \\x00 bell \\x07 del \\x7f end"
        """
    )
    changelog.run("--batch-validate-only", "test_titles.py", "-k", "v1.1.0")
    text = changelog.read()
    assert not any(c in text for c in "\x00\x1b\x07\x7f")
    note = changelog.notes()["v1.1.0.md"]
    assert "colour \\x1b[31mred\\x1b[0m nul \\x00 bell \\x07 del \\x7f end" in note

    again = changelog.run("--batch-validate-only", "test_titles.py", "-k", "v1.1.0")

    assert "NUL" not in again.stdout.str() + again.stderr.str()
    assert again.ret == pytest.ExitCode.TESTS_FAILED  # the plan read: only the custom test fails
    assert changelog.read() == text


# -- users' checklist forms through the hook -------------------------------------------------------

HOOK_PLAN = """\
# Recipes

## Format Reference
recipes/pancakes.md

## Output Directory
recipes/

## Content Rules
- Every recipe has front matter: title, serves
- No TODO markers left in a finished recipe

## Validation Checklist
1. Front matter includes title and serves
2. No TODO markers left
3. Linter passes: `definitely-not-installed-linter {path}`

## Phase 1
| Title | Filename | Model | Status |
|-------|----------|-------|--------|
| Pancakes | pancakes.md | haiku | complete |
| Shakshuka | shakshuka.md | haiku | pending |
"""

HOOK_CONFTEST = """
from pytest_batchgen import ChecklistForm, Failure

def pytest_batchgen_checklist_forms():
    def no_todo(ctx):
        for n, line in enumerate(ctx.path.read_text(encoding="utf-8").splitlines(), 1):
            if "TODO" in line:
                return Failure("the output still contains TODO: " + line.strip(), n)
        return None

    return [
        ChecklistForm(name="no-todo", pattern=r"no todo (?:markers )?left", check=no_todo, example="No TODO left"),
        # shadows the built-in linter form: users' forms are tried first
        ChecklistForm(name="fake-lint", pattern=r"linter passes: .*", check=lambda ctx: None),
    ]
"""


def test_conftest_forms_become_items_and_their_failures_are_reported(pytester: pytest.Pytester, project: Project):
    project.plan = "plans/recipes.md"
    project.write("plans/recipes.md", HOOK_PLAN)
    project.write("recipes/pancakes.md", "---\ntitle: Pancakes\nserves: 4\n---\n\nMix.\n")
    project.write(
        "recipes/shakshuka.md", "---\ntitle: Shakshuka\nserves: 2\n---\n\nSimmer the tomatoes.\nTODO: how many eggs?\n"
    )
    pytester.makeconftest(HOOK_CONFTEST)
    result = project.run("--batch-validate-only", "-v")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.counts() == {"passed": 5, "failed": 1}
    result.stdout.fnmatch_lines(
        [
            "*recipes.md::pancakes.md::no-todo PASSED*",
            "*recipes.md::pancakes.md::fake-lint PASSED*",
            "*recipes.md::shakshuka.md::no-todo FAILED*",
            "recipes/shakshuka.md:7: the output still contains TODO: TODO: how many eggs?",
            "  check: plans/recipes.md:15: No TODO markers left",
        ]
    )
    assert "linter command not found" not in result.stdout.str()  # the built-in linter form never ran
    assert project.statuses() == {"pancakes.md": "complete", "shakshuka.md": "pending"}
    assert project.notes() == {
        "shakshuka.md": "1 check failed\n- no-todo (plan line 15): recipes/shakshuka.md:7: "
        "the output still contains TODO: TODO: how many eggs?"
    }


def test_a_conftest_form_whose_pattern_is_no_regex_is_an_error_where_the_form_is_defined(
    pytester: pytest.Pytester, project: Project
):
    # it was an error at the plan's first checklist line, which the form was never meant for: a
    # pattern that does not compile matches no line, so the form's own line is the one to name
    project.plan = "plans/recipes.md"
    project.write("plans/recipes.md", HOOK_PLAN)
    project.write("recipes/pancakes.md", "---\ntitle: Pancakes\nserves: 4\n---\n\nMix.\n")
    conftest = pytester.makeconftest(HOOK_CONFTEST.replace("no todo (?:markers )?left", "no todo (markers left"))
    line = next(n for n, text in enumerate(conftest.read_text().splitlines(), 1) if 'name="no-todo"' in text)

    result = project.run("--batch-validate-only")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        f"ERROR: conftest.py:{line}: the checklist form 'no-todo' has a pattern that is not a regular expression "
        "(missing ), unterminated subpattern at position 8); fix it where the form is defined (a conftest's "
        "pytest_batchgen_checklist_forms)"
    )


# -- errors in the plan's checklist stop the run before anything is written -------------------------


def test_unknown_checklist_line_is_a_usage_error_naming_it(changelog: Project):
    changelog.edit(CHANGELOG, "3. status is one of: draft, review, published", "3. Reads well")
    before = changelog.snapshot()
    result = changelog.run("--batch-validate-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "plans/changelog.md:22: checklist line 'Reads well' matches no checklist form" in err
    assert "status is one of: draft, review, published" in err  # the known forms are listed
    assert "Traceback" not in err + result.stdout.str()
    assert changelog.snapshot() == before


def test_count_mismatch_is_a_usage_error_naming_both_lines(changelog: Project):
    changelog.edit(CHANGELOG, "one of the 4 values", "one of the five values")
    before = changelog.snapshot()
    result = changelog.run("--batch-validate-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "plans/changelog.md:21: says five values, but Content Rules lists 4" in err
    assert "(see also line 13)" in err
    assert changelog.snapshot() == before


def test_validate_only_imports_neither_the_sdk_nor_vcrpy(pytester: pytest.Pytester, changelog: Project):
    # a fresh interpreter (subprocess): in-process runs share this one's sys.modules
    pytester.makeconftest(
        """
        import sys

        def pytest_sessionfinish(session):
            heavy = sorted(m for m in ("anthropic", "vcr", "httpx2") if m in sys.modules)
            open("imported.txt", "w").write(",".join(heavy) or "none")
        """
    )
    result = changelog.run("--batch-validate-only", subprocess=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the changelog has failing outputs: it ran
    assert changelog.read("imported.txt") == "none"


HEAVY_PROBE = """
import sys
def pytest_sessionfinish(session):
    print("HEAVY:", ",".join(m for m in ("anthropic", "httpx2", "vcr") if m in sys.modules) or "none")
"""


def test_the_judges_recorded_verdict_replays_without_the_sdk_or_vcrpy(glossary: Project):
    """Issue 12: a judge whose verdicts are only replayed (validate-only, record mode none)
    answers from its recording without importing the SDK (a second of start-up on every run),
    httpx2 or vcrpy: the recording is read and matched by cassettes.py."""
    glossary.write("conftest.py", HEAVY_PROBE)
    result = glossary.run("--batch-validate-only", "-s", subprocess=True)
    out = result.stdout.str()
    assert result.ret == 0, out
    assert "HEAVY: none" in out
    assert "1 judge call (0 live, 1 replayed)" in out, out[-2000:]
