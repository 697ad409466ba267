"""The batch journal shared by processes: two runs of one plan (``Journal`` objects on one
path, each loaded once, as each process does) change their own entries and lose none of the
other's."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import subprocess
import sys
import uuid

from pytest_batchgen import journal
from pytest_batchgen.journal import STALE_AFTER, Journal, Owner, RequestEntry, journal_path


def req(row: str, digest: str = "d") -> RequestEntry:
    return RequestEntry(row=row, digest=digest, attempt=1)


def on_disk(path) -> dict[str, list[str]]:
    """batch id (or "pending") -> its requests' rows, as the file has them."""
    if not path.exists():
        return {}
    return {
        (b["id"] or "pending"): sorted(r["row"] for r in b["requests"].values())
        for b in json.loads(path.read_text())["batches"]
    }


def test_two_runs_that_begin_at_once_both_keep_their_batch(tmp_path):
    # given: two runs of one plan, started together: each loaded the journal while it was empty
    path = journal_path(tmp_path)
    a, b = Journal.load(path), Journal.load(path)

    # when: each records and creates its batch (different rows)
    ea = a.begin({"c0": req("row00.md")})
    eb = b.begin({"c1": req("row01.md")})
    a.created(ea, "batch_a")
    b.created(eb, "batch_b")

    # then: the journal lists both batches (it listed B's only: each write replaced the other's)
    assert on_disk(path) == {"batch_a": ["row00.md"], "batch_b": ["row01.md"]}
    # and a resume (a fresh load) finds row00's request in A's batch, so sends it in none other
    assert Journal.load(path).find("row00.md", "d")[0].id == "batch_a"


def test_a_run_that_finishes_leaves_the_batch_of_a_stopped_run(tmp_path):
    # given: run A stopped (Ctrl-C) with its batch out; run B, started with it, collects its own
    path = journal_path(tmp_path)
    a, b = Journal.load(path), Journal.load(path)
    a.created(ea := a.begin({"c0": req("row00.md")}), "batch_a")
    b.created(eb := b.begin({"c1": req("row01.md")}), "batch_b")

    # when: B files its result; its own entry is then empty
    b.collected(eb, {"c1"})

    # then: the journal still lists A's batch (B deleted the file: A's resume paid for row00 again)
    assert on_disk(path) == {"batch_a": ["row00.md"]}
    assert b.entries == [ea] and b.own() == []  # B sees A's batch, but it is not B's to cancel
    # and when A's resume collects it, the file goes
    resumed = Journal.load(path)
    resumed.collected(resumed.entries[0], {"c0"})
    assert not path.exists()


def test_collecting_drops_only_the_filed_requests_of_a_batch_two_runs_share(tmp_path):
    # given: a batch of three rows in the journal, which two runs (-k of different rows) reattach to
    path = journal_path(tmp_path)
    first = Journal.load(path)
    first.created(first.begin({"c0": req("r0"), "c1": req("r1"), "c2": req("r2")}), "batch_x")
    a, b = Journal.load(path), Journal.load(path)

    # when: A files r0, then B files r1 (from its copy, which still lists r0)
    a.collected(a.entries[0], {"c0"})
    b.collected(b.entries[0], {"c1"})

    # then: r2's request stays for a later run; r0's is not brought back by B
    assert on_disk(path) == {"batch_x": ["r2"]}
    # and a forget of one run's entry leaves the others
    c = Journal.load(path)
    c.created(ec := c.begin({"c9": req("r9")}), "batch_c")
    a.forget(a.entries[0])  # batch_x gone from the API
    assert on_disk(path) == {"batch_c": ["r9"]}
    c.forget(ec)
    assert not path.exists()


def test_a_created_batch_forgotten_meanwhile_by_another_run_is_written_back(tmp_path):
    # given: A recorded its batch (no id yet); B, starting, found no batch for it and forgot it
    path = journal_path(tmp_path)
    a = Journal.load(path)
    ea = a.begin({"c0": req("row00.md")})
    b = Journal.load(path)
    b.forget(b.entries[0])
    assert not path.exists()

    # when: A's create returns
    a.created(ea, "batch_a")

    # then: the batch (paid for) is in the journal
    assert on_disk(path) == {"batch_a": ["row00.md"]}


