"""What long commands show on a terminal: one progress facility and one table printer (rich).

``Progress``: the ``progress=`` hook of :func:`tailscope.analyze` (``(done, total, name)``), with
an optional failed count and :meth:`Progress.note` for the zoo. On a terminal (stderr) a rich
progress bar (done/total, elapsed, ETA, the current name); in a log a plain line at most every
``interval`` seconds (and a final line when the run took that long); nothing when ``quiet``.

``print_table``: chosen columns of a DataFrame as a rich table on stdout, floats to 4 significant
digits, NaN as 'nan'. On a terminal the table fits its width (long text cells fold) and the rows
that warn are coloured (``ROW_STYLES``: failed, over-trained, under-trained), unless NO_COLOR is
set. When stdout is not a terminal (a pipe, a file, a test capturing it) no cell is ever truncated
or wrapped and no colour or control code is written.

Both decide "terminal" the same way, rich's: the stream's ``isatty()``, overridden by the
environment (``FORCE_COLOR``, ``TTY_COMPATIBLE``); ``NO_COLOR`` keeps the layout and drops the
colours.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from numbers import Integral, Real

from .errors import printable

__all__ = ["ROW_STYLES", "Progress", "echo", "format_cell", "hms", "is_terminal", "print_table",
           "row_style"]

# the colour of a row on a terminal, by its status or warning (the first that applies)
ROW_STYLES: dict[str, str] = {"failed": "red", "over-trained": "yellow",
                              "under-trained": "cyan"}


def hms(seconds: float) -> str:
    """``H:MM:SS`` (negative or NaN: 0:00:00)."""
    s = int(round(seconds)) if seconds == seconds and seconds > 0 else 0
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal, as rich decides it (``isatty()``, or the environment's
    ``FORCE_COLOR`` / ``TTY_COMPATIBLE``)."""
    from rich.console import Console

    try:
        return bool(Console(file=stream).is_terminal)
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def row_style(row) -> str | None:
    """The style of a table row (a mapping with 'status' and/or 'warning'): ``ROW_STYLES`` of its
    status if it has one there, else of its warning, else None."""
    for key in ("status", "warning"):
        value = row.get(key)
        if isinstance(value, str) and value in ROW_STYLES:
            return ROW_STYLES[value]
    return None


class Progress:
    """Progress of a long run on stderr (see the module's docstring).

    Call it as ``progress(done, total, name)`` (``failed=`` to show a failed count), write a
    line next to it with :meth:`note`; use it as a context manager (or call :meth:`close`) so the
    terminal bar stops even when the run fails. ``what`` names the things counted ('layers',
    'models').
    """

    def __init__(self, what: str = "layers", *, quiet: bool = False, stream=None,
                 interval: float = 10.0):
        self.what = what
        self.quiet = bool(quiet)
        self.stream = stream if stream is not None else sys.stderr
        self.interval = float(interval)
        self.tty = not self.quiet and is_terminal(self.stream)
        self.start = self.last = time.monotonic()
        self._bar = None  # the rich Progress while the bar is shown
        self._task = None

    # --- the hook ----------------------------------------------------------------------------
    def __call__(self, done: int, total: int, name: str = "", failed: int | None = None) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        elapsed = now - self.start
        eta = elapsed / done * (total - done) if done else math.nan
        if self.tty:
            self._draw(done, total, name, failed, elapsed, eta)
            if done >= total:
                self.close()
        elif now - self.last >= self.interval or (done >= total and elapsed >= self.interval):
            self.last = now
            self._write(self._line(done, total, name, failed, elapsed, eta))

    def note(self, text: str) -> None:
        """A line of its own on stderr (above the bar on a terminal); nothing when quiet."""
        if self.quiet:
            return
        if self._bar is not None:
            from rich.text import Text

            self._bar.console.print(Text(printable(text)))
        else:
            self._write(printable(text))

    def close(self) -> None:
        """Stop the terminal bar (it stays on screen as it was last drawn)."""
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.stop()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- drawing -----------------------------------------------------------------------------
    def _line(self, done, total, name, failed, elapsed, eta) -> str:
        text = f"{done}/{total} {self.what}"
        if failed is not None:
            text += f", {failed} failed"
        text += f", {hms(elapsed)} elapsed, ETA {hms(eta) if eta == eta else '-'}"
        return f"{text}  {printable(name)}" if name else text

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _draw(self, done, total, name, failed, elapsed, eta) -> None:
        fields = {"failed": "" if failed is None else f"{failed} failed",
                  "elapsed": hms(elapsed), "eta": hms(eta) if eta == eta else "-:--:--",
                  "current": _tail(printable(name), 48)}
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as Bar

            console = Console(file=self.stream, highlight=False)
            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[failed]}"),
                            TextColumn("{task.fields[elapsed]} elapsed, ETA {task.fields[eta]}"),
                            TextColumn("{task.fields[current]}", markup=False),
                            console=console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=total, completed=done, **fields)
        else:
            self._bar.update(self._task, total=total, completed=done, **fields)
        self._bar.refresh()


