"""A run's record (`<workdir>/run.json`): its id, the dataset it trained on, what made its inputs.

Written by `fer_jax.runs.write_record` when a run starts; read by everything that uses a run without
its dataset (evaluate's class names, predict, a features check that names a fine-tuned run by id).
"""

from __future__ import annotations

import dataclasses
import json

from fer_jax import paths
from tfds_dfew import description as description_lib

RECORD_FILE = "run.json"


@dataclasses.dataclass
class RunRecord:
    """What a run needs to be used without its dataset: written when it starts, read by evaluate and predict.

    id: a random id that stays with the run folder when it moves (features made by a fine-tuned
    generator name the run by it). dataset: the description of the dataset it trained on (class
    names, split scheme, frames per clip). dataset_name: config.dataset.name. setup: the features
    dataset's setup (which generators, with which weights, made each input), {} for a run on clips.
    source_build: the fingerprint of the clip build its inputs come from. plugins: the plug-in
    modules it was trained with (FER_JAX_PLUGINS).
    """

    id: str
    dataset: dict
    dataset_name: str
    setup: dict = dataclasses.field(default_factory=dict)
    source_build: dict = dataclasses.field(default_factory=dict)
    plugins: list = dataclasses.field(default_factory=list)
    created: float = 0.0

    @property
    def description(self) -> description_lib.DatasetDescription:
        return description_lib.DatasetDescription.from_json(self.dataset)


def read_record(workdir: str) -> RunRecord | None:
    """The run's record, or None for a run made before runs wrote one."""
    path = paths.join(workdir, RECORD_FILE)
    if not paths.exists(path):
        return None
    raw = json.loads(paths.read_text(path))
    known = {f.name for f in dataclasses.fields(RunRecord)}
    return RunRecord(**{k: v for k, v in raw.items() if k in known})
