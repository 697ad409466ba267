"""Hardening of model calls, recordings and linters (issue 11 items 7-12, 17, 19; issue 10's
failed rows and messages): each test failed on the starting point of the ``hardening`` branch.

Runs go through pytester in-process against the loopback :class:`fakeapi.FakeAnthropic`; the
small project each test writes is local to this file (one plan, a format reference, a checklist
with a front matter check and a tiny linter).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import sys
import threading
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeapi import FakeAnthropic, Reply
from genhelpers import loopback_api

# imported before any in-process run, so that pytester's module snapshot keeps them loaded
import pytest_batchgen.client
import pytest_batchgen.dispatch
import pytest_batchgen.recording  # noqa: F401
from pytest_batchgen.checklist import ChecklistForm, compile_checklist, split_list
from pytest_batchgen.errors import ChecklistError
from pytest_batchgen.plan import load_plan
from pytest_batchgen.rules import BUILTIN_FORMS, run_linter

API_KEY = "sk-ant-api03-hardening-SECRET-KEY-Zq81"

LINT = """\
import os, sys
path = sys.argv[-1]
if os.environ.get("PRINT_ENV"):
    print("\\n".join(f"{k}={v}" for k, v in sorted(os.environ.items())))
text = open(path, encoding="utf-8").read()
bad = [n for n, line in enumerate(text.splitlines(), 1) if "LINT-BAD" in line]
for n in bad:
    print(f"{path}:{n}: forbidden marker")
sys.exit(1 if bad else 0)
"""

REFERENCE = "---\nterm: Reference\n---\n\n## Reference\n\nThe shape of every output.\n"


def good(title: str) -> str:
    return f"---\nterm: {title}\n---\n\n## {title}\n\n{title} text.\n"


def lint_bad(title: str) -> str:
    return good(title) + "\nLINT-BAD here.\n"


def write_project(root: Path, filenames: list[str], *, extra_ini: str = "") -> None:
    (root / "output").mkdir(exist_ok=True)
    (root / "output" / "reference.md").write_text(REFERENCE, encoding="utf-8")
    (root / "lint.py").write_text(LINT, encoding="utf-8")
    python = shlex.quote(sys.executable)
    rows = "".join(f"| {Path(f).stem.title()} | {f} | haiku | pending |\n" for f in filenames)
    (root / "plan.md").write_text(
        "# Plan\n\n## Format Reference\noutput/reference.md\n\n## Output Directory\noutput/\n\n"
        "## Content Rules\n- Keep it short\n\n"
        "## Validation Checklist\n1. Front matter includes term\n"
        f"2. Linter passes: `{python} -I -S lint.py {{path}}`\n\n"
        "## Phase 1\n| Title | Filename | Model | Status |\n|---|---|---|---|\n" + rows,
        encoding="utf-8",
    )
    (root / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:cacheprovider -p no:hypothesispytest -p no:anyio\n"
        "filterwarnings = ignore::pytest.PytestAssertRewriteWarning\n"
        f"batchgen_max_retries = 0\n{extra_ini}",
        encoding="utf-8",
    )


_PATH_RE = re.compile(r"<output_path>(.*?)</output_path>")


def row_of(body: dict) -> str:
    content = body["messages"][0]["content"]
    text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
    m = _PATH_RE.search(text)
    return m.group(1).rsplit("/", 1)[-1] if m else "?"


class Router:
    """Replies per row, in order (the last repeats); an unscripted row gets a good draft."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.served: dict[str, int] = {}
        self._lock = threading.Lock()

    def set(self, filename: str, *replies: Reply) -> None:
        with self._lock:
            self.replies[filename] = list(replies)
            self.served[filename] = 0

    def __call__(self, body: dict) -> Reply:
        name = row_of(body)
        with self._lock:
            replies = self.replies.get(name)
            if not replies:
                return Reply.ok(good(Path(name).stem.title()))
            n = self.served.get(name, 0)
            self.served[name] = n + 1
            return replies[min(n, len(replies) - 1)]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    yield from loopback_api(monkeypatch, Router(), API_KEY)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--batch-plan", "plan.md", *args)


def statuses(root: Path) -> dict[str, str]:
    return {r.filename: r.status for r in load_plan("plan.md", root).rows}


def cassette(root: Path, filename: str) -> Path:
    return root / "cassettes" / "plan" / f"{filename}.yaml"


