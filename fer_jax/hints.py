"""The commands a message suggests (build a dataset, extract features), complete and shell-quoted to paste.

Every suggested command is built here with `shlex.join`, so a path with spaces survives the paste,
and it names every option the user needs (the dataset, the config, the data dir).
"""

from __future__ import annotations

import os
import shlex

from fer_jax.models import generators
from tfds_dfew import clip_builder, description as description_lib

DEFAULT_DATA_DIR = "data/tfds"


def command(*words) -> str:
    """A shell command line from its words, each quoted when it needs to be."""
    return shlex.join(str(w) for w in words)


def build_command(dataset: str, data_dir: str, manual_dir: str | None = None) -> str:
    """`python -m tfds_dfew.build ...` that makes `dataset` ('dfew/frames112', 'mafw/frames224_audio', ...)."""
    base = description_lib.base_name(dataset)
    config = dataset.split("/", 1)[1].split(":", 1)[0] if "/" in dataset and not dataset.split("/")[0].endswith(
        "_features") else ""
    words = ["python", "-m", "tfds_dfew.build"]
    if base != "dfew":
        words += ["--dataset", base]
    words += ["--manual_dir", manual_dir or f"<{base.upper()} release>", "--data_dir", data_dir]
    options = clip_builder.parse_config_name(config) if config else None
    if config and config != "frames112":
        if options and options["num_frames"] != clip_builder.DEFAULT_NUM_FRAMES:
            words += ["--config", clip_builder.config_name(options["frame_size"], options["pose"], options["audio"],
                                                           view=options["view"]),
                      "--num_frames", str(options["num_frames"])]
        else:
            words += ["--config", config]
    return command(*words)


def _data_dir_overrides(data_dir: str) -> list[str]:
    if os.path.normpath(data_dir) == DEFAULT_DATA_DIR:
        return []
    return [f"--config.source.data_dir={data_dir}", f"--config.output.data_dir={data_dir}"]


def extract_command(setup: str, data_dir: str, dataset: str = "dfew", source: str | None = None) -> str:
    """The commands that make cached features `<dataset>_features/<setup>` in `data_dir` (as extract names them).

    source: the clip build the face generators read (default: the setup's default, frames112).
    """
    for suffix, how in (("_omnivec", "omnivec,run=<pretraining_workdir>"), ("_external", "npy,path=<npy_folder>")):
        if setup.endswith(suffix) and len(setup) > len(suffix):
            base = setup[: -len(suffix)]
            variant = f"{how},features={base}" + ("" if dataset == "dfew" else f",dataset={dataset}")
            return (f"{extract_command(base, data_dir, dataset, source)}, then "
                    + command("python", "-m", "fer_jax.extract", "--config", f"configs/extract.py:{variant}",
                              *_data_dir_overrides(data_dir)))
    names, rest = [], setup
    while rest:  # frame and audio generators: their names joined by '_'
        match = next((g for g in sorted(generators.names(), key=len, reverse=True)
                      if rest == g or rest.startswith(g + "_")), None)
        if match is None:
            return (f"no extraction setup makes {setup!r} by that name; see python -m fer_jax.extract --help "
                    f"and the folders in {os.path.join(data_dir, dataset + '_features')}")
        names.append(match)
        rest = rest[len(match) + 1:]
    variant = "+".join(names)
    if dataset != "dfew":
        variant += f",dataset={dataset}"
    if source:
        variant += f",source={source}"
    return command("python", "-m", "fer_jax.extract", "--config", f"configs/extract.py:{variant}",
                   *_data_dir_overrides(data_dir))
