"""How the CLI finds and talks to a running twin: a state file plus a small HTTP control API on loopback."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tandem.template import ROOT
from tandem.twin.ownership import TWIN_LOCK, FileLock

STATE_FILE = "twin.json"


class TwinNotRunning(RuntimeError):
    def __init__(self, detail: str = "") -> None:
        hint = "start it with `tandem twin up --detach`"
        super().__init__(f"the twin is not running{f' ({detail})' if detail else ''}: {hint}")


def default_state_dir() -> Path:
    return Path(os.environ.get("TANDEM_TWIN_DIR", ROOT / ".tandem" / "twin"))


def read_state(state_dir: Path) -> dict[str, Any]:
    """The running twin's state file; a file no live daemon stands behind (its lock is free) does not count,
    so a stale control port that some other server now listens on is never called."""
    path = state_dir / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TwinNotRunning() from None
    except json.JSONDecodeError:
        raise TwinNotRunning(f"{path} is unreadable") from None
    if not FileLock(state_dir / TWIN_LOCK).is_held_elsewhere():
        raise TwinNotRunning(f"{path} was left by a twin that died; `tandem twin down` cleans up")
    return state


def call(
    state_dir: Path, method: str, path: str, timeout: float = 120, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One control request; TwinNotRunning when there is no twin to answer."""
    state = read_state(state_dir)
    url = f"http://127.0.0.1:{state['control_port']}{path}"
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - loopback control API
            reply: dict[str, Any] = json.loads(resp.read())
            return reply
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise RuntimeError(str(detail)) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise TwinNotRunning(f"no answer on its control port: {exc}") from None