def text_of(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


def sent(fake: FakeAnthropic, filename: str) -> int:
    return sum(1 for e in fake.messages_requests() if row_of(e.body) == filename)


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


# -- 11.10: linters get no credentials; the key is in no recorded request ----------------------


def test_linters_inherit_no_credentials():
    from pytest_batchgen.rules import linter_env

    env, secrets = linter_env(
        {
            "PATH": "/usr/bin",
            "HOME": "/home/u",
            "ANTHROPIC_API_KEY": API_KEY,
            "ANTHROPIC_AUTH_TOKEN": "auth-token-123456",
            "OPENAI_API_KEY": "sk-openai-123456",
            "GITHUB_TOKEN": "ghp_123456789",
            "AWS_SECRET_ACCESS_KEY": "aws-secret-123456",
            "COPY_OF_IT": API_KEY,
            "PYMARKDOWN_CONFIG": "cfg.json",
        }
    )
    assert env == {"PATH": "/usr/bin", "HOME": "/home/u", "PYMARKDOWN_CONFIG": "cfg.json", "NO_COLOR": "1"}
    assert API_KEY in secrets


def test_a_linter_printing_its_environment_puts_the_key_in_no_request_and_no_file(pytester, fake, monkeypatch):
    write_project(pytester.path, ["alpha.md"])
    monkeypatch.setenv("PRINT_ENV", "1")
    fake.default.set("alpha.md", Reply.ok(lint_bad("Alpha")), Reply.ok(good("Alpha")))

    result = run(pytester)

    assert result.ret == pytest.ExitCode.OK, text_of(result)
    bodies = [e.raw for e in fake.messages_requests()]
    assert len(bodies) == 2 and b"PRINT_ENV=1" in bodies[1]  # the linter's output was in the repair turn
    assert [b for b in bodies if API_KEY.encode() in b] == []
    leaks = [name for name, data in files_under(pytester.path).items() if API_KEY.encode() in data]
    assert leaks == [] and cassette(pytester.path, "alpha.md").exists()


def test_the_key_is_scrubbed_from_recorded_request_bodies(tmp_path):
    from vcr.request import Request

    from pytest_batchgen.recording import Recorder

    recorder = Recorder({"k": tmp_path / "k.yaml"}, "new_episodes", secrets=(API_KEY,))
    body = json.dumps({"messages": [{"role": "user", "content": f"env: KEY={API_KEY}"}]}).encode()
    scrubbed = recorder._scrub_request(Request("POST", "http://x/v1/messages", body, {"x-api-key": API_KEY}))
    assert API_KEY.encode() not in scrubbed.body and b"<redacted>" in scrubbed.body
    assert "x-api-key" not in scrubbed.headers


def test_the_key_is_scrubbed_from_recorded_header_values(tmp_path):
    """Only header names were filtered: a header named innocently that holds the key (a server
    echoing the request's Authorization) was recorded as it came."""
    from vcr.request import Request

    from pytest_batchgen.recording import Recorder

    recorder = Recorder({"k": tmp_path / "k.yaml"}, "new_episodes", secrets=(API_KEY,))
    request = recorder._scrub_request(Request("POST", "http://x/v1/messages", b"{}", {"x-trace": f"k={API_KEY}"}))
    assert request.headers["x-trace"] == "k=<redacted>"
    response = recorder._scrub_response(
        {"status": {"code": 200}, "headers": {"x-echo": [f"Bearer {API_KEY}", "plain"]}, "body": {"string": b"{}"}}
    )
    assert response["headers"] == {"x-echo": ["Bearer <redacted>", "plain"]}


GATEWAY_PASSWORD = "gw-PASS-word-7731"


def test_a_gateways_password_in_the_base_url_reaches_no_file_and_the_recording_replays(pytester, fake, monkeypatch):
    """An authenticating gateway in ANTHROPIC_BASE_URL (``http://user:password@host``): the SDK
    sends the password as ``Authorization: Basic``, a header never recorded, but the cassette's
    ``uri`` held the URL as it was, password and all."""
    write_project(pytester.path, ["alpha.md"])
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url.replace("://", f"://gwuser:{GATEWAY_PASSWORD}@", 1))

    result = run(pytester)

    assert result.ret == pytest.ExitCode.OK, text_of(result)
    assert sent(fake, "alpha.md") == 1
    recorded = cassette(pytester.path, "alpha.md").read_text(encoding="utf-8")
    assert f"uri: {fake.base_url}/v1/messages\n" in recorded
    basic = base64.b64encode(f"gwuser:{GATEWAY_PASSWORD}".encode())
    leaks = [n for n, data in files_under(pytester.path).items() if GATEWAY_PASSWORD.encode() in data or basic in data]
    assert leaks == []
    fake.reset_log()
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    replayed = run(pytester, "--batch-record-mode", "none")  # matched on the path: nothing lost
    assert replayed.ret == pytest.ExitCode.OK, text_of(replayed)
    assert fake.messages_requests() == []


@pytest.mark.parametrize(
    ("url", "uri"),
    [
        ("http://gwuser:pass%40word@127.0.0.1:8080/v1/messages", "http://127.0.0.1:8080/v1/messages"),
        ("https://gw.example/anthropic?key=GW-QUERY-SECRET/v1/messages", "https://gw.example/anthropic"),
        ("https://user:p@ss@[::1]:9/v1/messages#frag", "https://[::1]:9/v1/messages"),
        ("https://api.anthropic.com/v1/messages", "https://api.anthropic.com/v1/messages"),
    ],
)
def test_a_recorded_uri_keeps_no_userinfo_and_no_query(tmp_path, url, uri):
    """A query in ANTHROPIC_BASE_URL (a gateway's ``?key=``) ends up in the request's URL too
    (the SDK appends the path after it); the plugin sends no query of its own."""
    from pytest_batchgen.recording import Recorder

    path = tmp_path / "k.yaml"
    recorder = Recorder({"k": path}, "new_episodes", secrets=(API_KEY,))
    body = json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode()
    reply = {
        "status": {"code": 200, "message": "OK"},
        "headers": {"content-type": ["application/json"]},
        "body": {"string": json.dumps({"type": "message", "content": [], "usage": {}}).encode()},
    }
    recorder.record("k", "POST", url, body, {"content-type": "application/json"}, reply)
    text = path.read_text(encoding="utf-8")
    assert f"uri: {uri}\n" in text
    assert "pass" not in text.replace("passed", "") and "SECRET" not in text and "frag" not in text


# -- 11.11: a linter's children die with it at its timeout --------------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_linters_children_are_killed_at_its_timeout(tmp_path):
    import time

    (tmp_path / "a.md").write_text("x\n")
    argv = ["sh", "-c", "sleep 93 >/dev/null 2>&1 & echo $! > child.pid; wait", "sh"]
    failure = run_linter(argv, "a.md", tmp_path, 1.0)
    assert failure is not None and "timed out" in failure.message
    pid = int((tmp_path / "child.pid").read_text())
    for _ in range(100):  # SIGKILL is delivered at once; give init a moment to reap it
        if not _alive(pid):
            break
        time.sleep(0.05)
    alive = _alive(pid)
    if alive:
        os.kill(pid, 9)
    assert not alive


# -- 11.12: an option-like filename reaches the linter as a path --------------------------------

