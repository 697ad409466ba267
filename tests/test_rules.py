"""The built-in checklist forms (issue #3, PRODUCT.md section 4): wording, errors and semantics.

Every test compiles real checklist lines from a real plan file (written into ``tmp_path``) with
:func:`compile_checklist` and runs the resulting rule on a real output file, the way the plugin
does, so wording, compile-time errors and check semantics are tested through one path.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest

from pytest_batchgen import CheckContext, ChecklistForm, Failure
from pytest_batchgen.checklist import Rule, collect_forms, compile_checklist, parse_count, split_list
from pytest_batchgen.document import load_document
from pytest_batchgen.errors import ChecklistError
from pytest_batchgen.plan import Plan, load_plan
from pytest_batchgen.rules import BUILTIN_FORMS
from pytest_batchgen.tracking import is_registered, register

PY = shlex.quote(sys.executable)

CATEGORIES = ("Consistency", "Concurrency", "Scalability", "Reliability")

CONTENT_RULES = (
    "- Every output needs front matter: term, category, tags",
    "- category must be one of: " + ", ".join(CATEGORIES),
    "- Include Summary and `Pros and Cons` sections",
)

GOOD = """\
---
term: Quorum
title: Quorum
status: draft
category: Consistency
tags: [replication, consensus]
---

## Summary

A quorum is the number of replicas that must answer.

## Pros and Cons

Fewer replicas answer faster; more replicas agree more.
"""


def with_front_matter(body_keys: str, body: str = "\n## Summary\n\nText.\n") -> str:
    return "---\n" + body_keys.strip("\n") + "\n---\n" + body


class Project:
    """A rootdir holding ``plans/plan.md``, ``out/ref.md`` and the outputs under test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "out").mkdir()
        (root / "plans").mkdir()
        (root / "out" / "ref.md").write_text(GOOD, encoding="utf-8")

    def plan(self, *checklist: str, rules: tuple[str, ...] = CONTENT_RULES) -> Plan:
        numbered = "\n".join(f"{i}. {line}" for i, line in enumerate(checklist, 1))
        text = (
            "# Test plan\n\n"
            "## Format Reference\nout/ref.md\n\n"
            "## Output Directory\nout/\n\n"
            "## Content Rules\n" + "\n".join(rules) + "\n\n"
            "## Validation Checklist\n" + numbered + "\n\n"
            "## Phase 1\n"
            "| # | Title | Filename | Model | Status |\n"
            "|---|-------|----------|-------|--------|\n"
            "| 1 | Reference | ref.md | haiku | complete |\n"
            "| 2 | Quorum | entry.md | haiku | pending |\n"
        )
        path = self.root / "plans" / "plan.md"
        path.write_text(text, encoding="utf-8")
        return load_plan(path, self.root)

    def compile(self, *checklist: str, rules: tuple[str, ...] = CONTENT_RULES, options=None):
        plan = self.plan(*checklist, rules=rules)
        return plan, compile_checklist(plan, BUILTIN_FORMS, options)

    def rule(self, line: str, **kw) -> tuple[Plan, Rule]:
        plan, rules = self.compile(line, **kw)
        assert len(rules) == 1
        return plan, rules[0]

    def write(self, text: str | bytes, filename: str = "entry.md") -> Path:
        path = self.root / "out" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return path

    def check(self, plan: Plan, rule: Rule, text: str | bytes | None, *, readonly=False, others_pass=True):
        """Write ``text`` as out/entry.md (None: leave it missing) and run ``rule`` on it."""
        if text is not None:
            self.write(text)
        row = plan.row("entry.md")
        doc = load_document(plan.output_path(row))
        ctx = CheckContext(doc=doc, row=row, plan=plan, readonly=readonly, others_pass=lambda: others_pass)
        return rule.run(ctx)

    def verdict(self, line: str, text: str | bytes | None, **kw):
        plan, rule = self.rule(line, options=kw.pop("options", None), rules=kw.pop("rules", CONTENT_RULES))
        return self.check(plan, rule, text, **kw)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


# -- wording: which lines compile to which form ------------------------------------------------

# (checklist line, rule name, a variant of GOOD that the rule must reject, text in its failure)
VARIANTS = [
    (
        "Front matter includes term and category",
        "front-matter",
        GOOD.replace("category: Consistency\n", ""),
        "missing key category",
    ),
    (
        "Front matter includes title, status, category and at least 1 tags",
        "front-matter",
        GOOD.replace("tags: [replication, consensus]", 'tags: [""]'),
        "tags has 0 non-blank items",
    ),
    (
        "Front matter includes term, category, and at least 2 tags",
        "front-matter",
        GOOD.replace("tags: [replication, consensus]", "tags: [replication]"),
        "tags has 1 non-blank item",
    ),
    (
        "Front-matter has `term`, `category` and at least two tags.",
        "front-matter",
        GOOD.replace("term: Quorum", "term: ''"),
        "term is blank",
    ),
    ("front matter contains status", "front-matter", GOOD.replace("status: draft\n", ""), "missing key status"),
    (
        "Front matter includes at least 2 tags",
        "front-matter",
        GOOD.replace("tags: [replication, consensus]\n", ""),
        "missing key tags",
    ),
    (
        "Front matter includes `term`, `category`, and at least 2 `tags`",
        "front-matter",
        GOOD.replace("tags: [replication, consensus]", "tags: []"),
        "tags has 0 non-blank items",
    ),
    (
        'Front matter includes term and at least 2 "tags"',
        "front-matter",
        GOOD.replace("tags: [replication, consensus]", "tags: [a]"),
        "tags has 1 non-blank item",
    ),
    (
        "category is one of the 4 values listed in Content Rules",
        "category-value",
        GOOD.replace("Consistency", "Consistent"),
        "expected one of: " + ", ".join(CATEGORIES),
    ),
    (
        "category is one of the four values listed in Content Rules",
        "category-value",
        GOOD.replace("Consistency", "Consistent"),
        "'Consistent'",
    ),
    (
        "category must be one of the values listed in Content Rules",
        "category-value",
        GOOD.replace("Consistency", "Durability"),
        "'Durability'",
    ),
    (
        "category is one of the allowed values listed in Content Rules",
        "category-value",
        GOOD.replace("Consistency", "Durability"),
        "'Durability'",
    ),
    (
        "`category` is one of the 4 allowed values listed in content rules",
        "category-value",
        GOOD.replace("Consistency", "Durability"),
        "'Durability'",
    ),
    (
        "status is one of: draft, review, published",
        "status-value",
        GOOD.replace("status: draft", "status: final"),
        "status is 'final', expected one of: draft, review, published",
    ),
    (
        "status must be one of: draft, review and published",
        "status-value",
        GOOD.replace("status: draft", "status: final"),
        "expected one of: draft, review, published",
    ),
    (
        "status is one of: `draft`, \"review\", 'published'",
        "status-value",
        GOOD.replace("status: draft", "status: final"),
        "expected one of: draft, review, published",
    ),
    (
        "`Pros and Cons`, Summary sections present",
        "sections",
        GOOD.replace("## Pros and Cons", "## Pros"),
        "missing section 'Pros and Cons'",
    ),
    (
        "Summary and `Pros and Cons` sections present, in that order",
        "sections",
        GOOD.replace("## Summary", "## TEMP")
        .replace("## Pros and Cons", "## Summary")
        .replace("## TEMP", "## Pros and Cons"),
        "sections out of order",
    ),
    (
        'Summary, "Pros and Cons" sections are present in this order',
        "sections",
        GOOD.replace("## Summary", "## TEMP")
        .replace("## Pros and Cons", "## Summary")
        .replace("## TEMP", "## Pros and Cons"),
        "expected Summary, Pros and Cons",
    ),
    ("Summary section present.", "sections", GOOD.replace("## Summary", "## Overview"), "missing section 'Summary'"),
]


