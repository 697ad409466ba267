"""The batch journal: which Message Batches a plan has out, so that nothing is paid for twice.

A batch costs money the moment it is created, and its results live on the provider's side
for 29 days. A run that dies (``kill -9``, Ctrl-C, a closed laptop) must find them again, so
an entry is written, atomically, *before* the create request is sent: the batch's rows, their
``custom_id`` and the digest of each request. The batch id is added as soon as the create
returns. The next run reattaches to every entry still here instead of sending those requests
again, and removes an entry once each of its results was filed in its row's cassette.

One journal per plan, beside its cassettes: ``cassettes/<plan>/batches-journal.json``. It is
plain JSON, meant to be kept between CI jobs (submit in one, collect in a later one).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from .errors import BatchgenError
from .fsutil import atomic_write, lock_for

JOURNAL_NAME = "batches-journal.json"
JOURNAL_VERSION = 1

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "local": self.local,
            "id": self.id,
            "created": self.created,
            "reserved_usd": self.reserved_usd,
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
        )

    @property
    def created_at(self) -> _dt.datetime:
        return _dt.datetime.fromisoformat(self.created)


@dataclass
class Journal:
    """The journal of one plan; every change is on disk before the method returns, made to
    the journal as it is on disk then (read again under its lock)."""

    path: Path
    entries: list[BatchEntry] = field(default_factory=list)
    _index: dict[tuple[str, str], tuple[BatchEntry, str]] | None = field(default=None, repr=False, compare=False)

    #: the entries this process saw when it loaded the journal or began itself: its batches
    #: (``entries`` also has those other runs began since, read back at each change)
    known: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def load(cls, path: Path) -> Journal:
        entries = cls._read(path)
        return cls(path, entries, known={e.local for e in entries})

    @staticmethod
    def _read(path: Path) -> list[BatchEntry]:
        if not path.exists():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return [BatchEntry.from_dict(e) for e in data["batches"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
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
        self.entries = self._read(self.path)

    def _change(self, edit: Callable[[list[BatchEntry]], None]) -> None:
        """Apply ``edit`` to the entries on disk, re-read under the lock: every process that
        shares the journal (two runs of one plan, ``-k`` of other rows) changes its own entries
        only, and none overwrites or deletes what another wrote."""
        self._index = None
        with lock_for(self.path):
            entries = self._read(self.path)
            edit(entries)
            if entries:
                document = {"version": JOURNAL_VERSION, "batches": [e.to_dict() for e in entries]}
                atomic_write(self.path, json.dumps(document, indent=1) + "\n")
            else:
                self.path.unlink(missing_ok=True)
        self.entries = entries

    def begin(self, requests: dict[str, RequestEntry], reserved_usd: float = 0.0) -> BatchEntry:
        """Record a batch about to be created (before the create request is sent)."""
        now = _dt.datetime.now(_dt.timezone.utc).isoformat()
        entry = BatchEntry(local=uuid.uuid4().hex, created=now, requests=requests, reserved_usd=reserved_usd)
        self.known.add(entry.local)
        self._change(lambda entries: entries.append(entry))
        return entry

    def created(self, entry: BatchEntry, batch_id: str) -> None:
        entry.id = batch_id

        def edit(entries: list[BatchEntry]) -> None:
            on_disk = _by_local(entries, entry.local)
            if on_disk is None:  # forgotten meanwhile (another run found no batch for it): it exists
                entries.append(entry)
            else:
                on_disk.id = batch_id

        self._change(edit)

    def forget(self, entry: BatchEntry) -> None:
        """Every result of the batch is filed (or the batch never reached the API)."""
        self._change(lambda entries: _remove(entries, entry.local))

    def collected(self, entry: BatchEntry, cids: set[str]) -> None:
        """These results of the batch are filed. The entry goes when all are; until then it
        keeps the others (rows outside this run, ``-k``, or another run's), so a later run
        collects them from the same batch instead of paying for them again."""
        entry.requests = {cid: req for cid, req in entry.requests.items() if cid not in cids}

        def edit(entries: list[BatchEntry]) -> None:
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

    def own(self) -> list[BatchEntry]:
        """The entries of this process's batches: loaded when it started, or begun by it."""
        return [e for e in self.entries if e.local in self.known]


def _by_local(entries: list[BatchEntry], local: str) -> BatchEntry | None:
    return next((e for e in entries if e.local == local), None)


def _remove(entries: list[BatchEntry], local: str) -> None:
    entries[:] = [e for e in entries if e.local != local]


def journal_path(cassette_dir: Path) -> Path:
    return cassette_dir / JOURNAL_NAME


def taken_ids(entries: Iterable[BatchEntry]) -> set[str]:
    return {cid for e in entries for cid in e.requests}
