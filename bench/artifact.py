"""The built processor artifact, as the cold-start bench runs it: what ships, on this machine.

``make build`` (run first when the sources changed since the last build) leaves the function's package in
``.aws-sam/build/TransactionProcessorFunction``: its code, its dependencies and a .pyc (Python 3.12,
unchecked-hash) for every module. It is built for the template's
architecture (arm64); a package with a native extension built for another machine cannot load here, so the
bench copies the artifact and swaps each such package for this interpreter's build of the *same pinned
version* (from the environment the bench runs in), compiled the way ``scripts/bytecode.py`` compiles the
artifact. Everything else - every .py and .pyc - is exactly what ships. The copy is refreshed when the build
is newer than it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sysconfig
from pathlib import Path

from bench.spawn import BenchError
from tandem.template import ROOT

BUILT = ROOT / ".aws-sam" / "build" / "TransactionProcessorFunction"
BUILD_MARK = ROOT / ".aws-sam" / "build" / "template.yaml"  # written by every `sam build` (sources keep mtimes)
STAMP = ".bench-copy-of"


def _stale() -> bool:
    """No build, or a source the function ships (code, pins, SQL) changed after the last one."""
    if not BUILD_MARK.is_file() or not (BUILT / "transaction_processor" / "app.py").is_file():
        return True
    built = BUILD_MARK.stat().st_mtime
    sources = [ROOT / "template.yaml", *(p for p in (ROOT / "src").rglob("*") if p.suffix in (".py", ".txt", ".sql"))]
    return any(p.stat().st_mtime > built for p in sources)


def ensure_built() -> None:
    """``make build`` when the artifact is missing or older than the sources: the bench measures what ships."""
    if _stale():
        print("  (building the artifact first: scripts/build.sh)", flush=True)
        done = subprocess.run(["bash", str(ROOT / "scripts" / "build.sh")], cwd=ROOT, check=False,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"make build failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")


def _native_packages(root: Path) -> list[str]:
    """Top-level packages in ``root`` holding a native extension this interpreter cannot load."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    platform = sysconfig.get_config_var("MULTIARCH") or ""
    foreign: set[str] = set()
    for ext in root.rglob("*.so"):
        if not ext.name.endswith(suffixes) or (platform and platform not in ext.name):
            foreign.add(ext.relative_to(root).parts[0])
    return sorted(foreign)


def _swap(copy: Path, package: str) -> None:
    """Replace ``package`` in the copy with this environment's build of the same version, compiled."""
    import compileall
    import py_compile

    shipped = next(copy.glob(f"{package}-*.dist-info"), None)
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None or shipped is None:
        raise BenchError(f"cannot run the artifact here: {package} is built for another machine and not installed")
    version = shipped.name[len(package) + 1 : -len(".dist-info")]
    installed = importlib.metadata.version(package)
    if installed != version:
        raise BenchError(f"the artifact ships {package} {version}, this environment has {installed}: run make setup")
    target = copy / package
    shutil.rmtree(target)
    shutil.copytree(Path(spec.origin).parent, target, ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(
        target, quiet=1, stripdir=str(copy), prependdir="/var/task",
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )  # fmt: skip


def shipped_copy(workdir: Path) -> tuple[Path, list[str]]:
    """A runnable copy of the built artifact under ``workdir`` and the packages swapped for this machine's."""
    ensure_built()
    copy = workdir / "artifact"
    stamp = copy / STAMP
    built_at = str(BUILD_MARK.stat().st_mtime_ns)
    if not stamp.is_file() or stamp.read_text(encoding="utf-8").split("\n")[0] != built_at:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(BUILT, copy, symlinks=True)
        swapped = _native_packages(copy)
        for package in swapped:
            _swap(copy, package)
        stamp.write_text("\n".join([built_at, *swapped]), encoding="utf-8")
    return copy, stamp.read_text(encoding="utf-8").split("\n")[1:]