@pytest.mark.parametrize("line, name, bad, message", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_wording_variant_compiles_and_checks(project: Project, line, name, bad, message):
    plan, rule = project.rule(line)
    assert rule.name == name
    assert project.check(plan, rule, GOOD) is None
    failure = project.check(plan, rule, bad)
    assert isinstance(failure, Failure)
    assert message in failure.message


@pytest.mark.parametrize(
    "line, name",
    [
        ("Linter passes: `cmd {path}`", "lint"),
        ("linter passes: pymarkdown --config .pymarkdown.json scan {path}", "lint"),
        ("Linter passes : `python -m lint`.", "lint"),
        ("Output registered in `INDEX.md`", "registered"),
        ("Output is registered in out/INDEX.md.", "registered"),
        ('output registered in "out/list of entries.md"', "registered"),
    ],
)
def test_linter_and_registration_wordings(project: Project, line, name):
    _, rule = project.rule(line)
    assert rule.name == name
    assert rule.line == project.plan(line).checklist[0].line


@pytest.mark.parametrize(
    "line",
    [
        "The entry reads well",
        "Front matter is valid YAML",
        "category is one of",
        "category is one of:",
        "Sections present",
        "Linter passes",
        "Output registered",
        "Every table has a blank line before it",
    ],
)
def test_line_matching_no_form_is_an_error_naming_it(project: Project, line):
    plan = project.plan("Front matter includes term", line)
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, BUILTIN_FORMS)
    e = err.value
    assert e.path == plan.path
    assert e.line == plan.checklist[1].line
    text = str(e)
    assert repr(line) in text
    assert "matches no checklist form" in text
    assert "pytest_batchgen_checklist_forms" in text
    for form in BUILTIN_FORMS:  # the message lists every known form
        assert form.example in text


def test_empty_checklist_is_an_error(project: Project):
    plan = project.plan()
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, BUILTIN_FORMS)
    assert err.value.line == plan.checklist_line
    assert "no numbered lines" in str(err.value)


def test_duplicate_rule_names_get_a_suffix_and_registration_runs_last(project: Project):
    _, rules = project.compile(
        "Output registered in `out/INDEX.md`",
        "status is one of: draft, review",
        "status is one of: draft",
        "Summary section present",
    )
    assert [r.name for r in rules] == ["status-value", "status-value-2", "sections", "registered"]


# -- compile-time errors: a rule that refers to something the plan lacks ------------------------


def _rules_line(plan: Plan, start: str) -> int:
    return next(item.line for item in plan.content_rules if item.text.startswith(start))


@pytest.mark.parametrize("count", ["five", "3", "two"])
def test_count_that_disagrees_with_content_rules_names_both_lines(project: Project, count):
    line = f"category is one of the {count} values listed in Content Rules"
    plan = project.plan(line)
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, BUILTIN_FORMS)
    e = err.value
    assert e.line == plan.checklist[0].line
    text = str(e)
    assert f"says {count} values" in text
    assert "lists 4" in text and "Consistency, Concurrency, Scalability, Reliability" in text
    assert f"see also line {_rules_line(plan, 'category must be one of')}" in text


@pytest.mark.parametrize("count", ["4", "four", "Four"])
def test_count_that_agrees_compiles(project: Project, count):
    _, rule = project.rule(f"category is one of the {count} values listed in Content Rules")
    assert rule.name == "category-value"


@pytest.mark.parametrize("tail", [" (pick one)", ";", " (pick exactly one).", "."])
def test_a_remark_after_the_last_content_rules_value_is_not_part_of_it(project: Project, tail):
    # "Concurrency (pick one)" was the allowed value, and every output said 'Concurrency' failed
    rules = (f"- category must be one of: Consistency, Concurrency{tail}",)
    line = "category is one of the values listed in Content Rules"
    text = GOOD.replace("category: Consistency", "category: Concurrency")
    assert project.verdict(line, text, rules=rules) is None


def test_a_value_in_parentheses_without_a_space_stays_a_value(project: Project):
    rules = ("- category must be one of: Consistency, Go (lang)",)
    text = GOOD.replace("category: Consistency", "category: Go (lang)")
    assert project.verdict("category is one of the values listed in Content Rules", text, rules=rules) is None


@pytest.mark.parametrize(
    ("written", "kind"),
    [("1", "a number"), ("yes", "a boolean"), ("2024-01-01", "a date"), ("", "null (empty)")],
    ids=["number", "boolean", "date", "empty"],
)
def test_an_unquoted_value_yaml_reads_as_no_text_is_named_so(project: Project, written, kind):
    # it said "category is a int (1), not a single value", which is false, and gave no fix
    text = GOOD.replace("category: Consistency", f"category: {written}")
    failure = project.verdict("category is one of: 1, yes, 2024-01-01", text)
    assert failure is not None
    assert f"which YAML reads as {kind}" in failure.message and "not a single value" not in failure.message
    assert 'quote the value in the front matter to make it text: category: "..."' in failure.message


def test_listed_in_content_rules_without_such_a_line_is_an_error(project: Project):
    plan = project.plan("tier is one of the values listed in Content Rules")
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, BUILTIN_FORMS)
    e = err.value
    assert e.line == plan.checklist[0].line
    assert "'tier must be one of: A, B, C'" in str(e)
    assert f"see also line {plan.content_rules_line}" in str(e)


def test_a_key_written_differently_in_content_rules_is_an_error_naming_both_lines(project: Project):
    plan = project.plan("Category is one of the four values listed in Content Rules")
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, BUILTIN_FORMS)
    assert err.value.line == plan.checklist[0].line
    rules_line = _rules_line(plan, "category must be one of")
    assert f"'Category' and the Content Rules line {rules_line} names 'category'" in str(err.value)
    assert "write the key the same way in both" in str(err.value)


