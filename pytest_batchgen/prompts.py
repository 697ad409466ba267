"""The DISPATCH prompt, resolved: a shared system prefix and one user message per row.

The prefix (instructions, the format reference's full text, the content rules) is the same
bytes for every row of a plan, and is marked with ``cache_control`` so the API caches it
after the first row; only the short user message differs from row to row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .defaults import DEFAULT_MAX_TOKENS
from .plan import Plan, Row

INSTRUCTIONS = """\
You are writing one file of a batch. Every file in the batch has the shape of the format \
reference below: the same front matter keys, the same sections in the same order, the same \
style and length. Copy its structure and conventions, not its content.

Follow every content rule listed below.

Answer with the complete content of the file and nothing else: no preamble, no closing remarks, \
and no code fence around the file."""


@dataclass(frozen=True)
class Prompt:
    """A row's request parameters for the Messages API (and the parts they came from)."""

    model: str
    system: str
    user: str
    max_tokens: int

    def params(self, history: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        messages = [{"role": "user", "content": self.user}, *history]
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": [{"type": "text", "text": self.system, "cache_control": {"type": "ephemeral"}}],
            "messages": messages,
        }


def shared_prefix(plan: Plan) -> str:
    """The system text shared by all rows: byte-identical across them, so it caches."""
    rules = "\n".join(f"- {item.text}" for item in plan.content_rules)
    return render_system(plan.rel(plan.format_reference), plan.format_reference_text.rstrip(), rules)


def render_system(reference_path: str, reference: str, rules: str) -> str:
    """The system template filled in; :mod:`pytest_batchgen.freshness` refills it with a recorded
    request's values to tell a template change from a change of the plan's inputs."""
    return (
        f"{INSTRUCTIONS}\n\n"
        f'<format_reference path="{reference_path}">\n{reference}\n</format_reference>\n\n'
        f"<content_rules>\n{rules}\n</content_rules>"
    )


def row_message(plan: Plan, row: Row) -> str:
    return render_user(row.title, plan.rel(plan.output_path(row)))


def render_user(title: str, path: str) -> str:
    """The user template filled in (see :func:`render_system`)."""
    return (
        f"<title>{title}</title>\n"
        f"<output_path>{path}</output_path>\n\n"
        f"Write the file {path}, covering: {title}. Follow the format reference and the content rules."
    )


def build_prompt(plan: Plan, row: Row, max_tokens: int = DEFAULT_MAX_TOKENS, prefix: str | None = None) -> Prompt:
    return Prompt(
        model=row.model,
        system=prefix if prefix is not None else shared_prefix(plan),
        user=row_message(plan, row),
        max_tokens=max_tokens,
    )


def repair_message(failures: Sequence[tuple[str, str, str]]) -> str:
    """The user turn that asks for a fixed file: each failing check and what it found.

    ``failures`` are (rule name, checklist line text, failure message; further lines of the
    message, such as a linter's report, are indented under its item). API errors never come
    here: only verdicts of the checklist on the draft.
    """
    lines = [
        "The file you wrote fails these checks of the validation checklist:",
        "",
    ]
    for name, text, message in failures:
        first, *more = message.splitlines() or [""]
        lines.append(f"- {text} ({name}): {first}")
        lines.extend(f"  {line}" for line in more)  # a check's output, indented under its item
    lines += [
        "",
        "Write the whole file again with these problems fixed, keeping everything that was right. "
        "Answer with the file's content only.",
    ]
    return "\n".join(lines)


_FENCE_RE = re.compile(r"\A\s*(?P<fence>`{3,}|~{3,})[^\n`]*\n(?P<body>.*?)\n?(?P=fence)[`~]*\s*\Z", re.DOTALL)


def unwrap_fence(text: str) -> str:
    """Strip one code fence that wraps the whole reply (and only then)."""
    m = _FENCE_RE.match(text)
    if not m:
        return text
    body = m.group("body")
    fence = m.group("fence")
    if any(line.strip().startswith(fence) for line in body.splitlines()):
        return text  # an inner fence of the same kind: the reply is not one wrapped block
    return body


def normalise_output(text: str) -> str:
    """The text written to disk: unwrapped, with exactly one trailing newline."""
    return unwrap_fence(text).strip("\n") + "\n"


_TAG_RE = re.compile(r"<(format_reference|content_rules)[^>]*>\n?(.*?)\n?</\1>", re.DOTALL)
_USER_TAG_RE = re.compile(r"<(title|output_path)>(.*?)</\1>", re.DOTALL)


def prompt_parts(params: dict[str, Any]) -> dict[str, str]:
    """Name the parts of a request built here, to say what changed between two requests."""
    parts: dict[str, str] = {"model": str(params.get("model", ""))}
    system = params.get("system") or []
    text = system if isinstance(system, str) else "".join(b.get("text", "") for b in system if isinstance(b, dict))
    for m in _TAG_RE.finditer(text):
        parts[m.group(1).replace("_", " ")] = m.group(2)
    parts["instructions"] = _TAG_RE.sub("", text)
    messages = params.get("messages") or []
    if messages:
        first = messages[0].get("content", "")
        first = first if isinstance(first, str) else str(first)
        for m in _USER_TAG_RE.finditer(first):
            parts[m.group(1).replace("_", " ")] = m.group(2)
        parts["conversation"] = str(messages[1:])
    parts["max_tokens"] = str(params.get("max_tokens"))
    return parts
