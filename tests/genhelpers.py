"""Shared pieces for the generation and record/replay tests (issues #4 and #5).

Not a test module: ``test_generation.py`` and ``test_replay.py`` import it (``tests/`` is on
``sys.path`` under pytest's default import mode).

* :func:`fake` (a fixture): a :class:`~fakeapi.FakeAnthropic` per test, with the SDK's
  environment pointing at it (``ANTHROPIC_BASE_URL``, a distinctive ``ANTHROPIC_API_KEY``,
  ``CI`` unset) and a :class:`Router` as its default reply.
* :class:`Router`: scripts replies per *row* (by the ``<output_path>`` of the conversation's
  first user message), so a row's repair turn, whose last user message names no file, still
  gets that row's next reply. Unscripted rows get a good draft of their title.
* :func:`write_project`: a small plan in ``pytester.path`` with a format reference, content
  rules ("category must be one of: A, B, C"), a checklist using front matter / one-of /
  sections / a linter (a tiny Python script run with ``sys.executable``), and an ini file.
* Draft texts: :func:`draft` (passes every check) and its broken variants.
* :func:`block_network`: refuse (and log) every socket connection of this process, for
  replays that must make none; :func:`reset_outputs` puts a project back before a run.

Why a router and not ``server.script(match, ...)``: the fake matches on the *last* user
message, and a repair turn's last user message is the list of failures, which names no row.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeapi import FakeAnthropic, Logged, Reply  # noqa: E402

# Imported here, before any in-process run: pytester restores ``sys.modules`` after each
# ``runpytest``, so whatever a run imports first is imported again by the next one (the SDK
# alone takes seconds). Modules loaded before the run are kept.
import pytest_batchgen.client  # noqa: E402,F401
import pytest_batchgen.dispatch  # noqa: E402,F401
import pytest_batchgen.recording  # noqa: E402,F401
from pytest_batchgen.plan import load_plan  # noqa: E402
from pytest_batchgen.planedit import read_notes  # noqa: E402

#: A key no real service would issue, easy to grep for in every file a run leaves behind.
API_KEY = "sk-ant-api03-batchgen-TEST-KEY-q7Zr2Lp4Xv9M"

#: retry-after small enough to keep the SDK's retries fast (the SDK ignores 0 and backs off 0.5 s)
FAST_RETRY = 0.01

REFERENCE_MARKER = "Reference marker sentence: the quick brown fox files every term."

FORMAT_REFERENCE = f"""\
---
term: Idempotency
category: A
tags: [retries, api-design]
---

## Definition

Idempotency is the property of an operation that has the same effect however often it runs.
{REFERENCE_MARKER}

## Details

A caller may safely retry an idempotent request.

## Related Terms

Exactly-once delivery, retries.
"""

CONTENT_RULES = (
    "Every output needs front matter: term, category, tags",
    "category must be one of: A, B, C",
    "Include Definition, Details, and Related Terms sections, in that order",
)

LINT_SCRIPT = """\
import sys
path = sys.argv[1]
try:
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
except OSError as exc:
    sys.exit(f"{path}: cannot read: {exc.strerror}")
bad = [n for n, line in enumerate(lines, 1) if "LINT-BAD" in line]
for n in bad:
    print(f"{path}:{n}: X001 forbidden marker LINT-BAD")
