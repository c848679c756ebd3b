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
    if not lines:
        return type(exc).__name__
    text = lines[0].split(_TORCH_PLEA)[0].rstrip()  # PyTorch's request for a better message
    return f"{type(exc).__name__}: {text}"


_TORCH_PLEA = "(Could this error message be improved?"


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7f, 0xa0)] if c not in (0x09,)}


def printable(text) -> str:
    """``text`` safe for a terminal: control characters (ESC of ANSI codes, carriage returns,
    newlines, C1 codes) written as ``\\xNN`` escapes, so a name in a file cannot move the cursor,
    recolour or rewrite what the terminal shows. Tabs stay."""
    return str(text).translate(_CONTROL)


def os_error(exc: OSError) -> str:
    """An operating-system error on a user's path as one line naming the file:
    ``'cannot read|write PATH: reason'`` style, without Python's ``[Errno N]`` prefix."""
    reason = exc.strerror or first_line(exc) or type(exc).__name__
    if exc.filename is not None:
        name = exc.filename
        if exc.filename2 is not None:
            name = f"{name} -> {exc.filename2}"
        return f"{name}: {reason}"
    return reason
