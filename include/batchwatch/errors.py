"""Batchwatch's error hierarchy, and with it the retry policy.

Every error the core raises on purpose is a `BatchwatchError`. Those a retry cannot fix (a spec to
edit, a model to register, data that is not there) are `PermanentError`s: the operators fail the
task at once on them, with the message, instead of retrying with backoff. Everything else (a
dropped connection, a lock timeout) is left to the task's retries.

This module imports nothing from the project, so every layer can use it.
"""

from __future__ import annotations


class BatchwatchError(Exception):
    """An error Batchwatch raises on purpose; its message says what happened and what to do."""


class PermanentError(BatchwatchError):
    """Retrying the same task with the same arguments fails the same way: someone has to act first."""


class InvalidArgument(PermanentError, ValueError):
    """A job was asked for something it cannot do as asked (an interval of the wrong width, a naive time)."""
