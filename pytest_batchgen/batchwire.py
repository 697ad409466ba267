"""What the Message Batches endpoints answer, read without trusting it.

The SDK builds its batch objects and result lines without validating them (``construct``), and
follows whatever ``results_url`` a batch names. A server (a proxy, a gateway, a broken cache)
that answered a poll with HTML, a list, counts that are not numbers or an unknown status, or a
results stream with one malformed line, stopped the whole dispatcher: every pending row of
every plan failed with a bare ``TypeError`` or ``JSONDecodeError``. A ``results_url`` on
another host was followed with the API key, and a 404 from that host made the run forget the
batch (paid for again by the next run). So the batch dispatcher reads the raw bytes and asks
this module: a :class:`BatchStatus` or a :class:`BadBatch` naming what is wrong (the server's
text escaped, see :func:`~pytest_batchgen.client.server_text`); a result line or the reason
it is not one; the URL of the results, on the API's own host only (a ``results_url`` elsewhere
is read there, at the API's own path).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .client import server_text

#: the processing statuses of the API (https://docs.anthropic.com/en/api/retrieving-message-batches)
STATUSES = ("in_progress", "canceling", "ended")
#: the request counts a batch object carries
COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")
#: a batch id this plugin puts in a URL and the journal (the API's are ``msgbatch_`` + letters and
#: digits): no ``/``, ``..``, ``?``, space or control character can change the path it names
#: (``\Z``, not ``$``, which lets a final newline through: such an id was polled, answered 404,
#: and the run forgot its paid batch)
BATCH_ID_RE = re.compile(r"\A[A-Za-z0-9_-]{1,200}\Z")


class BadBatch(ValueError):
    """An answer of the Batches API that is not what it should be; the message says what."""


@dataclass(frozen=True)
class BatchStatus:
    """A Message Batch as a poll reads it: what the dispatcher goes by, checked."""

    id: str
    processing_status: str
    results_url: str | None
    counts: dict[str, int]

    @property
    def ended(self) -> bool:
        return self.processing_status == "ended"


def check_batch_id(value: Any) -> str:
    """``value`` if it can name a batch in a URL and the journal; else :class:`BadBatch`."""
    if isinstance(value, str) and BATCH_ID_RE.match(value):
        return value
    raise BadBatch(f"its id {server_text(repr(value), 80)} is not a Message Batch id (letters, digits, _ and -)")


def parse_batch(body: bytes) -> BatchStatus:
    """A batch object's JSON (the answer to create, retrieve or cancel), or :class:`BadBatch`."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # not JSON (an HTML page), not UTF-8, or nested past the stack
        raise BadBatch(f"it is not JSON ({exc}): {server_text(body.decode('utf-8', 'replace'), 120)}") from None
    if not isinstance(data, dict):
        raise BadBatch(f"it is a JSON {type(data).__name__}, not an object")
    batch_id = check_batch_id(data.get("id"))
    status = data.get("processing_status")
    if status not in STATUSES:
        raise BadBatch(f"its processing_status {server_text(repr(status), 80)} is none of {', '.join(STATUSES)}")
    url = data.get("results_url")
    if url is not None and not isinstance(url, str):
        raise BadBatch(f"its results_url is a {type(url).__name__}, not a URL")
    raw_counts = data.get("request_counts")
    raw_counts = raw_counts if isinstance(raw_counts, dict) else {}
    counts = {}
    for key in COUNTS:
        n = raw_counts.get(key, 0)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise BadBatch(f"its request_counts.{key} is {server_text(repr(n), 80)}, not a count")
        counts[key] = n
    return BatchStatus(batch_id, status, url or None, counts)


def results_url(batch: BatchStatus, base_url: str) -> str:
    """Where the batch's results are read: its ``results_url`` when it is on the API's host
    (scheme, host and port of ``base_url``), else the API's own path for them on that host.

    A URL elsewhere is never followed: the request would carry the API key (and a 404 from that
    host read as "the batch was deleted", so the run forgot a paid batch). Nor is it an error:
    behind a gateway (``ANTHROPIC_BASE_URL``), the API's answer names its own host, where the
    results are read through the gateway all the same. A ``results_url`` that cannot be split
    (a port that is no number or out of range, a broken ``[`` host: ``urllib`` raises
    ``ValueError``, which stopped the dispatcher) is on no host known to be the API's: the same."""
    own = f"{base_url.rstrip('/')}/v1/messages/batches/{quote(batch.id, safe='')}/results"
    if batch.results_url is None:
        return own
    try:
        url = urlsplit(batch.results_url)
        where = (url.scheme, url.hostname, url.port or _port(url.scheme))
    except ValueError:
        return own
    base = urlsplit(base_url)
    same_host = where == (base.scheme, base.hostname, base.port or _port(base.scheme))
    return batch.results_url if same_host else own


def _port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme)


def parse_result(line: bytes) -> tuple[str, dict[str, Any]] | str:
    """One line of a batch's results: (custom_id, result object), or why it is not one."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: ``[[[...`` nested 100,000 deep
        return f"not JSON ({exc})"
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not a result object"
    cid, result = data.get("custom_id"), data.get("result")
    if not isinstance(cid, str):
        return f"its custom_id is {server_text(repr(cid), 80)}, not a string"
    if not isinstance(result, dict):
        return f"its result is a {type(result).__name__}, not an object"
    return cid, result