def test_find_sees_another_runs_batch_after_a_refresh_but_not_one_being_created(tmp_path):
    # given: run B loaded the journal before A began its batch
    path = journal_path(tmp_path)
    a, b = Journal.load(path), Journal.load(path)
    ea = a.begin({"c0": req("row00.md", "x")})

    # when/then: a batch whose create is still out is nothing to wait for (it has no id to poll)
    b.refresh()
    assert b.find("row00.md", "x") is None
    # once created, B waits for it instead of sending the request again
    a.created(ea, "batch_a")
    b.refresh()
    found = b.find("row00.md", "x")
    assert found is not None and (found[0].id, found[1]) == ("batch_a", "c0")
    assert b.find("row00.md", "other digest") is None


# -- owners: a run adopts the entries of runs that are gone, never a live run's ------------------


def gone_pid() -> int:
    """The pid of a process of this machine that has ended (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def owner_like(me: Owner, **changes) -> Owner:
    return dataclasses.replace(me, run=uuid.uuid4().hex, **changes)


def started(path, owner: Owner, row: str, batch: str) -> Journal:
    """Run ``owner`` registered ``row`` and created ``batch`` of it (and stopped there)."""
    j = Journal.load(path, owner)
    j.register([row])
    j.created(j.begin({f"c-{row}": req(row)}), batch)
    return j


def test_a_run_adopts_only_the_batches_of_runs_that_are_gone(tmp_path):
    # given: batches of a live run (another in this process), of a dead process, of a reused pid
    # (this process's pid, another start time), of an ended run, and one from a journal without owners
    path = journal_path(tmp_path)
    me = Owner.current()
    live = started(path, owner_like(me), "live.md", "batch_live")
    started(path, owner_like(me, pid=gone_pid()), "dead.md", "batch_dead")
    started(path, owner_like(me, started="1"), "reused.md", "batch_reused")
    started(path, owner_like(me), "ended.md", "batch_ended").release()
    data = json.loads(path.read_text())
    data["batches"].append(
        {
            "local": "old",
            "id": "batch_old",
            "created": "2026-01-01T00:00:00+00:00",
            "requests": {"c-old": {"row": "old.md", "digest": "d"}},
        }
    )
    path.write_text(json.dumps(data))

    # when: a new run registers for every row
    new = Journal.load(path, me)
    taken = new.register(["live.md", "dead.md", "reused.md", "ended.md", "old.md"])

    # then: the live run keeps its row and its batch; every other batch is the new run's
    assert set(taken) == {"live.md"} and taken["live.md"]["run"] == live.owner.run
    assert sorted(e.id for e in new.own()) == ["batch_dead", "batch_ended", "batch_old", "batch_reused"]
    runs = {r["owner"]["run"]: r["rows"] for r in json.loads(path.read_text())["runs"]}
    assert runs == {live.owner.run: ["live.md"], me.run: ["dead.md", "ended.md", "old.md", "reused.md"]}
    # and a third run finds both alive: it gets no row and adopts nothing
    third = Journal.load(path)
    assert set(third.register(["live.md", "dead.md"])) == {"live.md", "dead.md"} and third.own() == []


def test_a_run_on_another_machine_is_alive_while_its_heartbeat_is_recent(tmp_path, monkeypatch):
    # given: a run of another host, with a batch out
    path = journal_path(tmp_path)
    me = Owner.current()
    other = started(path, owner_like(me, host="elsewhere", pid=1), "far.md", "batch_far")

    # then: while it beats, its row and batch are its own
    new = Journal.load(path, me)
    assert set(new.register(["far.md"])) == {"far.md"} and new.own() == []
    other.heartbeat(["far.md"])
    # once its heartbeat is older than STALE_AFTER, it is taken for gone
    later = _dt.datetime.now(_dt.timezone.utc) + STALE_AFTER + _dt.timedelta(seconds=1)
    monkeypatch.setattr(journal, "_now", lambda: later)
    assert Journal.load(path, me).register(["far.md"]) == {}
    assert [e.id for e in Journal.load(path, me).own()] == ["batch_far"]
