"""Checks of a cached-features dataset against the run that reads it: the right features, made fresh enough.

`check_setup`: every modality's dataset key exists, made by the generator (and the fine-tuned run,
named by its run id) the config expects, with the recorded shape. `check_fresh`: the features were
made from the build of their source that is in the data dir now (a rebuilt source makes them stale).
"""

from __future__ import annotations


from fer_jax import hints, modalities, paths
from fer_jax.errors import FeatureSetupError
from fer_jax.run_record import read_record
from tfds_dfew import description as description_lib
from tfds_dfew import features as features_lib


def sound_hint(key: str) -> str:
    """What to do when a dataset lacks the raw sound (`audio`)."""
    if key not in features_lib.AUDIO_KEYS:
        return ""
    return (" The raw sound comes from an _audio build (e.g. dfew/frames112_audio); features extracted from one "
            "carry it unless extracted with --config.output.keep_sound=False.")


def check_setup(config, builder) -> None:
    """Refuses cached features whose keys, shapes or generators do not match config.modalities."""
    setup = dict(builder.info.metadata.get("setup", {}) or {})
    made = dict(setup.get("generators", {}))
    fields = set(features_lib.per_clip_fields(builder.info.features))
    available = sorted(k for k in builder.info.features.keys() if k not in fields)
    for modality, spec in config.modalities.items():
        if spec.get("inputs"):  # read in parts (OmniVec tokenizer): the parts must exist
            lacking = sorted(set(dict(spec.inputs).values()) - set(available))
            if lacking:
                raise FeatureSetupError(
                    f"modality {modality!r} reads features {lacking}, but {config.dataset.name} holds "
                    f"{available}. Fix config.modalities.{modality}.inputs, or extract them.")
            continue
        key = spec.input
        needed = modalities.spec_for(spec).keys(key)
        if needed and not any(k in available for k in needed):
            raise FeatureSetupError(
                f"modality {modality!r} reads feature {key!r}, but {config.dataset.name} holds {available}. "
                f"Set config.modalities.{modality}.input to one of them, or extract {key!r}." + sound_hint(key))
        expected = spec.get("generator", "")
        actual = made.get(key, {}).get("generator")
        if expected and actual != expected:
            raise FeatureSetupError(
                f"{config.dataset.name}: feature {key!r} was made by generator {actual!r}, but "
                f"config.modalities.{modality}.generator is {expected!r}. Re-extract with "
                f"configs/extract.py:{expected}, or fix the config.")
        want_ckpt = spec.get("checkpoint", "")
        got = str(made.get(key, {}).get("weights", ""))
        if want_ckpt and not same_run(want_ckpt, got, made.get(key, {})):
            raise FeatureSetupError(
                f"{config.dataset.name}: feature {key!r} was made with weights {got!r}, but the config "
                f"expects the fine-tuned generator of {want_ckpt!r}. Re-extract with "
                f"--config.generators.{key}.checkpoint={want_ckpt}.")
        if key not in builder.info.features:  # a modality that reads nothing from the dataset (a plug-in's)
            continue
        shape = builder.info.features[key].shape
        dim = made.get(key, {}).get("feature_dim")
        if dim is not None and shape[-1] != dim:
            raise FeatureSetupError(f"{config.dataset.name}: feature {key!r} has shape {shape}, its setup says "
                                    f"{dim} features per frame; the dataset is damaged, re-extract it.")


def same_run(workdir: str, weights: str, made: dict) -> bool:
    """Whether features recorded as made by a run's generator (`weights`, with its run id) come from `workdir`:
    the same run id (the run folder may have moved since), else (features made before ids) the same path."""
    record = read_record(workdir)
    if record is not None and made.get("run_id"):
        return record.id == made["run_id"]
    return weights == f"checkpoint:{paths.resolve(workdir)}"


def check_fresh(config, builder, open_source) -> None:
    """Refuses cached features made from an older build of their source, when that source is in data_dir.

    The features record the build they were made from (`source_build`: the build's fingerprint and
    the clip ids of every split); a source rebuilt since (other clips, another release) makes them stale.
    open_source(name): the built source dataset of that name in the run's data_dir, or None.
    """
    recorded = dict(builder.info.metadata.get("source_build", {}) or {})
    source_name = recorded.get("dataset")
    if not source_name:
        return
    source = open_source(source_name)
    if source is None:
        return
    now = features_lib.source_build(source)
    if now.get("fingerprint") and now != recorded:
        raise FeatureSetupError(
            f"{config.dataset.name} in {config.dataset.data_dir} was extracted from an older build of {source_name} "
            f"(it has been rebuilt since: {_what_changed(recorded, now)}). Extract the features again: "
            f"{hints.extract_command(features_lib.parse_name(str(config.dataset.name))[1], config.dataset.data_dir, description_lib.base_name(source_name))}"
            " (it notices the rebuild and replaces them).")


def _what_changed(old: dict, new: dict) -> str:
    splits = sorted(set(old.get("splits", {})) | set(new.get("splits", {})))
    changed = [f"{s} {old.get('splits', {}).get(s, {}).get('clips', 0)} -> {new.get('splits', {}).get(s, {}).get('clips', 0)} "
               "clips" for s in splits if old.get("splits", {}).get(s) != new.get("splits", {}).get(s)]
    return ", ".join(changed) or "another build of the same clips"
