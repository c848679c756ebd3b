"""What the commands share: the command object, the analysis flags generated from
``engine.options.OPTIONS``, errors, reading numbers, JSON-safe values and the analysis table."""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.options import BY_NAME, GROUPS, OPTIONS
from ..util.errors import printable


class InputError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


@dataclass(frozen=True)
class Command:
    """One subcommand: ``tailscope <name>``.

    ``arguments(parser)`` adds the command's own arguments; ``options``: the analysis options it
    takes (names of ``OPTIONS``, usually from :func:`option_names`), added as flags in argument
    groups titled by ``GROUPS``; ``run(args) -> exit code``. The values of the analysis flags the
    user gave are ``given_options(args, command.options)``.
    """

    name: str
    help: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    options: tuple[str, ...] = ()


def option_names(*groups: str, plus: Iterable[str] = (), minus: Iterable[str] = ()
                 ) -> tuple[str, ...]:
    """The names of the options with a flag in ``groups`` (keys of ``GROUPS``), with ``plus``
    added and ``minus`` left out, in ``OPTIONS``' order."""
    for g in groups:
        if g not in GROUPS:
            raise KeyError(f"no option group {g!r}")
    extra, drop = set(plus), set(minus)
    for name in extra | drop:
        if name not in BY_NAME:
            raise KeyError(f"no option {name!r}")
    return tuple(o.name for o in OPTIONS if o.flag is not None and o.name not in drop
                 and (o.group in groups or o.name in extra))


def _help(opt) -> str:
    text = opt.help
    if not (opt.flag and opt.flag.help) and text[:2].istitle():  # a sentence of the docs
        text = text[0].lower() + text[1:]
    d = opt.default
    if (opt.flag.kwargs.get("action") not in ("store_true", "store_false", "append")
            and d is not None and not isinstance(d, bool) and "default" not in text
            and str(d) not in text):
        text += f" (default: {d})"
    return text


def add_option(parser, name: str, *, help: str | None = None, suppress: bool = True) -> None:
    """Add the flag of option ``name`` (dest: the option's name). With ``suppress`` (the
    default) only a given flag sets its attribute, so only given flags reach the call."""
    opt = BY_NAME[name]
    kwargs = dict(opt.flag.kwargs)
    if suppress:
        kwargs["default"] = argparse.SUPPRESS
    text = (help or _help(opt)).replace("%", "%%")  # argparse formats help with %
    parser.add_argument(*opt.flag.names, dest=opt.name, help=text, **kwargs)


def add_options(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """The analysis flags ``names``, one argument group per option group, titled by ``GROUPS``."""
    names = set(names)
    for group, title in GROUPS.items():
        chosen = [o for o in OPTIONS if o.group == group and o.name in names]
        if chosen:
            g = parser.add_argument_group(title)
            for o in chosen:
                add_option(g, o.name)


def given_options(args: argparse.Namespace, names: Iterable[str]) -> dict:
    """The options whose flags were given, each value through its flag's parser and checked by
    the option's own check (an error names the flag)."""
    out = {}
    for name in names:
        if not hasattr(args, name):
            continue
        flag = BY_NAME[name].flag
        value = getattr(args, name)
        if flag.parse is not None:
            try:
                value = flag.parse(value)
            except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
                raise InputError(f"{flag.names[0]}: {exc}") from None
        text = BY_NAME[name].check(value) if BY_NAME[name].check else ""
        if text:  # the option's own check, said with the flag the user typed
            raise InputError(f"{flag.names[0]}: {text}")
        out[name] = value
    return out


def add_source(parser: argparse.ArgumentParser) -> None:
    from ..sources.registry import READERS

    kinds = ", ".join(r.phrase for r in READERS)
    parser.add_argument("source", help=f"a model file or folder ({kinds}; a sharded safetensors "
                                       "folder), or a Hugging Face id owner/name")


def add_scheduler(parser: argparse.ArgumentParser) -> None:
    """``--scheduler``: the layers as Dask tasks (every per-layer command takes it)."""
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="spread the layers over a Dask cluster (tcp://HOST:PORT); each "
                             "worker plans and reads its own layers, with the local numbers")


def add_quiet(parser: argparse.ArgumentParser, what: str = "no progress bar") -> None:
    parser.add_argument("--quiet", action="store_true", help=what)


