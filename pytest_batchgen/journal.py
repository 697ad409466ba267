"""The batch journal: which Message Batches a plan has out, so that nothing is paid for twice.

A batch costs money the moment it is created, and its results live on the provider's side
for 29 days. A run that dies (``kill -9``, Ctrl-C, a closed laptop) must find them again, so
an entry is written, atomically, *before* the create request is sent: the batch's rows, their
``custom_id`` and the digest of each request. The batch id is added as soon as the create
returns. The next run reattaches to every entry still here instead of sending those requests
again, and removes an entry once each of its results was filed in its row's cassette.

One journal per plan, beside its cassettes: ``cassettes/<plan>/batches-journal.json``. It is
plain JSON, meant to be kept between CI jobs (submit in one, collect in a later one).

Runs of one plan at once share it, so it says who owns what. Each run that may send registers
itself (``runs``: its :class:`Owner`, a heartbeat and the rows it generates) and each batch
entry names its owner. A run adopts an entry only when its owner is gone: a process of this
machine that no longer exists (its pid dead, or reused by a process started at another time),
a run on another machine whose heartbeat is older than :data:`STALE_AFTER`, a run that ended
and handed its batches back (``owner`` null), or a journal written before owners were
recorded. The rows a live run registered are its own: another run sends none of them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from .errors import BatchgenError
from .fsutil import atomic_write, lock_for

JOURNAL_NAME = "batches-journal.json"
JOURNAL_VERSION = 1

#: how often a run that is alive says so in the journal (its heartbeat), in seconds
HEARTBEAT = 60.0
#: a run on another machine (whose process cannot be looked at) is taken for gone once its
#: heartbeat is this old: ten missed heartbeats
STALE_AFTER = _dt.timedelta(minutes=10)

#: what the API accepts as a ``custom_id``
CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def request_digest(params: dict[str, Any]) -> str:
    """The digest of a row's request (the Messages API parameters, canonical JSON)."""
    data = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def custom_id(filename: str, taken: set[str]) -> str:
    """A ``custom_id`` for a row's request: readable (the filename, other characters as ``_``)
    and collision-free (a digest of the exact filename, then a counter if ever needed).

    ``quorum.md`` and ``quorum_md`` map to the same readable part but not the same digest."""
    slug = re.sub(r"[^a-zA-Z0-9_-]", "_", filename)[:40] or "row"
    base = f"{slug}-{hashlib.sha256(filename.encode('utf-8')).hexdigest()[:16]}"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    assert CUSTOM_ID_RE.match(candidate), candidate
    return candidate


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """A process's state letter and start time (clock ticks after boot), from ``/proc``;
    None where there is no ``/proc`` or no such process."""
    try:
        text = open(f"/proc/{pid}/stat", encoding="ascii", errors="replace").read()  # noqa: SIM115
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _process_table() -> str | None:
    """What tells this machine's processes from another's with the same host name: the boot
    (a pid is only unique within one) and the pid namespace (a container's pids are its own)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
    except OSError:
        return None
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{boot} {namespace}".strip()


@dataclass(frozen=True)
class Owner:
    """The run that owns journal entries: one per dispatcher, its ``run`` token unique."""

    run: str  # a token of its own (two runs in one process are two owners)
    pid: int
    host: str
    procs: str | None  # the process table it lives in (see _process_table); None where unknown
    started: str | None  # its process's start time (/proc), to tell a reused pid; None where unknown
    since: str  # when the run began (ISO, UTC)

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        stat = _proc_stat(pid)
        return cls(
            run=uuid.uuid4().hex,
            pid=pid,
            host=socket.gethostname(),
            procs=_process_table(),
            started=stat[1] if stat else None,
            since=_now().isoformat(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "pid": self.pid,
            "host": self.host,
            "procs": self.procs,
            "started": self.started,
            "since": self.since,
        }

    def alive(self, owner: dict[str, Any], seen: str | None) -> bool:
        """Whether the run ``owner`` (a journal's record, last heartbeat ``seen``) is still
        going, as this run can tell: a process of this machine is looked at (gone when its pid
        is dead, a zombie, or another process's since); a run elsewhere is alive while its
        heartbeat is younger than :data:`STALE_AFTER`."""
        if owner.get("run") == self.run:
            return True
        if owner.get("host") == self.host and owner.get("procs") == self.procs:
            here = _process_alive(owner.get("pid"), owner.get("started"))
            if here is not None:
                return here
        try:
            last = _dt.datetime.fromisoformat(str(seen))
        except ValueError:
            return False
        if last.tzinfo is None:
            last = last.replace(tzinfo=_dt.timezone.utc)
        return _now() - last < STALE_AFTER


def describe(owner: dict[str, Any]) -> str:
    """An owner as the user reads it."""
    since = str(owner.get("since", ""))[:19].replace("T", " ")
    return f"pid {owner.get('pid')} on {owner.get('host')}, started {since} UTC"


def _process_alive(pid: Any, started: Any) -> bool | None:
    """Whether process ``pid`` of this machine, started at ``started``, still runs; None when
    this system cannot tell (no POSIX signals)."""
    if os.name != "posix" or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return None
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (macOS): the pid exists, which is all one can say
    state, now_started = stat
    if state in ("Z", "X"):
        return False  # killed, not yet reaped
    return not (started and now_started != str(started))  # the pid is another process's now


class RequestEntry(TypedDict):
    row: str  # the row's filename in the plan
    digest: str  # request_digest of the Messages API parameters
    attempt: int


@dataclass
class BatchEntry:
    """One batch: created (``id`` set) or about to be (``id`` None: the create may or may not
    have reached the API; the next run looks for it before sending anything again)."""

    local: str
    created: str  # ISO time just before the create was sent
    requests: dict[str, RequestEntry]  # custom_id -> row, digest
    id: str | None = None
    reserved_usd: float = 0.0
    #: the run that owns it (Owner.to_dict); None: nobody's (handed back, or an older journal)
    owner: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "local": self.local,
            "id": self.id,
            "created": self.created,
            "reserved_usd": self.reserved_usd,
            "owner": self.owner,
            "requests": self.requests,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchEntry:
        return cls(
            local=str(data["local"]),
            created=str(data["created"]),
            requests={
                str(k): RequestEntry(row=v["row"], digest=v["digest"], attempt=int(v.get("attempt", 1)))
                for k, v in data["requests"].items()
            },
            id=data.get("id"),
            reserved_usd=float(data.get("reserved_usd", 0.0)),
            owner=data["owner"] if isinstance(data.get("owner"), dict) else None,
        )

    @property
    def run(self) -> str | None:
        return self.owner.get("run") if self.owner else None

    @property
    def created_at(self) -> _dt.datetime:
        return _dt.datetime.fromisoformat(self.created)


#: one run's record in the journal: {"owner": Owner.to_dict(), "seen": ISO time, "rows": [...]}
RunRecord = dict[str, Any]


@dataclass
class Journal:
    """The journal of one plan, as run ``owner`` sees it; every change is on disk before the
    method returns, made to the journal as it is on disk then (read again under its lock)."""

    path: Path
    entries: list[BatchEntry] = field(default_factory=list)
    _index: dict[tuple[str, str], tuple[BatchEntry, str]] | None = field(default=None, repr=False, compare=False)
    #: the runs registered in it (see :meth:`register`), as last read
    runs: list[RunRecord] = field(default_factory=list, repr=False, compare=False)
    owner: Owner = field(default_factory=Owner.current, repr=False, compare=False)

    @classmethod
    def load(cls, path: Path, owner: Owner | None = None) -> Journal:
        entries, runs = cls._read(path)
        return cls(path, entries, runs=runs, owner=owner or Owner.current())

    @staticmethod
    def _read(path: Path) -> tuple[list[BatchEntry], list[RunRecord]]:
        if not path.exists():
            return [], []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = [BatchEntry.from_dict(e) for e in data["batches"]]
            runs = [r for r in data.get("runs") or [] if isinstance(r, dict) and isinstance(r.get("owner"), dict)]
            return entries, runs
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BatchgenError(
                f"the batch journal cannot be read ({type(exc).__name__}: {exc}); it lists the Message Batches "
                "still out for this plan. Restore it from version control, or delete it to send those rows again "
                "(their batches are then paid for twice)",
                path,
            ) from None

    def refresh(self) -> None:
        """Read the journal again: the batches other runs (another process on the same plan)
        began or finished since are seen by :meth:`find`."""
        self._index = None
        self.entries, self.runs = self._read(self.path)

    def _change(self, edit: Callable[[list[BatchEntry], list[RunRecord]], None], *, keep: bool = True) -> None:
        """Apply ``edit`` to the entries and runs on disk, re-read under the lock: every process
        that shares the journal (two runs of one plan, ``-k`` of other rows) changes its own
        entries only, and none overwrites or deletes what another wrote. ``keep=False``: leave
        this object as it is (a heartbeat, from another thread)."""
        if keep:
            self._index = None
        with lock_for(self.path):
            entries, runs = self._read(self.path)
            edit(entries, runs)
            if entries or runs:
                document: dict[str, Any] = {"version": JOURNAL_VERSION, "batches": [e.to_dict() for e in entries]}
                if runs:
                    document["runs"] = runs
                atomic_write(self.path, json.dumps(document, indent=1) + "\n")
            else:
                self.path.unlink(missing_ok=True)
        if keep:
            self.entries, self.runs = entries, runs

    # -- who owns what ------------------------------------------------------------------------

    def register(self, rows: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Register this run, about to generate ``rows``, and adopt the entries nobody owns
        any more; the rows a live run registered first are left to it: row -> its owner.

        One step under the lock, so of two runs that start at once only one gets a row, and
        of two resumes only one adopts a dead run's batches. The records of runs that are
        gone are dropped."""
        taken: dict[str, dict[str, Any]] = {}
        me = self.owner.to_dict()
        wanted = set(rows)

        def edit(entries: list[BatchEntry], runs: list[RunRecord]) -> None:
            taken.clear()
            others = [r for r in runs if r["owner"].get("run") != self.owner.run]
            live = [r for r in others if self.owner.alive(r["owner"], r.get("seen"))]
            for record in live:
                for row in wanted.intersection(record.get("rows") or ()):
                    taken.setdefault(row, record["owner"])
            runs[:] = [*live, {"owner": me, "seen": _now().isoformat(), "rows": sorted(wanted - set(taken))}]
            tokens = {r["owner"].get("run") for r in runs}
            for entry in entries:
                if entry.run not in tokens:  # nobody's, or a run that is gone: adopted
                    entry.owner = me

        self._change(edit)
        return taken

    def heartbeat(self, rows: Iterable[str]) -> None:
        """Say this run is alive (and which rows it still generates). Leaves this object as it
        is: called from another thread."""
        mine = sorted(set(rows))

        def edit(entries: list[BatchEntry], runs: list[RunRecord]) -> None:
            record = next((r for r in runs if r["owner"].get("run") == self.owner.run), None)
            if record is None:  # taken for gone meanwhile (a heartbeat that came too late): back
                record = {"owner": self.owner.to_dict()}
                runs.append(record)
            record["seen"], record["rows"] = _now().isoformat(), mine

        self._change(edit, keep=False)

    def release(self) -> None:
        """The run ends: its record goes, and the batches it leaves running are handed back
        (owner null): the next run adopts them at once, wherever it runs."""

        def edit(entries: list[BatchEntry], runs: list[RunRecord]) -> None:
            runs[:] = [r for r in runs if r["owner"].get("run") != self.owner.run]
            for entry in entries:
                if entry.run == self.owner.run:
                    entry.owner = None

        self._change(edit)

    def own(self) -> list[BatchEntry]:
        """The entries of this run's batches: begun by it, or adopted when it registered."""
        return [e for e in self.entries if e.run == self.owner.run]

    # -- the batches ----------------------------------------------------------------------------

    def begin(self, requests: dict[str, RequestEntry], reserved_usd: float = 0.0) -> BatchEntry:
        """Record a batch about to be created (before the create request is sent)."""
        entry = BatchEntry(
            local=uuid.uuid4().hex,
            created=_now().isoformat(),
            requests=requests,
            reserved_usd=reserved_usd,
            owner=self.owner.to_dict(),
        )
        self._change(lambda entries, runs: entries.append(entry))
        return entry

    def created(self, entry: BatchEntry, batch_id: str) -> None:
        entry.id = batch_id

        def edit(entries: list[BatchEntry], runs: list[RunRecord]) -> None:
            on_disk = _by_local(entries, entry.local)
            if on_disk is None:  # forgotten meanwhile (another run found no batch for it): it exists
                entries.append(entry)
            else:
                on_disk.id = batch_id

        self._change(edit)

    def forget(self, entry: BatchEntry) -> None:
        """Every result of the batch is filed (or the batch never reached the API)."""
        self._change(lambda entries, runs: _remove(entries, entry.local))

    def collected(self, entry: BatchEntry, cids: set[str]) -> None:
        """These results of the batch are filed. The entry goes when all are; until then it
        keeps the others (rows outside this run, ``-k``, or another run's), so a later run
        collects them from the same batch instead of paying for them again."""
        entry.requests = {cid: req for cid, req in entry.requests.items() if cid not in cids}

        def edit(entries: list[BatchEntry], runs: list[RunRecord]) -> None:
            on_disk = _by_local(entries, entry.local)
            if on_disk is None:  # another run collected the rest
                return
            on_disk.requests = {cid: req for cid, req in on_disk.requests.items() if cid not in cids}
            on_disk.reserved_usd = min(on_disk.reserved_usd, entry.reserved_usd)
            if not on_disk.requests:
                _remove(entries, entry.local)

        self._change(edit)

    def find(self, row: str, digest: str) -> tuple[BatchEntry, str] | None:
        """The batch (and custom_id) that already carries this exact request of ``row``."""
        if self._index is None:  # rebuilt after each change: one lookup per row, not a scan
            self._index = {  # a batch being created (by another run) is not one to wait for yet
                (req["row"], req["digest"]): (entry, cid)
                for entry in reversed(self.entries)
                if entry.id is not None
                for cid, req in entry.requests.items()
            }
        return self._index.get((row, digest))

    def ids(self) -> set[str]:
        return {e.id for e in self.entries if e.id}


def _by_local(entries: list[BatchEntry], local: str) -> BatchEntry | None:
    return next((e for e in entries if e.local == local), None)


def _remove(entries: list[BatchEntry], local: str) -> None:
    entries[:] = [e for e in entries if e.local != local]


def journal_path(cassette_dir: Path) -> Path:
    return cassette_dir / JOURNAL_NAME


def taken_ids(entries: Iterable[BatchEntry]) -> set[str]:
    return {cid for e in entries for cid in e.requests}
