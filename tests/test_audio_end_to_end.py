"""Sound end to end on a small synthetic release: build `_audio`, extract audio features, train every fusion
mode with face+audio, cross-validate audio subsets, pretrain OmniVec with audio, and predict on the clips'
own mp4 files with the evaluation pipeline's probabilities (to 1e-5)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from flax import nnx

from fer_jax import cross_validate, input_pipeline, predict, runs, train
from tests.helpers import ROOT, features_config

sys.path.insert(0, ROOT)
from configs import fusion  # noqa: E402

NUM_CLIPS = 40
FEATURES = "mini_xception_fer_logmel"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from tfds_dfew import synthetic

    root = tmp_path_factory.mktemp("audio_release") / "DFEW"
    synthetic.generate(root, NUM_CLIPS, seed=5, frame_size=64, max_frames=24, missing_frac=0.0, workers=1,
                       no_audio_frac=0.15)
    return str(root)


@pytest.fixture(scope="module")
def built(release, tmp_path_factory):
    """dfew/frames64_pose_audio and dfew_features/mini_xception_fer_logmel in one data_dir."""
    from configs import extract as extract_configs
    from fer_jax import extract
    from tfds_dfew import build

    data_dir = str(tmp_path_factory.mktemp("audio_tfds"))
    builder = build.build(release, data_dir, config="frames64_pose_audio", num_workers=2)
    config = extract_configs.get_config("mini_xception_fer+logmel,source=frames64_pose_audio")
    config.source.data_dir = config.output.data_dir = data_dir
    config.batch_size = 8
    extract.extract(config)
    return data_dir, builder


def _config(data_dir, variant, dataset=FEATURES, **overrides):
    """configs/fusion.py:<variant>, tiny, on dfew_features/<dataset> (the raw sound travels in every features set)."""
    full = fusion.get_config(variant)
    config = features_config(data_dir, num_train_steps=2, checkpoint_every=2, **overrides)
    config.dataset.name, config.modalities = f"dfew_features/{dataset}", full.modalities
    config.data.audio_seconds = 1.0  # the synthetic clips last under a second
    if "audio" in config.modalities and config.modalities.audio.tokenizer == "audio_conv":
        config.modalities.audio.channels = (16, 24, 32)  # a small conv stack: the test checks wiring, not accuracy
    return config


def _records(data_dir, name, split="fold1"):
    import tensorflow_datasets as tfds
    from tfds_dfew import features as features_lib

    builder = (features_lib.open_builder(data_dir, name.split("/", 1)[1]) if name.startswith("dfew_features/")
               else tfds.builder(name, data_dir=data_dir))
    source = builder.as_data_source(split=split)
    return {str(np.asarray(source[i]["clip_id"]).item().decode() if isinstance(source[i]["clip_id"], bytes)
                else source[i]["clip_id"]): source[i] for i in range(len(source))}


def test_extracted_audio_features_carry_the_sound_and_its_mask(built):
    data_dir, builder = built
    frames = _records(data_dir, "dfew/frames64_pose_audio")
    feats = _records(data_dir, f"dfew_features/{FEATURES}")
    assert sorted(frames) == sorted(feats)
    silent = set(builder.info.metadata["clips_without_audio"])
    assert silent and len(silent) < len(frames)  # the release has clips without sound
    from fer_jax.models import audio

    for clip_id, r in feats.items():
        np.testing.assert_array_equal(r["audio"], frames[clip_id]["audio"])
        has_sound = int(r["audio_length"]) >= 400
        assert has_sound == (clip_id not in silent)
        assert r["audio_mask"].shape == (16,) and bool(r["audio_mask"].all()) == has_sound
        assert r["audio_logmel"].shape == (16, 64) and np.isfinite(r["audio_logmel"]).all()
    # the cached features equal the generator on one clip alone (no batch padding)
    clip_id = next(c for c in sorted(feats) if c not in silent)
    r = feats[clip_id]
    n = int(r["audio_length"])
    want, mask = audio.LogMelGenerator()(np.asarray(r["audio"], np.float32)[None, :n] / 32768.0, np.array([n]))
    np.testing.assert_allclose(r["audio_logmel"], np.asarray(want)[0], atol=1e-5)


@pytest.mark.parametrize("fusion_mode", ["concat", "early", "bottleneck", "late"])
def test_face_audio_and_face_pose_audio_train_and_evaluate_in_every_fusion_mode(built, fusion_mode, tmp_path):
    data_dir, _ = built
    for variant in ("face+audio", "face+pose+audio,audio=logmel"):
        config = _config(data_dir, variant)
        config.model.fusion = fusion_mode
        config.model.modality_dropout = 0.3
        result = train.train_and_evaluate(config, str(tmp_path / variant.split(",")[0]))
        assert result["step"] == 2 and 0.0 <= result["uar"] <= 1.0, result


def test_cross_validate_ablation_with_audio_subsets(built, tmp_path):
    data_dir, _ = built
    config = _config(data_dir, "face+pose+audio")
    setups = cross_validate.ablation_setups(config, ["face", "face+audio", "face+pose+audio"], ["concat"])
    assert list(setups) == ["face/concat", "face+audio/concat", "face+pose+audio/concat"]
    for name, c in setups.items():
        summary = cross_validate.run_folds(c, str(tmp_path / name.replace("/", "_")), [1])
        assert 0.0 <= summary["uar_mean"] <= 1.0


def test_omnivec_pretrains_with_audio_and_its_features_carry_the_sound(built, tmp_path):
    from configs import extract as extract_configs
    from configs import omnivec as omnivec_configs
    from fer_jax import extract, pretrain

    data_dir, _ = built
    c = omnivec_configs.get_config("face+pose+audio")
    c.dataset.data_dir = data_dir
    c.batch_size, c.num_train_steps, c.checkpoint_every, c.log_every, c.progress_bar = 8, 3, 3, 1, False
    c.model.width, c.model.depth, c.model.mlp_dim = 32, 1, 64
    pretrain.pretrain(c, str(tmp_path / "omnivec"))
    # fine-tuned inside the fusion model, on its own three inputs (the sound's per-slice log-mel among them)
    tuned = _config(data_dir, f"face+omnivec,omnivec_run={tmp_path / 'omnivec'}")
    assert dict(tuned.modalities.omnivec.inputs) == {"face": "face_mini_xception_fer", "pose": "pose",
                                                     "audio": "audio_logmel"}
    assert train.train_and_evaluate(tuned, str(tmp_path / "tuned"))["step"] == 2
    e = extract_configs.get_config(f"omnivec,run={tmp_path / 'omnivec'},features={FEATURES}")
    e.source.data_dir, e.output.data_dir = data_dir, str(tmp_path / "out")
    e.batch_size = 8
    extract.extract(e)
    records = _records(str(tmp_path / "out"), f"dfew_features/{FEATURES}_omnivec")
    first = next(iter(records.values()))
    assert first["omnivec"].shape == (16, 32) and "audio" in first and "audio_mask" in first
    config = _config(str(tmp_path / "out"), "face+pose+omnivec+audio", dataset=f"{FEATURES}_omnivec")
    result = train.train_and_evaluate(config, str(tmp_path / "fpoa"))
    assert result["step"] == 2


def _evaluation_probabilities(workdir, config, record):
    example = input_pipeline.Preprocessor(config, train=False)(record)
    batch = {k: np.asarray(v)[None] for k, v in example.items() if k not in ("label", "mask")}
    inputs, masks = input_pipeline.model_inputs(batch, tuple(config.modalities))
    run = runs.restore(workdir)
    logits = np.asarray(nnx.merge(run.graphdef, run.params, run.model_state)(inputs, masks), np.float64)[0]
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


@pytest.mark.parametrize("audio", ["conv", "logmel"])
def test_predict_on_a_clips_mp4_reproduces_the_evaluation_pipeline(built, release, audio, tmp_path):
    from tfds_dfew import release as release_lib

    data_dir, builder = built
    config = _config(data_dir, f"audio,audio={audio}")
    run = str(tmp_path / "run")
    train.train_and_evaluate(config, run)
    records = _records(data_dir, config.dataset.name)
    silent = set(builder.info.metadata["clips_without_audio"])
    sounding = next(c for c in sorted(records) if c not in silent)
    quiet = next((c for c in sorted(records) if c in silent), None)
    for clip_id in [sounding] + ([quiet] if quiet else []):
        video = os.path.join(release, "Clip", "original", f"{clip_id}.mp4")
        got = predict.predict_video(video, workdir=run, aligned=True, window=64, batch=2)
        assert len(got["windows"]) == 1 and got["model"]["audio"]
        probs = [got["windows"][0]["probabilities"][c] for c in release_lib.CLASS_NAMES]
        np.testing.assert_allclose(probs, _evaluation_probabilities(run, config, records[clip_id]), atol=1e-5,
                                   err_msg=clip_id)
        assert any(n.startswith("audio masked") for n in got["notes"]) == (clip_id in silent)


def test_extract_a_speech_encoders_middle_layer_and_predict_rebuilds_it(built, tmp_path, monkeypatch):
    """layer=1 of a (tiny, random) wav2vec 2.0: cached features = that layer pooled; the metadata keeps the layer.
    keep_sound=False leaves the raw sound out of a features dataset, and the conv tokenizer then says why."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from configs import extract as extract_configs
    from fer_jax import extract
    from fer_jax.video import predictors
    from fer_jax.errors import ConfigError
    from fer_jax.models import audio, audio_generators, generators, wav2vec2
    from tests.test_audio_models import TINY, TINY_CFG

    torch.manual_seed(0)
    folder = tmp_path / "tiny-wav2vec2"
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY)).eval().save_pretrained(folder)

    def tiny_wav2vec2(*, rngs, dtype=None):
        return wav2vec2.Wav2Vec2Encoder(TINY_CFG, dtype=dtype, rngs=rngs)

    monkeypatch.setitem(generators.GENERATORS, "tiny_wav2vec2",
                        audio_generators.speech_generator(tiny_wav2vec2, TINY_CFG, ""))
    data_dir, builder = built
    config = extract_configs.get_config("tiny_wav2vec2,source=frames64_pose_audio,layer=1")
    assert config.output.name == "tiny_wav2vec2_layer1"
    config.source.data_dir, config.output.data_dir = data_dir, str(tmp_path / "out")
    config.generators.audio_tiny_wav2vec2.weights = str(folder)
    config.batch_size = 8
    config.output.keep_sound = False  # (the raw sound travels along by default: the first test of this file)
    extract.extract(config)
    records = _records(str(tmp_path / "out"), "dfew_features/tiny_wav2vec2_layer1")
    silent = set(builder.info.metadata["clips_without_audio"])
    clip_id = next(c for c in sorted(records) if c not in silent)
    r, sound = records[clip_id], _records(data_dir, "dfew/frames64_pose_audio")[clip_id]
    n = int(sound["audio_length"])
    wave = np.asarray(sound["audio"], np.float32)[None, :n] / 32768.0
    model = generators.create("tiny_wav2vec2", weights=str(folder))[0].network
    normed = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    layer1 = nnx.jit(lambda m, x: m.hidden_states(x, up_to=1)[1])(model, normed)
    top = nnx.jit(lambda m, x: m(x))(model, normed)
    np.testing.assert_allclose(r["audio_tiny_wav2vec2"], np.asarray(audio.pool_to_slices(layer1))[0], atol=1e-4)
    assert not np.allclose(r["audio_tiny_wav2vec2"], np.asarray(audio.pool_to_slices(top))[0], atol=1e-3)
    from tfds_dfew import features as features_lib

    setup = features_lib.open_builder(str(tmp_path / "out"), "tiny_wav2vec2_layer1").info.metadata["setup"]
    assert setup["generators"]["audio_tiny_wav2vec2"]["layer"] == 1
    runner, raw, _ = predictors._runner_for(str(tmp_path), setup, {"audio_tiny_wav2vec2"}, batch=2, num_frames=16)
    assert runner.audio["audio_tiny_wav2vec2"].layer == 1 and raw == {"audio"}
    with pytest.raises(ConfigError, match="takes only num_slices, not layer"):
        generators.create("logmel", layer=3)
    assert "audio" not in r and "audio_length" not in r and r["audio_mask"].shape == (16,)
    config = _config(str(tmp_path / "out"), "audio", dataset="tiny_wav2vec2_layer1")  # the conv tokenizer: raw sound
    with pytest.raises(ConfigError, match="keep_sound=False"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
