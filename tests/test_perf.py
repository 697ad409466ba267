"""Issue 12's speed work keeps behaviour: each faster path is checked against the slow one.

No timing is asserted here (benchmarks/bench_whole_run.py and bench_validate_only.py print
the figures); these tests pin what the fast paths must not change.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml  # noqa: F401  (pytester restores sys.modules; see tests/test_init.py)
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from genhelpers import IMPORT_PROBE
from pytest_batchgen import plan as plan_mod
from pytest_batchgen.errors import PlanError

# -- cold parse: one token per table row gives the same sections as markdown-it's own rule ----

_PIECES = [
    "| a | b | c |",
    "|---|:-:|--|",
    "| x | y |",
    "| 1 | 2 | 3 | 4 |",
    "a | b",
    "x \\| y | z",
    "",
    "> quote",
    "- item",
    "## H",
    "    code",
    "|",
    "| |",
    "```",
    "text",
    "|-|-|",
    "\t| t |",
    "<div>",
    "***",
    "  | a |",
    "| a `|` b |",
    "> | a | b |",
    "> |---|---|",
    "1. | a |",
    "   |-|",
    "# h1",
    "[x]: /url",
    "Title | F",
    "--- | ---",
    "===",
    "  - | a |",
    "|  |  |",
    "| é | \u2028 |",
]


def _scan_with(md: MarkdownIt, text: str):
    original = plan_mod._markdown
    plan_mod._markdown = lambda: md  # type: ignore[assignment]
    plan_mod.scan_plan.cache_clear()
    try:
        return plan_mod.scan_plan(text)
    finally:
        plan_mod._markdown = original  # type: ignore[assignment]
        plan_mod.scan_plan.cache_clear()


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(_PIECES), st.text(alphabet="|-: \\`ab\t>", max_size=12)), min_size=1, max_size=14
    ),
    st.sampled_from(["", "\n", "\r\n", "\r"]),
)
def test_compact_table_rule_scans_like_markdown_its_own(lines: list[str], ending: str) -> None:
    stock = MarkdownIt("commonmark").enable("table").disable("inline")
    text = "## S\n" + "\n".join(lines) + ending
    # the same scan, but for the cells past a header, which the compact rule keeps and the
    # stock one drops (they make a row an error: plan._read_phase)
    assert _without_overflow(_scan_with(plan_mod._markdown(), text)) == _scan_with(stock, text)


def _without_overflow(scan: plan_mod.Scan) -> plan_mod.Scan:
    def table(t: plan_mod.Table) -> plan_mod.Table:
        return replace(t, rows=tuple(replace(r, overflow=()) for r in t.rows))

    sections = tuple(
        replace(s, tables=tuple(map(table, s.tables)), list_tables=tuple(map(table, s.list_tables)))
        for s in scan.sections
    )
    loose = tuple(replace(lt, table=table(lt.table)) for lt in scan.loose_tables)
    return replace(scan, sections=sections, loose_tables=loose)


def test_compact_table_rule_keeps_rows_cells_and_lines() -> None:
    text = "## Phase 1\n| Title | Filename | Model | Status |\n|---|---|---|---|\n| A | a.md | haiku | pending |\n| B \\| b | b.md |\n| C | c.md | sonnet | complete | extra |\n\nafter\n"
    (section,) = plan_mod.scan(text)
    (table,) = section.tables
    assert table.header == ("Title", "Filename", "Model", "Status")
    assert [r.line for r in table.rows] == [4, 5, 6]
    assert table.rows[0].cells == ("A", "a.md", "haiku", "pending")
    assert table.rows[1].cells == ("B | b", "b.md", "", "")  # padded as markdown-it pads
    assert table.rows[2].cells == ("C", "c.md", "sonnet", "complete")  # cut to the header
    assert [r.overflow for r in table.rows] == [(), (), ("extra",)]  # and what was cut kept apart
    assert section.paragraphs[-1].text == "after"


# -- cold parse: one lstat per filename, the same refusals as Path.resolve() -----------------


def _resolve_both(tmp_path: Path, name: str):
    out = (tmp_path / "out").resolve()
    fast = plan_mod._resolve_below(out, Path(name), "f", tmp_path / "plan.md", 1, {})
    return fast, (out / name).resolve()


@pytest.mark.parametrize(
    "name", ["a.md", "sub/a.md", "sub/deeper/b.md", "./c.md", "link.md", "linkdir/x.md", "file.md/x.md", "../up.md"]
)
def test_resolve_below_matches_path_resolve(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "file.md").write_text("x")
    os.symlink(tmp_path / "elsewhere.md", out / "link.md")
    os.symlink(tmp_path, out / "linkdir")
    fast, slow = _resolve_both(tmp_path, name)
    assert fast == slow


def test_link_to_outside_is_still_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(tmp_path / "secret.md", out / "escape.md")
    with pytest.raises(PlanError, match="leaves the output directory"):
        plan_mod._check_filename("escape.md", out.resolve(), tmp_path / "plan.md", 7, {})


def test_a_name_the_system_refuses_is_still_a_plan_error(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(PlanError, match="cannot be resolved"):
        plan_mod._check_filename("x" * 300 + ".md", (tmp_path / "out").resolve(), tmp_path / "plan.md", 7, {})


# -- registration at scale: appends after the first write, whole lines or nothing ------------


def test_later_registrations_append_and_a_failed_append_leaves_the_old_text(tmp_path: Path, monkeypatch) -> None:
    from pytest_batchgen import tracking

    index = tmp_path / "INDEX.md"
    index.write_text("# Index\n\n- [A](a.md)")  # the user's text, no final newline
    outs = [tmp_path / f"e{i}.md" for i in range(3)]
    assert tracking.register(index, outs[0], "E0")  # the first write: read-modify-rename
    inode = index.stat().st_ino
    assert tracking.register(index, outs[1], "E1")  # later ones append to the same file
    assert index.stat().st_ino == inode
    assert index.read_text() == "# Index\n\n- [A](a.md)\n- [E0](e0.md)\n- [E1](e1.md)\n"

    def short_write(fd: int, data: bytes) -> int:
        os.ftruncate(fd, os.fstat(fd).st_size)
        real_write(fd, data[:5])  # half a line reaches the file, then the disk is full
        raise OSError(28, "No space left on device")

    real_write = os.write
    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(OSError):
        tracking.register(index, outs[2], "E2")
    monkeypatch.undo()
    assert index.read_text() == "# Index\n\n- [A](a.md)\n- [E0](e0.md)\n- [E1](e1.md)\n"
    assert not tracking.is_registered(index, outs[2])
    # someone else's edit without a final newline: the next append starts a new line
    with index.open("a") as fh:
        fh.write("- [X](x.md)")
    assert tracking.register(index, outs[2], "E2")
    assert index.read_text().endswith("- [X](x.md)\n- [E2](e2.md)\n")
    assert tracking.is_registered(index, tmp_path / "x.md")
    assert not tracking.register(index, outs[1], "E1 again")


def test_appended_registrations_are_fsynced_once_with_the_deferred_writes(tmp_path: Path, monkeypatch) -> None:
    from pytest_batchgen import fsutil, tracking

    index = tmp_path / "INDEX.md"
    fsutil.sync_deferred()  # what earlier tests left
    tracking.register(index, tmp_path / "a.md", "A")  # the first: a rewrite, fsynced at once
    tracking.register(index, tmp_path / "b.md", "B")
    tracking.register(index, tmp_path / "c.md", "C")
    synced: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    assert fsutil.sync_deferred() == 1  # two appends, one file
    assert sorted(synced) == sorted([str(index), str(tmp_path)])  # the file, then its folder
    assert fsutil.sync_deferred() == 0  # nothing new appended: nothing to sync
    assert len(synced) == 2


# -- cassettes: saved off the event loop, before the row goes on, then dropped from memory ----


def test_cassettes_are_saved_unsynced_before_the_row_goes_on_and_released(project, fake, monkeypatch) -> None:
    import threading

    from genhelpers import bad_value, draft, router, rows_for
    from fakeapi import Reply
    from pytest_batchgen import dispatch, recording

    names = ["a-one", "b-two", "c-three", "d-four"]
    project.write_rows(rows_for(*names))
    router(fake).set("b-two.md", Reply.ok(bad_value("B Two")), Reply.ok(draft("B Two")))
    saved_by: dict[str, set[str]] = {}
    real_write = recording.atomic_write

    def spy_write(path: Path, data, **kw) -> None:
        saved_by.setdefault(path.name, set()).add((threading.current_thread().name, kw.get("sync", True)))
        real_write(path, data, **kw)

    on_disk_when_checked: list[tuple[str, int]] = []
    real_draft = dispatch.write_draft

    def spy_draft(run, row, path, text, check):
        # the draft comes after the reply: its recording is already on disk, with this attempt
        cassette = project.cassette(row.filename)
        on_disk_when_checked.append((row.filename, cassette.read_text().count("- request:")))
        return real_draft(run, row, path, text, check)

    released: list[str] = []
    real_release = recording.Recorder.release

    def spy_release(self, key: str) -> None:
        real_release(self, key)
        assert key not in self._cassettes
        released.append(key)

    monkeypatch.setattr(recording, "atomic_write", spy_write)
    monkeypatch.setattr(dispatch, "write_draft", spy_draft)
    monkeypatch.setattr(recording.Recorder, "release", spy_release)

    result = project.run("--batch-concurrency", "4", "-o", "batchgen_sender=thread")  # spies see this process

    assert result.ret == 0, result.stdout.str()
    assert sorted(saved_by) == sorted(f"{n}.md.yaml" for n in names)
    # on the dispatcher's loop, without an fsync (a thread hop per save cost more than the save;
    # the files are fsynced together at the end of the run: fsutil.sync_deferred)
    for name, saves in saved_by.items():
        assert saves == {("batchgen-dispatch", False)}, (name, saves)
    # b-two was checked twice: after its first reply (1 interaction saved) and its repair (2)
    assert sorted(c for f, c in on_disk_when_checked if f == "b-two.md") == [1, 2]
    assert all(c == 1 for f, c in on_disk_when_checked if f != "b-two.md")
    assert len(released) == len(names)


# -- the SDK loads while pytest collects, only in runs that generate ---------------------------

PRELOAD_PROBE = """
import sys
import pytest_batchgen.preload as preload

