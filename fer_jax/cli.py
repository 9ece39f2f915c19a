"""Shared command-line plumbing of the `python -m fer_jax.*` entry points.

Flags: --config (an ml_collections config file, `path.py:arg` picks a variant, `--config.key=value`
overrides), --workdir, and the multi-host flags. Errors a user can fix end the program with one
message (`error: ...`) and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/demo.py:arg.",
                                          lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the saved config.")
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is the whole story for the user."""
    from fer_jax import checkpoint, input_pipeline, workdir
    from fer_jax.data.embeddings import EmbeddingError
    from fer_jax.errors import ConfigError
    from fer_jax.train import NonFiniteLossError
    from tfds_dfew.release import ReleaseError

    return (ReleaseError, ConfigError, input_pipeline.DatasetNotFoundError, workdir.WorkdirConflictError,
            checkpoint.CheckpointMismatchError, NonFiniteLossError, FileNotFoundError, EmbeddingError)


def config_and_workdir(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required")
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


def run(main) -> None:
    """absl.app.run with distributed start-up and clean messages for user errors."""

    def wrapped(argv):
        setup_logging()
        from fer_jax import parallel

        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        try:
            return main(argv)
        except user_errors() as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:  # parse once up front: errors in --config or --config.key=value become one line
        remaining = FLAGS(sys.argv)
    except flags.Error as e:
        text = str(e)
        if "Error whilst parsing config file" in text:  # the config file's own error, last line of its traceback
            lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("Pass --")]
            print(f"error: bad --config: {lines[-1]}", file=sys.stderr)
            sys.exit(2)
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)
    except (KeyError, AttributeError, ValueError, TypeError) as e:
        print(f"error: bad --config: {describe_config_error(e)}", file=sys.stderr)
        sys.exit(2)
    app.run(wrapped, flags_parser=lambda argv: remaining)
