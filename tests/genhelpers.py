"""The generation tests' project and the fake API's per-row script (issues #4, #5 and #6).

Not a test module: ``harness.Project.write_rows`` lays this project out, and the generation,
replay and reporting tests import the drafts and the router from here (``tests/`` is on
``sys.path`` through ``pythonpath`` in pyproject.toml).

* The project: :class:`PlanRow` rows (:func:`rows_for`) in a plan (:func:`rows_plan_text`)
  with a format reference, content rules ("category must be one of: A, B, C"), a checklist
  using front matter / one-of / sections / a linter (a tiny Python script run with
  ``sys.executable``).
* Draft texts: :func:`draft` (passes every check) and its broken variants.
* :class:`Router`: scripts replies per *row* (by the ``<output_path>`` of the conversation's
  first user message), so a row's repair turn, whose last user message names no file, still
  gets that row's next reply. Unscripted rows get a good draft of their title. The ``fake``
  fixture (``conftest.py``) installs one as the server's default reply.
* :func:`go_offline`: stop the server, forget the key, and refuse (and log) every socket
  connection of this process, for replays that must make none.

Why a router and not ``server.script(match, ...)``: the fake matches on the *last* user
message, and a repair turn's last user message is the list of failures, which names no row.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pytest

from fakeapi import FakeAnthropic, Logged, Reply

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


#: a conftest printing which heavy modules the pytest process loaded, at the session's end
IMPORT_PROBE = """
import sys
def pytest_sessionfinish(session):
    print("HEAVY:", ",".join(m for m in ("anthropic", "httpx2", "vcr") if m in sys.modules) or "none")
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


def rows_plan_text(rows: Iterable[PlanRow], *, reference: str = "output/reference.md") -> str:
    """``plan.md`` of the generation project: haiku rows in phase 1, sonnet rows in phase 2."""
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


def loopback_api(
    monkeypatch: pytest.MonkeyPatch, default: Callable[[dict], Reply], api_key: str = API_KEY
) -> Iterator[FakeAnthropic]:
    """Run a loopback API for one test, answering with ``default`` (a ``body -> Reply``); the SDK
    finds it through the environment (``ANTHROPIC_BASE_URL``, a distinctive ``ANTHROPIC_API_KEY``,
    ``CI`` and ``GITHUB_ACTIONS`` unset). The user's cache folder (``XDG_CACHE_HOME``, where the
    account's rate limits are remembered) is a new one of the test's. Yield from it in a fixture."""
    server = FakeAnthropic()
    server.default = default
    server.start()
    cache = tempfile.mkdtemp(prefix="batchgen-user-cache-")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", api_key)
    monkeypatch.setenv("XDG_CACHE_HOME", cache)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(cache, ignore_errors=True)


def router(server: FakeAnthropic) -> Router:
    assert isinstance(server.default, Router)
    return server.default


def requests_by_row(server: FakeAnthropic) -> dict[str, list[Logged]]:
    out: dict[str, list[Logged]] = {}
    for entry in server.messages_requests():
        out.setdefault(row_of(entry), []).append(entry)
    return out


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


def go_offline(server: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stop the server, forget the key and the URL, and block the network: a replay must need
    none of them. Returns the list :func:`block_network` fills with any connection attempt."""
    server.stop()
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    return block_network(monkeypatch)


#: an ANTHROPIC_AUTH_TOKEN as distinctive as :data:`API_KEY`
AUTH_TOKEN = "batchgen-TEST-AUTH-TOKEN-w3Kp8Yd1"

CREDENTIALS_IN_A_FORM = """\
import os
from pytest_batchgen import ChecklistForm
def pytest_batchgen_checklist_forms():
    def env_check(ctx):  # a check that reports the environment it ran in, credentials and all
        return ("env: ANTHROPIC_API_KEY=" + os.environ.get("ANTHROPIC_API_KEY", "")
                + " ANTHROPIC_AUTH_TOKEN=" + os.environ.get("ANTHROPIC_AUTH_TOKEN", ""))
    return [ChecklistForm(name="env", pattern=r"env check", check=env_check)]
"""


def given_a_check_that_reports_the_credentials(project, monkeypatch: pytest.MonkeyPatch, ini_extra: str = "") -> None:
    """One row and a check of the user's (a conftest form) whose failure message holds the key
    and ANTHROPIC_AUTH_TOKEN: it fails every draft, so its message goes into a repair turn."""
    project.write_rows(rows_for("quorum"), ini_extra=ini_extra)
    project.write("conftest.py", CREDENTIALS_IN_A_FORM)
    project.edit("plan.md", "## Phase 1", "5. Env check\n\n## Phase 1")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", AUTH_TOKEN)


#: a project conftest that refuses every write into one folder, as a read-only folder does
#: (the temporary of fsutil.atomic_write cannot be created), in this process and the sending one
REFUSE_WRITES_IN = """
import errno
from pathlib import Path
from pytest_batchgen import fsutil

real = fsutil._create_temporary
FOLDER = Path({folder!r})

def refused(path):
    if path.parent.resolve() == FOLDER:
        tmp = path.with_name("." + path.name + fsutil.TMP_MARK + "0123abcd")
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    return real(path)

fsutil._create_temporary = refused

def pytest_unconfigure(config):
    fsutil._create_temporary = real
"""
