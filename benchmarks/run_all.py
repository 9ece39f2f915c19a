"""Runs every benchmark and writes one Markdown table: benchmark, variant, throughput, ratio to its reference.

    python benchmarks/run_all.py            # sized to finish within 9 minutes on one accelerator or a CPU
    python benchmarks/run_all.py --quick    # small sizes: a smoke test that the benchmarks still run

Runs benchmarks/generator_inference.py (resnet18 and vit_b16), mini_xception_inference.py,
audio_inference.py, train_step.py, input_pipeline.py, pretrain_step.py, finetune_step.py, dense_backward.py,
extract_end_to_end.py, predict_memory.py and predict_speed.py, one after the other,
each in its own process with reduced sizes (listed in the table's notes) and a time limit;
reads what each wrote to benchmarks/results/*.json (dense_backward: its stdout table). A
benchmark that fails or runs out of time gets a row saying so, and the others go on. Writes the
table with the device, the jax and torch versions, the CPU model, AVX-512 and load averages to
stdout and to benchmarks/results/run_all.md (or --out). The exit status is 1 if any benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import machine  # benchmarks/machine.py: the folder of a script run as `python benchmarks/x.py` is on sys.path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "results"

# name -> (script, json prefix or None, full-size arguments, --quick arguments, time limits in s (full, quick));
# the full limits add up to 530 s, so a run ends within 9 minutes whatever happens (on a slow CPU a
# benchmark may run out of its time and get a row saying so); the --quick ones are
# looser (they only guard against rot, and a shared CPU can be slow).
JOBS = {
    "generator_inference resnet18": (
        "generator_inference.py", "generator_inference_2",
        ["--repeats", "5", "--warmup", "1", "--compile-timeout", "90"],
        ["--batch", "4", "--size", "64", "--repeats", "2", "--warmup", "1", "--no-compile",
         "--variants", "torch_eager,flax,flax_no_ynn"], (50, 90)),
    "generator_inference vit_b16": (
        "generator_inference.py", "generator_inference_vit_b16",
        ["--model", "vit_b16", "--batch", "4", "--repeats", "3", "--warmup", "1", "--no-compile"],
        ["--model", "vit_b16", "--batch", "1", "--repeats", "1", "--warmup", "0", "--no-compile",
         "--variants", "torch_eager,flax"], (55, 120)),
    "mini_xception_inference": (
        "mini_xception_inference.py", "mini_xception_inference",
        ["--repeats", "5", "--no-compile"], ["--quick", "--no-compile"], (40, 80)),
    "audio_inference": (
        "audio_inference.py", "audio_inference",
        ["--batch", "2", "--seconds", "4", "--repeats", "3", "--warmup", "1", "--no-compile",
         "--variants", "torch_eager,jax_encoder,jax_encoder_inference_flags"],
        ["--quick", "--variants", "torch_eager,jax_encoder,jax_encoder_inference_flags,jax_generator"], (40, 120)),
    "train_step": ("train_step.py", "train_step", ["--rounds", "3", "--no-diagnostics"],
                   ["--quick", "--no-pipeline"], (100, 90)),
    "input_pipeline": ("input_pipeline.py", "input_pipeline", ["--batches", "12"], ["--quick"], (20, 60)),
    "pretrain_step": ("pretrain_step.py", "pretrain_step", ["--rounds", "5"], ["--quick"], (25, 60)),
    "finetune_step": ("finetune_step.py", "finetune_step", ["--rounds", "3", "--batch", "4", "--no-compile"],
                      ["--quick", "--no-compile", "--rounds", "1"], (60, 180)),
    "dense_backward": ("dense_backward.py", None, [], [], (15, 40)),
    "extract_end_to_end": ("extract_end_to_end.py", "extract_end_to_end",
                           ["--clips", "24", "--rounds", "1", "--no-compile", "--variants", "jax,torch_eager"],
                           ["--quick", "--clips", "8", "--variants", "jax,torch_eager"], (45, 150)),
    "predict_memory": ("predict_memory.py", "predict_memory", ["--seconds", "5,50"], ["--seconds", "1,3"], (40, 120)),
    "predict_speed": ("predict_speed.py", "predict_speed",
                      ["--seconds", "6", "--rounds", "1", "--models", "mini_xception_fer"],
                      ["--quick", "--models", "mini_xception_fer"], (50, 90)),
}


def versions() -> dict:
    """Device and versions, asked of a child process so this one stays light."""
    code = ("import json, jax, torch; print(json.dumps({'jax': jax.__version__, 'torch': torch.__version__, "
            "'device': f'{jax.devices()[0].device_kind} ({jax.default_backend()}) x {jax.device_count()}', "
            "'cuda': torch.cuda.is_available()}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return {"jax": "?", "torch": "?", "device": "?", "cuda": None}


def newest_json(prefix: str, since: float) -> dict | None:
    files = [p for p in RESULTS.glob(prefix + "*.json") if p.stat().st_mtime >= since]
    return json.loads(max(files, key=lambda p: p.stat().st_mtime).read_text()) if files else None


def rows_of(name: str, data: dict | None, stdout: str) -> list[tuple[str, str, str]]:
    """[(variant, throughput, ratio to the reference)] from a benchmark's JSON (or stdout)."""
    if name.startswith(("generator_inference", "mini_xception")):
        return [(r["variant"], f"{r['frames_per_s']:.1f} frames/s", f"{r['ratio_to_torch_eager']:.2f}x")
                for r in data["results"] if r.get("frames_per_s")]
    if name == "audio_inference":
        return [(r["variant"], f"{r['clips_per_s']:.2f} clips/s ({r['audio_s_per_s']:.1f} audio s/s)",
                 f"{r['ratio_to_torch_eager']:.2f}x") for r in data["results"] if r.get("clips_per_s")]
    if name in ("train_step", "pretrain_step"):
        steps = data["steps"]
        ref = steps["torch"]["clips_per_s"]
        out = [(("pytorch eager (reference)" if k == "torch" else k), f"{v['clips_per_s']:.1f} clips/s",
                f"{v['clips_per_s'] / ref:.2f}x") for k, v in steps.items()]
        if data.get("pipeline"):
            out.append(("input stall (fed by Grain vs in-memory)", f"{100 * data['pipeline']['stall']:.1f}%", "-"))
        return out
    if name == "input_pipeline":
        return [(f"frames{r['size']}, crop {r['batch_shape'][2]}, {r['threads']} read thread(s)",
                 f"{r['clips_per_s']:.1f} clips/s ({r['clips_per_s_per_thread']:.1f} per thread)",
                 f"{r['ratio_to_fewest_threads']:.2f}x") for r in data["rows"]]
    if name == "finetune_step":
        stats = data["stats"]
        ref = stats.get("torch_eager", {}).get("clips_per_s")
        out = [(k, f"{v['clips_per_s']:.2f} clips/s", f"{v['clips_per_s'] / ref:.2f}x" if ref else "-")
               for k, v in stats.items()]
        if "stall" in data:
            out.append(("input stall (fed by Grain vs in-memory)", f"{100 * data['stall']:.1f}%", "-"))
        return out
    if name == "extract_end_to_end":
        stats = data["stats"]
        ref = stats["torch_eager"]["fps_whole"]
        return [(k, f"{v['fps_whole']:.1f} frames/s whole command ({v['fps_extract']:.1f} extraction part)",
                 f"{v['fps_whole'] / ref:.2f}x") for k, v in stats.items() if "fps_whole" in v]
    if name == "predict_memory":
        runs = data["runs"]
        base = runs[0]["peak_rss_mb"]
        return [(f"{r['seconds']:g} s video", f"{r['video_s_per_s']:.1f} video-s/s, peak RSS {r['peak_rss_mb']:.0f} MB",
                 f"{r['peak_rss_mb'] / base:.2f}x") for r in runs if "error" not in r]
    if name == "predict_speed":
        seconds = data["meta"]["seconds"]
        return [(f"{r['model']}, detector {r['detection']}",
                 f"{r['video_s_per_s']:.2f} video-s/s ({r['wall_s']:.1f} s for {seconds:g} s of video)",
                 f"{r['ratio']:.2f}x") for r in data["rows"] if "error" not in r]
    if name == "dense_backward":
        out = []
        for m in re.finditer(r"^\| (\([^)]*\)) \| ([\d.]+) ms \| ([\d.]+) ms \| ([\d.]+)x \|$", stdout, re.M):
            shape, t3, t2, ratio = m.groups()
            out.append((f"MLP grad on [B, N, D] {shape}", f"{1e3 / float(t3):.0f} grads/s", "1.00x"))
            out.append((f"MLP grad on [B*N, D] {shape}", f"{1e3 / float(t2):.0f} grads/s", f"{float(ratio):.2f}x"))
        return out
    return []


