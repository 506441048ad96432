"""Function workers: one process per (region, function), the unmodified handler, that region's environment.

Both ends of one protocol live here. The worker process (:func:`serve`, ``python -m tandem.twin.worker``)
reads one JSON event per line on stdin and answers one JSON line on its original stdout -
``{"ok": true, "response": ...}`` or ``{"ok": false, "errorType": ..., "errorMessage": ...}`` as the Lambda
runtime reports a function error; the handler's own output (Powertools logs, EMF) goes to stderr. The twin
reads it line by line, as CloudWatch Logs does: each line goes to the worker's log file and to ``on_output``
(the twin's EMF extraction). :class:`Worker` is the twin's side: it starts the process and hands it one
invocation at a time, like one Lambda execution environment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from tandem.template import ROOT

if TYPE_CHECKING:
    from tandem.lambda_runtime import FunctionSpec

log = logging.getLogger("tandem.twin")
INIT_LIMIT = 10.0  # seconds Lambda gives a function's init phase, apart from its Timeout


class Worker:
    """One execution environment of a function in a region.

    Like Lambda's, it is created by the first invocation (with its cold start), not at deployment: a twin
    whose schedules have not fired yet has no processes importing handlers while it provisions. A worker
    that died (killed, or the runtime crashed) is replaced on the next invocation, as Lambda replaces a failed
    execution environment: a new process, with its cold start. The death is logged.
    """

    def __init__(
        self,
        spec: FunctionSpec,
        region: str,
        environment: dict[str, str],
        log_path: Path,
        on_output: Callable[[str, str], None] | None = None,
        *,
        code_dir: Path = ROOT / "src",
        timeout: float = 3.0,
    ) -> None:
        """``on_output(region, line)`` sees every line the function prints (after it is in the log file);
        ``code_dir`` holds the deployment package (the task root); ``timeout`` is the function's, in seconds."""
        self.spec, self.function, self.region = spec, spec.name, region
        self.timeout = timeout
        self._lock = threading.Lock()
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the worker
        self._log_lock = threading.Lock()
        self._on_output = on_output
        self._readers: list[threading.Thread] = []
        self._env = {**os.environ, **environment, "PYTHONPATH": f"{code_dir}{os.pathsep}{ROOT}"}
        self.restarts = 0
        self._proc: subprocess.Popen[str] | None = None
        self._timed_out: set[subprocess.Popen[str]] = set()
        self._initialised: set[subprocess.Popen[str]] = set()  # the process that has answered once
        self._stopping = False

    def _spawn(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tandem.twin.worker", self.function, self.region, self.spec.handler,
             str(self.timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env, text=True,
            bufsize=1,
        )  # fmt: skip
        assert proc.stderr is not None
        reader = threading.Thread(
            target=self._read_output, args=(proc.stderr,), name=f"logs-{self.function}-{self.region}", daemon=True
        )
        reader.start()
        self._readers = [r for r in self._readers if r.is_alive()] + [reader]
        return proc

    def _read_output(self, stream: IO[str]) -> None:
        """Until the process closes its output: each line to the log file, then to ``on_output``."""
        for line in stream:
            self._write_log(line)
            if self._on_output is not None:
                try:
                    self._on_output(self.region, line)
                except Exception:  # the log service must never take the function down
                    log.exception("log line of %s in %s not processed", self.function, self.region)
        stream.close()

    def _write_log(self, text: str) -> None:
        with self._log_lock:
            if not self._log.closed:
                self._log.write(text)
                self._log.flush()

    @property
    def pid(self) -> int | None:
        """The execution environment's process, None before the first invocation."""
        return self._proc.pid if self._proc is not None else None

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        """The handler's reply: {"ok": True, "response": ...} or a function error."""
        if self._stopping:
            return {"ok": False, "errorType": "TwinStopping", "errorMessage": "the twin is going down"}
        with self._lock:
            if self._proc is None:
                self._proc = self._spawn()
            elif self._proc.poll() is not None:
                self._replace(f"exited with {self._proc.returncode} between invocations")
            proc = self._proc
            assert proc.stdin is not None
            assert proc.stdout is not None
            # a new environment's first invocation waits for its init too, which Lambda allows 10 s of its own
            limit = self.timeout + (INIT_LIMIT if proc not in self._initialised else 0.0)
            timer = threading.Timer(limit, self._time_out, (proc,))
            timer.daemon = True
            timer.start()
            try:
                proc.stdin.write(json.dumps(event) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
            except (BrokenPipeError, ValueError):
                line = ""
            finally:
                timer.cancel()
            if not line:  # died during this invocation: Lambda reports Runtime.ExitError for it
                code = proc.wait()
                timed_out = proc in self._timed_out
                if not self._stopping:
                    self._replace("timed out" if timed_out else f"exited with {code} during an invocation")
                if timed_out:
                    message = f"Task timed out after {self.timeout:.2f} seconds"
                    return {"ok": False, "errorType": "Sandbox.Timedout", "errorMessage": message}
                return {"ok": False, "errorType": "Runtime.ExitError", "errorMessage": f"runtime exited ({code})"}
            self._initialised = {proc}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _time_out(self, proc: subprocess.Popen[str]) -> None:
        """The invocation outlived the function's Timeout: Lambda stops it and resets the environment."""
        if proc.poll() is None:
            self._timed_out.add(proc)
            proc.kill()

    def kill(self) -> None:
        """The execution environment dies at once (SIGKILL), as a crashed runtime or an out-of-memory kill."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def _replace(self, why: str) -> None:
        log.warning("worker %s in %s %s; starting a new one", self.function, self.region, why)
        self._write_log(f"tandem twin: execution environment {why}; starting a new one\n")
        self.restarts += 1
        self._proc = self._spawn()

    def begin_stop(self) -> None:
        """No new invocation; the process sees EOF and exits once its current invocation (if any) ends."""
        self._stopping = True
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(Exception):
                self._proc.stdin.close()

    def finish_stop(self, deadline: float) -> None:
        """Wait for the process until ``deadline`` (monotonic), then kill it: the twin does not wait out a run."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for reader in self._readers:  # the last lines reach the log before it closes
            reader.join(timeout=max(0.1, deadline - time.monotonic()))
        with self._log_lock:
            self._log.close()

    def stop(self, grace: float = 2.0) -> None:
        self.begin_stop()
        self.finish_stop(time.monotonic() + grace)


def serve(function: str, region: str, handler_path: str, timeout: float = 3.0) -> int:
    """The worker process: load the handler once (the cold start), then one invocation per stdin line.

    A SnapStart function (``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``) runs its before-snapshot hooks after
    init; this process then stays the snapshot and a forked copy - restored, its after-restore hooks run -
    serves the invocations (:mod:`tandem.snapstart`)."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # everything the handler prints -> the log

    from tandem import snapstart
    from tandem.lambda_runtime import FunctionSpec, LambdaContext, load_handler

    handler = load_handler(FunctionSpec(function, "", handler_path))
    if snapstart.enabled(os.environ):
        snapstart.take_snapshot()

        def hold(pid: int) -> NoReturn:  # the snapshot lets go of the invocation pipes: the copy owns them
            sys.stdin.close()
            replies.close()
            snapstart.exit_like(pid)

        snapstart.restore(hold)
    name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", function)
    memory = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            reply: dict[str, Any] = {
                "ok": True,
                "response": handler(event, LambdaContext(name, region, timeout, memory)),
            }
        except Exception as exc:
            reply = {"ok": False, "errorType": type(exc).__name__, "errorMessage": str(exc)}
        sys.stdout.flush()
        replies.write(json.dumps(reply, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 3.0))
