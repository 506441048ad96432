"""Extensions and fixes to moto, pinned to the moto version we test against.

Each patch says what moto does, why it matters to us, and is applied once by :func:`apply`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import moto
from moto import backends

MOTO_VERSION = "5.2.5"


def _check_version() -> None:
    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"tandem's moto extensions are written for moto {MOTO_VERSION}, found {moto.__version__}: "
            "re-check every patch in tandem/moto_ext.py before changing the pin"
        )


@functools.cache
def apply() -> None:
    _check_version()
    # moto's server lists its own package directory (os.listdir + isdir per entry) on every request to
    # route it to a backend: ~5 ms per call, the largest cost of a local invocation. The list cannot
    # change while the process runs, so compute it once.
    original = backends.list_of_moto_modules
    modules: tuple[str, ...] = tuple(original())

    def cached_modules() -> Iterable[str]:
        return modules

    backends.list_of_moto_modules = cached_modules
