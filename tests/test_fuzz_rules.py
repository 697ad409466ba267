"""Property tests (issue #3, PRODUCT.md section 10): no output can crash a run.

``parse_bytes`` and every built-in rule's check, fed arbitrary bytes and text built from front
matter fragments, YAML junk, NUL bytes, broken UTF-8 and sizes around the limit, return a
document / ``None`` / a :class:`Failure` and never raise.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from timing import time_ratio

from pytest_batchgen import CheckContext, Failure
from pytest_batchgen.checklist import compile_checklist
from pytest_batchgen.document import OutputDocument, parse_bytes
from pytest_batchgen.plan import load_plan
from pytest_batchgen.rules import BUILTIN_FORMS

FRAGMENTS = [
    "---",
    "--- ",
    "----",
    "...",
    "---\n---",
    "",
    " ",
    "term: Quorum",
    "term:",
    "term: ''",
    "term: [",
    "term: {a: [b, c]}",
    "term: !!binary aGk=",
    "category: Consistency",
    "category: consistency",
    "category: [Consistency]",
    "category: 3",
    "status: draft",
    "status: Draft",
    "tags: [a, b]",
    "tags: [a, '']",
    "tags: ['', '']",
    "tags: a, b",
    "tags: [[[[[]]]]]",
    "tags: &a [*a]",
    "tags: *missing",
    "x: &x {y: *x}",
    "? [a, b]\n: c",
    "a: 2020-13-45",
    "b: !!bool maybe",
    "c: !!timestamp nope",
    "d: !!python/object:os.system ls",
    "%YAML 1.2",
    "%TAG ! tag:x,2000:",
    "--- !!map",
    "- item",
    "  - nested",
    "\t- tab",
    "{",
    "}",
    "[",
    "]",
    "'",
    '"',
    ": :",
    "&anchor",
    "*alias",
    "|",
    ">",
    "# comment",
    "## Summary",
    "## Pros and Cons",
    "##   Summary  ",
    "### Summary",
    "## summary",
    "Summary\n-------",
    "```",
    "~~~",
    "| a | b |",
    "|---|---|",
    "> ## Quote",
    "<!-- ## hidden -->",
    "* * *",
    "\x00",
    "\ufeff",
    "\r",
    "\r\n",
    "\u2028",
    "\u2029",
    "\x85",
    "term: a\x85b",
    "term: 'a\u2028b'",
    "<<: {term: Quorum}",
    "  term: nested",
    "- ## Summary",
    "  ## Pros and Cons",
    "\ud800",
]

lines = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=24))
texts = st.lists(lines, max_size=40).map("\n".join)
as_bytes = texts.map(lambda s: s.encode("utf-8", "surrogatepass"))
datas = st.one_of(
    as_bytes,
    as_bytes.map(lambda b: b"---\n" + b + b"\n---\n\n## Summary\n"),
    st.binary(max_size=400),
    st.tuples(as_bytes, st.binary(max_size=8)).map(lambda t: t[0] + t[1]),
)

CHECKLIST = [
    "Front matter includes term, category and at least 2 tags",
    "Front matter includes at least 1 tags",
    "Front matter includes term",
    "category is one of the four values listed in Content Rules",
    "status is one of: draft, review, published",
    "Summary and `Pros and Cons` sections present, in that order",
    "`Pros and Cons` section present",
    "Output registered in `out/INDEX.md`",
]

LINT_SCRIPT = """\
import sys
data = open(sys.argv[1], 'rb').read()
if b'\\t' in data:
    print(sys.argv[1] + ':1: tab'); sys.exit(1)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "out").mkdir()
    (root / "out" / "ref.md").write_text("---\nterm: Ref\n---\n\n## Summary\n")
    (root / "lint.py").write_text(LINT_SCRIPT)
    checklist = CHECKLIST + [f"Linter passes: `{shlex.quote(sys.executable)} lint.py {{path}}`"]
    plan_text = (
        "# Fuzz\n\n## Format Reference\nout/ref.md\n\n## Output Directory\nout/\n\n"
        "## Content Rules\n- category must be one of: Consistency, Concurrency, Scalability, Reliability\n\n"
        "## Validation Checklist\n" + "\n".join(f"{i}. {c}" for i, c in enumerate(checklist, 1)) + "\n\n"
        "## Phase 1\n| Title | Filename | Model | Status |\n|---|---|---|---|\n"
        "| Ref | ref.md | haiku | complete |\n| Entry | entry.md | haiku | pending |\n"
    )
    (root / "plan.md").write_text(plan_text)
    plan = load_plan(root / "plan.md", root)
    rules = compile_checklist(plan, BUILTIN_FORMS, {"linter_timeout": 10})
    assert len(rules) == len(checklist)
    return plan, rules


