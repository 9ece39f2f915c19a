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

