"""Shared command-line plumbing of the `python -m fer_jax.*` entry points.

Flags: --config (an ml_collections config file, `path.py:arg` picks a variant, `--config.key=value`
overrides), --workdir, and the multi-host flags; `--help` lists them with the entry point's own.
Errors a user can fix (`fer_jax.errors.UserError`) end the program with one line (`error: ...`)
and the error's exit status (2; 75 for a run stopped by SIGTERM); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from fer_jax import parallel
from fer_jax.errors import UserError

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file; ':arg' picks a variant. Example: --config configs/demo.py:face+pose "
    "(then --config.key=value overrides a key, e.g. --config.num_train_steps=300)", lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, config.json, figures. Example: --workdir "
                    "runs/demo")
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0. Example: "
                    "--coordinator_address 10.0.0.1:1234")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes. Example: --num_processes 2")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index. Example: --process_id 0")

HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")
_OUR_PACKAGES = ("fer_jax", "tfds_dfew", "__main__")


def config_and_workdir(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required, e.g. --workdir runs/demo")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config configs/demo.py")
    return _CONFIG.value, FLAGS.workdir


def describe_config_error(error: BaseException) -> str:
    """One line for an error raised while loading a config file or applying `--config.key=value`."""
    text = str(error.args[0] if error.args else error).replace("\\n", "\n").replace("\\'", "'")
    key = re.search(r"'([^'\n]+)'", text)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    if isinstance(error, (KeyError, AttributeError)) and key:
        tip = f" (did you mean {hint.group(1)!r}?)" if hint else ""
        return (f"unknown config key {key.group(1)!r}{tip}; `--config.key=value` can only set keys that the "
                "config file defines.")
    return text.strip().splitlines()[0]


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("jax._src", "orbax", "tensorflow_datasets", "grain"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.ERROR)


def help_text(doc: str, *, needs_workdir: bool = True) -> str:
    """The entry point's docstring and each of its flags (name, one-line description with an example, default)."""
    lines = [(doc or "").strip(), "", "flags:"]
    multi_host = ("coordinator_address", "num_processes", "process_id")
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        if not any(module == p or module.startswith(p + ".") or module.endswith(".py") for p in _OUR_PACKAGES):
            continue
        for flag in sorted(module_flags, key=lambda f: (f.name in multi_host, f.name)):
            if flag.name == "workdir" and not needs_workdir:
                continue
            default = "" if flag.default in (None, "") else f" (default: {flag.default})"
            lines.append(f"  --{flag.name}: {' '.join(str(flag.help).split())}{default}")
    return "\n".join(lines) + "\n"


def _config_path_error(argv) -> str | None:
    """A one-line message if --config names a file that does not exist (before ml_collections tries it)."""
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        path = value.split(":", 1)[0]
        if not os.path.isfile(path):
            folder = os.path.dirname(path) or "."
            near = sorted(f for f in os.listdir(folder) if f.endswith(".py")) if os.path.isdir(folder) else []
            close = difflib.get_close_matches(os.path.basename(path), near, n=1)
            tip = f" (did you mean {os.path.join(folder, close[0])}?)" if close else (
                f"; the configs are in {folder}: {', '.join(near)}" if near else "")
            return f"--config {value}: no such file {path}{tip}"
    return None


def _put_configs_on_path(argv) -> None:
    """Makes `import configs` work inside a config file given by path (configs/ is a package beside fer_jax)."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else (
            arg.split("=", 1)[1] if arg.startswith("--config=") else None)
        if value:
            folder = os.path.dirname(os.path.abspath(value.split(":", 1)[0]))
            if os.path.basename(folder) == "configs" and os.path.dirname(folder) not in sys.path:
                sys.path.insert(0, os.path.dirname(folder))


def run(main, *, doc: str = "", needs_workdir: bool = True) -> None:
    """absl.app.run with --help, distributed start-up, and one-line messages for user errors."""

    def wrapped(argv):
        setup_logging()
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if any(a in HELP_ARGS for a in sys.argv[1:]):
        sys.stdout.write(help_text(doc, needs_workdir=needs_workdir))
        sys.exit(0)
    problem = _config_path_error(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    _put_configs_on_path(sys.argv[1:])
    try:  # parse once up front: errors in --config or --config.key=value become one line
        remaining = FLAGS(sys.argv)
    except flags.Error as e:
        text = str(e)
        if "Error whilst parsing config file" in text:  # the config file's own error, last line of its traceback
            lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("Pass --")]
            print(f"error: bad --config: {lines[-1]}", file=sys.stderr)
            sys.exit(2)
        print(f"error: {text.splitlines()[0] if text else e}", file=sys.stderr)
        sys.exit(2)
    except (KeyError, AttributeError, ValueError, TypeError) as e:
        print(f"error: bad --config: {describe_config_error(e)}", file=sys.stderr)
        sys.exit(2)
    app.run(wrapped, flags_parser=lambda argv: remaining)