def test_content_rules_values_may_use_is_and_backticks(project: Project):
    rules = ("- `format` is one of: `Markdown, with tables`, HTML and `plain text`",)
    plan, rule = project.rule("format is one of the 3 values listed in Content Rules", rules=rules)
    assert project.check(plan, rule, with_front_matter("format: 'Markdown, with tables'")) is None
    assert project.check(plan, rule, with_front_matter("format: plain text")) is None
    failure = project.check(plan, rule, with_front_matter("format: Markdown"))
    assert failure is not None and "expected one of: Markdown, with tables, HTML, plain text" in failure.message


@pytest.mark.parametrize(
    "line, message",
    [
        ("category is one of the many values listed in Content Rules", "cannot read the number 'many'"),
        ("Front matter includes term and at least some tags", "cannot read the number 'some'"),
        ("Front matter includes term and at least 2 `my tags`", "must be one word"),
        ("Front matter includes term and at least 2 tags lists", "write 'at least N KEY' last"),
        ("Linter passes: `lint 'unclosed {path}`", "cannot split the linter command"),
        ("Linter passes: ``", "the linter command is empty"),
        ("Output registered in `../INDEX.md`", "lies outside the rootdir"),
        ("Output registered in `/tmp/INDEX.md`", "lies outside the rootdir"),
        ("Output registered in `plans/plan.md`", "cannot be the plan itself"),
    ],
)
def test_lines_that_match_but_cannot_compile(project: Project, line, message):
    plan = project.plan(line)
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, BUILTIN_FORMS)
    assert err.value.line == plan.checklist[0].line
    assert message in str(err.value)


def test_first_bad_line_is_the_one_named(project: Project):
    plan = project.plan("Summary section present", "Tone is friendly", "Also nonsense")
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, BUILTIN_FORMS)
    assert err.value.line == plan.checklist[1].line
    assert "'Tone is friendly'" in str(err.value)


# -- front matter semantics ------------------------------------------------------------------------

FM_LINE = "Front matter includes term, category and at least 2 tags"


@pytest.mark.parametrize(
    "value",
    ["", '""', "''", "'   '", "[]", '["", "  "]', "[null, '']", "{}", "[[], ['']]", "null", "~"],
)
def test_blank_values_do_not_count(project: Project, value):
    text = with_front_matter(f"term: {value}\ncategory: Consistency\ntags: [a, b]")
    failure = project.verdict(FM_LINE, text)
    assert failure is not None
    assert "term is blank" in failure.message
    assert failure.line == 2  # the line of the blank key


@pytest.mark.parametrize("value", ["0", "false", "[x]", "{a: 1}", "'  x '", "2024-01-01"])
def test_non_blank_values_count(project: Project, value):
    text = with_front_matter(f"term: {value}\ncategory: Consistency\ntags: [a, b]")
    assert project.verdict(FM_LINE, text) is None


@pytest.mark.parametrize(
    "tags, message",
    [
        ("[a]", "tags has 1 non-blank item (['a']), expected at least 2"),
        ("[a, '', '  ', null]", "tags has 1 non-blank item"),
        ("[]", "tags has 0 non-blank items"),
        ("['', '']", "tags has 0 non-blank items"),
        ("[[''], a]", "tags has 1 non-blank item"),
        ("a, b", "tags is a str ('a, b'), expected a list of at least 2"),
        ("{a: 1, b: 2}", "tags is a dict"),
    ],
)
def test_list_needs_enough_non_blank_items(project: Project, tags, message):
    text = with_front_matter(f"term: Quorum\ncategory: Consistency\ntags: {tags}")
    failure = project.verdict(FM_LINE, text)
    assert failure is not None
    assert message in failure.message
    assert failure.line == 4


def test_yaml_1_1_words_and_numbers_are_keys_as_written(project: Project):
    text = with_front_matter("term: x\non: push\nyes: always\n1: one")
    assert project.verdict("Front matter includes term, on, yes, and 1", text) is None
    assert project.verdict("on is one of: push, pull", text) is None
    failure = project.verdict("on is one of: pull", text)
    assert failure is not None and failure.message.startswith("on is 'push', expected one of: pull")
    assert failure.line == 3  # 'on: push'
    failure = project.verdict("Front matter includes off", text)
    assert failure is not None and failure.message == "front matter: missing key off"


def test_a_missing_key_present_under_another_case_is_named(project: Project):
    # "missing keys title, category" of an entry that has 'Title:' (a CNCF glossary entry) sent
    # the user looking for a key that is there
    failure = project.verdict("Front matter includes title and category", with_front_matter("Title: Quorum"))
    assert failure is not None
    assert (
        failure.message
        == "front matter: missing keys title, category (keys are case-sensitive: found 'Title' for 'title')"
    )


def test_a_remark_in_parentheses_is_no_front_matter_key(project: Project):
    # "tags (at least 2)" compiled to a key no output has: every row failed "missing key tags (at least 2)"
    plan = project.plan("Front matter includes term, category, tags (at least 2)")
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, BUILTIN_FORMS)
    assert "cannot read 'tags (at least 2)' as a front matter key" in str(err.value)
    assert err.value.line == plan.checklist[0].line
    text = GOOD.replace("term: Quorum", "term: Quorum\n'a (b)': x")
    assert text != GOOD
    assert project.verdict("Front matter includes term and `a (b)`", text) is None


@pytest.mark.parametrize(
    "line, key",
    [
        ("Front matter includes term, category, and 2 or more tags", "2 or more tags"),
        ("Front matter includes term & category", "term & category"),
        ("Front matter includes a title and a date", "a title"),
    ],
)
def test_a_key_with_a_space_not_quoted_is_refused(project: Project, line, key):
    # each compiled to a key no output has: every row failed "missing key 2 or more tags" on its
    # first run, and the line looked right
    plan = project.plan(line)
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, BUILTIN_FORMS)
    assert f"cannot read {key!r} as a front matter key" in str(err.value)
    assert "backticks" in str(err.value) and "'and at least 2 tags'" in str(err.value)
    assert err.value.line == plan.checklist[0].line


def test_a_quoted_key_with_a_space_is_a_key(project: Project):
    text = GOOD.replace("term: Quorum", "term: Quorum\nsee also: x")
    assert text != GOOD
    assert project.verdict("Front matter includes term and `see also`", text) is None
    assert project.verdict('Front matter includes term and "see also"', text) is None
    failure = project.verdict("Front matter includes term and `see also`", GOOD)
    assert failure is not None and failure.message == "front matter: missing key see also"


