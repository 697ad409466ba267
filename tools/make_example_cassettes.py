"""Rebuild the example's cassettes offline (plans/cassettes/glossary/).

Nothing here reaches the Anthropic API, so the example's recordings are made by hand: the
replies are the hand-written entries in tests/data/example-replies/, served by the test
suite's loopback server (tests/fakeapi.py), which speaks the Messages wire format. The
plugin records them exactly as it records a live run; the quorum row first gets a draft with
``category: Consistent`` and is repaired on its second attempt. Afterwards the loopback
address in the recorded ``host`` header is replaced with api.anthropic.com.

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

REPLIES = ROOT / "tests" / "data" / "example-replies"


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="batchgen-example-"))
    for name in ("plans", "output"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("cassettes"))
    shutil.copy(ROOT / ".pymarkdown.json", work)
    with FakeAnthropic() as server:

        def answer(body: dict) -> Reply:
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
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--batch-plan", "plans/glossary.md",
             "--batch-record-mode", "all", "-q", "-o", "testpaths="],
            cwd=work, env=env,
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
