"""Bytecode for the built artifact: compile every function's modules, then prove each one ships its .pyc.

Lambda's code directory (/var/task) is read-only, so a function that ships no .pyc compiles every module it
imports on every cold start. ``compile`` writes ``__pycache__/*.cpython-312.pyc`` beside each module with
*unchecked-hash* invalidation: a deployment package is immutable, and zip archives keep mtimes only to two
seconds, so a timestamp-checked .pyc could be judged stale and ignored. Tracebacks name /var/task paths.
``check`` fails (exit 1) naming any module without a .pyc of this interpreter that Python would use as is.

Run with the runtime's interpreter (Python 3.12): ``python3.12 scripts/bytecode.py compile|check BUILD_DIR``.
"""

from __future__ import annotations

import compileall
import importlib.util
import py_compile
import sys
from pathlib import Path

TASK_ROOT = "/var/task"
HASH_BASED, CHECK_SOURCE = 0b01, 0b10


def functions(build_dir: Path) -> list[Path]:
    """Each function's directory in a `sam build` output (a directory holding its code)."""
    return sorted(p for p in build_dir.iterdir() if p.is_dir())


def compile_function(root: Path) -> bool:
    """Compile every module under ``root``; False when one did not compile (a syntax error in a package)."""
    return bool(
        compileall.compile_dir(
            root, quiet=1, workers=0, stripdir=str(root), prependdir=TASK_ROOT,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    )  # fmt: skip


def missing(root: Path) -> list[str]:
    """Modules under ``root`` without a usable .pyc: none, another interpreter's, or one Python would re-check."""
    tag = sys.implementation.cache_tag
    problems: list[str] = []
    for source in sorted(root.rglob("*.py")):
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if not pyc.is_file():
            problems.append(f"{source.relative_to(root)}: no {pyc.name}")
            continue
        header = pyc.read_bytes()[:8]
        flags = int.from_bytes(header[4:8], "little")
        if header[:4] != importlib.util.MAGIC_NUMBER:
            problems.append(f"{source.relative_to(root)}: {pyc.name} is not this interpreter's bytecode")
        elif flags != HASH_BASED:
            problems.append(f"{source.relative_to(root)}: {pyc.name} is checked against its source (flags {flags})")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("compile", "check") or not Path(argv[1]).is_dir():
        print("usage: python3.12 scripts/bytecode.py compile|check BUILD_DIR", file=sys.stderr)
        return 2
    if sys.version_info[:2] != (3, 12):
        print(f"run this with Python 3.12 (the Lambda runtime), not {sys.version.split()[0]}", file=sys.stderr)
        return 2
    action, build_dir = argv[0], Path(argv[1])
    failed = False
    for root in functions(build_dir):
        if action == "compile":
            failed |= not compile_function(root)
            continue
        problems = missing(root)
        modules = sum(1 for _ in root.rglob("*.py"))
        print(f"{root.name}: {modules - len(problems)} of {modules} modules ship bytecode")
        for line in problems[:20]:
            print(f"  {line}", file=sys.stderr)
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
