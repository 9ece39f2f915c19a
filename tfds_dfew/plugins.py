"""Plug-ins: modules named in the environment variable FER_JAX_PLUGINS, imported once, before any registry is read.

    FER_JAX_PLUGINS=examples.toy_dataset,examples.pixel_mean python -m fer_jax.train ...

A plug-in module registers what it adds as it is imported (a dataset builder with
`tfds_dfew.datasets.register_builder`, a generator with `fer_jax.models.generators.register`, a
modality with `fer_jax.modalities.register`), so adding one edits no module of the package. The
current folder is on the import path, so a module of your own project is found by its dotted name.
A run records the plug-ins it was trained with; `predict` and `evaluate` import them again.
"""

from __future__ import annotations

import importlib
import os
import sys

from tfds_dfew.errors import UserError

ENV = "FER_JAX_PLUGINS"
_loaded: set[str] = set()


def requested() -> list[str]:
    """The module names FER_JAX_PLUGINS lists, in order."""
    return [m.strip() for m in os.environ.get(ENV, "").split(",") if m.strip()]


def load(extra=()) -> list[str]:
    """Imports the plug-in modules of FER_JAX_PLUGINS (and `extra`) not imported yet; returns all loaded."""
    for name in [*requested(), *extra]:
        if name in _loaded:
            continue
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UserError(f"{ENV}: plug-in module {name!r} cannot be imported ({e}); give its dotted name as "
                            "Python imports it from the current folder, e.g. examples.toy_dataset.") from None
        _loaded.add(name)
    return sorted(_loaded)


def loaded() -> list[str]:
    return sorted(_loaded)
