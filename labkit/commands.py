"""How labkit runs its own programs: `python -m module` with this interpreter.

Kept apart from `labkit.net` (processes and sockets) so that the image registry, and every
manifest model through it, can name a built-in app's command without importing process code.
"""

from __future__ import annotations

import sys

__all__ = ["python_command"]


def python_command(module: str, *args: str) -> list[str]:
    """`python -m module args...` with this interpreter, so built-in apps see labkit's venv."""
    return [sys.executable, "-m", module, *args]
