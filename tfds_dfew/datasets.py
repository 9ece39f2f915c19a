"""The datasets fer_jax knows, by name: their builders, their descriptions, and opening what is built.

    datasets.names()                          # ['dfew', 'ferv39k', 'mafw', ...plug-ins]
    datasets.builder_class('mafw')            # the TFDS builder class (imported on first use)
    datasets.open_built(data_dir, 'mafw/frames112')   # a built dataset, read from its folder
    datasets.description_of(builder)          # its DatasetDescription (tfds_dfew.description)

Built-in builders live in this package and are imported only when asked for. A plug-in dataset is
a module that defines a `ClipBuilder` subclass decorated with `@datasets.register_builder`; it is
found when its module is named in the environment variable FER_JAX_PLUGINS (comma-separated module
names, see `tfds_dfew.plugins`), so a new dataset edits no module here.

Reading a built dataset goes through `tfds.builder_from_directory` on its newest version folder:
no builder code is needed to read it (a plug-in's data reads without the plug-in), and a build of
any config (e.g. `frames112_t32`) opens by name.
"""

from __future__ import annotations

import importlib
import os

import tensorflow_datasets as tfds

from tfds_dfew import description as description_lib, plugins

_BUILTIN = {"dfew": "tfds_dfew.dfew", "mafw": "tfds_dfew.mafw", "ferv39k": "tfds_dfew.ferv39k"}
_BUILDERS: dict[str, type] = {}


def register_builder(cls):
    """Class decorator: registers a ClipBuilder subclass (and its description) under its TFDS name."""
    _BUILDERS[cls.name] = cls
    description_lib.register(cls.DESCRIPTION)
    return cls


def names() -> list[str]:
    """Every dataset by name: the built-in ones and the plug-ins' (FER_JAX_PLUGINS)."""
    plugins.load()
    return sorted(set(_BUILTIN) | set(_BUILDERS))


def builder_class(name: str):
    """The builder class of dataset `name`; KeyError naming the known ones when there is none."""
    plugins.load()
    if name not in _BUILDERS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _BUILDERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(names())} (a plug-in dataset's module must be "
                       "named in FER_JAX_PLUGINS)")
    return _BUILDERS[name]


def description(name: str) -> description_lib.DatasetDescription:
    """The registered description of dataset `name` (its builder's DESCRIPTION)."""
    return builder_class(description_lib.base_name(name)).DESCRIPTION


def version_dir(data_dir: str, name: str) -> str | None:
    """The newest complete version folder of `<name>` ('dfew/frames112', 'mafw_features/x') under data_dir."""
    base = os.path.join(os.path.expanduser(os.fspath(data_dir)), *name.split(":", 1)[0].split("/"))
    if not os.path.isdir(base):
        return None
    wanted = name.split(":", 1)[1] if ":" in name else None
    versions = [v for v in os.listdir(base) if os.path.exists(os.path.join(base, v, "dataset_info.json"))
                and (wanted is None or v == wanted)]
    if not versions:
        return None
    newest = max(versions, key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))
    return os.path.join(base, newest)


def open_built(data_dir: str, name: str):
    """A read-only builder of the built dataset `name` under data_dir, or None when it is not built."""
    path = version_dir(data_dir, name)
    return tfds.builder_from_directory(path) if path else None


def description_of(builder) -> description_lib.DatasetDescription:
    """A built dataset's description: the one stored in its metadata, or (a build made before
    descriptions were stored) its dataset's registered one with the build's own frame count.
    """
    info = builder.info
    stored = (info.metadata or {}).get("dataset") if info.metadata is not None else None
    if stored:
        return description_lib.DatasetDescription.from_json(stored)
    found = description(info.name)
    frames = info.features["frames"] if "frames" in info.features else None
    count = getattr(frames, "shape", None)
    count = int(count[0]) if count and count[0] else found.num_frames
    modalities = tuple(m for m, key in (("pose", "keypoints"), ("pose", "pose"), ("audio", "audio"))
                       if key in info.features)
    return found.replace(num_frames=count, modalities=tuple(dict.fromkeys(modalities)))
