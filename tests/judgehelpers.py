"""The loopback judge: scripted ``record_verdict`` replies for judge requests (issue #14).

Not a test module. :class:`JudgeRouter` wraps the ``fake`` fixture's per-row router: a request
that offers the ``record_verdict`` tool is a judge call and gets a scripted verdict (per output
file, optionally per criterion); anything else goes to the wrapped router. The example's
cassette tool and the calibration benchmark use :func:`verdict_reply` too.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

from fakeapi import Reply

_OUTPUT_RE = re.compile(r'<output path="([^"]*)">')
_CRITERION_RE = re.compile(r"<criterion>(.*?)</criterion>", re.DOTALL)


def is_judge(body: dict) -> bool:
    return any(t.get("name") == "record_verdict" for t in body.get("tools") or [])


def judged_file(body: dict) -> str:
    """The output file a judge request grades (its name)."""
    m = _OUTPUT_RE.search(body["messages"][0]["content"])
    assert m, "no <output path=...> in the judge request"
    return m.group(1).rsplit("/", 1)[-1]


def criterion_of(body: dict) -> str:
    m = _CRITERION_RE.search(body["messages"][0]["content"])
    return m.group(1) if m else ""


def verdict_reply(
    verdict: str = "pass",
    reason: str = "meets the criterion",
    line: int = 1,
    quote: str = "",
    model: str = "claude-sonnet-5-5",
    usage: dict | None = None,
) -> Reply:
    """A Messages API reply whose only block is a ``record_verdict`` tool call."""
    message = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": "record_verdict",
                "input": {"verdict": verdict, "line": line, "quote": quote, "reason": reason},
            }
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": usage
        or {"input_tokens": 400, "output_tokens": 60, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }
    return Reply.raw(json.dumps(message))


def passes() -> Reply:
    return verdict_reply("pass", "the file meets the criterion", 1)


def fails(reason: str, line: int) -> Reply:
    return verdict_reply("fail", reason, line)


class JudgeRouter:
    """``FakeAnthropic.default`` for runs with judge rules: verdicts scripted per output file
    (and criterion), in order, the last one repeating; unscripted judge calls pass."""

    def __init__(self, inner: Callable[[dict], Reply]) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._script: dict[tuple[str, str], list[Reply]] = {}
        self._served: dict[tuple[str, str], int] = {}
        self.judge_bodies: list[dict] = []

    def set(self, filename: str, *replies: Reply, criterion: str = "") -> None:
        with self._lock:
            self._script[(filename, criterion)] = list(replies)
            self._served[(filename, criterion)] = 0

    def judge_calls(self, filename: str | None = None) -> list[dict]:
        return [b for b in self.judge_bodies if filename is None or judged_file(b) == filename]

    def __call__(self, body: dict) -> Reply:
        if not is_judge(body):
            return self.inner(body)
        filename, criterion = judged_file(body), criterion_of(body)
        with self._lock:
            self.judge_bodies.append(body)
            key = (filename, criterion) if (filename, criterion) in self._script else (filename, "")
            replies = self._script.get(key)
            if not replies:
                return passes()
            n = self._served[key]
            self._served[key] = n + 1
            return replies[min(n, len(replies) - 1)]


def install(server: Any) -> JudgeRouter:
    """Wrap the server's default reply in a :class:`JudgeRouter` (once) and return it."""
    if not isinstance(server.default, JudgeRouter):
        server.default = JudgeRouter(server.default)
    return server.default