def test_missing_keys_are_all_named(project: Project):
    failure = project.verdict(FM_LINE, with_front_matter("title: Quorum"))
    assert failure is not None
    assert "missing keys term, category" in failure.message
    assert "missing key tags (expected a list of at least 2)" in failure.message
    assert failure.line == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("## Summary\n\nNo front matter at all.\n", "no YAML front matter"),
        ("---\nterm: [unclosed\n---\n\n## Summary\n", "front matter is not valid YAML"),
        ("---\n- a\n- b\n---\n", "front matter is a YAML list, not a mapping"),
        ("", "the output is empty"),
        ("  \n\n", "the output is empty"),
        (b"---\nterm: \x00\n---\n", "binary"),
        (b"---\nterm: \xff\xfe\n---\n", "not UTF-8"),
    ],
)
def test_unparseable_outputs_fail_with_a_message(project: Project, text, message):
    for line in (FM_LINE, "category is one of the four values listed in Content Rules"):
        failure = project.verdict(line, text)
        assert failure is not None and message in failure.message


def test_a_duplicate_front_matter_key_fails_every_front_matter_rule_naming_both_lines(project: Project):
    text = with_front_matter("term: x\ncategory: Consistency\ntags: [a, b]\ncategory: Nonsense")
    message = (
        "front matter key 'category' appears twice (lines 3 and 5); YAML keeps the last, so the value on "
        "line 3 is lost: keep one"
    )
    for line in (FM_LINE, LISTED, "term is one of: x, y"):  # whichever key the rule reads
        failure = project.verdict(line, text)
        assert failure is not None and failure.message == message and failure.line == 5
    assert project.verdict(SECTIONS_ANY_ORDER.replace(", `Pros and Cons` and Verdict", ""), text) is None


def test_missing_output_fails(project: Project):
    failure = project.verdict(FM_LINE, None)
    assert failure is not None and "does not exist" in failure.message


# -- one-of semantics ------------------------------------------------------------------------------

LISTED = "category is one of the four values listed in Content Rules"


@pytest.mark.parametrize("value", CATEGORIES)
def test_each_listed_value_passes(project: Project, value):
    assert project.verdict(LISTED, GOOD.replace("Consistency", value)) is None


@pytest.mark.parametrize("value, near", [("consistency", "Consistency"), ("RELIABILITY", "Reliability")])
def test_values_are_case_sensitive_with_a_hint(project: Project, value, near):
    failure = project.verdict(LISTED, GOOD.replace("Consistency", value))
    assert failure is not None
    assert f"category is {value!r}" in failure.message
    assert f"values are case-sensitive: did you mean {near!r}?" in failure.message
    assert failure.line == 5  # the category line of GOOD


def test_unknown_value_lists_the_allowed_ones_without_a_hint(project: Project):
    failure = project.verdict(LISTED, GOOD.replace("Consistency", "Consistent"))
    assert failure is not None
    assert failure.message == (
        "category is 'Consistent', expected one of: Consistency, Concurrency, Scalability, Reliability"
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ("[Consistency]", "category is a list (['Consistency']), not a single value"),
        ("42", "category is 42, which YAML reads as a number, not text"),
        ("", "category is None, which YAML reads as null (empty), not text"),
        ("'Consistency '", "category is 'Consistency '"),
    ],
)
def test_value_must_be_exactly_one_string(project: Project, value, message):
    failure = project.verdict(LISTED, GOOD.replace("category: Consistency", f"category: {value}"))
    assert failure is not None and message in failure.message


def test_missing_key_fails_one_of(project: Project):
    failure = project.verdict(LISTED, GOOD.replace("category: Consistency\n", ""))
    assert failure is not None
    assert failure.message.startswith("front matter has no category; expected one of: Consistency")


def test_inline_values_with_commas_in_backticks(project: Project):
    line = 'license is one of: `MIT, with notice`, Apache-2.0 and "BSD, 3 clause"'
    assert project.verdict(line, with_front_matter("license: 'BSD, 3 clause'")) is None
    failure = project.verdict(line, with_front_matter("license: MIT"))
    assert failure is not None
    assert "expected one of: MIT, with notice, Apache-2.0, BSD, 3 clause" in failure.message


# -- sections semantics ----------------------------------------------------------------------------

SECTIONS = "Summary, `Pros and Cons` and Verdict sections present, in that order"
SECTIONS_ANY_ORDER = "Summary, `Pros and Cons` and Verdict sections present"


def body(*headings: str) -> str:
    return "\n".join(f"{h}\n\nText.\n" for h in headings)


def test_level_3_heading_does_not_count_and_is_pointed_at(project: Project):
    text = with_front_matter("term: x", "\n" + body("## Summary", "## Pros and Cons", "### Verdict"))
    failure = project.verdict(SECTIONS, text)
    assert failure is not None
    assert failure.message.startswith("missing section 'Verdict' (level-2 headings found: 'Summary', 'Pros and Cons')")
    # lines: 1-3 front matter, 4 blank, 5 Summary, 9 Pros and Cons, 13 ### Verdict
    assert "### 'Verdict' at line 13 is close but not the same" in failure.message


def test_heading_text_is_exact_but_surrounding_whitespace_is_ignored(project: Project):
    ok = body("##    Summary   ", "## Pros and Cons ##", "##\tVerdict")
    assert project.verdict(SECTIONS, ok) is None
    failure = project.verdict(SECTIONS, body("## summary", "## Pros and Cons", "## Verdict"))
    assert failure is not None
    assert "missing section 'Summary'" in failure.message
    assert "## 'summary' at line 1 is close but not the same" in failure.message


def test_other_sections_may_sit_between(project: Project):
    text = body("## Intro", "## Summary", "## Aside", "## Pros and Cons", "### Detail", "## More", "## Verdict")
    assert project.verdict(SECTIONS, text) is None


def test_order_is_checked_and_the_misplaced_heading_is_pointed_at(project: Project):
    text = body("## Summary", "## Verdict", "## Pros and Cons")
    failure = project.verdict(SECTIONS, text)
    assert failure is not None
    assert failure.message == (
        "sections out of order: found Summary, Verdict, Pros and Cons; expected Summary, Pros and Cons, Verdict"
    )
    assert failure.line == 5  # '## Verdict': the first wanted heading found before the one it should follow
    assert project.verdict(SECTIONS_ANY_ORDER, text) is None


def test_a_heading_counts_as_the_text_it_renders_as(project: Project):
    marked = body("## **Summary**", "## `Pros and Cons`", "## Verdict &amp; Score")
    assert (
        project.verdict("Summary, `Pros and Cons` and `Verdict & Score` sections present, in that order", marked)
        is None
    )
    assert project.verdict("Pros & Cons section present", body("## Pros \\& Cons")) is None
    out_of_order = body("## [Verdict](#v)", "## _Summary_", "## Pros and Cons")
    failure = project.verdict(SECTIONS, out_of_order)
    assert failure is not None and failure.line == 1  # '## [Verdict](#v)', found before the two it follows
    assert failure.message.startswith("sections out of order: found Verdict, Summary")