sys.exit(1 if bad else 0)
"""


def checklist_lines() -> list[str]:
    python = shlex.quote(sys.executable)
    return [
        "Front matter includes term, category, and at least 2 tags",
        "category is one of the three values listed in Content Rules",
        "Definition, Details, and Related Terms sections present, in that order",
        f"Linter passes: `{python} -I -S lint.py {{path}}`",
    ]


#: The compiled rules' names, in the order the checklist lists them.
RULE_NAMES = ("front-matter", "category-value", "sections", "lint")


@dataclass(frozen=True)
class PlanRow:
    title: str
    filename: str
    model: str = "haiku"
    status: str = "pending"


def rows_for(*names: str, model: str = "haiku") -> list[PlanRow]:
    """Rows titled after their names: ``rows_for("quorum")`` -> Quorum, quorum.md."""
    return [PlanRow(n.replace("-", " ").title(), f"{n}.md", model) for n in names]


def plan_text(rows: Iterable[PlanRow], *, reference: str = "output/reference.md") -> str:
    rows = list(rows)
    phases: dict[int, list[PlanRow]] = {}
    for row in rows:
        phases.setdefault(2 if row.model == "sonnet" else 1, []).append(row)
    parts = [
        "# Test plan\n",
        f"## Format Reference\n{reference}\n",
        "## Output Directory\noutput/\n",
        "## Content Rules\n" + "".join(f"- {r}\n" for r in CONTENT_RULES),
        "## Validation Checklist\n" + "".join(f"{n}. {line}\n" for n, line in enumerate(checklist_lines(), 1)),
    ]
    for number, phase_rows in sorted(phases.items()):
        table = "| Title | Filename | Model | Status |\n|-------|----------|-------|--------|\n"
        table += "".join(f"| {r.title} | {r.filename} | {r.model} | {r.status} |\n" for r in phase_rows)
        parts.append(f"## Phase {number}\n{table}")
    return "\n".join(parts)


def write_project(root: Path, rows: Iterable[PlanRow], *, max_retries: int = 1, ini_extra: str = "") -> Path:
    """The plan ``plan.md``, its format reference, the linter and ``pytest.ini`` under ``root``."""
    (root / "output").mkdir(exist_ok=True)
    (root / "output" / "reference.md").write_text(FORMAT_REFERENCE, encoding="utf-8")
    (root / "lint.py").write_text(LINT_SCRIPT, encoding="utf-8")
    (root / "pytest.ini").write_text(
        # no cache folder in the project; hypothesis' plugin imports hypothesis at every run's end
        "[pytest]\naddopts = -p no:cacheprovider -p no:hypothesispytest\n"
        # in-process runs: the plugin was imported by the outer session already
        "filterwarnings = ignore::pytest.PytestAssertRewriteWarning\n"
        f"batchgen_max_retries = {max_retries}\n{ini_extra}",
        encoding="utf-8",
    )
    plan = root / "plan.md"
    plan.write_text(plan_text(rows), encoding="utf-8")
    return plan


# -- drafts ---------------------------------------------------------------------------------


def draft(
    title: str,
    *,
    category: str = "A",
    tags: str = "[alpha, beta]",
    sections: tuple[str, ...] = ("Definition", "Details", "Related Terms"),
    extra: str = "",
) -> str:
    body = "".join(f"## {s}\n\n{title}: {s.lower()} text.\n\n" for s in sections)
    return f"---\nterm: {title}\ncategory: {category}\ntags: {tags}\n---\n\n{body}{extra}".rstrip("\n") + "\n"


def bad_value(title: str) -> str:
    return draft(title, category="Z")


def missing_section(title: str) -> str:
    return draft(title, sections=("Definition", "Details"))


def few_tags(title: str) -> str:
    return draft(title, tags="[alpha]")


def lint_bad(title: str) -> str:
    return draft(title, extra="LINT-BAD appears here.\n")


def fenced(text: str, info: str = "markdown") -> str:
    return f"```{info}\n{text}```"


# -- the fake server and its per-row script ---------------------------------------------------

_PATH_RE = re.compile(r"<output_path>(.*?)</output_path>")
_TITLE_RE = re.compile(r"<title>(.*?)</title>")


def first_user_text(body: dict) -> str:
    content = body["messages"][0]["content"]
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


def row_of(entry: Logged | dict) -> str:
    """The filename a logged request (or request body) was generating."""
    body = entry.body if isinstance(entry, Logged) else entry
    m = _PATH_RE.search(first_user_text(body))
    assert m, f"no <output_path> in the request: {first_user_text(body)[:200]!r}"
    return m.group(1).rsplit("/", 1)[-1]


class Router:
    """``FakeAnthropic.default``: replies scripted per row, in order (the last one repeats)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: dict[str, list[Reply]] = {}
        self._served: dict[str, int] = {}

    def set(self, filename: str, *replies: Reply) -> None:
        with self._lock:
            self._replies[filename] = list(replies)
            self._served[filename] = 0

    def __call__(self, body: dict) -> Reply:
        filename = row_of(body)
        with self._lock:
            replies = self._replies.get(filename)
            if not replies:
                title = _TITLE_RE.search(first_user_text(body))
                return Reply.ok(draft(title.group(1) if title else filename))
            n = self._served.get(filename, 0)
            self._served[filename] = n + 1
            return replies[min(n, len(replies) - 1)]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """A fresh loopback API per test; the SDK finds it through the environment."""
    server = FakeAnthropic()
    server.default = Router()
    server.start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    try:
        yield server
    finally:
        server.stop()


