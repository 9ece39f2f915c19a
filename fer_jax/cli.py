"""Shared command-line plumbing of the `python -m fer_jax.*` entry points.

Flags: --config (an ml_collections config file, `path.py:arg` picks a variant, `--config.key=value`
overrides), --workdir, and the multi-host flags; `--help` lists them with the entry point's own.
Errors a user can fix (`fer_jax.errors.UserError`) end the program with one line (`error: ...`)
and the error's exit status (2; 75 for a run stopped by SIGTERM); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from fer_jax import parallel
from fer_jax.errors import RunStopped, UserError
from tfds_dfew import plugins

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

STOPPED = RunStopped.exit_code  # 75, EX_TEMPFAIL: a stopped command a scheduler may run again
HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")


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


MULTI_HOST_COMMANDS = ("fer_jax.train", "fer_jax.pretrain", "fer_jax.cross_validate", "fer_jax.evaluate",
                       "fer_jax.extract")
MULTI_HOST_FLAGS = ("coordinator_address", "num_processes", "process_id")


def _running_command() -> str:
    """The dotted name of the module run with `python -m` ('' when unknown)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", "") or ""


def help_text(doc: str, *, needs_workdir: bool = True, multi_host: bool | None = None) -> str:
    """The entry point's docstring and the flags it reads (name, one-line description with an example, default).

    Only the entry point's own flags and --config/--workdir are listed (not those of modules it imports),
    the multi-host flags only for the commands that run on several hosts (MULTI_HOST_COMMANDS).
    """
    if multi_host is None:
        multi_host = _running_command() in MULTI_HOST_COMMANDS
    lines = [(doc or "").strip(), "", "flags:"]
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        own = module in ("__main__", __name__) or module.endswith(".py") or module == _running_command()
        if not own:
            continue
        for flag in sorted(module_flags, key=lambda f: (f.name in MULTI_HOST_FLAGS, f.name)):
            if flag.name == "workdir" and not needs_workdir:
                continue
            if flag.name in MULTI_HOST_FLAGS and not multi_host:
                continue
            default = "" if flag.default in (None, "") else f" (default: {flag.default})"
            lines.append(f"  --{flag.name}: {' '.join(str(flag.help).split())}{default}")
    return "\n".join(lines) + "\n"


def configs_folder() -> str | None:
    """The folder of the project's config files (the installed `configs` package), wherever the command runs."""
    spec = importlib.util.find_spec("configs")
    locations = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    for folder in locations + [here]:
        if os.path.isfile(os.path.join(folder, "fusion.py")):
            return folder
    return None


def resolve_config(value: str) -> str:
    """A --config value as a path that exists: as given; or a config named by its file ('fusion:face',
    'fusion.py:face', 'configs/fusion.py:face' from another folder) found in the project's configs folder."""
    path, sep, arg = value.partition(":")
    if os.path.isfile(os.path.expanduser(path)):
        return value
    folder = configs_folder()
    if folder is None:
        return value
    name = os.path.basename(path)
    name = name if name.endswith(".py") else name + ".py"
    if os.path.dirname(path) not in ("", "configs") or not os.path.isfile(os.path.join(folder, name)):
        return value
    return os.path.join(folder, name) + sep + arg


def _config_values(argv):
    """(index, value) of every --config value in argv (`--config X` and `--config=X`)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            yield i + 1, argv[i + 1]
        elif arg.startswith("--config="):
            yield i, arg.split("=", 1)[1]


def _resolve_configs(argv) -> list[str]:
    """argv with every --config value resolved (`resolve_config`)."""
    argv = list(argv)
    for i, value in list(_config_values(argv)):
        resolved = resolve_config(value)
        argv[i] = resolved if not argv[i].startswith("--config=") else f"--config={resolved}"
    return argv


def _config_path_error(argv) -> str | None:
    """A one-line message if --config names a file that does not exist (before ml_collections tries it)."""
    for _, value in _config_values(argv):
        path = value.split(":", 1)[0]
        if not os.path.isfile(path):
            folder = configs_folder() or os.path.dirname(path) or "."
            near = sorted(f for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py") \
                if os.path.isdir(folder) else []
            close = difflib.get_close_matches(os.path.basename(path), near, n=1)
            tip = f" (did you mean {os.path.join(os.path.dirname(path), close[0])}?)" if close else ""
            where = f"; the configs are in {folder} ({', '.join(n[:-3] for n in near)}), and a name such as " \
                    "--config fusion:face finds them from any folder" if near else ""
            return f"--config {value}: no such file {path}{tip}{where}"
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


def run(main, *, doc: str = "", needs_workdir: bool = True, multi_host: bool | None = None) -> None:
    """absl.app.run with --help, distributed start-up, and one-line messages for user errors."""

    def wrapped(argv):
        setup_logging()
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:  # a second Ctrl-C in a run, or Ctrl-C in a command without a checkpoint
            print("stopped by Ctrl-C. A run keeps its last complete checkpoint and a dataset being written is not "
                  "marked complete: rerun the same command to resume or redo it.", file=sys.stderr)
            sys.exit(STOPPED)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:  # plug-ins first: a config file may name their generators, modalities or datasets
        plugins.load()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    if any(a in HELP_ARGS for a in sys.argv[1:]):
        sys.stdout.write(help_text(doc, needs_workdir=needs_workdir, multi_host=multi_host))
        sys.exit(0)
    sys.argv[1:] = _resolve_configs(sys.argv[1:])
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