@pytest.mark.parametrize(
    "heading",
    ["## Related  Terms", "## Related\tTerms", "## Related&nbsp;Terms", "Related\nTerms\n---", "## Related Terms"],
    ids=["two-spaces", "a-tab", "a-no-break-space", "a-setext-heading-of-two-lines", "as-written"],
)
def test_a_heading_that_renders_as_the_section_name_is_that_section(project: Project, heading: str):
    # each rendered as "Related Terms" and was reported missing (an outside probe)
    assert project.verdict("Related Terms section present", body(heading)) is None


def test_a_heading_in_composed_or_decomposed_characters_is_the_same_section(project: Project):
    assert project.verdict("Café section present", body("## Cafe\u0301")) is None


def test_a_heading_with_typographic_quotes_is_named_close_but_not_the_same(project: Project):
    failure = project.verdict("What's new section present", body("## What\u2019s new"))
    assert failure is not None and "is close but not the same" in failure.message


def test_a_missing_section_lists_rendered_headings_and_shows_the_source_of_a_near_one(project: Project):
    failure = project.verdict(SECTIONS, body("## **summary**", "## Pros *and* Cons", "## Verdict"))
    assert failure is not None
    assert failure.message.startswith("missing section 'Summary' (level-2 headings found: 'summary', 'Pros and Cons'")
    assert "## 'summary' (written '**summary**') at line 1 is close but not the same" in failure.message


def test_only_real_headings_count(project: Project):
    fenced = "```markdown\n## Summary\n```\n\n" + body("## Pros and Cons", "## Verdict")
    failure = project.verdict(SECTIONS, fenced)
    assert failure is not None and "missing section 'Summary'" in failure.message
    in_front_matter = "---\nterm: x\n## Summary\n---\n\n" + body("## Pros and Cons", "## Verdict")
    failure = project.verdict(SECTIONS, in_front_matter)
    assert failure is not None and "missing section 'Summary'" in failure.message
    setext = "Summary\n-------\n\n" + body("## Pros and Cons", "## Verdict")
    assert project.verdict(SECTIONS, setext) is None


NESTED_SUMMARY = [
    ("> ## Summary", "a blockquote"),
    ("- ## Summary", "a list item"),
    ("1. ## Summary", "a list item"),
    ("- Intro.\n\n  ## Summary", "a list item"),  # in the body of a list item
    ("> - ## Summary", "a blockquote"),  # the outermost container is named
    ("- > ## Summary", "a list item"),
]


@pytest.mark.parametrize("nested, container", NESTED_SUMMARY)
def test_a_heading_inside_a_blockquote_or_a_list_item_is_no_section(project: Project, nested, container):
    # '> ## Summary' and '- ## Summary' satisfied the rule: a renderer shows them inside a quote
    # or a list, not as a section of the document
    text = nested + "\n\n" + body("## Pros and Cons", "## Verdict")
    failure = project.verdict(SECTIONS, text)
    assert failure is not None
    assert failure.message.startswith(
        "missing section 'Summary' (level-2 headings found: 'Pros and Cons', 'Verdict'); "
        f"'Summary' is a heading inside {container} at line {nested.count(chr(10)) + 1}, not a section"
    )
    assert project.verdict(SECTIONS_ANY_ORDER, text) is not None
    assert project.verdict(SECTIONS, "## Summary\n\n" + text) is None  # beside a section of its own, it passes


def test_a_nested_heading_does_not_count_for_the_order_either(project: Project):
    # the quoted 'Verdict' came first, and the sections were reported out of order
    text = "> ## Verdict\n\n" + body("## Summary", "## Pros and Cons", "## Verdict")
    assert project.verdict(SECTIONS, text) is None


def test_a_nested_heading_close_to_a_missing_section_is_named_with_its_container(project: Project):
    failure = project.verdict(SECTIONS, "> ## **summary**\n\n" + body("## Pros and Cons", "## Verdict"))
    assert failure is not None
    assert (
        "## 'summary' (written '**summary**') at line 1, inside a blockquote, is close but not the same"
        in failure.message
    )


def test_sections_do_not_need_front_matter_but_need_text(project: Project):
    assert project.verdict(SECTIONS, body("## Summary", "## Pros and Cons", "## Verdict")) is None
    failure = project.verdict(SECTIONS, b"\x00## Summary")
    assert failure is not None and "binary" in failure.message


# -- Linter passes: `COMMAND` ----------------------------------------------------------------------

ARGV_SCRIPT = """\
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}))
sys.exit(int(os.environ.get("FAKE_LINT_EXIT", "1")))
"""


@pytest.fixture
def argv_linter(project: Project) -> str:
    (project.root / "argv.py").write_text(ARGV_SCRIPT, encoding="utf-8")
    return f"{PY} argv.py"


def _reported(failure: Failure) -> dict:
    import json

    assert failure.detail is not None
    return json.loads(failure.detail.splitlines()[0])


def test_linter_exit_zero_passes(project: Project, argv_linter, monkeypatch):
    monkeypatch.setenv("FAKE_LINT_EXIT", "0")
    assert project.verdict(f"Linter passes: `{argv_linter} {{path}}`", GOOD) is None


def test_linter_path_is_replaced_in_place_and_runs_from_the_rootdir(project: Project, argv_linter):
    failure = project.verdict(f"Linter passes: `{argv_linter} --file={{path}} --strict`", GOOD)
    assert failure is not None
    assert failure.message.startswith("linter exited 1: ")
    seen = _reported(failure)
    assert seen["argv"] == ["--file=out/entry.md", "--strict"]
    assert Path(seen["cwd"]).resolve() == project.root.resolve()


def test_linter_path_is_appended_when_absent(project: Project, argv_linter):
    failure = project.verdict(f"Linter passes: `{argv_linter} --strict`", GOOD)
    assert failure is not None
    assert _reported(failure)["argv"] == ["--strict", "out/entry.md"]


def test_linter_runs_without_a_shell(project: Project, argv_linter):
    line = f"Linter passes: `{argv_linter} $HOME ';' '*' > created.txt {{path}}`"
    failure = project.verdict(line, GOOD)
    assert failure is not None
    assert _reported(failure)["argv"] == ["$HOME", ";", "*", ">", "created.txt", "out/entry.md"]
    assert not (project.root / "created.txt").exists()


def test_linter_failure_carries_its_output_and_line(project: Project):
    (project.root / "bad.py").write_text(
        "import sys\n"
        "print(sys.argv[1] + ':3: MD022: headings need blank lines')\n"
        "print('more on stderr', file=sys.stderr)\n"
        "sys.stdout.flush(); sys.stdout.buffer.write(b'\\xff\\n')\n"
        "sys.exit(3)\n",
        encoding="utf-8",
    )
    failure = project.verdict(f"Linter passes: `{PY} bad.py`", GOOD)
    assert failure is not None
    assert failure.message.startswith("linter exited 3: ")
    assert failure.message.endswith("bad.py out/entry.md")
    assert failure.line == 3
    assert "out/entry.md:3: MD022: headings need blank lines" in failure.detail
    assert "more on stderr" in failure.detail
    assert "\ufffd" in failure.detail  # undecodable output is shown, not a crash


