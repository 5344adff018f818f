"""Starts the service processes, waits for them to be healthy, stops them cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from .topology import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent


class Supervisor:
    def __init__(self, *, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.running: dict[str, tuple[ServiceProcess, subprocess.Popen[bytes]]] = {}

    def start(self, process: ServiceProcess, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{process.instance}.log").open("ab")
        popen = subprocess.Popen(
            [sys.executable, *process.module_args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
        if output is not None:
            output.close()  # the child has its own descriptor
        self.running[process.instance] = (process, popen)
        return popen

    def kill(self, name: str) -> None:
        """SIGKILL: the process dies mid-work, as in a crash."""
        _, popen = self.running.pop(name)
        popen.kill()
        popen.wait(10)

    def check_alive(self) -> None:
        for name, (_, popen) in self.running.items():
            if popen.poll() is not None:
                raise RuntimeError(f"{name} exited with code {popen.returncode}")

    def wait_healthy(self, urls: Mapping[str, str], *, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        pending = dict(urls)
        while pending:
            self.check_alive()
            for name, url in list(pending.items()):
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {within_s}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.1)

    def stop_all(self, *, grace_s: float = 15) -> None:
        """SIGTERM everyone (workers finish in-flight messages), then SIGKILL stragglers."""
        for _, popen in self.running.values():
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for _, popen in self.running.values():
            try:
                popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(5)
        self.running.clear()
