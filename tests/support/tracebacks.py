"""A guard for pytest's failure reports on Python 3.11: a traceback line with no line number.

CPython 3.11 answers `tb_lineno = None` for a frame stopped at an instruction the compiler gave no
line (an exception raised there asynchronously: a pytest-timeout alarm, say). pytest computes
`tb_lineno - 1` for every entry of a failure's report, so one such frame turns a plain test failure
into an INTERNALERROR that stops the whole run and hides which test failed (seen once in CI, at the
621st test). The guard reports such a frame at its function's first line instead.
"""

from __future__ import annotations

from _pytest._code.code import TracebackEntry


def _lineno(entry: TracebackEntry) -> int:
    raw = entry._rawentry
    line = raw.tb_lineno
    if line is None:  # a line-less instruction: point at the function that holds it
        line = raw.tb_frame.f_code.co_firstlineno
    return line - 1


def install() -> None:
    """Make pytest's traceback entries tolerate a frame with no line number."""
    TracebackEntry.lineno = property(_lineno)  # type: ignore[assignment,method-assign]
