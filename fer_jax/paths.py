"""The one path layer: every path a user gives (a local folder or an object-store URL such as
`gs://bucket/run`) is read and written through these functions, over `etils.epath` (TFDS's own
path library; gs:// goes through gcsfs, installed by the `gcs` extra).

Paths go in and come out as strings. Local paths behave as before: `~` expanded, files written to a
temporary name and renamed (a reader never sees half a file). On an object store a write is
already whole (an object appears complete or not at all), so it is written directly; there is no
append (a log is rewritten whole) and no rename (a move copies, then deletes).

    paths.is_url("gs://b/run")          # True
    paths.join("gs://b/run", "eval")    # 'gs://b/run/eval'
    paths.write_text(paths.join(workdir, "config.json"), text)
    with paths.local_file("gs://b/v/talk.mp4") as local:   # a local copy for readers that need a file
        ...

Datasets bound for a bucket are staged by the data layer (`tfds_dfew.datasets.staged`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import posixpath
import re
import shutil
import tempfile
import uuid

from etils import epath
from etils.epath import backend

from fer_jax.errors import ConfigError

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(path) -> bool:
    """Whether `path` names an object-store location (gs://, s3://, ...) rather than a local one."""
    text = os.fspath(path)
    return bool(_SCHEME.match(text)) and not text.startswith("file://")


def expand(path) -> str:
    """A user's path as a string: `~` expanded for a local path (kept relative), a URL unchanged."""
    text = os.fspath(path)
    if is_url(text):
        return text.rstrip("/") if not text.endswith("://") else text
    return os.path.expanduser(text[7:] if text.startswith("file://") else text)


def resolve(path) -> str:
    """An absolute form of a user's path (what names a run or a file in records): abspath locally, the URL as is."""
    text = expand(path)
    return text if is_url(text) else os.path.abspath(text)


_CLIENTS = {"gs": "gcsfs", "s3": "s3fs"}  # the fsspec client each object store needs


def as_path(path) -> epath.Path:
    text = expand(path)
    if is_url(text):
        scheme = text.split("://", 1)[0]
        client = _CLIENTS.get(scheme)
        if client and importlib.util.find_spec(client) is None:
            extra = " (pip install -e '.[gcs]')" if scheme == "gs" else ""
            raise ConfigError(f"{text}: {scheme}:// paths need the {client} package{extra}.")
    return epath.Path(text)


def _fresh(path) -> epath.Path:
    """`path` for a question about what exists now. gcsfs caches folder listings per process, and other
    writers (Orbax's TensorStore, other hosts) do not go through it: a URL's cached listing is dropped first."""
    p = as_path(path)
    if is_url(path):
        try:
            backend.fsspec_backend.fs(os.fspath(p)).invalidate_cache()
        except (ImportError, AttributeError, ValueError):  # another backend (TensorFlow's gfile) keeps no cache
            pass
    return p


def join(path, *parts: str) -> str:
    text = expand(path)
    if is_url(text):
        return posixpath.join(text, *parts)
    return os.path.join(text, *parts)


def basename(path) -> str:
    text = expand(path).rstrip("/")
    return posixpath.basename(text) if is_url(text) else os.path.basename(os.path.normpath(text))


def dirname(path) -> str:
    text = expand(path).rstrip("/")
    return posixpath.dirname(text) if is_url(text) else os.path.dirname(text)


def exists(path) -> bool:
    return _fresh(path).exists()


def isdir(path) -> bool:
    return _fresh(path).is_dir()


def isfile(path) -> bool:
    return _fresh(path).is_file()


def listdir(path) -> list[str]:
    """The names in a folder, sorted ([] when it does not exist)."""
    p = _fresh(path)
    if not p.is_dir():
        return []
    return sorted(child.name for child in p.iterdir())


def makedirs(path) -> None:
    """Makes a folder and its parents (object stores have no folders: nothing to do there)."""
    if not is_url(path):
        os.makedirs(expand(path), exist_ok=True)


def mtime(path) -> float:
    return float(as_path(path).stat().mtime)


def read_text(path) -> str:
    return as_path(path).read_text()


def read_bytes(path) -> bytes:
    return as_path(path).read_bytes()


def write_bytes(path, data: bytes) -> None:
    """Writes a whole file: atomically (temporary name, then rename) on local disk, as one object on a store."""
    text = expand(path)
    if is_url(text):
        epath.Path(text).write_bytes(data)
        return
    folder = os.path.dirname(text)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = f"{text}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, text)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def remove(path) -> None:
    """Deletes a file, or a folder with everything in it (no error when it is not there)."""
    p = as_path(path)
    if p.is_dir():
        p.rmtree()
    elif p.exists():
        p.unlink()


def files_under(path) -> list[str]:
    """Every file below folder `path`, as paths relative to it with '/' separators, sorted."""
    root = _fresh(path)
    start = os.fspath(root).split("://", 1)[-1].rstrip("/")  # gcsfs walks without the scheme
    out = []
    for folder, _, names in root.walk():
        rel = os.fspath(folder).split("://", 1)[-1][len(start):].strip("/")
        out += [f"{rel}/{n}" if rel else n for n in names]
    return sorted(out)


def copy_file(src, dst) -> None:
    """Copies one file between any two locations (local or object store), streamed."""
    if not is_url(dst):
        makedirs(dirname(dst))
    with as_path(src).open("rb") as fin, as_path(dst).open("wb") as fout:
        shutil.copyfileobj(fin, fout, length=8 << 20)


def copy_tree(src, dst) -> None:
    """Copies every file below folder `src` to the same place below `dst`."""
    for rel in files_under(src):
        copy_file(join(src, *rel.split("/")), join(dst, *rel.split("/")))


def move(src, dst) -> None:
    """Renames locally; on an object store (no rename) copies every file, then deletes the source."""
    if not is_url(src) and not is_url(dst):
        os.replace(expand(src), expand(dst))
        return
    if isdir(src):
        copy_tree(src, dst)
    else:
        copy_file(src, dst)
    remove(src)


@contextlib.contextmanager
def local_file(path):
    """A local file holding `path`'s bytes, for readers that need a file on disk (video decoders): a URL is
    downloaded, under its own name, into a temporary folder deleted afterwards."""
    if not is_url(path):
        yield expand(path)
        return
    folder = tempfile.mkdtemp(prefix="fer_jax-download-")
    try:
        local = os.path.join(folder, basename(path))
        copy_file(path, local)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)
