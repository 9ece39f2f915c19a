"""What every benchmark prints about the machine it ran on: the CPU model and whether it has AVX-512."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_info() -> dict:
    """{'model': CPU model name, 'avx512': True/False (None when unknown)}, from /proc/cpuinfo."""
    model, avx512 = platform.processor() or platform.machine() or "unknown", None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": model, "avx512": avx512}
    for line in text.splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            avx512 = "avx512f" in line.split(":", 1)[1].split()
            break
    return {"model": model, "avx512": avx512}



def process_meta(load_before: float, loads: list[float], **extra) -> dict:
    """The `meta` of a benchmark that runs commands in processes: CPU, core count, loads, jax version, time."""
    import os
    import time

    import jax

    return {"cpu": cpu_info(), "cpu_count": os.cpu_count(), "load_before": load_before,
            "load_after": os.getloadavg()[0], "loads": loads, "loads_text": ", ".join(f"{x:.2f}" for x in loads),
            "jax": jax.__version__, **extra, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_result(results_dir: Path, prefix: str, result: dict) -> Path:
    """Writes `result` as results_dir/<prefix>_<YYYYmmdd-HHMMSS>.json and says where on stderr."""
    import json
    import sys
    import time

    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{prefix}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {path}", file=sys.stderr)
    return path


def describe(meta: dict, per: str = "run") -> str:
    """'CPU <model> (with AVX-512), 2 cores; load average a before, b after (per <per>: ...); jax V.' from process_meta,
    plus the --quick caveat when meta says so."""
    cpu = meta["cpu"]
    avx = {True: "with AVX-512", False: "no AVX-512", None: "AVX-512 unknown"}[cpu["avx512"]]
    return (f"CPU {cpu['model']} ({avx}), {meta['cpu_count']} cores; load average {meta['load_before']:.2f} before, "
            f"{meta['load_after']:.2f} after (per {per}: {meta['loads_text']}); jax {meta['jax']}."
            + (" --quick: a smoke test, not a measurement." if meta.get("quick") else ""))
