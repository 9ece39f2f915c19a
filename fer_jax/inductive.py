"""Whether a run's test split stayed out of what its OmniVec was pretrained on.

Pretraining reads no label, but it reads inputs: a pretraining run over every split (exclude_fold=0,
configs/omnivec.py's `transductive`) has seen the test clips' frames and keypoints, which a run tested
on them must not rely on unless asked to. A classifier run finds its pretraining runs in two places:
the features it trains on (an `omnivec` feature of the features setup: extract records the run and its
`exclude_fold`) and its own `omnivec` tokenizers (`config.modalities.<m>.checkpoint`). Each must have
left out the run's test fold. Otherwise the run is refused, unless `config.allow_transductive=True`:
then it trains, and its result, eval JSON and cross-validation table name it as transductive.
"""

from __future__ import annotations

import json

from fer_jax import paths
from fer_jax.errors import ConfigError
from fer_jax.workdir import CONFIG_FILE


def _excluded_by(run_dir: str) -> int | None:
    """The fold a pretraining run left out (0 = none), or None when its config is not there."""
    path = paths.join(run_dir, CONFIG_FILE)
    if not paths.exists(path):
        return None
    return int(json.loads(paths.read_text(path)).get("pretrain", {}).get("exclude_fold", 0) or 0)


def pretraining_runs(config, setup: dict | None) -> list[dict]:
    """[{'what', 'run', 'exclude_fold'}] of every pretraining run behind the config's inputs."""
    found = []
    for key, made in dict((setup or {}).get("generators", {}) or {}).items():
        if dict(made).get("generator") != "omnivec" or key not in _inputs(config):
            continue
        run = str(made.get("weights", "")).split(":", 1)[-1]
        excluded = made.get("exclude_fold")
        if excluded is None:  # features extracted before extract recorded it: ask the run itself
            excluded = _excluded_by(run)
        found.append({"what": f"feature {key}", "run": run, "exclude_fold": None if excluded is None else
                      int(excluded)})
    for name, spec in config.modalities.items():
        if spec.get("tokenizer") == "omnivec" and spec.get("checkpoint"):
            found.append({"what": f"modality {name} (omnivec tokenizer)", "run": paths.resolve(spec.checkpoint),
                          "exclude_fold": _excluded_by(spec.checkpoint)})
    return found


def _inputs(config) -> set[str]:
    keys = set()
    for spec in config.modalities.values():
        keys.add(str(spec.get("input", "")))
        keys.update(str(v) for v in dict(spec.get("inputs", {}) or {}).values())
    return keys


def describe(config, setup: dict | None) -> str | None:
    """None for an inductive run, else a sentence naming what saw the test fold ('transductive: ...')."""
    fold = int(config.dataset.get("fold", 0) or 0)
    seen = [r for r in pretraining_runs(config, setup) if r["exclude_fold"] != fold]
    if not seen:
        return None
    first = seen[0]
    said = ("which records no excluded fold (a pretraining run that is gone, made before runs recorded it)"
            if first["exclude_fold"] is None else f"pretrained with exclude_fold={first['exclude_fold']}")
    return (f"transductive: the OmniVec of {first['what']} ({first['run']}, {said}) saw the inputs of test fold "
            f"{fold}" + (f" (and {len(seen) - 1} more)" if len(seen) > 1 else ""))


def check(config, setup: dict | None) -> str | None:
    """None for an inductive run; `describe`'s sentence when config.allow_transductive allows a transductive
    one. Raises ConfigError otherwise."""
    text = describe(config, setup)
    if text is None or bool(config.get("allow_transductive", False)):
        return text
    fold = int(config.dataset.get("fold", 0) or 0)
    raise ConfigError(f"{text}. Pretrain it without that fold (configs/omnivec.py:...,exclude_fold={fold}) and "
                      "extract its features again, or set --config.allow_transductive=True to train anyway (the "
                      "results then say transductive).")
