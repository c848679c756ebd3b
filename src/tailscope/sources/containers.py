"""Walking the nested containers of a checkpoint or an in-memory object, bounded.

A pickle can hold dicts that share references (a DAG whose paths number 2**depth from a few
kilobytes), a dict that contains itself, or a nesting deeper than Python's recursion limit.
``walk`` visits each container once (a shared one is not walked again: its tensors are the same
tensors, listed once under the first name), iteratively, and refuses in one line (a
``SourceError``) a container inside its own contents, a nesting deeper than ``MAX_DEPTH`` and
more than ``MAX_TENSORS`` tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .base import SourceError

MAX_DEPTH = 64
MAX_TENSORS = 1_000_000


def too_deep(where: str, name: str) -> SourceError:
    return SourceError(f"{where}: containers nested more than {MAX_DEPTH} deep (at "
                       f"{name[:80] or 'the top'}); refused as damaged or tampered")


def contains_itself(where: str, name: str) -> SourceError:
    return SourceError(f"{where} contains itself (a container inside its own contents, at "
                       f"{name[:80] or 'the top'}); refused as damaged or tampered")


def too_many(where: str) -> SourceError:
    return SourceError(f"{where} holds more than {MAX_TENSORS:,} tensors; refused as damaged "
                       "or tampered")


def walk(root: Any, expand: Callable[[Any], Iterable[tuple[Any, Any]] | None],
         is_leaf: Callable[[Any], bool], where: str, prefix: str = "",
         sep: str = ".") -> list[tuple[str, Any]]:
    """(name, leaf) pairs under ``root``, depth first in the containers' own order.

    ``expand(node)`` gives a container's (key, value) pairs, None for what is not a container
    (and is neither walked nor listed unless ``is_leaf``). Names are ``prefix`` and the keys
    joined by ``sep``. Each container is walked once; a cycle, a depth over ``MAX_DEPTH`` or a
    count over ``MAX_TENSORS`` is a ``SourceError`` naming ``where``.
    """
    entries = expand(root)
    if entries is None:
        return []
    out: list[tuple[str, Any]] = []
    seen = {id(root)}
    on_path = [id(root)]
    stack = [(iter(entries), prefix)]
    while stack:
        items, base = stack[-1]
        step = next(items, None)
        if step is None:
            stack.pop()
            on_path.pop()
            continue
        key, value = step
        name = f"{base}{key}"
        if is_leaf(value):
            out.append((name, value))
            if len(out) > MAX_TENSORS:
                raise too_many(where)
            continue
        if id(value) in seen:
            if id(value) in on_path:
                raise contains_itself(where, name)
            continue  # a shared container: walked once, under its first name
        inner = expand(value)
        if inner is None:
            continue
        if len(stack) >= MAX_DEPTH:
            raise too_deep(where, name)
        seen.add(id(value))
        on_path.append(id(value))
        stack.append((iter(inner), f"{name}{sep}"))
    return out
