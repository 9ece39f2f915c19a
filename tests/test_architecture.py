"""The package's shape: no import cycles, networks never import runs or CLIs, lazy imports only where they say why."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("fer_jax", "tfds_dfew")
# What fer_jax/models/ must never import: training, pretraining, the CLIs, extract, predict and the run layer.
ABOVE_MODELS = ("fer_jax.train", "fer_jax.train_state", "fer_jax.pretrain", "fer_jax.loop", "fer_jax.runs",
                "fer_jax.cli", "fer_jax.evaluate", "fer_jax.cross_validate", "fer_jax.extract", "fer_jax.predict",
                "fer_jax.video", "fer_jax.input_pipeline", "fer_jax.bundle", "fer_jax.inference")
# Optional or heavy libraries that may be imported inside a function, with a comment saying so.
LAZY_OK = ("torch", "torchvision", "keras", "matplotlib", "cv2", "tensorboardX", "open_clip", "transformers",
           "av", "librosa")


def modules() -> dict[str, str]:
    out = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(folder, f)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    out[name.removesuffix(".__init__")] = path
    return out


def resolve(name: str, known) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: str, known) -> list[tuple[str, bool, int]]:
    """[(imported project module, inside a function, line)] of the file at `path`."""
    tree = ast.parse(open(path).read())
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((alias.name, inner, child.lineno))
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                for alias in child.names:  # `from fer_jax import train` imports the module fer_jax.train
                    full = f"{child.module}.{alias.name}"
                    found.append((full if full in known else child.module, inner, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


def graph():
    known = modules()
    edges = {m: set() for m in known}
    for m, path in known.items():
        for name, in_function, _ in imports_of(path, known):
            target = resolve(name, known)
            if target and target != m and not in_function:
                edges[m].add(target)
    return known, edges


def find_cycle(edges):
    state, stack = {}, []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                cycle = dfs(n)
                if cycle:
                    return cycle
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state:
            cycle = dfs(m)
            if cycle:
                return cycle
    return None


def test_no_import_cycles():
    _, edges = graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_models_import_nothing_above_them():
    known = modules()
    bad = []
    for m, path in known.items():
        if not m.startswith("fer_jax.models"):
            continue
        for name, _, line in imports_of(path, known):  # in functions too
            target = resolve(name, known) or name
            if target.startswith(ABOVE_MODELS):
                bad.append(f"{path}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_in_function_imports_are_lazy_heavy_dependencies_with_a_reason():
    known = modules()
    bad = []
    for m, path in known.items():
        lines = open(path).read().splitlines()
        for name, in_function, line in imports_of(path, known):
            if not in_function:
                continue
            if name.split(".")[0] in LAZY_OK and ("lazy" in lines[line - 1] or "lazy" in lines[line - 2]
                                                 or "optional" in lines[line - 1].lower()):
                continue
            bad.append(f"{path}:{line} imports {name} inside a function")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("limit", [500])
def test_no_module_over_500_lines_but_the_synthetic_maker(limit):
    long = [f"{p} ({sum(1 for _ in open(p))} lines)" for m, p in modules().items()
            if sum(1 for _ in open(p)) > limit and not m.startswith("tfds_dfew.synthetic")]
    assert not long, long


def test_the_data_layer_imports_nothing_from_fer_jax():
    """tfds_dfew (readers, builders, descriptions) is the ground floor: fer_jax builds on it, never the reverse."""
    known = modules()
    bad = []
    for m, path in known.items():
        if not m.startswith("tfds_dfew"):
            continue
        for name, _, line in imports_of(path, known):  # in functions too
            if (resolve(name, known) or name).startswith("fer_jax"):
                bad.append(f"{path}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_only_the_predict_command_and_its_floor_import_the_video_modules():
    known = modules()
    bad = []
    for m, path in known.items():
        if m.startswith("fer_jax.video") or m == "fer_jax.predict":
            continue
        for name, _, line in imports_of(path, known):
            if (resolve(name, known) or name).startswith("fer_jax.video"):
                bad.append(f"{path}:{line} imports {name}")
    assert not bad, "\n".join(bad)
