"""Benchmark: a 2-process training run with the stop flags gathered after every step vs on the schedule.

    python benchmarks/stop_check.py [--steps 600] [--rounds 2] [--budget 10] [--quick]

Builds a tiny synthetic DFEW with cached mini_xception_fer features (benchmarks/tiny_data.py), then
runs `python -m fer_jax.train --config configs/fusion.py:face` as two processes on this host
(`--num_processes 2`, one CPU device each, a coordinator on 127.0.0.1) with

    --config.stop_check_s=0        the processes all-gather their stop flags after every step
                                   (what every multi-process run did before the schedule; the reference)
    --config.stop_check_s=BUDGET   after as many steps as fit in BUDGET seconds (fer_jax.loop.StopSchedule)

No logging, evaluation or checkpoint between the first and the last step (log_every, checkpoint_every =
the step count), so the stop checks are the only host syncs that differ. Steps per second come from the
run's own `train_seconds` (metrics.jsonl: the loop's wall time, start-up and the first compilation
included, the same for both). Rounds are interleaved. Output: a Markdown table on stdout with the CPU,
AVX-512 and the load; JSON in benchmarks/results/stop_check_<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
import machine  # noqa: E402
import tiny_data  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(features_dir: str, workdir: str, steps: int, budget: float, timeout: float) -> dict:
    """One 2-process training run; its steps per second (from train_seconds) or an error."""
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    command = [sys.executable, "-m", "fer_jax.train", "--config", "configs/fusion.py:face", "--workdir", workdir,
               "--config.dataset.name=dfew_features/mini_xception_fer", f"--config.dataset.data_dir={features_dir}",
               "--config.batch_size=8", f"--config.num_train_steps={steps}", f"--config.checkpoint_every={steps}",
               f"--config.log_every={steps}", "--config.model.width=16", "--config.model.depth=1",
               "--config.model.mlp_dim=32", "--config.progress_bar=False", "--config.eval_batch_size=8",
               "--config.eval_every=0", f"--config.stop_check_s={budget}", f"--coordinator_address=127.0.0.1:{port}",
               "--num_processes=2"]
    procs = [subprocess.Popen(command + [f"--process_id={i}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        return {"error": f"ran past {timeout:.0f} s"}
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            return {"error": f"exit {p.returncode}: " + (err.strip().splitlines() or ["?"])[-1][:300]}
    lines = [json.loads(x) for x in Path(workdir, "metrics.jsonl").read_text().splitlines() if x.strip()]
    seconds = [x["train_seconds"] for x in lines if x.get("split") == "test" and "train_seconds" in x][-1]
    return {"train_seconds": seconds, "steps_per_s": steps / seconds}


def markdown(result: dict) -> str:
    m = result["meta"]
    head = (f"2-process training (one CPU device each, fusion `face`, width 16, batch 8), {m['steps']} steps, "
            f"{m['rounds']} interleaved round(s), median. " + machine.describe(m, per="round"))
    rows = ["| stop check | steps/s | ratio |", "|---|---:|---:|"]
    for r in result["rows"]:
        if "error" in r:
            rows.append(f"| {r['variant']} | {r['error']} | - |")
        else:
            rows.append(f"| {r['variant']} | {r['steps_per_s']:.1f} | {r['ratio']:.2f}x |")
    return head + "\n\n" + "\n".join(rows) + "\n\nReference of the ratio: the stop flags gathered after every step."


def main(args) -> dict:
    steps = 40 if args.quick else args.steps
    rounds = 1 if args.quick else args.rounds
    variants = [("after every step (stop_check_s=0)", 0.0), (f"scheduled (stop_check_s={args.budget:g})", args.budget)]
    load_before, loads = os.getloadavg()[0], []
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="stop_check_bench_") as root:
        with contextlib.redirect_stdout(sys.stderr):
            features_dir = tiny_data.features(root)
        for r in range(rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for name, budget in order:
                out = run_two_processes(features_dir, os.path.join(root, f"run_{r}_{budget:g}"), steps, budget,
                                        args.timeout)
                if "error" in out:
                    errors[name] = out["error"]
                else:
                    times[name].append(out["steps_per_s"])
                log(f"round {r + 1}, {name}: {out}")
            loads.append(os.getloadavg()[0])
    rows, reference = [], None
    for name, _ in variants:
        if not times[name]:
            rows.append({"variant": name, "error": errors.get(name, "no result")})
            continue
        rate = statistics.median(times[name])
        reference = reference or rate
        rows.append({"variant": name, "steps_per_s": rate, "all": times[name], "ratio": rate / reference})
    result = {"rows": rows, "meta": machine.process_meta(load_before, loads, quick=args.quick, steps=steps,
                                                         rounds=rounds, budget=args.budget)}
    print(markdown(result))
    machine.write_result(RESULTS, "stop_check", result)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: 40 steps, one round")
    p.add_argument("--steps", type=int, default=600, help="training steps per run")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    p.add_argument("--budget", type=float, default=10.0, help="stop_check_s of the scheduled variant")
    p.add_argument("--timeout", type=float, default=600, help="seconds one run may take")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