def test_hanging_linter_is_killed_at_the_time_limit(project: Project):
    pidfile = project.root / "hang.pid"
    (project.root / "hang.py").write_text(
        "import os, sys, time\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "print('started', flush=True)\n"
        "time.sleep(120)\n",
        encoding="utf-8",
    )
    start = time.monotonic()
    failure = project.verdict(f"Linter passes: `{PY} hang.py {{path}}`", GOOD, options={"linter_timeout": 0.5})
    elapsed = time.monotonic() - start
    assert failure is not None
    assert failure.message.startswith("linter timed out after 0.5s and was killed: ")
    assert failure.detail == "started"
    assert elapsed < 10
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)


def test_missing_linter_command_fails_clearly(project: Project):
    failure = project.verdict("Linter passes: `no-such-linter-batchgen-xyz {path}`", GOOD)
    assert failure is not None
    assert failure.message.startswith("linter command not found: 'no-such-linter-batchgen-xyz'")


# -- Output registered in `PATH` -------------------------------------------------------------------

REGISTERED = "Output registered in `out/INDEX.md`"


def test_registration_is_idempotent(tmp_path: Path):
    tracking, output = tmp_path / "INDEX.md", tmp_path / "entry.md"
    output.write_text("x")
    assert register(tracking, output, "Entry") is True
    assert register(tracking, output, "Entry again") is False
    assert tracking.read_text() == "- [Entry](entry.md)\n"
    assert is_registered(tracking, output)


def test_registration_keeps_existing_content_and_adds_a_newline(tmp_path: Path):
    tracking, output = tmp_path / "INDEX.md", tmp_path / "b.md"
    tracking.write_text("# Index\n\n- [A](a.md)")  # no final newline
    register(tracking, output, "B")
    assert tracking.read_text() == "# Index\n\n- [A](a.md)\n- [B](b.md)\n"


def test_link_counts_relative_to_the_tracking_files_folder(tmp_path: Path):
    output = tmp_path / "out" / "entry.md"
    output.parent.mkdir()
    output.write_text("x")
    tracking = tmp_path / "docs" / "INDEX.md"
    tracking.parent.mkdir()
    register(tracking, output, "Entry")
    assert tracking.read_text() == "- [Entry](../out/entry.md)\n"
    for text in [
        "- [e](../out/entry.md)",
        "- [e](./../out/sub/../entry.md)",
        "- [e](<../out/entry.md>)",
        "- [e](../out/entry.md#summary)",
        "See [the entry][1].\n\n[1]: ../out/entry.md",
        "- [e](../out/entry%2Emd)",
    ]:
        tracking.write_text(text)
        assert is_registered(tracking, output), text
    for text in [
        "- [e](out/entry.md)",  # relative to the rootdir, not to the tracking file
        "- [e](https://example.com/out/entry.md)",
        "- `[e](../out/entry.md)`",
        "```\n[e](../out/entry.md)\n```",
        "- [e](../out/entry.mdx)",
        "- ../out/entry.md",
    ]:
        tracking.write_text(text)
        assert not is_registered(tracking, output), text


@pytest.mark.parametrize(
    "filename, title",
    [
        ("a b (1).md", "A [b]"),
        ("c#-guide.md", "C#"),
        ("what?.md", "What?"),
        ("50%20off.md", "Fifty"),
        ("note:1.md", "Note"),
        ("r&d;amp.md", "R&D"),
        ("ünï.md", "Ünï"),
        ("sub/deep.md", "Deep"),
        ("back.md", "C:\\"),
        ("tick.md", "`]` and <b>"),
    ],
)
def test_registration_round_trips_awkward_names(tmp_path: Path, filename, title):
    output = tmp_path / filename
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("x")
    tracking = tmp_path / "INDEX.md"
    assert register(tracking, output, title) is True
    assert is_registered(tracking, output)
    assert register(tracking, output, title) is False  # found again: not added twice
    assert len(tracking.read_text().splitlines()) == 1


def test_registration_is_atomic(tmp_path: Path, monkeypatch):
    tracking, output = tmp_path / "INDEX.md", tmp_path / "b.md"
    tracking.write_text("- [A](a.md)\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        register(tracking, output, "B")
    monkeypatch.undo()
    assert tracking.read_text() == "- [A](a.md)\n"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".batchgen-lock")) == [
        "INDEX.md"
    ]  # no temporary file left


def test_concurrent_registrations_lose_nothing_and_add_nothing_twice(tmp_path: Path):
    tracking = tmp_path / "INDEX.md"
    outputs = [tmp_path / f"e{i}.md" for i in range(16)]
    barrier = threading.Barrier(len(outputs))
    errors: list[BaseException] = []

    def work(out: Path) -> None:
        try:
            barrier.wait()
            register(tracking, out, out.stem)
            register(tracking, out, out.stem)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(o,)) for o in outputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    lines = tracking.read_text().splitlines()
    assert sorted(lines) == sorted(f"- [{o.stem}]({o.name})" for o in outputs)


def test_registered_rule_registers_a_passing_output(project: Project):
    plan, rule = project.rule(REGISTERED)
    assert project.check(plan, rule, GOOD) is None
    assert (project.root / "out" / "INDEX.md").read_text() == "- [Quorum](entry.md)\n"
    assert project.check(plan, rule, GOOD) is None  # again: no second line
    assert (project.root / "out" / "INDEX.md").read_text() == "- [Quorum](entry.md)\n"


def test_registered_rule_waits_for_the_other_checks(project: Project):
    plan, rule = project.rule(REGISTERED)
    failure = project.check(plan, rule, GOOD, others_pass=False)
    assert failure is not None
    assert failure.message == "not registered in out/INDEX.md: the output is registered once its other checks pass"
    assert not (project.root / "out" / "INDEX.md").exists()


def test_registered_rule_in_readonly_mode_writes_nothing(project: Project):
    plan, rule = project.rule(REGISTERED)
    failure = project.check(plan, rule, GOOD, readonly=True)
    assert failure is not None
    assert failure.message == "out/INDEX.md has no Markdown link to out/entry.md"
    assert not (project.root / "out" / "INDEX.md").exists()
    (project.root / "out" / "INDEX.md").write_text("* [by hand](./entry.md)\n")
    assert project.check(plan, rule, GOOD, readonly=True) is None


def test_registered_rule_never_registers_a_missing_output(project: Project):
    plan, rule = project.rule(REGISTERED)
    failure = project.check(plan, rule, None)
    assert failure is not None
    # its other checks fail ("the output file does not exist"): a link is not the fix
    assert failure.message == "not registered in out/INDEX.md: the output is registered once its other checks pass"
    assert not (project.root / "out" / "INDEX.md").exists()


