"""The supervisor with real child processes: output, readiness, death, stop order, SIGKILL, no orphans."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tapewatch.adapters.supervisor import ChildFailed, ChildSpec, Supervisor, group_members, kill_leftovers

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# A child that says hello, writes a line every 50 ms, and on SIGTERM prints "bye <name>" and exits 0.
POLITE = """
import signal, sys, time
name = sys.argv[1]
def bye(*_):
    print("bye", name, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("hello from", name, flush=True)
while True:
    time.sleep(0.05)
"""


def polite(name: str) -> ChildSpec:
    return ChildSpec(name, [PY, "-c", POLITE, name])


def test_output_is_prefixed_and_children_stop_newest_first() -> None:
    out = io.StringIO()
    with Supervisor(out=out, handle_signals=False) as sup:
        a, b = sup.start(polite("alpha")), sup.start(polite("beta"))
        sup.wait_until("alpha", lambda: "hello from alpha" in out.getvalue(), timeout=10)
        sup.wait_until("beta", lambda: "hello from beta" in out.getvalue(), timeout=10)
        assert os.getpgid(a.pid) == a.pid and os.getpgid(b.pid) == b.pid  # each in its own group
        assert a.pid != os.getpgid(0)
    text = out.getvalue()
    assert "alpha    | hello from alpha" in text and "beta     | hello from beta" in text
    assert text.index("bye beta") < text.index("bye alpha")  # reverse start order
    assert a.exited() == 0 and b.exited() == 0
    assert not psutil.pid_exists(a.pid) or psutil.Process(a.pid).status() == psutil.STATUS_ZOMBIE
    assert sup.children == []


def test_a_child_ignoring_sigterm_is_killed_with_its_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    stubborn = py(
        f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        g = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        open({str(pidfile)!r}, "w").write(str(g.pid))
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    out = io.StringIO()
    sup = Supervisor(out=out, stop_timeout=0.5, handle_signals=False)
    with sup:
        child = sup.start(ChildSpec("stubborn", stubborn))
        sup.wait_until("stubborn", pidfile.exists, timeout=10)
        wait_for(lambda: pidfile.read_text().strip() != "")
        grandchild = int(pidfile.read_text())
    assert child.exited() == -signal.SIGKILL
    assert "did not stop within 0.5 s: killing it" in out.getvalue()
    wait_for(lambda: not group_members(child.pid))
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_a_child_that_dies_stops_the_platform_with_its_last_lines() -> None:
    out = io.StringIO()
    with Supervisor(out=out, handle_signals=False) as sup:
        sup.start(polite("steady"))
        sup.start(
            ChildSpec("crasher", py("print('loading'); print('boom: bad config', flush=True); exit(3)"))
        )
        code = sup.run()
    assert code == 3
    text = out.getvalue()
    assert "crasher exited with code 3" in text and "    boom: bad config" in text
    assert "bye steady" in text  # the others were stopped


def test_a_child_that_exits_cleanly_is_still_a_failure_of_the_platform() -> None:
    with Supervisor(out=io.StringIO(), handle_signals=False) as sup:
        sup.start(ChildSpec("quitter", py("print('done')")))
        assert sup.run() == 1


def test_readiness_failures_name_the_child_and_show_its_output() -> None:
    with Supervisor(out=io.StringIO(), handle_signals=False) as sup:
        sup.start(ChildSpec("dies", py("print('port 1 is taken', flush=True); exit(2)")))
        with pytest.raises(ChildFailed, match="dies exited with code 2") as died:
            sup.wait_until("dies", lambda: False, timeout=10)
        assert "port 1 is taken" in str(died.value)
        sup.start(polite("slow"))
        with pytest.raises(ChildFailed, match=r"slow was not ready within 0\.3 s") as slow:
            sup.wait_until("slow", lambda: False, timeout=0.3)
        assert "its last lines" in str(slow.value)


def test_a_program_that_does_not_exist_is_a_clear_error() -> None:
    with (
        Supervisor(out=io.StringIO(), handle_signals=False) as sup,
        pytest.raises(ChildFailed, match="cannot start ghost"),
    ):
        sup.start(ChildSpec("ghost", ["/nonexistent/tapewatch-ghost"]))


def test_sigterm_to_the_supervisor_stops_everything_and_run_returns_0() -> None:
    out = io.StringIO()
    with Supervisor(out=out) as sup:
        child = sup.start(polite("worker"))
        sup.wait_until("worker", lambda: "hello from worker" in out.getvalue(), timeout=10)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets the stop flag
        assert sup.run() == 0
    assert "SIGTERM: stopping" in out.getvalue() and "bye worker" in out.getvalue()
    assert child.exited() == 0
    assert signal.getsignal(signal.SIGTERM) is not None  # the old handler is back
    assert signal.getsignal(signal.SIGTERM) != sup._on_signal


def test_run_returns_after_its_duration_and_ticks() -> None:
    ticks: list[float] = []
    with Supervisor(out=io.StringIO(), handle_signals=False) as sup:
        sup.start(polite("idle"))
        assert sup.run(duration=0.6, tick=lambda: ticks.append(time.monotonic()), every=0.2) == 0
    assert len(ticks) >= 1


def test_children_file_exists_while_running_and_is_removed_on_stop(tmp_path: Path) -> None:
    with Supervisor(run_dir=tmp_path, name="demo", out=io.StringIO(), handle_signals=False) as sup:
        child = sup.start(polite("one"))
        record = json.loads((tmp_path / "demo.children.json").read_text())
        assert record["supervisor"] == os.getpid()
        assert [(c["name"], c["pid"]) for c in record["children"]] == [("one", child.pid)]
    assert not (tmp_path / "demo.children.json").exists()


SUPERVISED = """
import sys, time
from pathlib import Path
from tapewatch.adapters.supervisor import ChildSpec, Supervisor
sup = Supervisor(run_dir=Path(sys.argv[1]), name="demo")
sup.__enter__()
child = sup.start(ChildSpec("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"]))
print(child.pid, flush=True)
time.sleep(600)
"""


def test_a_killed_supervisor_leaves_no_orphan(tmp_path: Path) -> None:
    """kill -9 of the supervisor: the kernel's parent-death signal ends the child; the record file left
    behind is cleaned up by the next start without touching anything else."""
    parent = subprocess.Popen([PY, "-c", SUPERVISED, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(child_pid)
        parent.kill()
        parent.wait(10)
        wait_for(
            lambda: (
                not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
            )
        )
    finally:
        if parent.poll() is None:
            parent.kill()
    assert (tmp_path / "demo.children.json").exists()  # stale, from the killed supervisor
    with Supervisor(run_dir=tmp_path, name="demo", out=io.StringIO(), handle_signals=False):
        assert not (tmp_path / "demo.children.json").exists()


def test_leftovers_of_a_dead_supervisor_are_killed_but_a_reused_pid_is_not(tmp_path: Path) -> None:
    # A process group a dead supervisor recorded (started here without the parent-death signal).
    orphan = subprocess.Popen([PY, "-c", "import time; time.sleep(600)"], start_new_session=True)
    bystander = subprocess.Popen([PY, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        dead = subprocess.Popen([PY, "-c", "pass"])
        dead.wait()
        record = {
            "supervisor": dead.pid,
            "children": [
                {
                    "name": "orphan",
                    "pid": orphan.pid,
                    "create_time": psutil.Process(orphan.pid).create_time(),
                },
                {"name": "reused", "pid": bystander.pid, "create_time": 12345.0},  # not the recorded process
            ],
        }
        path = tmp_path / "demo.children.json"
        path.write_text(json.dumps(record))
        assert kill_leftovers(path) == [orphan.pid]
        assert orphan.wait(10) == -signal.SIGTERM
        assert bystander.poll() is None
        assert not path.exists()
    finally:
        for proc in (orphan, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_live_supervisor_s_children_are_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "demo.children.json"
    live = subprocess.Popen([PY, "-c", "import time; time.sleep(600)"])
    try:
        path.write_text(json.dumps({"supervisor": live.pid, "children": []}))
        with pytest.raises(ChildFailed, match=f"another supervisor \\(pid {live.pid}\\) still runs"):
            kill_leftovers(path)
        assert path.exists()
    finally:
        live.kill()
        live.wait()


def test_an_unreadable_children_file_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "demo.children.json"
    path.write_text("{torn")
    assert kill_leftovers(path) == []
    assert not path.exists()
