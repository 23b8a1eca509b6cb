"""Run a few child processes as one: start them, stream their output, watch them, stop them all cleanly.

Used by ``tapewatch demo`` (the whole platform) and ``tapewatch dagster`` (webserver + daemon)::

    with Supervisor(run_dir=settings.var_dir / "run", name="demo") as sup:
        sup.start(ChildSpec("sim", ["tapewatch", "sim", ...]))
        sup.wait_until("sim", lambda: port_open(host, port), timeout=30)
        sup.start(ChildSpec("realtime", ["tapewatch", "run", "--exchange", "sim"]))
        code = sup.run()          # until Ctrl-C / SIGTERM (0) or a child dies (its exit code, or 1)
    # leaving the block stops every child, newest first

Promises:

- Each child runs in its own session (process group), so a terminal's Ctrl-C reaches only the supervisor, and
  stopping a child stops everything it started (``dagster-webserver`` and its code server, for instance).
- Every line a child writes (stdout and stderr) is printed as ``name | line``; the last lines are kept so a
  child that dies is reported with them.
- A child that exits while the platform runs stops the platform (no restart: a crash loop would hide the
  cause; the operator sees the last lines and the exit code, and ``make demo`` again resumes the data).
- Stop: SIGTERM to each child's process group in reverse start order, wait ``stop_timeout``, then SIGKILL
  the group. SIGINT/SIGTERM sent to the supervisor trigger the same stop.
- No orphans: children get SIGTERM from the kernel if the supervisor itself dies (``PR_SET_PDEATHSIG`` on
  Linux), and the supervisor records its children in ``run_dir/<name>.children.json``; the next start kills
  process groups a ``kill -9``-ed predecessor left (matched by pid *and* start time, so a reused pid is
  never touched) and removes the file. The file is removed on a clean stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

import psutil

from tapewatch.errors import FatalError

log = logging.getLogger(__name__)

#: Lines of a child's output kept for the report when it dies.
TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


class ChildFailed(FatalError):
    """A child exited (or never became ready) while the platform was starting or running."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What to run: ``argv`` with ``env`` (None = inherit this process's environment) in ``cwd``."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None


