"""The dispatcher's lanes: how many rows are under way when the first request leaves, and every
row still generated once, in the plan's order, with the pacer bounding what is in flight.

The core alone (no pytest run): a stub client that, like the SDK, awaits before its request
is written (the SDK awaits its connection), and records how many rows had built their prompt by
then: a row builds it as it starts, before it waits for the pacer."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_batchgen import dispatch
from pytest_batchgen.checklist import compile_checklist
from pytest_batchgen.client import Completion, Usage
from pytest_batchgen.dispatch import LANES_PER_SLOT, Dispatcher, Job
from pytest_batchgen.document import DocumentCache
from pytest_batchgen.outcomes import Outcome
from pytest_batchgen.plan import load_plan
from pytest_batchgen.rules import BUILTIN_FORMS
from pytest_batchgen.run import PlanRun

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_generation import REFERENCE, write_plan  # noqa: E402


def plan_run(folder: Path, rows: int) -> PlanRun:
    """The benchmarks' plan of ``rows`` pending rows (three built-in lines, no linter)."""
    write_plan(folder, rows)
    plan = load_plan(folder / "plan.md", folder)
    return PlanRun(plan=plan, rules=compile_checklist(plan, BUILTIN_FORMS), rows=plan.rows, docs=DocumentCache())


def passing(title: str) -> str:
    """A draft of the row ``title`` that passes the benchmarks' checklist."""
    return REFERENCE.replace("Reference", title)


class ConnectingClient:
    """Answers every request with a passing draft, after an ``await`` that yields to the event
    loop as the SDK's connection does; notes how many rows had built their prompt when the first
    request left (``started``, counted by the test), the rows it was asked for, in order, and the
    most requests it ever had at once."""

    def __init__(self) -> None:
        self.started = 0
        self.asked: list[str] = []
        self.at_first_send: int | None = None
        self.in_flight = 0
        self.most_in_flight = 0

    async def complete(self, key: str, params: dict[str, Any]) -> Completion:
        self.asked.append(key)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # the connection: the loop runs whatever else is ready
            if self.at_first_send is None:
                self.at_first_send = self.started
            title = params["messages"][0]["content"].split("<title>")[1].split("</title>")[0]
            return Completion(passing(title), "end_turn", Usage(input_tokens=10, output_tokens=20), params["model"])
        finally:
            self.in_flight -= 1

    def start_afresh(self, key: str) -> bool:
        return False

    def retry_hint(self, key: str) -> str:
        return ""

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("concurrency", [1, 3])
def test_the_first_request_leaves_before_more_rows_than_the_lanes_are_started(tmp_path, monkeypatch, concurrency):
    """With a task a row started at once, all 200 rows built their prompt before the first
    request left."""
    run = plan_run(tmp_path, 200)
    client = ConnectingClient()
    build_prompt = dispatch.build_prompt

    def counted(*args: Any, **kwargs: Any) -> Any:
        client.started += 1
        return build_prompt(*args, **kwargs)

    monkeypatch.setattr(dispatch, "build_prompt", counted)
    dispatcher = Dispatcher([Job(run, row) for row in run.rows], lambda: client, concurrency=concurrency)

    dispatcher.start()
    assert dispatcher.join(60)

    lanes = LANES_PER_SLOT * concurrency
    assert client.at_first_send is not None and client.at_first_send <= lanes
    assert client.most_in_flight <= concurrency  # the pacer still bounds what is in flight
    # every row once, taken in the plan's order
    assert client.asked == [Job(run, row).key for row in run.rows]
    results = dispatcher.results()
    assert {r.outcome for r in results.values()} == {Outcome.PASSED}
    assert len(results) == 200
    assert (tmp_path / "out" / "term-199.md").read_text(encoding="utf-8") == passing("Term 199")
