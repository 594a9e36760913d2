"""How a name is written in what a command prints: as the shell takes it, so that one copied from a report into the
next command (`arcmatch gallery merge`, `distinct`, `name`) is that name. Python's repr is not: it writes O'Brien
as 'O\\'Brien', which a shell reads as something else."""

from __future__ import annotations

import shlex


def shown(name: str) -> str:
    """The name as a shell word: bare where it is one (Mariah_Carey), else quoted ('Ann Lee', 'O'"'"'Brien')."""
    return shlex.quote(name)
