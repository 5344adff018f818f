"""Where the CPU goes: seconds of CPU per message, by kind of process, during a run.

On a 2-core machine, producer, consumers and Postgres share the cores, so a system's
throughput is bounded by its CPU per message as much as by round trips. This reads
/proc (Linux only; elsewhere `CpuSampler.available` is False and nothing is
measured) every 50 ms while a scenario runs, and keeps each process's last reading,
so that backends which exit before the end (a consumer's connections) still count.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SERVERS = ("postgres", "beam.smp")  # process names of the servers the systems talk to
# Postgres's own processes, not serving a client: vacuum, checkpoints, WAL writing.
BACKGROUND = (
    "postgres: autovacuum",
    "postgres: checkpointer",
    "postgres: background writer",
    "postgres: walwriter",
    "postgres: logical replication launcher",
)


def _cpu_by_pid() -> dict[int, tuple[str, float, int]]:
    """pid -> (name, CPU seconds so far, parent pid)."""
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / TICKS, int(fields[1]))
    return found


class CpuSampler:
    """Use as `with CpuSampler(consumer_pids) as cpu: ...`, then `cpu.seconds()`.

    groups: more kinds of process by pid (say the server's replication processes, or a
    relay), each counted under its own name before the kinds above are considered."""

    available = PROC.joinpath("self", "stat").exists()

    def __init__(
        self,
        consumer_pids: set[int] | None = None,
        groups: dict[str, set[int]] | None = None,
        *,
        server_pid: int | None = None,
    ) -> None:
        """server_pid: the postmaster of the server measured; when given, only it and
        its children are the server (other servers on a shared machine are other), and
        its background processes (autovacuum, checkpointer, WAL writer...) are counted
        apart, as background."""
        self.consumer_pids = consumer_pids or set()
        self.groups = groups or {}
        self.server_pid = server_pid
        self._start: dict[int, tuple[str, float, int]] = {}
        self._last: dict[int, tuple[str, float, int]] = {}
        self._background: set[int] = set()
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> CpuSampler:
        if self.available:
            self._start = _cpu_by_pid()
            self._label(self._start)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.available:
            self._stop.set()
            self._thread.join()
            self._read()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self._read()

    def _read(self) -> None:
        found = _cpu_by_pid()
        self._label(found)
        self._last.update(found)

    def _label(self, found: dict[int, tuple[str, float, int]]) -> None:
        """Notes the server's background processes, while they run (an autovacuum
        worker may be gone by the end)."""
        if self.server_pid is None:
            return
        for pid, (_, _, ppid) in found.items():
            if pid in self._seen or ppid != self.server_pid:
                continue
            self._seen.add(pid)
            try:
                title = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, UnicodeDecodeError):
                continue
            if title.startswith(BACKGROUND):
                self._background.add(pid)

    def seconds(self) -> dict[str, float]:
        """CPU seconds spent during the run: server (Postgres, or RabbitMQ's Erlang VM),
        consumer processes, producer (this process), other (anything else running), and
        each of the groups given; with server_pid, the server's background processes."""
        me = os.getpid()
        spent = {"server": 0.0, "consumers": 0.0, "producer": 0.0, "other": 0.0}
        if self.server_pid is not None:
            spent["background"] = 0.0
        spent.update(dict.fromkeys(self.groups, 0.0))
        for pid, (name, cpu, ppid) in self._last.items():
            used = cpu - self._start.get(pid, (name, 0.0, ppid))[1]
            if used <= 0:
                continue
            group = next((g for g, pids in self.groups.items() if pid in pids), None)
            if self.server_pid is None:
                is_server = name.startswith(SERVERS)
            else:
                is_server = self.server_pid in (pid, ppid)
            if group is not None:
                kind = group
            elif is_server and pid in self._background:
                kind = "background"
            elif is_server:
                kind = "server"
            elif pid in self.consumer_pids:
                kind = "consumers"
            elif pid == me:
                kind = "producer"  # the benchmark's own process: it sends
            else:
                kind = "other"
            spent[kind] += used
        return spent