ARGPARSE_LINT = """\
import argparse, sys
parser = argparse.ArgumentParser()
parser.add_argument("paths", nargs="+")
args = parser.parse_args()
bad = [p for p in args.paths if "LINT-BAD" in open(p, encoding="utf-8").read()]
print("\\n".join(f"{p}:1: bad" for p in bad))
sys.exit(1 if bad else 0)
"""


def test_an_option_like_filename_is_passed_as_a_path(tmp_path):
    (tmp_path / "lint.py").write_text(ARGPARSE_LINT)
    (tmp_path / "--help").write_text("LINT-BAD\n")
    failure = run_linter([sys.executable, "lint.py"], "--help", tmp_path, 30.0)
    assert failure is not None and "linter exited 1" in failure.message
    assert "./--help" in failure.message and failure.line == 1


def test_option_like_filenames_in_a_batch_lint_mask_no_failure(pytester, fake):
    write_project(pytester.path, ["--help", "beta.md"])
    (pytester.path / "lint.py").write_text(ARGPARSE_LINT)
    plan = pytester.path / "plan.md"
    plan.write_text(plan.read_text().replace("lint.py {path}", "lint.py {paths}").replace("output/\n", "./\n", 1))
    (pytester.path / "--help").write_text(good("Help"))
    (pytester.path / "beta.md").write_text(lint_bad("Beta"))
    fake.default.set("beta.md", Reply.ok(lint_bad("Beta")))

    result = run(pytester, "--batch-max-attempts", "1")

    assert statuses(pytester.path) == {"--help": "complete", "beta.md": "pending"}, text_of(result)


# -- 11.7: a 2xx reply that is not a message is never recorded ----------------------------------

_NULL_CONTENT = {
    "id": "msg_01null",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": None,
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply.raw('{"id": "msg_01trunc", "type": "mess'), id="malformed-json"),
        pytest.param(Reply.raw("<html><body>Gateway says hi</body></html>", content_type="text/html"), id="html-200"),
        pytest.param(Reply.raw(json.dumps({"result": "ok", "data": [1, 2]})), id="wrong-schema"),
        pytest.param(Reply.raw(json.dumps(_NULL_CONTENT)), id="null-content"),
    ],
)
def test_a_2xx_reply_that_is_not_a_message_is_not_recorded(pytester, fake, reply):
    write_project(pytester.path, ["alpha.md"])
    fake.default.set("alpha.md", reply)

    first = run(pytester)

    assert first.ret == pytest.ExitCode.TESTS_FAILED
    assert statuses(pytester.path) == {"alpha.md": "pending"}
    assert not cassette(pytester.path, "alpha.md").exists()

    fake.default.set("alpha.md", Reply.ok(good("Alpha")))  # the server is healthy again
    second = run(pytester)

    assert second.ret == pytest.ExitCode.OK, text_of(second)
    assert sent(fake, "alpha.md") == 2  # sent again, not replayed
    assert statuses(pytester.path) == {"alpha.md": "complete"}


def _odd(usage: dict | None = None, content: list | None = None) -> Reply:
    body = {**_NULL_CONTENT, "content": [{"type": "text", "text": good("Alpha")}]}
    if usage is not None:
        body["usage"] = usage
    if content is not None:
        body["content"] = content
    return Reply.raw(json.dumps(body))


ODD_REPLIES = [
    pytest.param(_odd({"input_tokens": "12", "output_tokens": 3.7}), "usage.input_tokens is '12'", id="string-usage"),
    pytest.param(_odd({"input_tokens": 12, "output_tokens": 3.7}), "usage.output_tokens is 3.7", id="float-usage"),
    pytest.param(
        _odd({"input_tokens": -5000000, "output_tokens": 10**12}), "usage.input_tokens is -5000000", id="negative"
    ),
    pytest.param(
        _odd({"input_tokens": 12, "output_tokens": 10**12}), "usage.output_tokens is 1000000000000", id="absurd"
    ),
    pytest.param(_odd({"input_tokens": 12.5, "output_tokens": 1e300}), "usage.input_tokens is 12.5", id="1e300"),
    pytest.param(_odd({"input_tokens": True, "output_tokens": 1}), "usage.input_tokens is True", id="bool-usage"),
    pytest.param(_odd({"output_tokens": 1}), "usage.input_tokens is missing", id="no-input-tokens"),
    pytest.param(_odd(content=["str", None, 5]), "content[0] is str 'str', not a content block", id="not-blocks"),
    pytest.param(
        _odd(content=[{"type": "text", "text": 12345}]), "content[0] is a text block whose text is int", id="int-text"
    ),
    pytest.param(_odd(content=[{"text": "x"}]), "content[0] has no type", id="untyped-block"),
]


@pytest.mark.parametrize("reply, says", ODD_REPLIES)
def test_a_reply_with_impossible_usage_or_content_is_refused_and_never_recorded(pytester, fake, reply, says):
    """A 200 message whose usage is not a token count (a string, a float, negative, a trillion)
    or whose content is not a list of blocks was accepted: recorded, then a TypeError in
    Usage.__add__ cut the summary and the report, in this run and in every replay; or negative
    tokens and a 300-digit cost were reported. It is refused as not a message, and not recorded."""
    write_project(pytester.path, ["alpha.md"])
    fake.default.set("alpha.md", reply)

    first = run(pytester, "--batch-report", "report.json")

    out = text_of(first)
    assert first.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert "the API's reply is not a message: " + says in out
    assert "total: 1 row," in out  # the summary is whole
    assert generation_of(pytester.path, "alpha.md")["outcome"] == "error"
    assert statuses(pytester.path) == {"alpha.md": "pending"}
    assert not cassette(pytester.path, "alpha.md").exists()

    fake.default.set("alpha.md", Reply.ok(good("Alpha")))
    second = run(pytester)

    assert second.ret == pytest.ExitCode.OK, text_of(second)
    assert sent(fake, "alpha.md") == 2  # sent again, not replayed
    assert statuses(pytester.path) == {"alpha.md": "complete"}