started = []
original = preload.Preloader.start

def start(self):
    started.append(sorted(m for m in ("anthropic", "vcr", "httpx2") if m in sys.modules))
    return original(self)

preload.Preloader.start = start

def pytest_sessionfinish(session):
    print("PRELOAD-THREAD:", bool(started))
    print("HEAVY-BEFORE:", started)
"""


@pytest.mark.parametrize(
    "args, expected",
    [
        (("-o", "batchgen_sender=thread"), True),  # (a forked run preloads in its child: test_sender.py)
        (("--batch-validate-only",), False),
        (("--batch-readonly",), False),
        (("--batch-dry-run",), False),
    ],
)
def test_the_sdk_is_preloaded_only_in_runs_that_generate(project, args, expected) -> None:
    from genhelpers import rows_for

    project.write_rows(rows_for("a-one", "b-two"))
    project.write("conftest.py", PRELOAD_PROBE)
    result = project.run(*args, "-s", subprocess=True)
    assert f"PRELOAD-THREAD: {expected}" in result.stdout.str()
    if expected:  # started before anything had imported them
        assert "HEAVY-BEFORE: [[]]" in result.stdout.str()


def test_no_preload_when_every_row_is_complete_and_nothing_is_re_recorded(project) -> None:
    from genhelpers import rows_for

    rows = rows_for("a-one")
    project.write_rows(rows)
    project.edit(project.plan, "| pending |", "| complete |")
    project.write("conftest.py", PRELOAD_PROBE)
    result = project.run("-s", subprocess=True)
    assert "PRELOAD-THREAD: False" in result.stdout.str()


GC_PROBE = """
import gc, sys
from pytest_batchgen.preload import Preloader

