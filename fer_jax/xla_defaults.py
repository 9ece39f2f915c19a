"""The XLA settings that inference-only processes (extract, predict, evaluate) get without asking.

    if __name__ == "__main__":
        xla_defaults.use_inference_defaults()   # first thing: before JAX starts its backend
        cli.run(main, ...)

On CPU, jaxlib 0.10.2's default YNNPACK fusions make convolutions slower than XLA's own Eigen
kernels; `--xla_cpu_experimental_ynn_fusion_type=` turns them off. Measured on a 2-core
AMD EPYC with AVX-512 (issue #14; `benchmarks/generator_inference.py`, README "Performance"):
ResNet-18 features went from 0.85x torchvision eager to 1.30x; the CLIP ViT-B/16 tower and the
mini-Xception (whose convolutions are written as multiply-adds and matmuls) were not slowed.
Training processes can ask for `use_training_defaults()` (the same flag,
`fer_jax.models.resnet.CPU_TRAINING_XLA_FLAGS`): on the end-to-end fine-tuning step
(configs/paper.py:finetune, frames -> ResNet-18 -> fusion transformer) the Eigen convolutions
also compute the weight gradients faster, and the ResNet's matmul BatchNorm statistics pay off
only without YNNPACK; the step went ~1.2x faster (benchmarks/finetune_step.py). On the fusion
transformer's own train step no CPU flag helped, and YNN's `+eltwise` made it ~45% slower.

The defaults apply only when the user has not set XLA_FLAGS (theirs win, untouched) and only
when the process will run on the CPU: JAX_PLATFORMS names no other platform first, and no GPU
or TPU plugin for JAX is installed. They must be in the environment before JAX creates its
backend (XLA reads XLA_FLAGS once), which is why the CLIs call this at the top of their main
guard; called later it changes nothing and says so.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

from fer_jax.models.resnet import CPU_INFERENCE_XLA_FLAGS, CPU_TRAINING_XLA_FLAGS

# Distributions that make JAX run on an accelerator by default.
ACCELERATOR_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-rocm60-plugin", "jax-rocm7-plugin", "libtpu",
                       "libtpu-nightly", "jax-metal")


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def runs_on_cpu(environ=None) -> bool:
    """Whether JAX will pick the CPU, decided without starting JAX (JAX_PLATFORMS, installed plugins)."""
    environ = os.environ if environ is None else environ
    platforms = [p.strip().lower() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return platforms[0] == "cpu"
    return not any(_installed(d) for d in ACCELERATOR_PLUGINS)


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    started = getattr(bridge, "backends_are_initialized", None)
    return bool(started and started())


def use_inference_defaults(environ=None, *, log=None) -> str | None:
    """Sets XLA_FLAGS to the measured CPU inference flags unless the user set XLA_FLAGS or JAX runs elsewhere.

    Returns the flags it set, or None when it left the environment alone. Logs one line either
    line when it sets them (what, and how to override) to stderr, or to `log`.
    """
    return _use_defaults(CPU_INFERENCE_XLA_FLAGS, "inference", environ, log)


def use_training_defaults(environ=None, *, log=None) -> str | None:
    """As use_inference_defaults, with the CPU flags measured on the fine-tuning train step."""
    return _use_defaults(CPU_TRAINING_XLA_FLAGS, "training", environ, log)


def _use_defaults(flags: str, what: str, environ, log) -> str | None:
    real = environ is None  # this process's environment (a dict passed in is only described, as in tests)
    environ = os.environ if real else environ
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if "XLA_FLAGS" in environ or not runs_on_cpu(environ):
        return None
    if real and _backend_started():
        say(f"XLA {what} defaults not applied: JAX's backend has already started (call "
            f"fer_jax.xla_defaults.use_{what}_defaults() before the first JAX computation).")
        return None
    environ["XLA_FLAGS"] = flags
    if real and any(a in ("-h", "--help", "--helpfull", "--helpshort", "-help", "-?") for a in sys.argv[1:]):
        return flags  # --help prints the command's flags and nothing else
    say(f"note: using XLA_FLAGS={flags} (faster CPU {what}, README 'Performance'); "
        "set XLA_FLAGS yourself to override it (XLA_FLAGS= for XLA's own defaults).")
    return flags