def _tail(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def echo(text: str = "", *, style: str | None = None, stream=None, width: int | None = None
         ) -> None:
    """A line of text on stdout (or ``stream``): on a terminal its words wrap at ``width``
    (default: the terminal's) and it has ``style`` (e.g. ``ROW_STYLES['failed']``); elsewhere it
    is written as it is, one line."""
    stream = stream if stream is not None else sys.stdout
    text = "\n".join(map(printable, str(text).split("\n")))  # names never drive the terminal
    if not is_terminal(stream):
        stream.write(text + "\n")
        stream.flush()
        return
    from rich.console import Console
    from rich.text import Text

    Console(file=stream, highlight=False, width=width).print(Text(text, style=style or ""))


# --- tables -------------------------------------------------------------------------------------
def format_cell(value) -> str:
    """A table cell: floats to 4 significant digits, NaN (and pandas' NA) as 'nan', None as ''."""
    if value is None:
        return ""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return str(bool(value))
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        v = float(value)
        return "nan" if math.isnan(v) else f"{v:.4g}"
    import pandas as pd

    if value is pd.NA or value is pd.NaT:
        return "nan"
    return printable(value)


def _ascii_head():
    from rich.box import Box

    return Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def print_table(frame, columns: Sequence[str] | None = None, *, title: str | None = None,
                stream=None, width: int | None = None) -> None:
    """Print ``columns`` of a DataFrame (all by default; absent ones are left out) as a table.

    Numbers are right-aligned, text left-aligned. On a terminal the table fits ``width`` (default:
    the terminal's), long text cells folding onto more lines, and each row is coloured by
    :func:`row_style` of the frame's row (its 'status' and 'warning', shown or not). When
    ``stream`` (default: stdout) is not a terminal the table is as wide as its widest row: nothing
    is truncated or wrapped, and no colour or control code is written.
    """
    import pandas as pd
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    stream = stream if stream is not None else sys.stdout
    cols = [c for c in (columns if columns is not None else frame.columns) if c in frame.columns]
    tty = is_terminal(stream)
    table = Table(box=box.SIMPLE_HEAD if tty else _ascii_head(), show_edge=False, pad_edge=False,
                  header_style="bold")
    for c in cols:
        numeric = pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(
            frame[c])
        table.add_column(Text(printable(c)), justify="right" if numeric else "left",
                         no_wrap=numeric or not tty, overflow="fold")
    marks = [k for k in ("status", "warning") if k in frame.columns]
    styles = ([row_style(dict(zip(marks, r))) for r in frame[marks].itertuples(index=False,
                                                                                name=None)]
              if tty and marks else [None] * len(frame))
    for row, style in zip(frame[cols].itertuples(index=False, name=None), styles):
        table.add_row(*(Text(format_cell(v)) for v in row), style=style)
    if tty:
        console = Console(file=stream, highlight=False, width=width)
        if title:
            console.print(Text(title, style="bold"))
        console.print(table)
        return
    console = Console(file=stream, force_terminal=False, color_system=None, width=1_000_000,
                      highlight=False, emoji=False)
    with console.capture() as captured:
        console.print(table)
    lines = ([title] if title else []) + [line.rstrip() for line in captured.get().splitlines()]
    stream.write("".join(line + "\n" for line in lines))
    stream.flush()