loader = Preloader(("anthropic",) + tuple(sys.argv[1:]))
loader.start()
loader.join()
import anthropic
print("DURING:", anthropic.COLLECTING, "AFTER:", gc.isenabled(), "FROZEN:", gc.get_freeze_count() > 0)
print("FAILED:", loader.failed)
"""


@pytest.mark.parametrize("then", [(), ("no_such_module_here",)], ids=["imported", "a-later-import-fails"])
def test_the_collector_is_paused_while_the_sdk_is_imported_and_resumed_after(tmp_path, then) -> None:
    """Issue 12: the collector's passes during the SDK's import free nothing and cost a sixth of
    it. It is paused for the preload's imports, and running again afterwards, even when an
    import fails; the SDK's objects are then frozen out of its reach."""
    import subprocess
    import sys

    (tmp_path / "anthropic").mkdir()
    (tmp_path / "anthropic" / "__init__.py").write_text("import gc\nCOLLECTING = gc.isenabled()\n")
    (tmp_path / "probe.py").write_text(GC_PROBE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    out = subprocess.run(
        [sys.executable, "probe.py", *then], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "DURING: False AFTER: True" in out, out
    assert ("FROZEN: True" in out) == (not then)  # nothing frozen when the preload gave up
    assert ("FAILED: None" in out) == (not then)


VCRPY_RACE_PROBE = """
import json, sys, tempfile, threading
from pathlib import Path
import httpx2
from pytest_batchgen.client import CallInfo
from pytest_batchgen.recording import Recorder, load_vcrpy_soon
from pytest_batchgen.preload import join_imports

folder = Path(tempfile.mkdtemp())
keys = [f"row{i}" for i in range(4)]
recorder = Recorder({k: folder / f"{k}.yaml" for k in keys}, "new_episodes")
body = json.dumps({"type": "message", "content": [], "usage": {}}).encode()

def pending(key):
    info = CallInfo(key)
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages", content=b"{}")
    info.pending = [(request, b"{}", httpx2.Response(200, content=body), body)]
    return info

load_vcrpy_soon()  # what the transport does once the first request is out
errors = []
def commit(key):  # replies committed at once, on other threads
    try:
        recorder.commit(pending(key))
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=commit, args=(k,)) for k in keys[1:]]
[t.start() for t in threads]
commit(keys[0])
[t.join() for t in threads]
join_imports()
print("ERRORS:", errors, "SAVED:", sorted(p.name for p in folder.glob("*.yaml")))
"""


def test_the_logger_registry_can_be_walked_while_another_thread_registers_a_logger() -> None:
    """pytest 9.2 walks ``loggerDict.values()`` each time it starts capturing logs; the SDK and
    vcrpy, imported on the plugin's threads, register loggers meanwhile. That walk failed a CI
    run with an INTERNALERROR ("dictionary changed size during iteration"). Here a logger is
    registered in the middle of the walk, as the other thread would: the guarded registry's
    walk is a snapshot and goes on; the same walk over a plain dict fails."""
    import logging
    import uuid

    from pytest_batchgen.preload import guard_logger_registry

    name = f"batchgen-registry-{uuid.uuid4().hex}"
    plain = dict(logging.Logger.manager.loggerDict)
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        for _ in plain.values():
            plain[name] = None

    guard_logger_registry()
    guard_logger_registry()  # once: the second call changes nothing
    registry = logging.Logger.manager.loggerDict
    before = len(registry)
    walked = 0
    for _ in registry.values():
        if walked == 0:
            made = logging.getLogger(f"{name}.child")  # the logger and a placeholder for its parent
        walked += 1
    assert walked == before
    assert logging.getLogger(f"{name}.child") is made and registry[f"{name}.child"] is made
    assert len(registry) == before + 2


def test_vcrpy_loads_once_the_first_request_is_out_and_a_commit_waits_for_that_import() -> None:
    """Issue 12: vcrpy is off the way to the first request, imported on a thread once it is out.
    Importing vcrpy from two threads at once fails (KeyError 'vcr', a partly initialised module:
    its package's imports are circular), so every use waits for the one import in progress."""
    import subprocess
    import sys

    for _ in range(3):  # a fresh interpreter each time: vcrpy not imported yet
        out = subprocess.run(
            [sys.executable, "-c", VCRPY_RACE_PROBE], capture_output=True, text=True, check=True
        ).stdout
        assert "ERRORS: [] SAVED: ['row0.yaml', 'row1.yaml', 'row2.yaml', 'row3.yaml']" in out, out


VCRPY_ONCE_SENT_PROBE = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
import httpx2
from fakeapi import FakeAnthropic, Reply
from pytest_batchgen.preload import join_imports
from pytest_batchgen.recording import _load_vcrpy_once_sent

seen = []

async def earlier(event, info):  # a trace the request had already: it still hears every event
    seen.append((event, "vcr" in sys.modules))

async def main(url):
    async with httpx2.AsyncClient() as client:
        body = {"model": "claude-haiku-5-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
        request = client.build_request(
            "POST", url + "/v1/messages", json=body, headers=headers, extensions={"trace": earlier}
        )
        _load_vcrpy_once_sent(request)
        (await client.send(request)).raise_for_status()

with FakeAnthropic(latency=0.0) as fake:
    fake.default = lambda body: Reply.ok("hello")
    asyncio.run(main(fake.base_url))
join_imports()
print(json.dumps({"seen": seen, "loaded": "vcr.stubs.httpx_stubs" in sys.modules}))
"""


def test_vcrpy_starts_loading_once_the_first_request_body_is_on_the_wire() -> None:
    """Started before the send, vcrpy's import took the interpreter lock from the event loop while
    it connected and wrote the first request (30 ms later out, in a fresh interpreter). It now
    starts at httpcore2's ``send_request_body.complete``: never before, and it does start there
    (the event's name is httpcore2's own: a real client sends to the loopback server)."""
    import json
    import subprocess
    import sys

    tests = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", VCRPY_ONCE_SENT_PROBE, tests], capture_output=True, text=True, check=True
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    events = [event for event, _ in report["seen"]]
    sent = events.index("http11.send_request_body.complete")
    assert events[0] == "connection.connect_tcp.started" and "http11.send_request_headers.complete" in events[:sent]
    assert not any(loading for _, loading in report["seen"][:sent])  # nothing started before
    assert report["loaded"]


TLS_PROBE = """
import json, ssl, sys
from pytest_batchgen import preload
from pytest_batchgen.preload import MODULES, Preloader, take_tls_context, tls_context_soon

started = []
def soon():  # when the import starts the thread: what is imported then
    started.append(["httpcore2" in sys.modules, "anthropic" in sys.modules])
    tls_context_soon()
preload.tls_context_soon = soon
Preloader(MODULES).run_here()
import httpx2
from pytest_batchgen.client import ClientSettings, ModelClient
made = take_tls_context()
again = take_tls_context()
tls_context_soon()
ModelClient(ClientSettings(api_key="test-key"))
left = take_tls_context()
own = httpx2.create_ssl_context()
same = isinstance(made, ssl.SSLContext) and all(
    getattr(made, a) == getattr(own, a) for a in ("verify_mode", "check_hostname", "options", "minimum_version")
) and made.cert_store_stats() == own.cert_store_stats()
print(json.dumps({"made": type(made).__name__, "again": again is made, "left": left is made, "same": same, "started": started}))
"""


def test_the_tls_context_is_made_while_the_sdk_imports_and_is_httpx2s_own() -> None:
    """Reading the CA bundle for the HTTP transport (50 ms, the interpreter lock released) is done
    on a thread while the SDK imports, not after it on the way to the first request. The context
    is the one httpx2 would make, made once a process: the client's transport takes it, and a
    second client shares it (each pytester run of a test process made its own: 5% of this
    suite's CPU, reading the same CA bundle again). The thread starts once httpx2's transport is
    imported: started before, it imported httpcore2 itself while the SDK's import went on (a
    second thread importing at once), which is all the time it was meant to save."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", TLS_PROBE], capture_output=True, text=True, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    # started once httpx2's transport (httpcore2) is imported, so the thread imports nothing
    # itself, and before the SDK, whose import it overlaps
    assert report == {"made": "SSLContext", "again": True, "left": True, "same": True, "started": [[True, False]]}


def test_a_tls_context_that_could_not_be_made_leaves_the_transport_to_make_its_own(monkeypatch) -> None:
    """A failure on the thread (a bad ``SSL_CERT_FILE``, say) is not raised there or lost: the
    transport is built with httpx2's default and fails, or not, where it always would."""
    import httpx2

    from pytest_batchgen import preload

    def broken() -> None:
        raise OSError("no CA bundle here")

    monkeypatch.setattr(preload, "_tls", None)
    monkeypatch.setattr(httpx2, "create_ssl_context", broken)
    preload.tls_context_soon()
    assert preload.take_tls_context() is True
    assert preload.take_tls_context() is True  # and nothing is left waiting


def test_a_process_that_froze_its_own_objects_has_them_counted_once(monkeypatch) -> None:
    """``gc.get_freeze_count`` walks every frozen object (15 ms in this test process), and a
    process that froze its objects keeps them so: the plugin counts once, not in every run
    (in this suite's in-process runs, 4% of its CPU). A process where only its own runs froze
    objects is still asked each time (another freeze could come later)."""
    import gc

    from pytest_batchgen import plugin

    counted: list[int] = []

    def frozen(count: int):
        def spy() -> int:
            counted.append(count)
            return count

        return spy

    monkeypatch.setattr(plugin, "_frozen_by_a_run", False)
    monkeypatch.setattr(plugin, "_frozen_by_others", False, raising=False)
    monkeypatch.setattr(gc, "get_freeze_count", frozen(0))
    assert plugin._collector_is_ours() and plugin._collector_is_ours()
    assert counted == [0, 0]
    monkeypatch.setattr(gc, "get_freeze_count", frozen(5))
    assert not plugin._collector_is_ours() and not plugin._collector_is_ours()
    assert counted == [0, 0, 5]


# -- per-item work: one marker per row, payloads only on the reports that count ---------------

PER_ITEM_PROBE = """
import collections
seen = collections.Counter()

def pytest_collection_finish(session):
    by_row = collections.defaultdict(set)
    for item in session.items:
        mark = item.get_closest_marker("batchgen")
        by_row[mark.kwargs["filename"]].add(id(mark))
    print("MARKS-PER-ROW:", sorted(len(v) for v in by_row.values()))

props = collections.defaultdict(set)
held = []

def pytest_runtest_logreport(report):
    seen[(report.when, report.outcome, hasattr(report, "batchgen"))] += 1
    if report.when == "call":
        props[dict(report.user_properties)["batchgen_filename"]].add(tuple(id(p) for p in report.user_properties))

def pytest_runtest_teardown(item, nextitem):
    from pytest_batchgen.state import state_of
    run = state_of(item.config).runs[0]
    held.append((item.nodeid.split("::")[1], sorted(run._verdicts), len(run.docs._docs)))

def pytest_sessionfinish(session):
    print("REPORTS:", sorted(k for k in seen))
    print("PROPERTY-OBJECTS-PER-ROW:", sorted(len(v) for v in props.values()))
    print("HELD:", held)
"""


def test_one_marker_per_row_shared_properties_and_no_payload_on_passing_setup_or_teardown(project) -> None:
    from genhelpers import rows_for

    project.write_rows(rows_for("a-one", "b-two"))
    for name in ("a-one", "b-two"):
        project.write(f"output/{name}.md", "not even front matter\\n")
    project.write("conftest.py", PER_ITEM_PROBE)
    result = project.run("--batch-validate-only", "-s")
    out = result.stdout.str()
    assert "MARKS-PER-ROW: [1, 1]" in out
    reports = out.split("REPORTS: ", 1)[1].splitlines()[0]
    assert "('setup', 'passed', False)" in reports and "('teardown', 'passed', False)" in reports
    assert "('call', 'failed', True)" in reports
    assert "True)" not in reports.replace("('call', 'failed', True)", "").replace("('call', 'passed', True)", "")
    assert result.ret == 1 and set(project.statuses().values()) == {"pending"}
    # issue 12, registration at scale: a row's items share one set of property tuples, and its
    # parsed output and verdicts leave memory once its last item ran (before the next row's)
    assert "PROPERTY-OBJECTS-PER-ROW: [1, 1]" in out
    held = eval(out.split("HELD: ", 1)[1].splitlines()[0])
    rules = len(held) // 2
    assert [h[1] for h in held[:rules]] == [["a-one.md"]] * rules  # while a-one's items run
    assert all(h[1] == ["b-two.md"] and h[2] == 1 for h in held[rules:])  # a-one's are gone


# -- replay fast path: recorded replies answered from the cassette without the SDK -----------


def test_replay_answers_recorded_calls_without_the_sdk_and_leaves_what_the_sdk_path_left(
    project, fake, monkeypatch
) -> None:
    from genhelpers import bad_value, draft, go_offline, router, rows_for
    from fakeapi import Reply
    from pytest_batchgen import recording

    names = ["passes", "repaired", "stays-wrong", "changed"]
    rows = rows_for(*names)
    project.write_rows(rows)
    r = router(fake)
    r.set("repaired.md", Reply.ok(bad_value("Repaired")), Reply.ok(draft("Repaired")))
    r.set("stays-wrong.md", Reply.ok(bad_value("Stays Wrong")))
    recorded = project.run()
    recorded_outputs = project.outputs()
    recorded_statuses = project.statuses()

    through_transport: list[str] = []
    real = recording._RecordingTransport.handle_async_request

    async def spy(self, request):
        through_transport.append(recording.current_call.get().key)
        return await real(self, request)

    monkeypatch.setattr(recording._RecordingTransport, "handle_async_request", spy)
    go_offline(fake, monkeypatch)
    project.reset(rows)
    # one row's recording no longer matches: it goes the usual way and misses as before
    project.edit(project.plan, "| Changed |", "| Changed Title |")
    replayed = project.run("--batch-record-mode", "none")

    # record mode none replays without the SDK: nothing went through its transport, not even
    # the row whose recording no longer matches (a replay miss, with the SDK path's message)
    assert through_transport == []
    assert {k: v for k, v in project.outputs().items() if "changed" not in k} == {
        k: v for k, v in recorded_outputs.items() if "changed" not in k
    }
    assert {k: v for k, v in project.statuses().items() if k != "changed.md"} == {
        k: v for k, v in recorded_statuses.items() if k != "changed.md"
    }
    assert "title changed since it was recorded" in replayed.failure("changed.md::generate")
    assert replayed.outcomes()["repaired.md::generate"] == recorded.outcomes()["repaired.md::generate"]


def test_a_replay_in_record_mode_none_never_imports_the_sdk_or_vcrpy(project, fake, monkeypatch) -> None:
    """Issue 12: replay costs what validating costs. Neither the SDK (a second of imports) nor
    vcrpy (a third of a second: it imports every HTTP library it can patch) is loaded in record
    mode none, hits and misses alike, in the pytest process nor in the sending process that
    replays the rows; the run that records loads both (the probe can tell)."""
    from genhelpers import go_offline, router, rows_for
    from fakeapi import Reply

    rows = rows_for("hit", "miss")
    project.write_rows(rows)
    child_probe = (
        "from pytest_batchgen import sender\n"
        "_generate = sender._generate\n"
        "def _probed(*args):\n"
        "    _generate(*args)\n"
        "    heavy = [m for m in ('anthropic', 'httpx2', 'vcr') if m in sys.modules]\n"
        "    open('child-heavy.txt', 'w').write(','.join(heavy) or 'none')\n"
        "sender._generate = _probed\n"
    )
    project.write("conftest.py", IMPORT_PROBE + child_probe)
    router(fake).set("miss.md", Reply.ok("not the format"))
    # the dispatcher in the pytest process (where a sending process would hide the imports)
    recorded = project.run("-s", "-o", "batchgen_sender=thread", subprocess=True)
    assert "HEAVY: anthropic,httpx2,vcr" in recorded.stdout.str()
    go_offline(fake, monkeypatch)
    project.reset(rows)
    project.edit(project.plan, "| Miss |", "| Miss Retitled |")
    (project.path / "child-heavy.txt").unlink(missing_ok=True)
    replayed = project.run("--batch-record-mode", "none", "-s", subprocess=True)
    out = replayed.stdout.str()
    assert "HEAVY: none" in out, out
    assert (project.path / "child-heavy.txt").read_text() == "none"  # the replay was forked, and light
    assert project.statuses() == {"hit.md": "complete", "miss.md": "pending"}
    assert "ReplayMiss: no recorded request in" in out and "the title changed since it was recorded" in out


def test_drafts_are_checked_on_the_loop_only_when_every_check_is_quick(project, fake, monkeypatch) -> None:
    """Issue 12: a thread hop per draft (write and check) cost more than the work at 1,000 rows.
    A checklist of built-in document rules is checked on the dispatcher's loop; one with a
    linter (a process), like a user's own form, still goes to a worker thread. (The dispatcher
    of this process: ``batchgen_sender = thread``; a forked sender's threads are its own.)"""
    import threading

    from genhelpers import rows_for
    from pytest_batchgen import dispatch

    checked_on: list[str] = []
    real = dispatch.write_draft

    def spy(*args):
        checked_on.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(dispatch, "write_draft", spy)
    project.write_rows(rows_for("a-one", "b-two"), ini_extra="batchgen_sender = thread\n")
    assert project.run().ret == 0
    assert len(checked_on) == 2 and not any(t == "batchgen-dispatch" for t in checked_on), checked_on

    checked_on.clear()
    project.write_rows(rows_for("c-three", "d-four"), ini_extra="batchgen_sender = thread\n")
    project.edit(project.plan, "4. Linter passes", "<!-- 4. Linter passes")
    project.edit(project.plan, "{path}`\n", "{path}` -->\n")
    result = project.run()
    assert result.ret == 0, result.stdout.str()
    assert checked_on == ["batchgen-dispatch"] * 2
    assert result.outcomes() and not any(k.endswith("::lint") for k in result.outcomes())  # no linter line


def _replay_with_a_corrupt_recording(project, fake, monkeypatch, *args: str) -> list[tuple[str, str, int]]:
    """Record three rows, go offline, truncate b-two's cassette, and replay them in record mode
    none: a corrupt recording fails only its row. Returns each recorded call replayed, in order,
    as (row, thread, process id), as a spy logged them in whichever process replayed them (a
    forked one inherits the spy)."""
    import threading

    from genhelpers import go_offline, rows_for
    from pytest_batchgen import cassettes

    rows = rows_for("a-one", "b-two", "c-three")
    project.write_rows(rows)
    assert project.run().ret == 0
    go_offline(fake, monkeypatch)
    project.reset(rows)
    project.cassette("b-two.md").write_text("interactions: [\n")  # truncated
    log = project.path / "replayed-by.log"
    real = cassettes.ReplayClient.complete

    async def spy(self, key, params):
        with log.open("a") as out:
            out.write(f"{key.rsplit('::', 1)[-1]} {threading.current_thread().name} {os.getpid()}\n")
        return await real(self, key, params)

    monkeypatch.setattr(cassettes.ReplayClient, "complete", spy)
    result = project.run("--batch-record-mode", "none", *args)
    assert project.statuses() == {"a-one.md": "complete", "b-two.md": "pending", "c-three.md": "complete"}
    assert "cannot be read: it is not valid YAML" in result.failure("b-two.md::generate")
    return [(name, thread, int(pid)) for name, thread, pid in (line.split() for line in log.read_text().splitlines())]


REPLAYED_ROWS = ["a-one.md", "b-two.md", "c-three.md"]


def test_a_replay_in_this_process_generates_each_row_on_the_main_thread_when_its_test_asks(
    project, fake, monkeypatch
) -> None:
    """Issue 12: where a replay stays in the pytest process (``batchgen_sender = thread``, an
    xdist controller), nothing waits on the network, so no dispatcher thread is started (a
    thread hand-off per row cost a second of system time at 1,000 rows); each row is replayed
    when its first test runs, in plan order."""
    replayed = _replay_with_a_corrupt_recording(project, fake, monkeypatch, "-o", "batchgen_sender=thread")
    assert replayed == [(name, "MainThread", os.getpid()) for name in REPLAYED_ROWS]


def test_a_replay_is_read_and_written_ahead_by_the_sending_process(project, fake, monkeypatch) -> None:
    """Issue 12: a replay's own work (reading each cassette, writing each output) runs in the
    forked sending process, on the other core, ahead of the tests, which the pytest process runs
    and checks meanwhile (1,000 rows: 1.48 x validate-only's time, against 2.19 x replayed on the
    main thread at each test's turn). One process, not this one, replays the rows in plan order,
    on the dispatcher's lanes."""
    replayed = _replay_with_a_corrupt_recording(project, fake, monkeypatch)
    assert [name for name, _, _ in replayed] == REPLAYED_ROWS
    assert {thread for _, thread, _ in replayed} == {"batchgen-dispatch"}
    pids = {pid for _, _, pid in replayed}
    assert len(pids) == 1 and os.getpid() not in pids


def test_the_insertion_place_comes_from_a_position_map_built_once_per_plan_order(tmp_path) -> None:
    """Issue 12 (registration at scale): ``order.index`` and a slice per registration made
    10,000 registrations quadratic. The plan's order (a tuple, built once per plan) gets one
    position map, reused by every row; the place found is the same as before."""
    from pytest_batchgen import tracking

    outs = [(tmp_path / f"o{i}.md").resolve() for i in range(6)]
    order = tuple(outs)
    index = tracking._Index(set(), {outs[1]: (tracking._Entry(4, "x"),), outs[4]: (tracking._Entry(7, "y"),)}, 9)
    assert tracking._insertion_place(index, outs[2], order, 9)[0] == 5  # after o1's entry
    assert tracking._insertion_place(index, outs[0], order, 9)[0] == 4  # before o1's entry
    assert tracking._insertion_place(index, outs[5], order, 9)[0] == 8  # after o4's entry
    assert tracking._insertion_place(index, tmp_path / "elsewhere.md", order, 9)[0] == 9  # not in the plan
    assert tracking._positions(order) is tracking._positions(order)  # built once
    listed = list(outs)
    assert tracking._insertion_place(index, outs[2], listed, 9)[0] == 5  # a list works, uncached


REPOSITORY = Path(__file__).resolve().parent.parent


def test_a_run_at_the_repositorys_root_loads_no_heavy_module_through_the_tests_conftest(tmp_path) -> None:
    """``pytest --batch-plan plans/glossary.md`` at this repository's root (the README's quick
    start) loads ``tests/conftest.py`` too (``testpaths``). Its speed-ups for the suite (keeping
    the SDK, vcrpy and the plugin's modules loaded across in-process runs) must wait for a test
    to run: imported at its top, they made that run import the SDK and vcrpy, and warned that
    ``pytest_batchgen.rules`` was imported before pytest could rewrite it. ``--batch-readonly``
    writes nothing into the repository."""
    import subprocess
    import sys

    (tmp_path / "heavyprobe.py").write_text(IMPORT_PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "heavyprobe",
            "-s",
            "--batch-plan",
            "plans/glossary.md",
            "--batch-readonly",
        ],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "HEAVY:" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    heavy = done.stdout.split("HEAVY:", 1)[1].split("\n", 1)[0]  # after the progress dots
    assert heavy.strip() == "none", heavy  # not even httpx2, which pytest_batchgen.recording imports
    assert "PytestAssertRewriteWarning" not in done.stdout + done.stderr, done.stdout[-2000:]


@pytest.mark.parametrize("python", ["3.11+", "3.10"])
def test_a_bounded_await_stays_in_its_task_where_asyncio_has_timeout(python, monkeypatch) -> None:
    """Each request's two bounds (the call's total, the body's) used ``asyncio.wait_for``, which
    before Python 3.12 runs the awaited call in a task of its own: two tasks more per request on
    the loop that sends them all. ``asyncio.timeout`` bounds it in the caller's task."""
    import asyncio

    from pytest_batchgen import client

    if python == "3.10":
        monkeypatch.delattr(asyncio, "timeout")

    async def whose_task() -> object:
        return asyncio.current_task()

    async def never() -> None:
        await asyncio.sleep(30)

    async def main() -> tuple[bool, bool]:
        same = await client._within(whose_task(), 5) is asyncio.current_task()
        try:
            await client._within(never(), 0.01)
        except asyncio.TimeoutError:
            return same, True
        return same, False

    same, timed_out = asyncio.run(main())
    assert timed_out
    assert same is (python == "3.11+")


# -- the run's long-lived objects out of the garbage collector's reach ------------------------


@pytest.fixture
def nothing_frozen():
    """This test process as a fresh ``pytest`` process is: nothing frozen (tests/conftest.py
    freezes what it loads); frozen again afterwards."""
    import gc

    gc.unfreeze()
    yield
    gc.freeze()


@pytest.mark.parametrize("how", ["generate", "validate-only", "frozen before"])
def test_the_runs_objects_stay_frozen_to_its_exit_and_the_next_run_hands_them_back(
    how, project, fake, monkeypatch, nothing_frozen
) -> None:
    """Issue 12: after collection the plans and items leave the collector's reach, so the five
    full collections of pytest's unraisable-exception clean-up, the automatic ones during the
    run and the interpreter's at exit do not walk them: they stay frozen when the run ends. A
    second run in the same process (pytester) hands them back before it freezes its own, so
    runs do not pile up there. In a process that froze objects itself, the plugin leaves its
    collector alone."""
    import gc

    from _pytest import unraisableexception

    from genhelpers import draft, router, rows_for
    from fakeapi import Reply
    from pytest_batchgen import plugin

    monkeypatch.setattr(plugin, "_frozen_by_a_run", False)
    monkeypatch.setattr(plugin, "_frozen_by_others", False)  # as a fresh process: nothing seen frozen
    names = ["a-one", "b-two"]
    project.write_rows(rows_for(*names))
    for name in names:
        router(fake).set(f"{name}.md", Reply.ok(draft(name.replace("-", " ").title())))
    if how == "validate-only":
        project.run()  # generate the outputs first
        gc.unfreeze()
        monkeypatch.setattr(plugin, "_frozen_by_a_run", False)
    if how == "frozen before":
        gc.freeze()
    before = gc.get_freeze_count()
    frozen_at_clean_up: list[int] = []
    real_collect, real_unfreeze = unraisableexception.gc_collect_harder, gc.unfreeze
    thawed: list[int] = []

    def spy_collect(iterations: int) -> None:
        frozen_at_clean_up.append(gc.get_freeze_count())
        real_collect(iterations)

    def spy_unfreeze() -> None:
        thawed.append(gc.get_freeze_count())
        real_unfreeze()

    monkeypatch.setattr(unraisableexception, "gc_collect_harder", spy_collect)
    monkeypatch.setattr(gc, "unfreeze", spy_unfreeze)
    args = ["--batch-validate-only"] if how == "validate-only" else []

    first = project.run(*args)
    at_first_clean_up, frozen_at_clean_up[:] = list(frozen_at_clean_up), []
    after_first = gc.get_freeze_count()
    second = project.run(*args)
    at_second_clean_up = list(frozen_at_clean_up)
    after_second = gc.get_freeze_count()

    assert first.ret == 0 and second.ret == 0, first.stdout.str() + second.stdout.str()
    # pytest collects at its clean-up (pytest 9.2 twice: unraisable exceptions and threads')
    assert at_first_clean_up and at_second_clean_up
    if how == "frozen before":
        # left alone: neither frozen more (a run's thousands of objects) nor thawed (a few of
        # the frozen ones are freed meanwhile)
        assert before > 1000 and not thawed
        for count in (*at_first_clean_up, *at_second_clean_up, after_first, after_second):
            assert before - 100 < count <= before
        return
    assert before == 0 and min(at_first_clean_up) > 1000, at_first_clean_up
    # still frozen when the run is over (a few freed since)
    assert at_first_clean_up[-1] - 1000 < after_first <= at_first_clean_up[-1]
    # the second run handed them back, once, before its own freeze
    assert len(thawed) == 1 and after_first - 1000 < thawed[0] <= after_first
    assert min(at_second_clean_up) > 1000 and after_second < after_first * 1.5  # its own, not both