def router(server: FakeAnthropic) -> Router:
    assert isinstance(server.default, Router)
    return server.default


def requests_by_row(server: FakeAnthropic) -> dict[str, list[Logged]]:
    out: dict[str, list[Logged]] = {}
    for entry in server.messages_requests():
        out.setdefault(row_of(entry), []).append(entry)
    return out


def system_text(entry: Logged) -> str:
    system = entry.body["system"]
    return system if isinstance(system, str) else "".join(b["text"] for b in system)


def reset_outputs(root: Path, rows: Iterable[PlanRow]) -> None:
    """Back to before the run: the plan as first written (every row as given), no outputs."""
    (root / "plan.md").write_text(plan_text(rows), encoding="utf-8")
    for path in (root / "output").iterdir():
        if path.name != "reference.md":
            path.unlink()


def block_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, make every outgoing connection of this process fail; list the attempts.

    The in-process run shares this process, so its SDK client (httpx2 through asyncio, which
    connects with ``socket.socket.connect``) and anything else it does are caught.
    """
    import socket

    attempts: list[str] = []

    def refuse(what: str):
        def guard(*args, **kwargs):
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise OSError(f"network access in a replay test: {what}")

        return guard

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


# -- what a run left behind -----------------------------------------------------------------


def statuses(root: Path, plan: str = "plan.md") -> dict[str, str]:
    return {r.filename: r.status for r in load_plan(plan, root).rows}


def notes(root: Path, plan: str = "plan.md") -> dict[str, str]:
    return read_notes((root / plan).read_text(encoding="utf-8"))


def item_outcomes(result: pytest.RunResult) -> dict[str, str]:
    """``filename::item`` -> passed / failed / skipped, from an in-process run's reports."""
    out: dict[str, str] = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        key = "::".join(rep.nodeid.split("::")[1:])
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            out[key] = rep.outcome
    return out


def item_report(result: pytest.RunResult, key: str) -> str:
    """The failure text of item ``filename::name``."""
    for rep in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        if rep.nodeid.endswith("::" + key) and rep.failed:
            return rep.longreprtext
    raise AssertionError(f"no failed report for {key}")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), caches excluded."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts
    }


def cassette_dir(root: Path, plan: str = "plan") -> Path:
    return root / "cassettes" / plan


def cassette(root: Path, filename: str, plan: str = "plan") -> Path:
    return cassette_dir(root, plan) / f"{filename}.yaml"


def cassette_bodies(path: Path) -> list[dict]:
    """The request bodies recorded in a cassette, in order."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [json.loads(i["request"]["body"]) for i in data["interactions"]]


def cassette_usage(path: Path) -> list[dict]:
    """The ``usage`` of each recorded reply of a cassette (empty dict for an error reply)."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = []
    for interaction in data["interactions"]:
        body = json.loads(interaction["response"]["body"]["string"])
        out.append(body.get("usage", {}))
    return out


__all__ = [
    "API_KEY",
    "FAST_RETRY",
    "FORMAT_REFERENCE",
    "REFERENCE_MARKER",
    "CONTENT_RULES",
    "RULE_NAMES",
    "FakeAnthropic",
    "Logged",
    "PlanRow",
    "Reply",
    "Router",
    "bad_value",
    "cassette",
    "cassette_bodies",
    "cassette_usage",
    "cassette_dir",
    "checklist_lines",
    "draft",
    "fake",
    "fenced",
    "few_tags",
    "item_outcomes",
    "item_report",
    "lint_bad",
    "missing_section",
    "notes",
    "block_network",
    "plan_text",
    "reset_outputs",
    "requests_by_row",
    "router",
    "row_of",
    "rows_for",
    "snapshot",
    "statuses",
    "system_text",
    "write_project",
]
