"""Smoke tests of benchmarks/extract_end_to_end.py and benchmarks/predict_memory.py in quick sizes, so neither rots.

Each runs the script as a user would (its own process; the commands it times are processes too)
and checks the table on stdout and the JSON it writes to benchmarks/results/.
"""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout):
    env = dict(os.environ, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = re.search(r"^written: (.+\.json)$", proc.stderr, re.M)
    assert written, proc.stderr[-2000:]
    with open(written.group(1)) as f:
        return proc.stdout, json.load(f)


@pytest.mark.slow
def test_extract_end_to_end_quick_times_jax_and_torch_on_the_same_features():
    out, data = _run(["benchmarks/extract_end_to_end.py", "--quick", "--clips", "12",
                      "--variants", "jax,torch_eager"], timeout=240)
    assert "| variant | frames/s, whole command | vs torch eager |" in out
    assert "AVX-512" in out and "load average" in out
    stats = data["stats"]
    assert set(stats) == {"jax", "torch_eager"}
    for name, st in stats.items():
        assert st["fps_whole"] > 0 and st["fps_extract"] >= st["fps_whole"], (name, st)
        assert st["peak_rss_mb"] > 100, (name, st)
    assert stats["jax"]["xla_note"]  # the CLI said it set its CPU inference flags
    assert data["max_rel_diff"] is not None and data["max_rel_diff"] < 1e-4  # same weights, same frames
    assert data["meta"]["clips"] > 0 and data["meta"]["frames"] == 16 * data["meta"]["clips"]


@pytest.mark.slow
def test_predict_memory_quick_measures_each_video_in_its_own_process():
    out, data = _run(["benchmarks/predict_memory.py", "--seconds", "2,6"], timeout=240)
    assert "| video | frames | peak RSS | vs shortest |" in out
    assert "Windows cover every frame of every video: yes" in out
    runs = data["runs"]
    assert [r["seconds"] for r in runs] == [2.0, 6.0]
    for r in runs:
        assert r["rc"] == 0 and r["peak_rss_mb"] > 100 and r["video_s_per_s"] > 0, r
        assert r["coverage"]["windows_with_face"] > 0, r  # the detector finds the face
    assert data["ratio"] is not None and 0.5 < data["ratio"] < 2