@pytest.mark.parametrize("mode_args", [("--batch-record-mode", "none"), ()], ids=["none", "new_episodes"])
def test_a_recording_with_impossible_usage_fails_its_row_clearly(pytester, fake, mode_args):
    """A cassette whose reply states usage that is not a token count (edited by hand, or recorded
    before such replies were refused) crashed every run with a TypeError in Usage.__add__. It is
    a corrupt recording: named with its fix where the run may not record, set aside and recorded
    again where it may."""
    write_project(pytester.path, ["alpha.md"])
    assert run(pytester).ret == pytest.ExitCode.OK
    path = cassette(pytester.path, "alpha.md")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    response = data["interactions"][0]["response"]
    body = json.loads(response["body"]["string"])
    body["usage"]["input_tokens"] = "12"
    response["body"]["string"] = json.dumps(body)
    edited = yaml.safe_dump(data)
    path.write_text(edited, encoding="utf-8")
    (pytester.path / "output" / "alpha.md").unlink()
    write_project(pytester.path, ["alpha.md"])  # pending again
    fake.reset_log()

    result = run(pytester, "--batch-report", "report.json", *mode_args)

    out = text_of(result)
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert "total: 1 row," in out and (pytester.path / "report.json").exists()
    if mode_args:
        assert result.ret == pytest.ExitCode.TESTS_FAILED and fake.messages_requests() == []
        assert (
            "the recording cassettes/plan/alpha.md.yaml cannot be read: it has a reply that is not a message "
            "(interaction 1, HTTP 200): usage.input_tokens is '12', not a whole number of tokens" in out
        ), out
        assert "then record it again: pytest --batch-plan plan.md --batch-record-mode all 'plan.md::alpha.md'" in out
    else:
        assert result.ret == pytest.ExitCode.OK, out
        assert sent(fake, "alpha.md") == 1  # recorded again
        assert path.with_name("alpha.md.yaml.corrupt").read_text(encoding="utf-8") == edited


def test_a_parsed_reply_is_on_disk_before_the_run_goes_on(tmp_path, fake):
    """Deferring the save until the SDK's parse keeps "persisted before the run goes on"."""
    import asyncio

    from pytest_batchgen.client import ClientSettings, ModelClient
    from pytest_batchgen.recording import Recorder

    path = tmp_path / "alpha.md.yaml"
    recorder = Recorder({"alpha": path}, "new_episodes", secrets=(API_KEY,))

    async def call() -> bool:
        client = ModelClient(ClientSettings(max_retries=0, api_key=API_KEY), recorder)
        try:
            await client.complete("alpha", _params("alpha.md"))
            return path.exists()
        finally:
            await client.aclose()

    assert asyncio.run(call()) is True


def _params(filename: str) -> dict:
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"<output_path>output/{filename}</output_path>"}],
    }


# -- 11.9: a corrupt cassette is named before any request, and re-recorded where it may be ------


def _conflict(data: bytes) -> bytes:
    return b"<<<<<<< HEAD\n" + data + b"=======\nversion: 1\ninteractions: []\n>>>>>>> other\n"


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _missing_key(data: bytes) -> bytes:
    return data.replace(b"interactions:", b"interactionz:")


def _not_utf8(data: bytes) -> bytes:
    return data[:40] + b"\xff\xfe\xfa" + data[40:]


CORRUPTIONS = [
    pytest.param(_conflict, "merge-conflict marker", id="conflict-markers"),
    pytest.param(_truncate, "", id="truncated"),
    pytest.param(_missing_key, "not a vcrpy cassette", id="missing-key"),
    pytest.param(_not_utf8, "not UTF-8", id="not-utf8"),
]


def _record_then_corrupt(pytester, fake, corrupt) -> Path:
    write_project(pytester.path, ["alpha.md"])
    assert run(pytester).ret == pytest.ExitCode.OK
    path = cassette(pytester.path, "alpha.md")
    path.write_bytes(corrupt(path.read_bytes()))
    write_project(pytester.path, ["alpha.md"])  # pending again
    (pytester.path / "output" / "alpha.md").unlink()
    fake.reset_log()
    return path


@pytest.mark.parametrize("corrupt, says", CORRUPTIONS)
def test_a_corrupt_cassette_is_a_clear_error_when_the_run_cannot_record(pytester, fake, monkeypatch, corrupt, says):
    path = _record_then_corrupt(pytester, fake, corrupt)
    before = path.read_bytes()
    monkeypatch.delenv("ANTHROPIC_API_KEY")

    result = run(pytester)  # new_episodes, but no key: it can only replay

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "cassettes/plan/alpha.md.yaml cannot be read: it " in out and says in out
    assert "ScannerError" not in out and "APIConnectionError" not in out
    assert "does not exist or is empty" not in out
    assert "ANTHROPIC_API_KEY=sk-ant-... pytest --batch-plan plan.md" in out
    assert fake.messages_requests() == [] and path.read_bytes() == before


@pytest.mark.parametrize("corrupt, says", CORRUPTIONS)
def test_a_corrupt_cassette_is_set_aside_and_recorded_again_when_the_run_may_record(pytester, fake, corrupt, says):
    path = _record_then_corrupt(pytester, fake, corrupt)
    before = path.read_bytes()

    result = run(pytester)

    assert result.ret == pytest.ExitCode.OK, text_of(result)
    assert sent(fake, "alpha.md") == 1
    assert path.with_name("alpha.md.yaml.corrupt").read_bytes() == before
    assert b"interactions:" in path.read_bytes() and statuses(pytester.path) == {"alpha.md": "complete"}


