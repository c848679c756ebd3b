"""Errors as users read them: one line, the exception's type and the first line of its text."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of the exception's message, or its type name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def one_line(exc: BaseException, text_from: BaseException | None = None) -> str:
    """``'TypeName: first line of the message'`` (just the type name when the message is empty).

    ``text_from`` takes the text from another exception (e.g. a database driver's original error
    wrapped by SQLAlchemy) while keeping ``exc``'s type name.
    """
    lines = str(text_from if text_from is not None else exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
