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

import contextlib
import importlib
import importlib.util
import os
import shutil
import tempfile

import tensorflow_datasets as tfds
from etils import epath

from tfds_dfew import description as description_lib, plugins
from tfds_dfew.errors import UserError

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


def data_path(data_dir) -> epath.Path:
    """A data_dir as TFDS's path type: a local folder (`~` expanded) or an object-store URL (gs://...)."""
    text = os.fspath(data_dir)
    if text.startswith("gs://") and importlib.util.find_spec("gcsfs") is None:
        raise UserError(f"{text}: gs:// data dirs need the gcsfs package (pip install -e '.[gcs]').")
    return epath.Path(text if "://" in text else os.path.expanduser(text))


def version_dir(data_dir: str, name: str) -> str | None:
    """The newest complete version folder of `<name>` ('dfew/frames112', 'mafw_features/x') under data_dir
    (local or gs://; a version is complete once its dataset_info.json is written, which a build does last)."""
    base = data_path(data_dir).joinpath(*name.split(":", 1)[0].split("/"))
    if not base.is_dir():
        return None
    wanted = name.split(":", 1)[1] if ":" in name else None
    versions = [v.name for v in base.iterdir() if (v / "dataset_info.json").exists()
                and (wanted is None or v.name == wanted)]
    if not versions:
        return None
    newest = max(versions, key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))
    return os.fspath(base / newest)


def is_url(data_dir) -> bool:
    """Whether a data_dir is an object-store URL (gs://...), which array_record can read but not write."""
    return "://" in os.fspath(data_dir) and not os.fspath(data_dir).startswith("file://")


STAGING_ENV = "FER_JAX_STAGING_DIR"  # where datasets bound for an object store are written first (default: temp)


@contextlib.contextmanager
def staged(data_dir):
    """The folder a build of a dataset into `data_dir` writes to.

    A local data_dir: itself. An object-store URL (array_record writes only local files): a fresh local
    folder (under $FER_JAX_STAGING_DIR, else the system's temporary folder); when the block ends without
    an error, every version folder built there is uploaded to the same place under data_dir, its
    dataset_info.json last (what marks it complete, `version_dir`), replacing one there before; the
    staging folder is deleted either way, so a failed build leaves nothing in the bucket.
    """
    if not is_url(data_dir):
        yield os.path.expanduser(os.fspath(data_dir))
        return
    root = os.environ.get(STAGING_ENV) or None
    if root:
        os.makedirs(root, exist_ok=True)
    local = tempfile.mkdtemp(prefix="fer_jax-staging-", dir=root)
    try:
        yield local
        for folder, _, files in sorted(os.walk(local)):
            if "dataset_info.json" in files:
                upload_version(folder, data_path(data_dir).joinpath(*os.path.relpath(folder, local).split(os.sep)))
    finally:
        shutil.rmtree(local, ignore_errors=True)


def upload_version(local: str, target: epath.Path) -> None:
    """Copies a built version folder to `target` (any epath location), dataset_info.json last; a version
    already at `target` is marked incomplete first (its dataset_info.json deleted), then replaced."""
    if (target / "dataset_info.json").exists():
        (target / "dataset_info.json").unlink()
    if target.exists():
        target.rmtree()
    names = sorted(os.path.relpath(os.path.join(d, f), local) for d, _, fs in os.walk(local) for f in fs)
    for rel in sorted(names, key=lambda r: r == "dataset_info.json"):
        dst = target.joinpath(*rel.split(os.sep))
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(os.path.join(local, rel), "rb") as fin, dst.open("wb") as fout:
            shutil.copyfileobj(fin, fout, length=8 << 20)


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
