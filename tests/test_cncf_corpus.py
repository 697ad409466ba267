"""Validate-only over a real, human-written corpus: the CNCF glossary's 90 English entries.

``tests/data/cncf/cncf-glossary.md`` is a plan with one pending row per entry (generated from
the folder's listing) and a checklist suited to the glossary's own shape. The entries are
copied into the project's ``glossary/`` folder and gated with ``--batch-validate-only``. The verdicts
asserted below were checked by hand in the files; each comment says what the file holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import Project
from pytest_batchgen.plan import load_plan

CORPUS = Path("/work/shared/corpora/cncf-glossary/en")
PLAN = Path(__file__).resolve().parent / "data" / "cncf" / "cncf-glossary.md"

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"the CNCF glossary corpus is not at {CORPUS}")

CHECKS = ("front-matter", "category-value", "status-value", "sections", "registered")

# filename -> {check: a piece of its failure message}; every check not listed passes
HAND_CHECKED: dict[str, dict[str, str]] = {
    # title: API Gateway, status: Completed, `category: technology` (lowercase), tags: ["networking", "", ""]
    # and both `## Problem it addresses` / `## How it helps`: only the category fails, with a case hint
    "api-gateway.md": {
        "category-value": "category is 'technology', expected one of: Concept, Technology, Property "
        "(values are case-sensitive: did you mean 'Technology'?)",
    },
    # category: Property, status: Completed, tags: ["fundamental", "", ""] (one non-blank tag is
    # enough for "at least 1"), but the body has no `##` heading at all
    "abstraction.md": {
        "sections": "missing sections 'Problem it addresses', 'How it helps' (level-2 headings found: none)",
    },
    # category: concept, status: Feedback Appreciated and tags: ["", "", ""]: three blank tags
    "container-image.md": {
        "front-matter": "tags has 0 non-blank items (['', '', '']), expected at least 1",
        "category-value": "did you mean 'Concept'?",
    },
    # front matter has title, status and `category: ["methodology", "platform"]` (a list), no tags
    "platform-engineering.md": {
        "front-matter": "missing key tags (expected a list of at least 1)",
        "category-value": "category is a list (['methodology', 'platform']), not a single value",
    },
    # the site's search page: front matter is only `title: Search Results` and `layout: search`
    "search.md": {
        "front-matter": "missing keys status, category; missing key tags",
        "category-value": "front matter has no category",
        "status-value": "front matter has no status",
        "sections": "missing sections",
    },
    # keys are capitalised (`Title:`, `Status:`, `Category: Technology`); `tags` is lowercase;
    # keys are case-sensitive, so title, status and category are all missing
    "serverless.md": {
        "front-matter": "missing keys title, status, category",
        "category-value": "front matter has no category",
        "status-value": "front matter has no status",
    },
    # `status: Deprecated` with category Technology, tags ["platform", "", ""] and both sections
    "containers-as-a-service.md": {
        "status-value": "status is 'Deprecated', expected one of: Completed, Feedback Appreciated",
    },
    # `status: completed` and `category: technology`: both lowercase, both with a case hint
    "virtualization.md": {
        "category-value": "did you mean 'Technology'?",
        "status-value": "status is 'completed', expected one of: Completed, Feedback Appreciated "
        "(values are case-sensitive: did you mean 'Completed'?)",
    },
    # `category: concept`, and the headings are `## Problem it Addresses` (line 14) and
    # `## How it Helps` (line 21): different case, so missing, with a pointer to each
    "monolithic-apps.md": {
        "category-value": "did you mean 'Concept'?",
        "sections": "## 'Problem it Addresses' at line 14 is close but not the same; "
        "## 'How it Helps' at line 21 is close but not the same",
    },
    # no `category` key at all (title, status, tags only)
    "microservices-architecture.md": {
        "front-matter": "missing key category",
        "category-value": "front matter has no category",
    },
    # the front matter lines are indented by one space (` title: Stateless Apps`): still a valid
    # YAML mapping, so the front matter passes; the body has no `##` heading
    "stateless-apps.md": {
        "sections": "level-2 headings found: none",
    },
}

# entries that pass every check, so their rows become complete and are registered
PASSING_BY_HAND = {
    # `## Problem it addresses ` (trailing space, line 12) and `## How it helps`: surrounding
    # whitespace is ignored; category Concept, status Completed, three tags
    "cluster.md",
    # `status: Feedback Appreciated`, category Technology, tags ["application", "", ""]
    "hypervisor.md",
    # category Technology, status Completed, three tags, both sections
    "ebpf.md",
    # category Concept, two non-blank tags, and a `## Related terms` after the two sections
    "vertical-scaling.md",
}


def test_cncf_glossary_validate_only(project: Project):
    # given: the corpus's entries in glossary/ and the plan with a row for each
    files = sorted(p.name for p in CORPUS.glob("*.md") if p.name != "README.md")
    assert len(files) == 90
    project.copy(CORPUS, "glossary")
    (project.path / "glossary" / "README.md").unlink(missing_ok=True)
    project.copy(PLAN, "plans/cncf-glossary.md")
    project.plan = "plans/cncf-glossary.md"
    before = entries(project)

    # when
    result = project.run("--batch-validate-only")

    # then: every check of every row ran, with the verdicts checked by hand
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    rows = load_plan(project.path / project.plan, project.path).rows
    assert sorted(r.filename for r in rows) == files  # a row for every entry
    reports = {tuple(key.split("::")): rep for key, rep in result.reports().items()}
    assert len(reports) == 90 * len(CHECKS)  # every (row, check) ran, none skipped or errored
    assert all(r.outcome in ("passed", "failed") for r in reports.values())
    assert_hand_checked(reports)
    passing = {f for f in files if all(reports[(f, c)].passed for c in CHECKS)}
    assert passing >= PASSING_BY_HAND
    assert not passing & set(HAND_CHECKED)
    assert len(passing) == 19  # 71 of the 90 entries break at least one rule

    # and the plan records it: passing rows complete, the others pending with a note each
    assert {f for f, s in project.statuses().items() if s == "complete"} == passing
    notes = project.notes()
    assert set(notes) == set(files) - passing
    assert notes["api-gateway.md"] == (
        "2 checks failed\n"
        "- category-value (plan line 21): glossary/api-gateway.md:4: category is 'technology', "
        "expected one of: Concept, Technology, Property (values are case-sensitive: did you mean 'Technology'?)\n"
        "- registered (plan line 24): glossary/api-gateway.md: not registered in glossary/INDEX.md: "
        "the output is registered once its other checks pass"
    )

    # and the tracking file lists exactly the passing entries; the entries themselves are untouched
    index = project.read("glossary/INDEX.md").splitlines()
    assert sorted(line.split("](")[1].rstrip(")") for line in index) == sorted(passing)
    assert {name: data for name, data in entries(project).items() if name != "INDEX.md"} == before


def entries(project: Project) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (project.path / "glossary").glob("*.md")}


def assert_hand_checked(reports: dict[tuple[str, ...], pytest.TestReport]) -> None:
    """Each hand-checked entry fails exactly the checks listed, with the message listed (and its
    registration waits); each entry known to pass passes every check."""
    for filename, failing in HAND_CHECKED.items():
        for check in CHECKS:
            report = reports[(filename, check)]
            if check in failing:
                assert report.failed, (filename, check)
                assert failing[check] in report.longreprtext, (filename, check, report.longreprtext)
            elif check == "registered":
                assert report.failed and "registered once its other checks pass" in report.longreprtext
            else:
                assert report.passed, (filename, check, report.longreprtext)
    for filename in PASSING_BY_HAND:
        assert all(reports[(filename, check)].passed for check in CHECKS), filename