def test_a_live_reply_is_read_from_its_json_and_the_sdk_builds_no_model_of_it(fake, monkeypatch):
    """The client reads the fields it uses from the reply's JSON, checked by its own rule
    (``message_problem``), not from the SDK's pydantic model of the reply: building that model
    was 1.1 M instructions of the sending process's 8.4 M a reply
    (``benchmarks/bench_generation_count.py``). The completion is the reply's all the same."""
    import anthropic._base_client as sdk_client

    from pytest_batchgen.client import ClientSettings, Completion, Usage

    built: list[object] = []
    construct = sdk_client.construct_type

    def counted(*, type_, value):
        built.append(type_)
        return construct(type_=type_, value=value)

    monkeypatch.setattr(sdk_client, "construct_type", counted)
    reply = good("Alpha")
    fake.default.set("alpha.md", Reply.ok(reply, usage={"input_tokens": 41, "output_tokens": 17}))

    outcome = _complete(ClientSettings(max_retries=0, api_key=API_KEY))

    assert isinstance(outcome, Completion), outcome
    assert (outcome.text, outcome.stop_reason, outcome.replayed) == (reply, "end_turn", False)
    assert outcome.usage == Usage(41, 17)
    assert outcome.model == "claude-haiku-4-5"
    assert built == []


def test_a_2xx_reply_that_is_not_json_is_named_with_the_start_of_its_body(fake):
    """A gateway's HTML page served with status 200 is no message; the error says what came."""
    from pytest_batchgen.client import ClientSettings, ModelCallError

    fake.default.set("alpha.md", Reply.raw("<html><body>Gateway says hi</body></html>", content_type="text/html"))

    outcome = _complete(ClientSettings(max_retries=0, api_key=API_KEY))

    assert isinstance(outcome, ModelCallError) and outcome.kind == "InvalidReply", outcome
    assert outcome.message == (
        "the API's reply is not a message: it is not JSON (Expecting value: line 1 column 1 (char 0)): "
        "'<html><body>Gateway says hi</body></html>'"
    )


def test_a_2xx_reply_nested_past_the_recursion_limit_is_not_json(fake):
    """``json.loads`` raises RecursionError, not ValueError, on ``[[[...`` 100,000 deep: the
    row ended in an error naming RecursionError instead of saying what came."""
    from pytest_batchgen.client import ClientSettings, ModelCallError

    fake.default.set("alpha.md", Reply.raw("[" * 100_000 + "]" * 100_000))

    outcome = _complete(ClientSettings(max_retries=0, api_key=API_KEY))

    assert isinstance(outcome, ModelCallError) and outcome.kind == "InvalidReply", outcome
    assert outcome.message.startswith("the API's reply is not a message: it is not JSON (nested too deep"), outcome


# -- 11.19: a body that stalls half-way, and a total per request ------------------------------


def _complete(settings, filename: str = "alpha.md"):
    import asyncio

    from pytest_batchgen.client import ModelCallError, ModelClient

    async def call():
        client = ModelClient(settings)
        try:
            return await client.complete("alpha", _params(filename))
        except ModelCallError as exc:
            return exc
        finally:
            await client.aclose()

    return asyncio.run(call())


def test_a_reply_whose_body_stalls_times_out_and_is_retried(fake):
    from pytest_batchgen.client import ClientSettings, ModelCallError

    fake.default.set("alpha.md", Reply.stalled(good("Alpha"), after=30))
    outcome = _complete(ClientSettings(max_retries=1, api_key=API_KEY, timeout=600, body_timeout=0.3))
    assert isinstance(outcome, ModelCallError) and outcome.kind == "APITimeoutError"
    assert "stalled" in outcome.message
    assert sent(fake, "alpha.md") == 2  # the SDK retried it once


def test_one_request_has_a_total_time_bound_retries_included(fake):
    from pytest_batchgen.client import ClientSettings, ModelCallError

    fake.default.set("alpha.md", Reply.ok(good("Alpha"), delay=30))
    outcome = _complete(ClientSettings(max_retries=3, api_key=API_KEY, timeout=600, total=0.5))
    assert isinstance(outcome, ModelCallError) and outcome.kind == "Timeout"
    assert "no reply within 0.5s" in outcome.message


def test_default_timeouts_are_separate_and_bounded():
    from pytest_batchgen.client import ClientSettings

    s = ClientSettings()
    t = s.httpx_timeout()
    assert (t.connect, t.read, t.write, t.pool) == (10.0, 300.0, 60.0, 60.0)
    assert s.body_timeout == 30.0 and s.total == 900.0


# -- 11.8 and issue 10: a recording that ended in failure is not replayed forever ----------------


def generation_of(root: Path, filename: str) -> dict:
    report = json.loads((root / "report.json").read_text(encoding="utf-8"))
    rows = [r for p in report["plans"] for r in p["rows"] if r["filename"] == filename]
    return rows[0]["generation"]


def interactions(path: Path) -> int:
    return path.read_text(encoding="utf-8").count("- request:")


def test_a_failed_row_is_generated_again_live_in_a_mode_that_may_record(pytester, fake):
    write_project(pytester.path, ["alpha.md"])
    fake.default.set("alpha.md", Reply.ok(lint_bad("Alpha")))
    assert run(pytester).ret == pytest.ExitCode.TESTS_FAILED
    assert sent(fake, "alpha.md") == 2 and interactions(cassette(pytester.path, "alpha.md")) == 2

    fake.default.set("alpha.md", Reply.ok(good("Alpha")))
    result = run(pytester)  # key set, default mode new_episodes

    assert result.ret == pytest.ExitCode.OK, text_of(result)
    assert sent(fake, "alpha.md") == 3  # the two failed drafts replayed, then one live request
    assert statuses(pytester.path) == {"alpha.md": "complete"}
    assert interactions(cassette(pytester.path, "alpha.md")) == 1  # the failed interactions replaced

    fake.reset_log()
    write_project(pytester.path, ["alpha.md"])
    (pytester.path / "output" / "alpha.md").unlink()
    assert run(pytester).ret == pytest.ExitCode.OK
    assert fake.messages_requests() == []  # a recording that passed replays as before


