"""How a name is written in what a command prints: as the shell takes it, so that one copied from a report into the
next command (`arcmatch gallery merge`, `distinct`, `name`) is that name. Python's repr is not: it writes O'Brien
as 'O\\'Brien', which a shell reads as something else."""

from __future__ import annotations

import shlex

# what a double-quoted shell word still expands ($, `, \ and "; ! in an interactive bash): a name with one of these
# and an apostrophe is quoted the long way
_EXPANDED_IN_DOUBLE_QUOTES = frozenset('"$`\\!')


def shown(name: str) -> str:
    """The name as a shell word: bare where it is one (Mariah_Carey), else quoted ('Ann Lee'); with an apostrophe in
    double quotes ("Brad O'Brien"), which read as the name does, where single quotes would need '"'"' for it."""
    if "'" in name and not _EXPANDED_IN_DOUBLE_QUOTES.intersection(name):
        return f'"{name}"'
    return shlex.quote(name)


def counted(number: int, noun: str) -> str:
    """"1 photo", "2 photos": a count as a sentence says it (nouns with a plain plural only)."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
