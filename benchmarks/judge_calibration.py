r"""Measure a judge against labels people gave: accuracy, Cohen's kappa and flip rate per criterion.

    ANTHROPIC_API_KEY=sk-ant-... python benchmarks/judge_calibration.py \
        --labels tests/data/judge/labels.yaml [--samples 3] [--model sonnet]

Every (output, criterion) of the labelled set is sent to the judge exactly as a ``Judge:``
checklist line sends it, ``--samples`` times, live (nothing is replayed; the recordings go to a
scratch folder, or to ``--keep DIR``). It prints one line per criterion: how many items, how
many got a verdict, how many a failed call cut short (left out of every figure, and listed with
their error under the table), accuracy and kappa of the majority verdict against the label, and
the share of items whose samples disagreed. It ends with the calls made, their tokens and
estimated cost.

``--loopback ANSWERS.yaml`` answers from the test suite's loopback server instead, with scripted
verdicts (``FILE: {CRITERION: [pass, fail, error, ...]}``, one per sample, ``error`` an HTTP 400;
unscripted items get the label's verdict): the tests use it to check the arithmetic, and it
needs no key.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_batchgen.calibration import format_scores, judge_set, load_labels, score  # noqa: E402
from pytest_batchgen.pricing import PriceTable  # noqa: E402


def _loopback(labels: dict[str, Any], answers: dict[str, Any]) -> Any:
    """Start the loopback server answering judge calls from ``answers`` (else the label)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import threading

    from fakeapi import FakeAnthropic, Reply
    from judgehelpers import criterion_of, judged_file, verdict_reply

    by_text = {text: key for key, text in labels["criteria"].items()}
    label_of = {(e["file"], c): v["verdict"] for e in labels["outputs"] for c, v in e["labels"].items()}
    served: dict[tuple[str, str], int] = {}
    lock = threading.Lock()

    def answer(body: dict) -> Any:
        filename, criterion = judged_file(body), by_text[criterion_of(body)]
        script = (answers.get(filename) or {}).get(criterion)
        with lock:
            n = served.get((filename, criterion), 0)
            served[(filename, criterion)] = n + 1
        verdict = script[min(n, len(script) - 1)] if script else label_of[(filename, criterion)]
        if verdict == "error":  # a call that fails for good (400s are not retried)
            return Reply.invalid_request("scripted error")
        return verdict_reply(verdict, f"scripted {verdict}", 1)

    server = FakeAnthropic()
    server.default = answer
    server.start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=ROOT / "tests" / "data" / "judge" / "labels.yaml")
    parser.add_argument("--samples", type=int, default=1, help="K: ask each item K times (flip rate)")
    parser.add_argument("--model", default=None, help="judge model alias or id (default: the set plan's 'judge')")
    parser.add_argument("--workers", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--keep", type=Path, default=None, help="keep the scratch copy and its recordings here")
    parser.add_argument("--loopback", type=Path, default=None, help="scripted answers from the loopback server (tests)")
    args = parser.parse_args(argv)

    import yaml

    labels = load_labels(args.labels)
    server = None
    api_key = os.environ.get("ANTHROPIC_API_KEY")
    saved = {k: os.environ.get(k) for k in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")}
    if args.loopback is not None:
        answers = yaml.safe_load(args.loopback.read_text(encoding="utf-8")) or {}
        server = _loopback(labels, answers)
        os.environ["ANTHROPIC_BASE_URL"] = server.base_url
        api_key = os.environ["ANTHROPIC_API_KEY"] = "sk-ant-loopback-calibration"
    elif not api_key:
        print("ANTHROPIC_API_KEY is not set: a calibration measures a real judge (or pass --loopback)", file=sys.stderr)
        return 2
    try:
        judged = judge_set(
            args.labels, samples=args.samples, model=args.model, api_key=api_key, workers=args.workers, keep=args.keep
        )
    finally:
        if server is not None:
            server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    for line in format_scores(score(labels, judged.verdicts, judged.cut_short), args.samples, judged.cut_short):
        print(line)
    attempts = [a for row in judged.service.attempts.values() for a in row]
    prices = PriceTable()
    cost = sum(prices.cost(a.model, a.usage) for a in attempts)
    tokens_in = sum(a.usage.input_tokens for a in attempts)
    tokens_out = sum(a.usage.output_tokens for a in attempts)
    errors = sum(a.error is not None for a in attempts)
    where = "loopback server (scripted verdicts)" if server is not None else "Anthropic API"
    print(
        f"{len(attempts)} judge calls to the {where}, {errors} failed; tokens {tokens_in} in / {tokens_out} out; "
        f"estimated cost ${cost:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
