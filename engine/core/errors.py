"""One error hierarchy for the whole engine.

Callers decide what to do with a failure by its branch, not by the library that raised it:
:class:`TransientError` is retried (tenacity retries nothing else), :class:`PermanentError` is
reported and given up on. Shells wrap nats and Kubernetes errors with ``raise ... from exc`` so the
original cause stays in the traceback.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base class of every error mcsync raises on purpose."""


class TransientError(SyncError):
    """A failure that may go away if the same operation is tried again (timeouts, 5xx, 429)."""


class PermanentError(SyncError):
    """A failure that will recur on retry (bad input, forbidden, invalid object)."""


class ConfigError(PermanentError):
    """The user's configuration or the cluster's identity is missing or invalid."""


class DecodeError(PermanentError):
    """A message on the log is not a usable mcsync event.

    ``kind`` says why, for counting and for the rules readers apply:

    * ``invalid`` - not an mcsync event at all (garbage, wrong field types, missing headers);
    * ``unknown-version`` - an event type or version this reader does not know (a newer writer);
    * ``refused`` - a valid event that may not stand on its subject (it speaks for another
      cluster, or describes another key).

    Whatever the kind, the message never replaces the last usable state of its subject.
    """

    KINDS = ("invalid", "unknown-version", "refused")

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


class ConflictError(PermanentError):
    """A compare-and-set append lost: another writer appended to the subject first.

    Attributes:
        subject: the subject written to.
        expected: the last sequence the writer expected.
        actual: the last sequence the server reported, when it said so.
    """

    def __init__(self, subject: str, expected: int, actual: int | None) -> None:
        self.subject = subject
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"append to {subject!r} refused: expected last sequence {expected}, "
            f"the log has {actual if actual is not None else 'another'}; "
            "another writer (a stale replica?) appended first"
        )


class SequenceError(PermanentError):
    """An event was folded out of order for its subject (a bug or a corrupt feed)."""
