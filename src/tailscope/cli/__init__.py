"""The ``tailscope`` command line: a registry of commands, one module each.

A command is a :class:`~tailscope.cli.common.Command` (name, help, description, a function adding
its own arguments, the analysis options it takes, a run function); adding one is a module and a
line in ``COMMANDS``. The analysis flags are generated from ``tailscope.engine.options.OPTIONS``,
so every command that analyses takes the same flags with the same meaning.

Exit codes: 0 success, 2 bad input (one line on stderr: ``tailscope: error: ...``), 1 internal
error (one line), 130 interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import warnings

from .._version import __version__
from ..util.errors import one_line, os_error, printable
from . import analyze, demo, describe, fit, prune, quantize_plan, rank, report, smooth, traps, validate, zoo
from .common import Command, InputError, add_options

# the commands, in the order --help lists them
COMMANDS: tuple[Command, ...] = (
    fit.COMMAND,
    analyze.COMMAND,
    smooth.COMMAND,
    traps.COMMAND,
    prune.COMMAND,
    quantize_plan.COMMAND,
    zoo.COMMAND,
    validate.COMMAND,
    report.COMMAND,
    describe.COMMAND,
    rank.COMMAND,
    demo.COMMAND,
)

__all__ = ["COMMANDS", "Command", "InputError", "build_parser", "main"]


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (exit 2). ``commands``: the subcommands' parsers by
    name (on the top-level parser)."""

    commands: dict[str, argparse.ArgumentParser]

    def option_strings(self) -> set[str]:
        """Every option string this parser accepts ('--layers', '-o', ...)."""
        return {s for action in self._actions for s in action.option_strings}

    def error(self, message: str):
        where = self.prog.removeprefix("tailscope").strip()
        self.exit(2, f"tailscope: error: {where + ': ' if where else ''}{_one_line(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tailscope",
        description="Heavy-tailed spectral analysis: power-law fits of eigenvalue spectra.")
    parser.add_argument("--version", action="version", version=f"tailscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        command.arguments(p)
        add_options(p, command.options)
        p.set_defaults(run=command.run)
        parser.commands[command.name] = p
    return parser


# warnings that say a number may be wrong (numpy's floating-point warnings are RuntimeWarnings)
_DOUBTFUL = ("IntegrationWarning", "OptimizeWarning", "ConvergenceWarning")


def doubtful(caught: list) -> str:
    """One line for the warnings of a run that say a result may be wrong (floating-point
    overflow or invalid values, an integration or an optimisation that did not converge), ''
    when there are none. The others (deprecations, a font without a glyph, ...) say nothing of
    the results and are not shown: warnings from torch, numpy, scipy or matplotlib never reach
    the terminal as such."""
    bad = [w for w in caught if issubclass(w.category, RuntimeWarning)
           or w.category.__name__ in _DOUBTFUL]
    if not bad:
        return ""
    first = " ".join(str(bad[0].message).split())[:160]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return (f"numerical warning while computing: {first}{more}; a number it touched may be "
            "inaccurate (a failed fit says why in its row)")


@contextlib.contextmanager
def _children_warn_nothing():
    """Processes started during a command (validate's and Dask's spawned workers) start with
    PYTHONWARNINGS=ignore: their warnings cannot be gathered into the one note, and must not
    reach the terminal either."""
    before = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = "ignore"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = before


def _quiet_exit() -> None:
    """After 'interrupted', the process ends without more output: what its libraries' exit
    handlers say while their half-started work is torn down (a Dask cluster interrupted while
    it started) goes to the null device. Registered last, so it runs before their handlers."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (already reported)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        with warnings.catch_warnings(record=True) as caught, _children_warn_nothing():
            warnings.simplefilter("default")  # each once per place, none printed
            code = args.run(args)
        note = doubtful(caught)
        if note:
            print(f"tailscope: note: {printable(note)}", file=sys.stderr)
        return code
    except (InputError, ValueError) as exc:  # ValueError: SourceError, StoreError, MissingExtra...
        print(f"tailscope: error: {printable(_one_line(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tailscope: interrupted", file=sys.stderr)
        atexit.register(_quiet_exit)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the user's own paths: unreadable, too long, a full disk, a folder
        print(f"tailscope: error: {printable(_one_line(os_error(exc)))}", file=sys.stderr)
        return 2
    except Exception as exc:  # an internal error: say so in one line, exit 1
        print(f"tailscope: internal error: {printable(one_line(exc))}", file=sys.stderr)
        return 1