def test_a_failed_row_without_a_key_says_a_key_is_needed_and_which_command_tries_again(pytester, fake, monkeypatch):
    write_project(pytester.path, ["alpha.md"])
    fake.default.set("alpha.md", Reply.ok(lint_bad("Alpha")))
    assert run(pytester).ret == pytest.ExitCode.TESTS_FAILED
    before = cassette(pytester.path, "alpha.md").read_bytes()
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    fake.reset_log()

    result = run(pytester, "--batch-report", "report.json")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert fake.messages_requests() == []
    hint = generation_of(pytester.path, "alpha.md")["hint"]
    assert "ANTHROPIC_API_KEY is not set" in hint
    assert "replayed from cassettes/plan/alpha.md.yaml" in hint
    command = "ANTHROPIC_API_KEY=sk-ant-... pytest --batch-plan plan.md --batch-record-mode all 'plan.md::alpha.md'"
    assert command in hint
    out = result.stdout.str()
    assert out.count(command) >= 2  # in the failing check's message, and in the summary
    assert cassette(pytester.path, "alpha.md").read_bytes() == before


def test_a_recorded_refusal_is_sent_again_in_a_mode_that_may_record(pytester, fake):
    write_project(pytester.path, ["alpha.md"])
    fake.default.set("alpha.md", Reply.refused())
    first = run(pytester)
    assert first.ret == pytest.ExitCode.TESTS_FAILED and "refused" in text_of(first)

    fake.default.set("alpha.md", Reply.ok(good("Alpha")))
    result = run(pytester)

    assert result.ret == pytest.ExitCode.OK, text_of(result)
    assert sent(fake, "alpha.md") == 2
    assert statuses(pytester.path) == {"alpha.md": "complete"}
    assert b"refusal" not in cassette(pytester.path, "alpha.md").read_bytes()


def test_a_replayed_refusal_in_none_mode_says_how_to_retry(pytester, fake):
    write_project(pytester.path, ["alpha.md"])
    fake.default.set("alpha.md", Reply.refused())
    assert run(pytester).ret == pytest.ExitCode.TESTS_FAILED
    fake.reset_log()

    result = run(pytester, "--batch-record-mode", "none")

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED and fake.messages_requests() == []
    assert "refused" in out and "replayed from cassettes/plan/alpha.md.yaml (record mode 'none' replays it)" in out
    assert "to generate it again: pytest --batch-plan plan.md --batch-record-mode all 'plan.md::alpha.md'" in out


# -- issue 10: messages a new user can act on ---------------------------------------------------


@pytest.mark.parametrize("mode_args", [(), ("--batch-record-mode", "none")], ids=["new_episodes", "none"])
def test_a_replay_miss_without_a_key_names_the_key_and_the_command_includes_it(pytester, fake, monkeypatch, mode_args):
    write_project(pytester.path, ["alpha.md"])
    monkeypatch.delenv("ANTHROPIC_API_KEY")

    result = run(pytester, *mode_args)

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED and fake.messages_requests() == []
    assert "ANTHROPIC_API_KEY is not set" in out
    assert (
        "To record it: ANTHROPIC_API_KEY=sk-ant-... pytest --batch-plan plan.md --batch-record-mode all 'plan.md::alpha.md'"
        in out
    )


@pytest.mark.parametrize("how", ["-o", "-c"])
def test_the_printed_command_to_record_a_miss_carries_the_options_that_shaped_its_request(
    pytester, fake, monkeypatch, how
):
    """A replay run with ``-o batchgen_max_tokens=4096`` (or ``-c ci.ini`` saying so) missed the
    recording of max_tokens 8192, and printed a command without the option: running it as
    printed paid for a live call that recorded max_tokens 8192 again, and the run missed again."""
    write_project(pytester.path, ["alpha.md"])
    assert run(pytester).ret == pytest.ExitCode.OK  # recorded with max_tokens 8192

    def start_over() -> None:  # the plan's row pending again and no output: it is generated (replayed)
        write_project(pytester.path, ["alpha.md"])
        (pytester.path / "output" / "alpha.md").unlink()

    start_over()
    (pytester.path / "ci.ini").write_text(
        (pytester.path / "pytest.ini").read_text() + "batchgen_max_tokens = 4096\n", encoding="utf-8"
    )
    options = ["-o", "batchgen_max_tokens=4096"] if how == "-o" else ["-c", "ci.ini"]
    fake.reset_log()

    missed = run(pytester, "--batch-record-mode", "none", *options)

    out = text_of(missed)
    assert missed.ret == pytest.ExitCode.TESTS_FAILED and "max_tokens" in out
    found = re.search(r"To record it: (pytest .*?'plan\.md::alpha\.md')", out)
    assert found, out
    command = shlex.split(found.group(1))
    assert " ".join(options) in " ".join(command), found.group(1)
    # run as printed, it records the request the run asked for...
    assert pytester.runpytest(*command[1:]).ret == pytest.ExitCode.OK
    assert [e.body["max_tokens"] for e in fake.messages_requests()] == [4096]
    # ...and the first command now replays it
    fake.reset_log()
    start_over()
    assert run(pytester, "--batch-record-mode", "none", *options).ret == pytest.ExitCode.OK
    assert fake.messages_requests() == []