def test_existing_link_from_another_folder_counts(project: Project):
    plan, rule = project.rule("Output registered in `docs/INDEX.md`")
    (project.root / "docs").mkdir()
    (project.root / "docs" / "INDEX.md").write_text("- [Q](../out/entry.md)\n")
    assert project.check(plan, rule, GOOD) is None
    # the entry (a list item that is one link) takes the row's title; its destination stays
    assert (project.root / "docs" / "INDEX.md").read_text() == "- [Quorum](../out/entry.md)\n"


def test_a_link_in_prose_counts_and_is_never_edited(project: Project):
    plan, rule = project.rule("Output registered in `docs/INDEX.md`")
    (project.root / "docs").mkdir()
    (project.root / "docs" / "INDEX.md").write_text("See [Q](../out/entry.md) for quorums.\n")
    assert project.check(plan, rule, GOOD) is None
    assert (project.root / "docs" / "INDEX.md").read_text() == "See [Q](../out/entry.md) for quorums.\n"


def test_a_listed_output_that_fails_its_other_checks_fails_registration_saying_so(project: Project):
    plan, rule = project.rule("Output registered in `docs/INDEX.md`")
    (project.root / "docs").mkdir()
    (project.root / "docs" / "INDEX.md").write_text("- [Quorum](../out/entry.md)\n")
    failure = project.check(plan, rule, "no front matter here\n", others_pass=False)
    assert failure is not None
    assert failure.message == (
        "docs/INDEX.md lists out/entry.md, which fails its other checks: fix the output, or remove its entry"
    )
    assert (project.root / "docs" / "INDEX.md").read_text() == "- [Quorum](../out/entry.md)\n"  # not removed


# -- users' forms ----------------------------------------------------------------------------------


def _raising_builder(match, ctx):
    return int("not a number")


@pytest.mark.parametrize(
    ("form", "says"),
    [
        (ChecklistForm(name="words", pattern=r"at most (\d+ words", check=lambda c: None), "not a regular expression"),
        (ChecklistForm(name="words", pattern=r"at most \w+ words", build=_raising_builder), "failed to build a check"),
        (ChecklistForm(name="words", pattern=r"at most \w+ words", build=lambda m, c: 42), "built int 42, not a check"),
        # a TypeError from re.compile or str.strip: INTERNALERROR tracebacks before
        (ChecklistForm(name="words", pattern=None, check=lambda c: None), "pattern None, not a text"),  # type: ignore[arg-type]
        (ChecklistForm(name=("words",), pattern=r".*", check=lambda c: None), "name ('words',), not a text"),  # type: ignore[arg-type]
    ],
    ids=["bad-regex", "builder-raises", "builder-returns-no-function", "pattern-none", "name-not-text"],
)
def test_a_broken_user_form_is_an_error_naming_the_form_and_the_line(project: Project, form, says):
    # these were INTERNALERROR tracebacks, or a TypeError in every row's item
    plan = project.plan("At most many words", "Summary section present")
    with pytest.raises(ChecklistError) as info:
        compile_checklist(plan, [form, *BUILTIN_FORMS])
    assert says in info.value.message and "'words'" in info.value.message
    if form.build is not None:  # the builder failed on the line it was building a check for
        assert (info.value.path, info.value.line) == (plan.path, plan.checklist[0].line)
    else:  # the form itself is wrong, whatever the line: at the line that made it (above, in this file)
        assert info.value.path == Path(__file__)


def test_a_form_whose_pattern_is_no_regex_is_an_error_at_the_line_that_made_it(project: Project):
    # it was an error at the first checklist line compiled, which the form was never meant for
    plan = project.plan("Summary section present", "No TODO left")
    line = sys._getframe().f_lineno + 1
    form = ChecklistForm(name="no-todo", pattern=r"no TODO (left", check=lambda c: None)

    with pytest.raises(ChecklistError) as info:
        compile_checklist(plan, [form, *BUILTIN_FORMS])

    assert (info.value.path, info.value.line) == (Path(__file__), line)


def test_a_hook_returning_one_form_is_taken_and_one_returning_something_else_is_named():
    form = ChecklistForm(name="x", pattern="x", check=lambda c: None)
    assert collect_forms([form, [form], None]) == [form, form]
    with pytest.raises(ChecklistError, match="returned str 'x'; it must return a list of"):
        collect_forms([["x"]])
    # what is not a list of forms is named whole: a TypeError (an INTERNALERROR) before, and a
    # text was named by its first character
    with pytest.raises(ChecklistError, match="returned int 42; it must return a list of"):
        collect_forms([42])
    with pytest.raises(ChecklistError, match="returned str 'no-todo'; it must return a list of"):
        collect_forms(["no-todo"])


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("too long", "too long"),
        (False, "the check returned False: it fails the output; return None to pass"),
        (42, "the check returned 42: it fails the output"),
        ("  ", "the check returned '  ': it fails the output"),
        # a Failure whose message is no text crashed the end of the run (its note), or, in a
        # generating run, with an INTERNALERROR; a line that is no line reached the annotations
        (Failure(404), "the check returned Failure(message=404"),  # type: ignore[arg-type]
        (Failure(""), "the check returned Failure(message=''"),
        (Failure("bad", line=-3), "bad (the check gave line=-3, not a line of the output)"),
        (Failure("bad", line=2.5), "bad (the check gave line=2.5, not a line of the output)"),  # type: ignore[arg-type]
        (Failure("bad", line=True), "bad (the check gave line=True"),
        ("x" * 200_000, "x" * 2000 + "… (198,000 more characters)"),
    ],
)
def test_what_a_users_check_returns_reads_as_a_failure(project: Project, returned, message):
    form = ChecklistForm(name="odd", pattern=r"odd check", check=lambda c: returned)
    plan = project.plan("Odd check")
    (rule,) = compile_checklist(plan, [form])
    project.write(GOOD)
    row = plan.row("entry.md")
    failure = rule.run(CheckContext(doc=load_document(plan.output_path(row)), row=row, plan=plan))
    assert failure is not None and failure.message.startswith(message)
    assert isinstance(failure.message, str) and len(failure.message) < 2100
    assert failure.line is None or (type(failure.line) is int and failure.line >= 1)


@pytest.mark.parametrize(("name", "id"), [("{k.x}", "k.x"), ("{k!z}", "k-z"), ("{oops", "oops"), ("{0}", "0")])
def test_a_form_name_that_is_no_template_is_its_name(project: Project, name, id):
    # str.format raised AttributeError or ValueError out of collection: an INTERNALERROR
    form = ChecklistForm(name=name, pattern=r"odd (?P<k>check)", check=lambda c: None)
    (rule,) = compile_checklist(project.plan("Odd check"), [form])
    assert rule.name == id


@pytest.mark.parametrize("name", ["generate", "fresh"])
def test_a_form_named_as_a_rows_own_item_gets_another_name(project: Project, name):
    # its rule made a second plan.md::row.md::generate item, and failures of the two read as one
    form = ChecklistForm(name=name, pattern=r"odd check", check=lambda c: None)
    (rule,) = compile_checklist(project.plan("Odd check"), [form])
    assert rule.name == f"{name}-2"


