"""The report guard: a failure whose traceback holds a line-less frame is reported, not an INTERNALERROR."""

from __future__ import annotations

import types

from _pytest._code.code import ExceptionInfo, TracebackEntry


def _caught() -> types.TracebackType:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        assert exc.__traceback__ is not None
        return exc.__traceback__


def _lineless(tb: types.TracebackType) -> types.TracebackType:
    """The same frame, stopped at an instruction the compiler gave no line number."""
    code = tb.tb_frame.f_code
    offsets = [start for start, _, line in code.co_lines() if line is None]
    assert offsets, "this Python gives every instruction of the function a line"
    return types.TracebackType(None, tb.tb_frame, offsets[0], -1)


def test_a_frame_without_a_line_number_reports_its_functions_first_line() -> None:
    tb = _lineless(_caught())
    assert tb.tb_lineno is None  # what CPython 3.11 answers for such a frame
    assert TracebackEntry(tb).lineno == _caught.__code__.co_firstlineno - 1


def test_a_failure_through_such_a_frame_formats_whole() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        assert exc.__traceback__ is not None
        exc.__traceback__ = _lineless(exc.__traceback__)
        info = ExceptionInfo.from_exception(exc)
    text = str(info.getrepr(style="long"))
    assert "ValueError: boom" in text


def test_ordinary_frames_keep_their_own_line() -> None:
    tb = _caught()
    assert TracebackEntry(tb).lineno == tb.tb_lineno - 1
