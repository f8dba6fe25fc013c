"""PIVOT ``@id`` references inside ``cmd``, ``args`` and ``env`` values.

``@id`` stands for the address at which container ``id`` is reachable from the
referring container; ``@id:PORT`` for host *and* port, so that a backend that
moved the port (two local containers both declaring 8080) still wires correctly.
``\\@`` is a literal ``@``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# An id is [a-zA-Z0-9-]+; an escaped "\@" is skipped by the alternation.
_TOKEN = re.compile(r"\\@|@([a-zA-Z0-9-]+)(?::(\d{1,5}))?")


@dataclass(frozen=True)
class Reference:
    target: str
    port: int | None
    start: int
    end: int


def find_references(text: str) -> list[Reference]:
    refs = []
    for m in _TOKEN.finditer(text):
        if m.group(1) is None:  # escaped \@
            continue
        port = int(m.group(2)) if m.group(2) else None
        refs.append(Reference(m.group(1), port, m.start(), m.end()))
    return refs


Resolver = Callable[[str, "int | None"], str]
"""(target id, container port or None) -> replacement text ("host" or "host:port")."""


def resolve(text: str, resolver: Resolver) -> str:
    """Replace every reference through ``resolver`` and unescape ``\\@``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return "@"
        port = int(m.group(2)) if m.group(2) else None
        return resolver(m.group(1), port)

    return _TOKEN.sub(sub, text)