@dataclass(slots=True)
class Child:
    """A started child: its process, the tail of its output and the thread copying that output."""

    spec: ChildSpec
    process: subprocess.Popen[bytes]
    started: float
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    reader: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> int | None:
        """The exit code once the child has exited (negative: killed by that signal), else None."""
        return self.process.poll()

    def last_lines(self, n: int = 15) -> list[str]:
        """The last ``n`` lines the child wrote."""
        return list(self.tail)[-n:]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Starts, watches and stops child processes; a context manager that always stops what it started."""

    def __init__(
        self,
        *,
        run_dir: Path | None = None,
        name: str = "supervisor",
        out: IO[str] | None = None,
        stop_timeout: float = 15.0,
        handle_signals: bool = True,
    ) -> None:
        self.children: list[Child] = []
        self.run_dir = run_dir
        self.name = name
        self.out = out if out is not None else sys.stdout
        self.stop_timeout = stop_timeout
        self.handle_signals = handle_signals
        self.stopping = threading.Event()
        self._write_lock = threading.Lock()
        self._old_handlers: dict[int, object] = {}

    # --- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> Supervisor:
        if self.run_dir is not None:
            kill_leftovers(self.children_file())
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop_all()
        finally:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
            self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stopping.is_set():  # an impatient second Ctrl-C: say what is happening, do not cut it short
            self.say(
                f"{name}: already stopping (each child gets up to {self.stop_timeout:g} s, then SIGKILL)"
            )
        else:
            self.say(f"{name}: stopping")
        self.stopping.set()

    def children_file(self) -> Path:
        """Where the pids of the running children are recorded (for the cleanup after a ``kill -9``)."""
        if self.run_dir is None:
            raise ValueError("this supervisor has no run_dir")
        return self.run_dir / f"{self.name}.children.json"

    # --- start -----------------------------------------------------------------------------------------
    def start(self, spec: ChildSpec) -> Child:
        """Start ``spec`` in a new session with its output streamed; raises ChildFailed if it cannot start."""
        if self.stopping.is_set():
            raise ChildFailed(f"not starting {spec.name}: the platform is stopping")
        try:
            process = subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env) if spec.env is not None else None,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            raise ChildFailed(f"cannot start {spec.name} ({' '.join(spec.argv)}): {exc}") from exc
        child = Child(spec, process, time.monotonic())
        child.reader = threading.Thread(target=self._copy_output, args=(child,), daemon=True)
        child.reader.start()
        self.children.append(child)
        self._record_children()
        return child

    def _copy_output(self, child: Child) -> None:
        assert child.process.stdout is not None
        for raw in child.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            child.tail.append(line)
            self._write(f"{child.name:<9}| {line}")

    def _write(self, text: str) -> None:
        with self._write_lock:
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass  # a closed terminal must not kill the reader threads

    def say(self, text: str) -> None:
        """Print one supervisor message (``>> text``) between the children's lines."""
        self._write(f">> {text}")

    def child(self, name: str) -> Child:
        """The started child called ``name`` (KeyError if none)."""
        for c in self.children:
            if c.name == name:
                return c
        raise KeyError(name)

    def wait_until(
        self, name: str, ready: Callable[[], bool], *, timeout: float, interval: float = 0.25
    ) -> float:
        """Wait until ``ready()`` is true; the seconds it took. ChildFailed if ``name`` exits first, if the
        timeout passes (with its last lines), or if a stop was requested."""
        child = self.child(name)
        t0 = time.monotonic()
        while True:
            if self.stopping.is_set():
                raise ChildFailed(f"stopped while waiting for {name}")
            code = child.exited()
            if code is not None:
                raise ChildFailed(self.describe_exit(child, code))
            with contextlib.suppress(Exception):  # a probe that errors means "not ready yet"
                if ready():
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise ChildFailed(
                    f"{name} was not ready within {timeout:g} s; its last lines:\n"
                    + "\n".join(f"    {line}" for line in child.last_lines())
                )
            self.stopping.wait(interval)

    # --- run -------------------------------------------------------------------------------------------
    def run(
        self, *, duration: float | None = None, tick: Callable[[], None] | None = None, every: float = 5.0
    ) -> int:
        """Watch the children until a stop is requested (returns 0), ``duration`` seconds pass (0), or a
        child exits (its exit code, or 1 when it exited with 0: a platform process must not end by itself).
        ``tick`` runs every ``every`` seconds (a status line, for instance); its errors are logged."""
        t0 = last_tick = time.monotonic()
        while not self.stopping.is_set():
            for child in self.children:
                code = child.exited()
                if code is not None:
                    self.say(self.describe_exit(child, code))
                    return code if code > 0 else 1
            now = time.monotonic()
            if duration is not None and now - t0 >= duration:
                return 0
            if tick is not None and now - last_tick >= every:
                last_tick = now
                try:
                    tick()
                except Exception as exc:  # a status line must never stop the platform
                    log.warning("status tick failed: %s", exc)
            self.stopping.wait(0.2)
        return 0

    def describe_exit(self, child: Child, code: int) -> str:
        """``name exited with code N after T s`` (or ``was killed by SIGX``), with its last lines."""
        if child.reader is not None:
            child.reader.join(timeout=2)  # its last lines may still be in the pipe
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        lines = "\n".join(f"    {line}" for line in child.last_lines()) or "    (no output)"
        return f"{child.name} {how} after {time.monotonic() - child.started:.0f} s; its last lines:\n{lines}"

    # --- stop ------------------------------------------------------------------------------------------
    def stop_all(self) -> None:
        """Stop every child, newest first: SIGTERM to its group, wait, SIGKILL the group. Idempotent."""
        self.stopping.set()
        for child in reversed(self.children):
            self._stop(child)
        for child in self.children:
            if child.reader is not None:
                child.reader.join(timeout=2)
        self.children.clear()
        if self.run_dir is not None:
            self.children_file().unlink(missing_ok=True)

    def _stop(self, child: Child) -> None:
        if child.exited() is None:
            self.say(f"stopping {child.name} (pid {child.pid})")
        signal_group(child.pid, signal.SIGTERM)
        try:
            child.process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.say(f"{child.name} did not stop within {self.stop_timeout:g} s: killing it")
        # The group may outlive its leader (a grandchild that ignores SIGTERM): kill whatever is left.
        wait_group_gone(child.pid, self.stop_timeout if child.exited() is None else 2.0)
        signal_group(child.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(5)

    def _record_children(self) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        entries = []
        for c in self.children:
            with contextlib.suppress(psutil.Error):
                entries.append(
                    {"name": c.name, "pid": c.pid, "create_time": psutil.Process(c.pid).create_time()}
                )
        path = self.children_file()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"supervisor": os.getpid(), "children": entries}))
        os.replace(tmp, path)


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process group ``pgid``; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        # a process may end between the listing and the getpgid (ProcessLookupError, an OSError)
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no live process is left in group ``pgid``; True if it emptied in time."""
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def kill_leftovers(children_file: Path) -> list[int]:
    """Kill the process groups a dead supervisor recorded in ``children_file``; the pids killed.

    A group is killed only if its leader still has the recorded start time (a pid reused since is left
    alone) and the recording supervisor is gone (a live one is still managing it). The file is removed."""
    try:
        record = json.loads(children_file.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s (%s)", children_file, exc)
        children_file.unlink(missing_ok=True)
        return []
    owner = record.get("supervisor")
    if isinstance(owner, int) and owner != os.getpid() and psutil.pid_exists(owner):
        with contextlib.suppress(psutil.Error):
            if psutil.Process(owner).status() != psutil.STATUS_ZOMBIE:
                raise ChildFailed(
                    f"another supervisor (pid {owner}) still runs the processes listed in {children_file}"
                )
    killed = []
    for entry in record.get("children", []):
        pid = entry.get("pid")
        try:
            same = psutil.Process(pid).create_time() == entry.get("create_time")
        except (psutil.Error, TypeError, ValueError):
            continue
        if same:
            log.warning("killing %s (pid %d) left by a supervisor that died", entry.get("name"), pid)
            signal_group(pid, signal.SIGTERM)
            if not wait_group_gone(pid, 10):
                signal_group(pid, signal.SIGKILL)
                wait_group_gone(pid, 5)
            killed.append(pid)
    children_file.unlink(missing_ok=True)
    return killed
