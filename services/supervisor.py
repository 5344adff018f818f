"""Starts the service processes, restarts the ones that crash, stops them cleanly.

A child that exits without being asked to (any exit code, or a signal such as
SIGKILL) is restarted after a backoff that doubles with each crash and resets
once the child has stayed up for a while. The backoff is scheduled, never slept:
`check()` is called periodically and restarts what is due. A child that keeps
crashing (a crash loop) makes `check()` raise CrashLoopError.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import httpx

from .shared.polling import poll

ROOT = Path(__file__).resolve().parent.parent


class Supervised(Protocol):
    """What the supervisor needs of a process (services.topology.ServiceProcess has it)."""

    @property
    def instance(self) -> str: ...

    @property
    def module_args(self) -> list[str]: ...


class CrashLoopError(RuntimeError):
    """A child crashed too often within the window: restarting it again would not help."""

    def __init__(self, instance: str, last_exit: str, crashes: int, within_s: float) -> None:
        super().__init__(
            f"{instance} keeps crashing ({crashes} crashes within {within_s:g} s, "
            f"the last one: {last_exit}); giving up"
        )
        self.instance = instance
        self.last_exit = last_exit


@dataclass(frozen=True, slots=True)
class ChildEvent:
    """One crash or restart that check() saw or did."""

    kind: Literal["crashed", "restarted"]
    instance: str
    pid: int
    detail: str  # why it died ("exited with code 3"), or "" for a restart
    restart_in_s: float = 0.0


@dataclass(slots=True)
class _Child:
    process: Supervised
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # set while waiting for a scheduled restart
    next_backoff_s: float = 0.0
    crashes: deque[float] = field(default_factory=deque)
    last_exit: str = ""


def _die_with_parent() -> None:
    """In the child before it runs: SIGTERM it when the supervisor dies, even of a
    SIGKILL, so that no orphaned worker goes on consuming (and no HTTP process keeps
    the ports the next runner needs). Linux only; elsewhere nothing."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Supervisor:
    def __init__(
        self,
        *,
        log_dir: Path | None = None,
        restart_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stable_after_s: float = 60.0,
        crash_loop_crashes: int = 5,
        crash_loop_window_s: float = 60.0,
    ) -> None:
        self.log_dir = log_dir
        self.restart_backoff_s = restart_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.crash_loop_crashes = crash_loop_crashes
        self.crash_loop_window_s = crash_loop_window_s
        self._children: dict[str, _Child] = {}

    @property
    def running(self) -> dict[str, tuple[Supervised, subprocess.Popen[bytes]]]:
        """The children that have a process now (not those waiting for a restart)."""
        return {
            name: (child.process, child.popen)
            for name, child in self._children.items()
            if child.popen is not None
        }

    def instances(self) -> list[str]:
        """Every supervised instance, running or waiting for its restart."""
        return list(self._children)

    def pid(self, instance: str) -> int | None:
        """The instance's current pid; None while it waits for a restart or is unknown.

        A process that has just died keeps its pid here until check() notices it.
        """
        child = self._children.get(instance)
        if child is None or child.popen is None:
            return None
        return child.popen.pid

    def start(self, process: Supervised, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        child = _Child(process, dict(env), next_backoff_s=self.restart_backoff_s)
        self._children[process.instance] = child
        return self._spawn(child)

    def _spawn(self, child: _Child) -> subprocess.Popen[bytes]:
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{child.process.instance}.log").open("ab")
        popen = subprocess.Popen(
            [sys.executable, *child.process.module_args],
            cwd=ROOT,
            env={**os.environ, **child.env},
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            # Its own process group: Ctrl-C in the terminal reaches only the runner,
            # which then stops every child itself; a child dying of the terminal's
            # SIGINT first would look like a crash and be restarted.
            process_group=0,
            preexec_fn=_die_with_parent,
        )
        if output is not None:
            output.close()  # the child has its own descriptor
        child.popen = popen
        child.started_at = time.monotonic()
        child.restart_at = None
        return popen

    def kill(self, name: str) -> None:
        """SIGKILL, deliberately: the process dies mid-work, as in a crash, and stays dead."""
        child = self._children.pop(name)
        if child.popen is not None:
            child.popen.kill()
            child.popen.wait(10)

    def check(self, *, now: float | None = None) -> list[ChildEvent]:
        """Notices crashed children and restarts those whose backoff is over; never blocks.

        Raises CrashLoopError when a child has crashed crash_loop_crashes times within
        crash_loop_window_s. now: time.monotonic()'s reading, unless given (a test looks
        past a backoff without waiting it out).
        """
        events: list[ChildEvent] = []
        now = time.monotonic() if now is None else now
        for name, child in self._children.items():
            if child.popen is not None and child.popen.poll() is not None:
                events.append(self._crashed(name, child, now))
            elif child.restart_at is not None and child.restart_at <= now:
                popen = self._spawn(child)
                say(f"restarted {name} (pid {popen.pid})")
                events.append(ChildEvent("restarted", name, popen.pid, ""))
        return events

    def _crashed(self, name: str, child: _Child, now: float) -> ChildEvent:
        assert child.popen is not None
        pid, reason = child.popen.pid, exit_reason(child.popen.returncode)
        child.popen = None
        child.last_exit = reason
        child.crashes.append(now)
        while child.crashes and child.crashes[0] < now - self.crash_loop_window_s:
            child.crashes.popleft()
        if len(child.crashes) >= self.crash_loop_crashes:
            say(f"{name} (pid {pid}) {reason}")
            raise CrashLoopError(name, reason, len(child.crashes), self.crash_loop_window_s)
        if now - child.started_at >= self.stable_after_s:
            child.next_backoff_s = self.restart_backoff_s  # it had recovered: start over
        delay = child.next_backoff_s
        child.next_backoff_s = min(delay * 2, self.max_backoff_s)
        child.restart_at = now + delay
        say(f"{name} (pid {pid}) {reason}: restarting it in {delay:g} s")
        return ChildEvent("crashed", name, pid, reason, delay)

    def check_alive(self) -> None:
        """Raises at the first child that has exited (for callers that want no restarts)."""
        for name, (_, popen) in self.running.items():
            if popen.poll() is not None:
                raise RuntimeError(f"{name} {exit_reason(popen.returncode)}")

    def wait_healthy(self, urls: Mapping[str, str], *, within_s: float = 60) -> None:
        """Waits for every URL's /health; children crashing meanwhile are restarted."""
        pending = dict(urls)

        def all_healthy() -> bool | None:
            self.check()
            for name, url in list(pending.items()):
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            return True if not pending else None

        if poll(all_healthy, within_s=within_s, interval_s=0.1) is None:
            raise TimeoutError(f"not healthy after {within_s}s: {', '.join(pending)}")

    def stop_all(self, *, grace_s: float = 15) -> None:
        """SIGTERM everyone (workers finish in-flight messages), then SIGKILL stragglers."""
        popens = [c.popen for c in self._children.values() if c.popen is not None]
        self._children.clear()  # nothing is restarted from here on
        for popen in popens:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for popen in popens:
            try:
                popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(5)
