"""The one error type of the local stack runner."""

from __future__ import annotations


class StackError(RuntimeError):
    """The local stack could not be installed, started, stopped or queried.

    The message says which part failed and, for a child process, ends with the tail of its log.
    """
