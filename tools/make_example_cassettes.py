"""Rebuild the example's cassettes offline (plans/cassettes/glossary/).

Nothing here reaches the Anthropic API, so the example's recordings are made by hand: the
replies are the hand-written entries in tests/data/example-replies/, served by the test
suite's loopback server (tests/fakeapi.py), which speaks the Messages wire format. The
plugin records them exactly as it records a live run; the quorum row first gets a draft with
``category: Consistent`` and is repaired on its second attempt. The judge line's verdicts
(``<filename>.judge.yaml``) are hand-made the same way: the loopback server answers every judge
call with a ``record_verdict`` pass that quotes the output's first Definition line (see
:func:`judge_verdict`); no model graded these outputs. Afterwards the loopback address in the
recorded URIs is replaced with api.anthropic.com.

With a real key, record for real instead:
    ANTHROPIC_API_KEY=... pytest --batch-plan plans/glossary.md --batch-record-mode all

Run from the repository root:  python tools/make_example_cassettes.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakeapi import FakeAnthropic, Reply  # noqa: E402
from judgehelpers import is_judge, verdict_reply  # noqa: E402

REPLIES = ROOT / "tests" / "data" / "example-replies"

_OUTPUT_RE = re.compile(r'<output path="[^"]*">\n(.*?)\n</output>', re.DOTALL)


def judge_verdict(body: dict) -> Reply:
    """A hand-made pass for the example's judge line, quoting the first line of the Definition."""
    m = _OUTPUT_RE.search(body["messages"][0]["content"])
    numbered = m.group(1).splitlines() if m else []
    lines = [(int(n), text.lstrip()) for n, _, text in (ln.partition("|") for ln in numbered)]
    heading = next((n for n, text in lines if text.strip() == "## Definition"), 0)
    line, quote = next(((n, text) for n, text in lines if n > heading and text.strip()), (1, ""))
    first = quote.split(". ")[0]
    return verdict_reply(
        "pass",
        f'The Definition explains the term in other words (line {line}: "{first[:80]}..."); '
        "it does not define it by itself.",
        line,
        quote,
        model=body["model"],
    )


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="batchgen-example-"))
    for name in ("plans", "output"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("cassettes"))
    shutil.copy(ROOT / ".pymarkdown.json", work)
    with FakeAnthropic() as server:

        def answer(body: dict) -> Reply:
            if is_judge(body):
                return judge_verdict(body)
            first = body["messages"][0]["content"]
            for reply in REPLIES.glob("*.md"):
                if f"<output_path>output/{reply.name}</output_path>" in first:
                    return Reply.ok(reply.read_text(encoding="utf-8"))
            return Reply.server_error()

        server.default = answer
        server.script(
            "<output_path>output/quorum.md</output_path>",
            Reply.ok((REPLIES / "quorum.draft1.md").read_text(encoding="utf-8")),
            Reply.ok((REPLIES / "quorum.md").read_text(encoding="utf-8")),
        )
        env = {**os.environ, "ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "sk-ant-offline-demo"}
        env.pop("CI", None)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "--batch-plan",
                "plans/glossary.md",
                "--batch-record-mode",
                "all",
                "-q",
                "-o",
                "testpaths=",
            ],
            cwd=work,
            env=env,
        )
    if proc.returncode != 0:
        print("recording run failed; cassettes not copied", file=sys.stderr)
        return proc.returncode
    target = ROOT / "plans" / "cassettes" / "glossary"
    target.mkdir(parents=True, exist_ok=True)
    for cassette in sorted((work / "plans" / "cassettes" / "glossary").glob("*.yaml")):
        text = re.sub(r"127\.0\.0\.1:\d+", "api.anthropic.com", cassette.read_text(encoding="utf-8"))
        (target / cassette.name).write_text(text, encoding="utf-8")
        print("wrote", target / cassette.name)
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
