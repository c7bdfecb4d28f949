"""Exact memoisation of routing rule outcomes (pure).

A CEL program is a pure function of the variables it reads. :func:`reads` finds, from the
expression text, which declared variables a rule reads and which literal keys of
``headers`` / ``params`` (``headers["x-tier"]``); the outcome of evaluating the rule is then
cached under the values of exactly those. Most traffic repeats them (the same model, key,
team, header values), so a table of rules costs a few dictionary lookups per request
instead of a few microseconds of CEL each. Rules whose reads cannot be told from the text
(a map used other than with a literal key, e.g. ``"x" in headers`` or ``headers[model]``)
are never memoised.

    >>> reads('headers["x-tier"] == "gold" && model != "gpt-4o"')
    (('headers', 'x-tier'), ('model', None))
    >>> reads('"x" in headers') is None
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MAP_VARIABLES = frozenset({"headers", "params"})
# String literals (any CEL quoting), so that words inside them are not taken as identifiers.
_STRING = re.compile(
    r"""(?:[rRbB]{0,2})"""
    r"""(?:'''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_]\w*)")
_MAP_ACCESS = re.compile(
    r"""\b(headers|params)\s*\[\s*(?:'((?:\\.|[^'\\])*)'|"((?:\\.|[^"\\])*)")\s*\]""")

Read = tuple[str, str | None]


def reads(expression: str, declared: frozenset[str] | None = None) -> tuple[Read, ...] | None:
    """The (variable, map key) pairs ``expression`` reads, sorted; None if unknowable."""
    from routing.cel import DECLARED_VARIABLES

    names = declared if declared is not None else frozenset(DECLARED_VARIABLES)
    found: set[Read] = set()
    remainder = expression
    for match in _MAP_ACCESS.finditer(expression):
        key = match.group(2) if match.group(2) is not None else match.group(3)
        if "\\" in key:
            return None  # escapes: the literal's value is not the text; do not guess
        found.add((match.group(1), key))
    remainder = _MAP_ACCESS.sub(" 0 ", remainder)
    remainder = _STRING.sub(" 0 ", remainder)
    for match in _IDENTIFIER.finditer(remainder):
        name = match.group(1)
        if name in MAP_VARIABLES:
            return None  # the map used whole: any key may matter
        if name in names:
            found.add((name, None))
    return tuple(sorted(found, key=lambda item: (item[0], item[1] or "")))


def memo_key(rule_reads: tuple[Read, ...],
             read: Callable[[str, str | None], Any]) -> tuple[Any, ...]:
    """The values ``rule_reads`` name; ``read(variable, map_key)`` gives one value."""
    return tuple([read(name, key) for name, key in rule_reads])