def _run_all(plan, rules, data: bytes, *, lint: bool, readonly: bool, others: bool) -> list:
    path = plan.output_dir / "entry.md"
    path.write_bytes(data)
    doc = parse_bytes(path, data)
    row = plan.row("entry.md")
    ctx = CheckContext(doc=doc, row=row, plan=plan, readonly=readonly, others_pass=lambda: others)
    results = []
    for rule in rules:
        if (rule.name == "lint") != lint:
            continue
        result = rule.check(ctx)
        assert result is None or isinstance(result, Failure), (rule.name, result)
        if isinstance(result, Failure):
            assert isinstance(result.message, str) and result.message
            assert result.line is None or (isinstance(result.line, int) and result.line >= 1)
        results.append(result)
    return results


@settings(max_examples=400, deadline=None)
@given(data=datas, limit=st.integers(min_value=0, max_value=600))
@example(data=b"---\n" + b"tags: " + b"[" * 900 + b"]" * 900 + b"\n---\n", limit=10_000)
@example(data=b"\x00", limit=10)
@example(data="---\na: '\x85\x85\x85\x85'\nc: d: e\n---\n".encode(), limit=100)  # YAML's lines ran ahead
def test_parse_bytes_never_raises(data: bytes, limit: int):
    doc = parse_bytes(Path("entry.md"), data, max_bytes=limit)
    file_lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
    assert 1 <= doc.front_matter_error_line <= file_lines  # a line of the file, as an editor counts
    assert isinstance(doc, OutputDocument)
    if len(data) > limit:
        assert doc.error is not None and "limit" in doc.error
    elif b"\x00" in data:
        assert doc.error is not None and "binary" in doc.error
    if doc.error is None:
        assert all(h.line >= 1 and 1 <= h.level <= 6 for h in doc.headings)
        assert all(line >= 2 for line in doc.key_lines.values())
        assert all(isinstance(k, str) for k in doc.metadata)
    else:
        assert doc.metadata == {} and doc.headings == ()


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=-3, max_value=3), fill=st.sampled_from([b"a", b"#", b"[", b"-", b" "]))
def test_input_near_the_size_limit(size: int, fill: bytes):
    limit = 4096
    data = b"---\nterm: x\n---\n" + fill * (limit - 16 + size)
    doc = parse_bytes(Path("entry.md"), data, max_bytes=limit)
    assert (doc.error is not None) == (len(data) > limit)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=datas, readonly=st.booleans(), others=st.booleans())
@example(data=b"---\ntag: x\n---\n## Pros and Cons\n## Summary\n", readonly=False, others=True)
@example(data=b"\xff\xfe\x00junk", readonly=False, others=True)
def test_every_builtin_rule_returns_none_or_a_failure(project, data: bytes, readonly: bool, others: bool):
    plan, rules = project
    _run_all(plan, rules, data, lint=False, readonly=readonly, others=others)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=datas)
def test_linter_rule_returns_none_or_a_failure(project, data: bytes):
    plan, rules = project
    (result,) = _run_all(plan, rules, data, lint=True, readonly=True, others=True)
    assert (result is None) == (b"\t" not in data)


def _billion_laughs(levels: int = 9) -> bytes:
    lines = ["---", "term: x", 'a0: &a0 ["", "", "", "", "", "", "", "", ""]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines += [f"tags: *a{levels - 1}", f"category: *a{levels - 1}", "---", ""]
    return "\n".join(lines).encode()


@pytest.mark.parametrize(
    "data, message",
    [
        # (nested past the depth limit: refused before loading, see MAX_FRONT_MATTER_DEPTH)
        (b"---\nterm: x\ntags: " + b"[" * 950 + b"]" * 950 + b"\n---\n", "nests more than 200 levels deep"),
        (b"---\nterm: x\ntags: &a [*a]\ncategory: &c [*c]\n---\n", "tags has 0 non-blank items"),
        (_billion_laughs(), "tags has 0 non-blank items"),
        (
            b"---\nterm: " + b"[" * 950 + b"''" + b"]" * 950 + b"\ntags: [a, b]\n---\n",
            "nests more than 200 levels deep",
        ),
        (b"---\nterm: " + b"[" * 150 + b"''" + b"]" * 150 + b"\ntags: [a, b]\n---\n", "term is blank"),
    ],
    ids=["deeply-nested", "self-referential", "billion-laughs", "deep-blank-key", "nested-blank-key"],
)
def test_pathological_yaml_fails_quickly_instead_of_raising_or_hanging(project, data: bytes, message: str):
    # these raised RecursionError (deep or self-referential lists) or ran for minutes and
    # gigabytes (9**9 shared leaves walked and repr'd) before the front matter rule was fixed
    plan, rules = project
    results = _run_all(plan, rules, data, lint=False, readonly=True, others=False)
    # about as fast as a plain front matter of the same size (see timing.py); the walks this
    # guards against took minutes
    plain = b"---\nterm: x\ntags: [" + b"'a', " * (len(data) // 5) + b"'b']\n---\n"
    ratio = time_ratio(
        lambda: _run_all(plan, rules, data, lint=False, readonly=True, others=False),
        lambda: _run_all(plan, rules, plain, lint=False, readonly=True, others=False),
    )
    assert ratio < 20
    front_matter = results[0]
    assert isinstance(front_matter, Failure) and message in front_matter.message
    assert len(front_matter.message) < 400  # values are shown abbreviated