def test_user_form_compiles_lines_and_may_shadow_a_builtin(project: Project):
    calls = []

    def no_todo(ctx: CheckContext):
        calls.append(ctx.path)
        text = ctx.path.read_text(encoding="utf-8")
        if "TODO" in text:
            return Failure("the output still contains TODO", text[: text.index("TODO")].count("\n") + 1)
        return None

    todo = ChecklistForm(name="no-todo", pattern=r"no todo (?:markers )?left", check=no_todo, example="No TODO left")
    my_lint = ChecklistForm(name="{tool}-clean", pattern=r"linter passes: `?(?P<tool>\w+).*", check=lambda c: True)
    forms = collect_forms([[todo, my_lint], None, list(BUILTIN_FORMS)])
    plan = project.plan("No TODO markers left", "Linter passes: `vale {path}`", "Summary section present")
    rules = compile_checklist(plan, forms)
    assert [r.name for r in rules] == ["no-todo", "vale-clean", "sections"]
    project.write(GOOD + "\nTODO: finish\n")
    row = plan.row("entry.md")
    ctx = CheckContext(doc=load_document(plan.output_path(row)), row=row, plan=plan)
    failure = rules[0].run(ctx)
    assert failure == Failure("the output still contains TODO", 17)
    assert rules[1].run(ctx) is None  # the user's form won: no 'vale' process was started
    assert calls == [plan.output_path(row)]


def test_user_builder_errors_name_the_line(project: Project):
    def build(m, ctx):
        raise ctx.error("unknown style guide", ctx.plan.content_rules_line)

    form = ChecklistForm(name="style", pattern=r"follows the (?P<guide>\w+) style guide", build=build)
    plan = project.plan("Summary section present", "Follows the Acme style guide")
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, [form, *BUILTIN_FORMS])
    assert err.value.line == plan.checklist[1].line
    assert f"unknown style guide (see also line {plan.content_rules_line})" in str(err.value)


@pytest.mark.parametrize(
    "result, expected",
    [(None, None), (True, None), ("bad", Failure("bad")), (Failure("x", 3), Failure("x", 3))],
)
def test_check_results_normalise_to_failures(project: Project, result, expected):
    form = ChecklistForm(name="any", pattern=r"anything", check=lambda c: result)
    plan = project.plan("Anything")
    rule = compile_checklist(plan, [form])[0]
    project.write(GOOD)
    row = plan.row("entry.md")
    assert rule.run(CheckContext(doc=load_document(plan.output_path(row)), row=row, plan=plan)) == expected


# -- list and number helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, items",
    [
        ("A, B, and C", ["A", "B", "C"]),
        ("A, B and C", ["A", "B", "C"]),
        ("A and B", ["A", "B"]),
        ("A & B", ["A & B"]),  # "&" belongs to the name: "Pros & Cons" is one heading
        ("Pros & Cons, and Q & A", ["Pros & Cons", "Q & A"]),
        ("`Pros and Cons`, Summary", ["Pros and Cons", "Summary"]),
        ("\"Q, R\" and 'S and T'", ["Q, R", "S and T"]),
        ("Android, Sandbox", ["Android", "Sandbox"]),
        # an apostrophe inside a word is text, not a quote mark
        ("What's new and Who's affected", ["What's new", "Who's affected"]),
        ("won't fix, can't reproduce", ["won't fix", "can't reproduce"]),
        ("'won't fix' and later", ["won't fix", "later"]),
        ("single", ["single"]),
    ],
)
def test_split_list(text, items):
    assert split_list(text) == items


@pytest.mark.parametrize(
    "text, items",
    [
        ("A, B, or C", ["A", "B", "C"]),
        ("A, B or C", ["A", "B", "C"]),
        ("draft or final", ["draft", "final"]),
        ("`read or write`, or none", ["read or write", "none"]),
        ("Oregon, Origin", ["Oregon", "Origin"]),
    ],
)
def test_value_lists_split_on_or_too(text, items):
    assert split_list(text, alternatives=True) == items
    assert "Read or Write" in split_list("Read or Write, Summary")  # names of sections keep their "or"


def test_is_one_of_with_a_final_or(project: Project):
    out = with_front_matter("category: C")
    assert project.verdict("category is one of: A, B, or C", out) is None
    failure = project.verdict("category is one of: A, B, or D", out)
    assert failure is not None and failure.message.endswith("expected one of: A, B, D")


def test_apostrophes_in_section_names_and_values(project: Project):
    out = with_front_matter("status: won't fix", "\n## What's new\n\nx\n\n## Who's affected\n\ny\n")
    assert project.verdict("What's new and Who's affected sections present", out) is None
    assert project.verdict("status is one of: won't fix, can't reproduce", out) is None
    failure = project.verdict("status is one of: can't reproduce, duplicate", out)
    assert failure is not None and "expected one of: can't reproduce, duplicate" in failure.message


def test_ampersand_is_part_of_a_section_name(project: Project):
    out = body("## Definition", "## Pros & Cons", "## Q & A")
    assert project.verdict("Pros & Cons section present", out) is None
    assert project.verdict("Definition, Pros & Cons and Q & A sections present, in that order", out) is None
    failure = project.verdict("Pros & Cons section present", body("## Pros", "## Cons"))
    assert failure is not None and "missing section 'Pros & Cons'" in failure.message


def test_huge_values_and_heading_lists_are_bounded_in_messages(project: Project):
    failure = project.verdict("category is one of: A, B", with_front_matter("category: " + "x" * 60_000))
    assert failure is not None and "category is 'xxx" in failure.message
    assert len(failure.message) < 300
    many = "".join(f"## H{i}\n" for i in range(9000))
    failure = project.verdict("Definition section present", many)
    assert failure is not None
    assert "'H0', 'H1'" in failure.message and "'H9', … and 8,990 more" in failure.message
    assert "'H10'" not in failure.message and len(failure.message) < 400
    failure = project.verdict("Definition section present", body("## " + "y" * 5000, "## Other"))
    assert failure is not None and len(failure.message) < 300 and "'Other'" in failure.message


@pytest.mark.parametrize("line", ["Front matter includes title", "category is one of: A, B"])
def test_invalid_yaml_fails_at_the_line_its_message_names(project: Project, line):
    out = "---\ntitle: A\ncategory: [A\ntags: [a, b]\n---\n\n## Definition\n"
    failure = project.verdict(line, out)
    assert failure is not None and "not valid YAML at line 4" in failure.message
    assert failure.line == 4


@pytest.mark.parametrize("word, n", [("4", 4), ("four", 4), ("Twelve", 12), ("zero", 0), ("many", None), ("4.5", None)])
def test_parse_count(word, n):
    assert parse_count(word) == n
