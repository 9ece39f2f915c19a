"""Benchmark plumbing shared by the inference benchmarks: one worker process per contender, timed in turn.

A worker builds its contender, saves its output (so the main process can compare them), sends
'ready', then times one call per 'run' line read on stdin (`serve`). The main process starts
workers (`Worker`) and interleaves single timed calls over them, so load from other programs hits
every contender alike. Messages are JSON lines on stdout behind a tag; anything else a worker
prints is ignored.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

TAG = "@@bench@@"


def send(kind: str, **payload) -> None:
    """A message from a worker to the main process."""
    print(TAG + json.dumps({"kind": kind, **payload}), flush=True)


def serve(call: Callable[[], object], first_call_s: float, info: dict) -> None:
    """Worker side: report ready, then time one `call()` per 'run' line on stdin until anything else."""
    send("ready", first_call_s=first_call_s, info=info)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        call()
        send("time", seconds=time.perf_counter() - start)


class Worker:
    """One contender's process (`cmd`, `env`); a thread forwards its tagged stdout lines to a queue."""

    def __init__(self, name: str, cmd: list[str], env: dict, workdir: Path):
        self.name = name
        self.log = open(Path(workdir) / f"{name}.stderr", "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env)
        self.messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                self.messages.put(json.loads(line[len(TAG):]))
        self.messages.put({"kind": "failed", "error": f"worker exited (code {self.proc.wait()}); see {self.log.name}"})

    def receive(self, timeout: float) -> dict:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return {"kind": "failed", "error": f"no answer within {timeout:.0f} s"}

    def time_call(self) -> float:
        """Seconds of one timed call in the worker."""
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        msg = self.receive(600)
        if msg["kind"] != "time":
            raise RuntimeError(f"{self.name}: {msg.get('error')}")
        return msg["seconds"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


def busy_cpu_seconds(pids: list[int]) -> tuple[float, float] | None:
    """(CPU seconds all programs used, CPU seconds of `pids`) so far, from /proc; None elsewhere.

    Two readings around a timed part give the cores' worth of CPU that other programs took meanwhile.
    """
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        total = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = sum(total) - total[3] - total[4]  # all but idle and iowait
        ours = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ours += int(fields[11]) + int(fields[12])  # utime + stime
        return busy / ticks, ours / ticks
    except (OSError, ValueError, IndexError):
        return None


def interleave(workers: dict, repeats: int) -> tuple[dict[str, list[float]], list[float], float | None]:
    """Times one call of every worker per repeat, rotating the order each repeat.

    Returns ({name: [seconds per call]}, the load average after each repeat, the cores' worth of
    CPU that other programs used meanwhile (None where /proc is missing)).
    """
    live, times, loads = list(workers), {name: [] for name in workers}, []
    pids = [os.getpid()] + [w.proc.pid for w in workers.values()]
    cpu_start, wall_start = busy_cpu_seconds(pids), time.perf_counter()
    for r in range(repeats):
        for name in live[r % len(live):] + live[: r % len(live)]:
            times[name].append(workers[name].time_call())
        loads.append(os.getloadavg()[0])
        print(f"repeat {r + 1}/{repeats} (load {loads[-1]:.2f})", file=sys.stderr, flush=True)
    cpu_end, wall = busy_cpu_seconds(pids), time.perf_counter() - wall_start
    other = None
    if cpu_start and cpu_end:
        other = max(0.0, ((cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / wall)
    return times, loads, other