def test_printed_commands_repeat_the_runs_options_quoted_and_relative_to_the_current_folder(tmp_path, monkeypatch):
    from pytest_batchgen.freshness import regenerate_command
    from pytest_batchgen.settings import Role, Settings

    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    settings = Settings(
        plans=("plan.md",),
        rootdir=tmp_path,
        invocation_dir=tmp_path,
        role=Role.PLAIN,
        overrides=("batchgen_models=haiku: it's claude", "batchgen_max_tokens=4096"),
        config_file=tmp_path / "my ci.ini",
        rootdir_given=tmp_path,
        max_attempts=3,
        judge_samples=3,
        max_cost=0.0,  # (not repeated: the command would send nothing)
        api="batches",  # (not repeated: a batch records the Messages request it stands for)
    )
    options = settings.command_options()
    assert options == (
        " -c '../my ci.ini' --rootdir .. -o 'batchgen_models=haiku: it'\"'\"'s claude' -o batchgen_max_tokens=4096"
        " --batch-max-attempts 3 --batch-judge-samples 3"
    )
    assert shlex.split(options)[1] == "../my ci.ini" and shlex.split(options)[5] == "batchgen_models=haiku: it's claude"
    assert Settings(plans=(), rootdir=tmp_path, invocation_dir=tmp_path, role=Role.PLAIN).command_options() == ""
    assert regenerate_command([tmp_path / "plan.md"], True, options).startswith(
        f"pytest{options} --batch-plan ../plan.md"
    )


def _plan_with_line(root: Path, line: str):
    write_project(root, ["alpha.md"])
    plan = root / "plan.md"
    plan.write_text(plan.read_text().replace("1. Front matter includes term", f"1. {line}"))
    return load_plan("plan.md", root)


def test_a_line_matching_no_form_shows_each_forms_example_not_its_regex(tmp_path):
    plan = _plan_with_line(tmp_path, "Sounds friendly")
    custom = [
        ChecklistForm(
            name="word-count", pattern=r"at most (?P<n>\d+) words", check=lambda c: None, example="At most 300 words"
        ),
        ChecklistForm(name="shouty", pattern=r"(?P<x>LOUD+) (?:\w+ )*line", check=lambda c: None),
    ]
    with pytest.raises(ChecklistError) as err:
        compile_checklist(plan, [*custom, *BUILTIN_FORMS])
    message = str(err.value)
    assert "At most 300 words" in message
    assert all(f.example in message for f in BUILTIN_FORMS)
    assert r"(?P<x>LOUD+)" not in message
    assert "'shouty' form, which has no example: give its ChecklistForm example=" in message


def test_checklist_form_example_is_optional():
    form = ChecklistForm(name="x", pattern="x", check=lambda c: None)
    assert form.example == ""


# -- 11.17: the checklist's forms match in linear time ------------------------------------------

SPACES = " " * 40_000


def _compile_one(root: Path, line: str):
    plan = _plan_with_line(root, line)
    rules = compile_checklist(plan, list(BUILTIN_FORMS))
    return plan, rules[0]


def _check(plan, rule, text: str):
    from pytest_batchgen.checklist import CheckContext
    from pytest_batchgen.document import parse_text

    doc = parse_text(plan.rootdir / "output" / "alpha.md", text)
    return rule.run(CheckContext(doc=doc, row=plan.rows[0], plan=plan))


def test_a_front_matter_line_with_a_long_run_of_spaces_compiles_to_its_keys(tmp_path):
    plan, rule = _compile_one(tmp_path, "Front matter includes term," + SPACES + "x")
    assert rule.name == "front-matter"
    failure = _check(plan, rule, "---\nterm: a\n---\n\n## A\n")
    assert failure is not None and failure.message == "front matter: missing key x"
    # without the comma the run of spaces is one space in a key, which must be quoted
    with pytest.raises(ChecklistError, match="cannot read 'term x' as a front matter key"):
        _compile_one(tmp_path, "Front matter includes term" + SPACES + "x")


def test_a_front_matter_line_with_spaces_before_at_least_keeps_its_count(tmp_path):
    plan, rule = _compile_one(tmp_path, "Front matter includes term," + SPACES + "and at least 2" + SPACES + "tags")
    failure = _check(plan, rule, "---\nterm: a\ntags: [one]\n---\n")
    assert failure is not None and "tags has 1 non-blank item" in failure.message and "at least 2" in failure.message


@pytest.mark.parametrize(
    "line",
    [
        "Definition," + SPACES + "Details" + SPACES + "sections present" + SPACES + "x",
        "status is one of:" + SPACES + "draft," + SPACES + "x",
        "Linter passes:" + SPACES,
        "Output registered in" + SPACES + "x" + SPACES,
        "category is one of the" + SPACES + "values listed in content rules" + SPACES + "x",
    ],
    ids=["sections", "one-of-inline", "linter", "registered", "one-of-listed"],
)
def test_every_builtin_form_answers_a_long_line(tmp_path, line):
    try:
        _compile_one(tmp_path, line)
    except ChecklistError as exc:
        assert "plan.md" in str(exc)


def test_split_list_with_long_runs_of_spaces_and_commas():
    assert split_list("a" + SPACES + "and" + SPACES + "b") == ["a", "b"]
    assert split_list("a" + " ," * 20_000 + " b") == ["a", "b"]


def test_a_corrupt_cassette_of_a_row_that_sends_nothing_is_left_alone(pytester, fake):
    path = _record_then_corrupt(pytester, fake, _truncate)
    before = path.read_bytes()
    (pytester.path / "output" / "alpha.md").write_text(good("Alpha"), encoding="utf-8")  # already passes

    result = run(pytester)

    assert result.ret == pytest.ExitCode.OK, text_of(result)
    assert fake.messages_requests() == [] and path.read_bytes() == before
    assert not path.with_name("alpha.md.yaml.corrupt").exists()


