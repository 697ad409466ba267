"""How a row's generation ended, and what the session concluded about the row.

Both are ``str`` enums so that the JSON report and the payload handed to xdist workers keep
the plain strings they always had; the meaning of each value (does it fail the row's
generation item, does it leave the checks nothing to read) lives here, on the value.
"""

from __future__ import annotations

import enum


class _StrEnum(str, enum.Enum):
    def __str__(self) -> str:  # f-strings show the value on every Python version
        return str(self.value)


class Outcome(_StrEnum):
    """How generation ended for one row."""

    PASSED = "passed"  # the last draft passed its checks
    FAILED = "failed"  # a draft was written but failed its checks after every attempt
    TRUNCATED = "truncated"  # the reply was cut off (max_tokens, the context window) or may be unfinished
    REFUSED = "refused"  # the model refused
    ERROR = "error"  # the API failed for good, or a replay missed
    KEPT = "kept"  # the existing output already passed; nothing was sent
    SKIPPED = "skipped"  # not sent: the run stopped or the budget ran out

    @property
    def generation_failed(self) -> bool:
        """The generation itself failed (its ``generate`` item fails), not only the checks."""
        return self in (Outcome.ERROR, Outcome.TRUNCATED, Outcome.REFUSED)

    @property
    def counts_as_failed(self) -> bool:
        """For the progress line: a row that needs the user's attention."""
        return self not in (Outcome.PASSED, Outcome.KEPT, Outcome.SKIPPED)


class Verdict(_StrEnum):
    """What the session's items said about a row (see :class:`pytest_batchgen.results.RowTally`)."""

    COMPLETE = "complete"  # every item of the row ran here and passed
    FAILED = "failed"  # at least one item failed
    INCOMPLETE = "incomplete"  # some items did not run (deselected, or skipped among passes)
    SKIPPED = "skipped"  # every item that ran was skipped
    NOT_RUN = "not run"  # no item of the row reported
