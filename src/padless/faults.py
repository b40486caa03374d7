"""Kill points: a test hook that lets a crash test SIGKILL padless at a named moment.

Code calls :func:`crash_point` at the moments a crash matters (see :mod:`padless.job` for the list). When the
environment variable ``PADLESS_CRASH_AT`` is ``NAME`` or ``NAME:N``, the process kills itself with SIGKILL the N-th
time (1-based; 1 when omitted) it reaches the point called ``NAME``, as ``kill -9`` would. Unset, every point
returns at once. Nothing outside tests should set it.
"""

from __future__ import annotations

import os
import signal
from collections import Counter


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, sep, nth = value.rpartition(":")
    if sep and nth.isdigit():
        return name, int(nth)
    return value, 1  # a bare name, or a suffix that is not a count (it then matches no point: the test sees no kill)


_TARGET = _parse(os.environ.get("PADLESS_CRASH_AT"))  # read once: a crash test sets it for the whole process
_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """SIGKILL this process if ``PADLESS_CRASH_AT`` names this point and this is the chosen time; else return."""
    if _TARGET is None or name != _TARGET[0]:
        return
    _reached[name] += 1
    if _reached[name] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