def test_front_matter_lines_read_the_same_whatever_their_whitespace():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pytest_batchgen.rules import _front_matter_parts

    word = st.from_regex(r"[a-z][a-z_\-]{0,8}", fullmatch=True).filter(lambda w: w not in ("and", "at", "least"))
    gap = st.text(alphabet=" \t", min_size=1, max_size=30)

    @settings(max_examples=150, deadline=None)
    @given(
        keys=st.lists(word, min_size=0, max_size=5),
        count=st.sampled_from([None, "2", "three"]),
        list_key=word,
        gaps=st.lists(gap, min_size=12, max_size=12),
    )
    def prop(keys, count, list_key, gaps):
        tokens = []
        for i, k in enumerate(keys):
            tokens.append(k + ("," if i < len(keys) - 1 else ""))
        if count:
            tokens += (["and"] if keys else []) + ["at", "least", count, list_key]
        if not tokens:
            return
        spaced = tokens[0] + "".join(g + t for g, t in zip(gaps * 3, tokens[1:]))
        got = _front_matter_parts(spaced)
        assert got == _front_matter_parts(" ".join(tokens))
        assert split_list(got[0]) == keys
        assert got[1:] == ((count, list_key) if count else (None, None))

    prop()


# -- an empty reply is asked again, never written, never pasted into a repair turn ---------------


def _reply_with(content: list) -> Reply:
    return Reply.raw(json.dumps({**_NULL_CONTENT, "content": content}))


EMPTY_REPLIES = [
    pytest.param(Reply.ok(""), id="no-content"),
    pytest.param(_reply_with([{"type": "text", "text": ""}]), id="empty-text-block"),
    pytest.param(Reply.ok("  \n\n"), id="whitespace"),
    pytest.param(_reply_with([{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}]), id="only-tool-use"),
]


def report_of(root: Path, filename: str) -> dict:
    report = json.loads((root / "report.json").read_text(encoding="utf-8"))
    return next(r for p in report["plans"] for r in p["rows"] if r["filename"] == filename)


@pytest.mark.parametrize("empty", EMPTY_REPLIES)
def test_an_empty_reply_is_asked_again_and_never_pasted_into_a_repair_turn(pytester, fake, empty):
    """An empty reply (end_turn, no text) was written as a 1-byte draft, failed its checks, and
    was pasted into a repair request as {"role": "assistant", "content": ""}, which the API
    refuses: the row failed with "HTTP 400 invalid_request_error: messages.1: all messages must
    have non-empty content except for the optional final assistant message", after paying."""
    write_project(pytester.path, ["alpha.md"])
    fake.default.set("alpha.md", empty, Reply.ok(good("Alpha")))

    result = run(pytester, "--batch-report", "report.json")

    assert result.ret == pytest.ExitCode.OK, text_of(result)
    first, second = [e.body for e in fake.messages_requests()]
    assert second == first  # the same request again, not a repair
    attempts = report_of(pytester.path, "alpha.md")["attempts"]
    assert [a["call"] for a in attempts] == ["live", "live"]  # both counted: both were paid for
    assert attempts[0]["error"].startswith("the model's reply was empty (no text, stop_reason end_turn)")
    assert statuses(pytester.path) == {"alpha.md": "complete"}

    fake.reset_log()
    (pytester.path / "output" / "alpha.md").unlink()
    write_project(pytester.path, ["alpha.md"])
    replayed = run(pytester, "--batch-record-mode", "none")
    assert replayed.ret == pytest.ExitCode.OK, text_of(replayed)  # the empty reply, then the good one
    assert fake.messages_requests() == []


def test_a_row_whose_every_reply_is_empty_fails_clearly_and_keeps_its_output(pytester, fake):
    write_project(pytester.path, ["alpha.md"])
    output = pytester.path / "output" / "alpha.md"
    output.write_text(lint_bad("Alpha"), encoding="utf-8")  # a failing output of an earlier run
    fake.default.set("alpha.md", Reply.ok(""))

    result = run(pytester, "--batch-report", "report.json")

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert (
        "generation failed: error: the model's reply was empty (no text, stop_reason end_turn) in all 2 attempts: "
        "nothing was written" in out
    ), out
    assert "HTTP 400" not in out and "Traceback" not in out
    assert output.read_text(encoding="utf-8") == lint_bad("Alpha")  # not overwritten by an empty one
    bodies = [e.body for e in fake.messages_requests()]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert [a["cost_usd"] > 0 for a in report_of(pytester.path, "alpha.md")["attempts"]] == [True, True]

    fake.default.set("alpha.md", Reply.ok(good("Alpha")))  # the recording ended empty: asked again
    again = run(pytester)
    assert again.ret == pytest.ExitCode.OK, text_of(again)
    assert sent(fake, "alpha.md") == 3  # the two empty replies replayed, then one live request
    assert statuses(pytester.path) == {"alpha.md": "complete"}


def test_an_empty_reply_to_a_repair_is_asked_again_and_the_draft_stays(pytester, fake):
    write_project(pytester.path, ["alpha.md"])
    fake.default.set("alpha.md", Reply.ok(lint_bad("Alpha")), Reply.ok(""))

    result = run(pytester)

    out = text_of(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert (
        "the model's reply was empty (no text, stop_reason end_turn) in the last attempt (1 of 2 were empty): "
        "nothing was written; output/alpha.md holds an earlier attempt's draft" in out
    ), out
    assert (pytester.path / "output" / "alpha.md").read_text(encoding="utf-8") == lint_bad("Alpha")

    fake.reset_log()
    fake.default.set("alpha.md", Reply.ok(lint_bad("Alpha")), Reply.ok(""), Reply.ok(good("Alpha")))
    (pytester.path / "output" / "alpha.md").unlink()
    cassette(pytester.path, "alpha.md").unlink()
    assert run(pytester, "--batch-max-attempts", "3").ret == pytest.ExitCode.OK
    first, repair, again = [e.body for e in fake.messages_requests()]
    assert [m["role"] for m in repair["messages"]] == ["user", "assistant", "user"] and again == repair
