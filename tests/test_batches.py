"""Message Batches (issue 13): ``--batch-api batches`` end to end against the loopback server.

Every run is a real pytest session (in-process) whose rows go through the real anthropic SDK's
``messages.batches`` to :class:`~fakeapi.FakeAnthropic`, which answers each batch request with
the row's scripted reply (the ``fake`` fixture's router). Assertions are on what a user sees
(statuses, outputs, items, cassettes, the journal) and on what the server received (batches
created, the requests in them).
"""

from __future__ import annotations

import json
import re

import yaml  # noqa: F401  (in-process runs: see tests/test_init.py)

from fakeapi import FakeAnthropic, Reply
from genhelpers import API_KEY, FAST_RETRY, bad_value, draft, go_offline, router, row_of, rows_for
from pytest_batchgen.journal import CUSTOM_ID_RE, custom_id

BATCH_INI = "batchgen_batch_poll_start = 0.01\nbatchgen_batch_poll_max = 0.05\n"


def batch_requests(fake: FakeAnthropic) -> list[list[dict]]:
    """The requests of each batch the server received, in creation order."""
    return [b.requests for b in fake.batches.values()]


def rows_in(batch: list[dict]) -> list[str]:
    return sorted(row_of(r["params"]) for r in batch)


def test_rows_pass_fail_and_are_repaired_in_a_follow_up_batch(project, fake):
    # given: one row that passes, one repaired on its second attempt, one that never passes
    project.write_rows(rows_for("quorum", "backpressure", "gossip"), ini_extra=BATCH_INI)
    router(fake).set("backpressure.md", Reply.ok(bad_value("Backpressure")), Reply.ok(draft("Backpressure")))
    router(fake).set("gossip.md", Reply.ok(bad_value("Gossip")))

    # when
    result = project.run("--batch-api", "batches")

    # then: two batches, the second holding only the repairs, with the failing checks in them
    batches = batch_requests(fake)
    assert [rows_in(b) for b in batches] == [["backpressure.md", "gossip.md", "quorum.md"], ["backpressure.md", "gossip.md"]]
    repair = next(r for r in batches[1] if row_of(r["params"]) == "backpressure.md")["params"]
    assert [m["role"] for m in repair["messages"]] == ["user", "assistant", "user"]
    assert "category" in repair["messages"][2]["content"]
    assert fake.messages_requests() == []  # nothing went through the per-request endpoint
    # every request: same parameters as the messages path, 1-hour cache on the shared prefix
    for batch in batches:
        for req in batch:
            assert CUSTOM_ID_RE.match(req["custom_id"])
            assert req["params"]["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
            assert req["params"]["max_tokens"] == 8192 and req["params"]["model"].startswith("claude-haiku")
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete", "gossip.md": "pending"}
    assert project.output("backpressure.md") == draft("Backpressure")
    result.assert_items({"quorum.md::generate": "passed", "gossip.md::category-value": "failed"})
    assert result.ret == 1
    # and the journal is gone once every result was filed
    assert not (project.cassette_dir() / "batches-journal.json").exists()


def test_errored_and_expired_results_are_sent_again_then_fail_with_the_api_error(project, fake):
    # given: one row errored then fine, one expired then fine, one errored every time
    project.write_rows(rows_for("quorum", "backpressure", "gossip"), ini_extra=BATCH_INI)
    router(fake).set("quorum.md", Reply.overloaded(), Reply.ok(draft("Quorum")))
    router(fake).set("backpressure.md", Reply.expired(), Reply.ok(draft("Backpressure")))
    router(fake).set("gossip.md", Reply.invalid_request("prompt is too long: 300000 tokens > 200000 maximum"))

    # when
    result = project.run("--batch-api", "batches", "--batch-report", "report.json")

    # then: the second batch resends exactly the failed requests, and no more than the attempts
    batches = batch_requests(fake)
    assert [rows_in(b) for b in batches] == [["backpressure.md", "gossip.md", "quorum.md"], ["backpressure.md", "gossip.md", "quorum.md"]]
    first = {row_of(r["params"]): r["params"] for r in batches[0]}
    second = {row_of(r["params"]): r["params"] for r in batches[1]}
    assert first == second  # the same request again, not a repair
    assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete", "gossip.md": "pending"}
    assert "prompt is too long" in result.failure("gossip.md::generate")
    report = json.loads(project.read("report.json"))
    rows = {r["filename"]: r for r in report["plans"][0]["rows"]}
    assert [a["error"] for a in rows["backpressure.md"]["attempts"]][0].startswith("Message Batches expired")
    assert [a["batch"] for a in rows["quorum.md"]["attempts"]] == [True, True]


def test_custom_ids_are_valid_and_collision_free_for_any_filename():
    taken: set[str] = set()
    names = ["quorum.md", "quorum_md", "a" * 300, "ünïcode/päth.md", "x.md"]
    ids = []
    for name in names:
        cid = custom_id(name, taken)
        taken.add(cid)
        ids.append(cid)
    assert all(re.match(r"^[a-zA-Z0-9_-]{1,64}$", cid) for cid in ids)
    assert len(set(ids)) == len(ids)
    assert custom_id("quorum.md", set()) == ids[0]  # stable: the journal maps it back


def test_a_batch_made_cassette_replays_offline_in_either_api_mode(project, fake, monkeypatch):
    # given: a batch-mode run recorded two rows (one repaired)
    rows = rows_for("quorum", "backpressure")
    project.write_rows(rows, ini_extra=BATCH_INI)
    router(fake).set("backpressure.md", Reply.ok(bad_value("Backpressure")), Reply.ok(draft("Backpressure")))
    assert project.run("--batch-api", "batches").ret == 0
    recorded = project.cassettes()

    # when: the outputs are gone and the run replays offline, without a key, in both modes
    attempts = go_offline(fake, monkeypatch)
    for api in ("messages", "batches"):
        project.reset(rows)
        result = project.run("--batch-api", api, "--batch-record-mode", "none")

        # then: every row replays from the batch-made cassettes; nothing connects, nothing changes
        assert result.ret == 0, result.stdout.str()
        assert project.statuses() == {"quorum.md": "complete", "backpressure.md": "complete"}
        assert project.output("backpressure.md") == draft("Backpressure")
        result.stdout.fnmatch_lines(["*every call was replayed from cassettes*"])
    assert attempts == []
    assert project.cassettes() == recorded