def run_job(name: str, quick: bool, log) -> tuple[list[tuple[str, str, str]], str, float]:
    script, prefix, full, small, limits = JOBS[name]
    limit = limits[1] if quick else limits[0]
    start = time.time()
    cmd = [sys.executable, str(BENCH / script)] + (small if quick else full)
    log(f"{name}: {' '.join(cmd[1:])} (limit {limit} s)")
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return [], f"ran out of its {limit} s", time.time() - start
    seconds = time.time() - start
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return [], f"failed (exit {proc.returncode}): {tail[0][:200]}", seconds
    try:
        rows = rows_of(name, newest_json(prefix, start) if prefix else None, proc.stdout)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        return [], f"its output could not be read ({type(e).__name__}: {e})", seconds
    return rows, "" if rows else "wrote no result", seconds


def markdown(results: list, meta: dict) -> str:
    cpu = meta["cpu"]
    avx = {True: "with AVX-512", False: "no AVX-512", None: "AVX-512 unknown"}[cpu["avx512"]]
    lines = [f"All benchmarks{' (--quick: smoke-test sizes, not measurements)' if meta['quick'] else ''}, "
             f"{meta['time']}: device {meta['device']}; jax {meta['jax']}, torch {meta['torch']}; CPU {cpu['model']} "
             f"({avx}, {meta['cpu_count']} cores); load average {meta['load_before']:.2f} before, "
             f"{meta['load_after']:.2f} after; {meta['total_s']:.0f} s in all.", "",
             "| benchmark | variant | throughput | ratio to its reference |", "|---|---|---:|---:|"]
    for name, rows, problem, seconds in results:
        for variant, throughput, ratio in rows:
            lines.append(f"| {name} | {variant} | {throughput} | {ratio} |")
        if problem:
            lines.append(f"| {name} | - | {problem} | - |")
    lines += ["", "References: torch_eager (inference, fine-tuning), PyTorch eager (train_step, pretrain_step), the "
              "[B, N, D] layout (dense_backward), one read thread (input_pipeline: decode + crop + flip alone, no model). Sizes and arguments per benchmark: benchmarks/run_all.py JOBS; "
              "each benchmark's own JSON is in benchmarks/results/."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test (a few minutes on 2 CPU cores)")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(JOBS)}")
    p.add_argument("--out", default=str(RESULTS / "run_all.md"), help="where the Markdown table goes")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(JOBS)
    unknown = [n for n in names if n not in JOBS]
    if unknown:
        p.error(f"unknown benchmarks {unknown}; choose from {list(JOBS)}")

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)

    t0, load_before = time.time(), os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"quick": args.quick, "cpu": machine.cpu_info(), "cpu_count": os.cpu_count(), "load_before": load_before,
            "time": time.strftime("%Y-%m-%d %H:%M"), **versions()}
    results = []
    for name in names:
        rows, problem, seconds = run_job(name, args.quick, log)
        log(f"{name}: {problem or 'done'} in {seconds:.0f} s")
        results.append((name, rows, problem, seconds))
    meta.update(load_after=os.getloadavg()[0], total_s=time.time() - t0)
    text = markdown(results, meta)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 1 if any(problem for _, _, problem, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