class Choices(Sequence):
    """The values a flag accepts, read from the library constant that declares them
    (``declared``: a function returning it) when argparse first needs them: to check a given
    value, or for --help. Building the parser reads nothing (the editing modules that declare
    methods load pandas and scipy). Its ``str`` is argparse's ``{a,b,c}``: it is the flag's
    metavar too."""

    def __init__(self, declared: Callable[[], Iterable]):
        self.declared = declared

    @functools.cached_property
    def values(self) -> tuple:
        return tuple(self.declared())

    def __getitem__(self, i):
        return self.values[i]

    def __len__(self) -> int:
        return len(self.values)

    def __str__(self) -> str:
        return "{" + ",".join(map(str, self.values)) + "}"


def add_choices(parser, *names: str, choices: Choices, **kwargs) -> argparse.Action:
    """Add a flag whose values are ``choices`` (set after ``add_argument``, which would read
    them to format the flag)."""
    action = parser.add_argument(*names, **kwargs)
    action.choices = action.metavar = choices
    return action


# --- numeric flags: every range checked here, as argparse types (an error is exit 2, one line) ---
def whole(low: int = 0, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected a whole number {span}, got {text!r}")
        return value
    parse.__name__ = "whole number"
    return parse


def real(low: float | None = None, high: float | None = None, *, above: bool = False,
         below: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in [low, high] (``above``/``below``: the bound
    itself excluded)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not math.isfinite(value)
        if low is not None:
            bad = bad or value < low or (above and value == low)
        if high is not None:
            bad = bad or value > high or (below and value == high)
        if bad:
            lo = "" if low is None else f"{'>' if above else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if below else '<='} {high:g}"
            span = " and ".join(t for t in (lo, hi) if t)
            raise argparse.ArgumentTypeError(
                f"expected a finite number{' ' + span if span else ''}, got {text!r}")
        return value
    parse.__name__ = "number"
    return parse
def add_columns(parser: argparse.ArgumentParser, default: str) -> None:
    """``--columns``: the table's columns (``default`` says which are shown without it)."""
    parser.add_argument("--columns", metavar="A,B,...",
                        help=f"the table's columns, comma-separated, or 'all' (default: "
                             f"{default})")


def pick_columns(args, frames, default: Iterable[str]) -> list:
    """The columns to show, for each of ``frames``: ``default`` (those present) without
    --columns, every column with 'all', else the named ones each frame has, in the order given.
    A name no frame has is an error that lists the columns there are."""
    frames = list(frames)
    given = getattr(args, "columns", None)
    if given is None:
        default = list(default)
        return [[c for c in default if c in f.columns] for f in frames]
    if given.strip().lower() == "all":
        return [list(f.columns) for f in frames]
    names = [c.strip() for c in given.split(",") if c.strip()]
    have = list(dict.fromkeys(c for f in frames for c in f.columns))
    unknown = [c for c in names if c not in have]
    if not names or unknown:
        raise InputError(f"--columns {given}: no column {unknown[0] if unknown else ''!r} "
                         f"(have: {', '.join(map(str, have))}, or all)")
    return [[c for c in names if c in f.columns] for f in frames]


def seed_help(what: str, default: str = "fresh") -> str:
    """The one wording of every --seed."""
    return f"seed of {what} (default: {default})"


def jobs_help(what: str, default: str = "1") -> str:
    """The one wording of every --jobs."""
    return f"{what} at once (default: {default})"


# --- values ---------------------------------------------------------------------------------------
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")  # "1,965011": 1.965011 written the European way


def read_values(path: str, column: str | None = None) -> np.ndarray:
    """Numbers from a .npy file, or a text file with one number per line ('-': stdin).

    Blank lines and lines starting with '#' are skipped; of a CSV line, the first field. A line
    like '1,965011' (a decimal comma, or two whole-number fields: it cannot be told) is an error,
    never read as 1. ``column`` (a header name, or a 0-based index; negative counts from the end)
    reads that column of a CSV, semicolon- or whitespace-separated table instead.
    """
    if column is not None:
        return read_column(path, column)
    if path != "-" and Path(path).suffix.lower() == ".npy":
        from ..sources.numpy import read_array

        try:
            return np.asarray(read_array(path))
        except ValueError as exc:  # SourceError: no such file, pickled objects, damaged
            raise InputError(f"cannot read {exc}") from None
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    values = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if _DECIMAL_COMMA.match(s):
            raise InputError(f"{path}, line {lineno}: {s[:40]!r} looks like a decimal comma; "
                             "write numbers with a point (1.5), one per line; a table of two columns: "
                             "pick one with --column") from None
        try:
            values.append(float(s.split(",")[0]))
        except ValueError:
            raise InputError(f"{path}, line {lineno}: {printable(s[:40])!r} is not a number"
                             ) from None
    if not values:
        raise InputError(f"{path} holds no numbers")
    return np.asarray(values)


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def read_column(path: str, column: str) -> np.ndarray:
    """One column of a text table ('-': stdin): fields split at ',' (else ';', else whitespace,
    as the first data line shows), a first line with a non-number field taken as the header.
    ``column`` is a header name or a 0-based index. Every value of the column must be a number."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    rows = [(i, s.strip()) for i, s in enumerate(text.splitlines(), 1)
            if s.strip() and not s.strip().startswith("#")]
    if not rows:
        raise InputError(f"{path} holds no numbers")
    first = rows[0][1]
    sep = "," if "," in first else ";" if ";" in first else None

    def split(s):
        return [f.strip().strip('"') for f in (s.split(sep) if sep else s.split())]

    head = split(first)
    header = None
    if any(_number(f) is None for f in head):
        header, rows = head, rows[1:]
    width = len(head)
    if header is not None and column in header:
        k = header.index(column)
    else:
        try:
            k = int(column)
        except ValueError:
            have = f"header: {', '.join(header)}" if header else "no header line"
            raise InputError(f"--column {column}: no such column ({have}; or give a 0-based "
                             "index)") from None
        if not -width <= k < width:
            raise InputError(f"--column {column}: the table has {width} column(s) "
                             f"(0 to {width - 1})")
    values = []
    for lineno, s in rows:
        fields = split(s)
        if len(fields) != width:
            raise InputError(f"{path}, line {lineno}: {len(fields)} field(s), the first line "
                             f"has {width}")
        v = _number(fields[k])
        if v is None:
            raise InputError(f"{path}, line {lineno}, column {column}: "
                             f"{printable(fields[k][:40])!r} is not a number")
        values.append(v)
    if not values:
        raise InputError(f"{path} holds no numbers (only a header)")
    return np.asarray(values)


def fmt(v) -> str:
    """A number in a sentence: 6 significant digits, NaN as 'nan', None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def json_safe(v):
    """NaN/inf are not JSON: write them as null."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _input_folder(source: Path) -> Path | None:
    """The folder an input occupies: the input itself when it is a folder (a sharded safetensors
    folder, a folder of texts), the folder of a sharded checkpoint's ``*.index.json``."""
    if source.is_dir():
        return source
    if source.name.lower().endswith(".index.json"):
        return source.parent
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists()
                                                and os.path.samefile(a, b))
    except OSError:
        return False


def _within(out: Path, folder: Path) -> bool:
    """Whether ``out`` (a file or folder, existing or not) is ``folder`` or lies under it, by
    resolved path or by the folders' identity (the same inode: another route to it)."""
    try:
        r = out.resolve()
        for p in (r, *r.parents):
            if p == folder.resolve() or (p.exists() and os.path.samefile(p, folder)):
                return True
    except OSError:
        return False
    return False


def _linked_into(out: Path, folder: Path, limit: int = 100_000) -> bool:
    """Whether the existing file ``out`` is a hard link to a file under ``folder``."""
    try:
        st = out.stat()
    except OSError:
        return False
    if st.st_nlink < 2:
        return False
    seen = 0
    for root, _, files in os.walk(folder):
        for name in files:
            seen += 1
            if seen > limit:
                return False
            try:
                other = os.stat(os.path.join(root, name))
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return True
    return False


def check_not_input(path: str, flag: str, inputs: Iterable[str | None]) -> None:
    """Refuse (one line, exit 2) an output that is one of the ``inputs``: the same resolved path,
    the same file (a hard link, a symlink), or, for a folder input, a path inside that folder. An
    input that is not on disk (a Hugging Face id) has nothing to protect."""
    out = Path(path)
    for given in inputs:
        if not given:
            continue
        source = Path(given)
        try:
            if not source.exists():
                continue
        except OSError:
            continue
        folder = _input_folder(source)
        if _same_file(out, source):
            raise InputError(f"{flag} {printable(path)}: is the input {printable(given)}; "
                             "the input is never overwritten, write elsewhere")
        if folder is not None and (_within(out, folder) or _linked_into(out, folder)):
            raise InputError(f"{flag} {printable(path)}: is inside the input folder "
                             f"{printable(str(folder))}; the input is never modified, write "
                             "elsewhere")


def check_output(path: str, flag: str, suffixes: tuple[str, ...], what: str,
                 inputs: Iterable[str | None] = ()) -> Path:
    """The one check of every output file name, made before any computation: one of
    ``suffixes``, not a folder nor a device, a name the system accepts, in a folder that exists
    and can be written to, and none of ``inputs`` (:func:`check_not_input`). Every command
    refuses a missing folder alike (exit 2, one line)."""
    check_not_input(path, flag, inputs)
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise InputError(f"{flag} {path}: {what}")
    try:
        exists = out.exists()
        if exists and out.is_dir():
            raise InputError(f"{flag} {path}: is a folder")
        if exists and not out.is_file():
            raise InputError(f"{flag} {path}: not a regular file")
        folder = out.resolve().parent
        if not folder.is_dir():
            raise InputError(f"{flag} {path}: the folder {folder} does not exist")
        if hasattr(os, "pathconf") and len(out.name.encode()) > os.pathconf(folder,
                                                                             "PC_NAME_MAX"):
            raise InputError(f"{flag} {path}: the file name is too long")
    except OSError as exc:
        raise InputError(f"{flag} {path}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK) or (exists and not os.access(out, os.W_OK)):
        raise InputError(f"{flag} {path}: not writable")
    return out


def check_folder(path: str, flag: str, inputs: Iterable[str | None] = ()) -> Path:
    """An output folder, checked before any computation: a writable folder, or one that can be
    made (its parent is a writable folder), neither an input nor inside an input folder."""
    check_not_input(path, flag, inputs)
    out = Path(path)
    try:
        if out.exists():
            if not out.is_dir():
                raise InputError(f"{flag} {path}: not a folder")
            parent = out
        else:
            parent = out.resolve().parent
            if not parent.is_dir():
                raise InputError(f"{flag} {path}: the folder {parent} does not exist")
    except OSError as exc:
        raise InputError(f"{flag} {path}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"{flag} {path}: not writable")
    return out


# --- the analysis in the terminal -------------------------------------------------------------------
def int_columns(frame, names):
    """``frame`` with the integer-valued float columns ``names`` (NaN where not computed) as
    nullable ints, so a table shows 12, not 12.0."""
    frame = frame.copy()
    for c in names:
        if c in frame.columns and frame[c].dtype.kind == "f":
            try:
                frame[c] = frame[c].astype("Int64")
            except (TypeError, ValueError):  # not whole numbers after all: leave as it is
                pass
    return frame


def print_analysis(analysis, args=None) -> None:
    """The per-layer table (``brief_columns``, or the --columns of ``args``), the failed layers
    with their reason, then the summary lines."""
    from ..engine.columns import BY_NAME as COLUMN
    from ..engine.columns import OVER_TRAINED, UNDER_TRAINED, brief_columns
    from ..engine.result import means_text
    from ..util.console import ROW_STYLES, echo, print_table

    d = analysis.details
    (cols,) = pick_columns(args, [d], brief_columns(d.columns))
    if len(d):
        print_table(int_columns(d, [c for c in cols if c in COLUMN and COLUMN[c].dtype == "int"]),
                    cols)
    else:
        echo("(no layer analysed)")
    failed = d[d["status"] == "failed"] if len(d) else d
    for _, row in failed.iterrows():
        echo(f"failed: layer {row['layer_id']} {row['name']}: {row['reason']}",
             style=ROW_STYLES["failed"])
    s = analysis.summary()
    echo()
    echo(f"{analysis.source}")
    kinds = analysis.skip_counts()
    skipped = f"{s['skipped']} tensors skipped" + (
        " (" + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")" if kinds else "")
    echo(f"layers: {s['layers']} analysed ({s['success']} fitted, {s['failed']} failed), "
         f"{skipped}; {s['over_trained']} with alpha < {OVER_TRAINED:g} "
         f"(flagged 'over-trained'), {s['under_trained']} with alpha > {UNDER_TRAINED:g} "
         "(flagged 'under-trained'): HT-SR's conventions, not measurements of training")
    echo("mean  " + means_text(s, analysis.summary_layers(), s["success"]))
