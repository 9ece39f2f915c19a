"""Sound as a modality, without a dataset: fitting tracks to a fixed size, masks in every fusion mode,
the Preprocessor's batch layout, and wav2vec 2.0 base weights by name (a random-weight file in the
publisher's format, pinned in a temporary cache)."""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest

from fer_jax import input_pipeline
from fer_jax.data import audio as audio_lib
from fer_jax.models import generators, registry
from tests.helpers import ROOT

sys.path.insert(0, ROOT)
from configs import fusion  # noqa: E402


def test_fit_pads_short_tracks_and_drops_tiny_ones():
    x = (np.arange(5000) % 200 - 100).astype(np.int16)
    wave, n = audio_lib.fit(x, 4800, 16000)
    assert n == 4800 and wave.shape == (16000,) and wave.dtype == np.float32
    np.testing.assert_array_equal(wave[:4800], x[:4800] / 32768.0)
    assert not wave[4800:].any()
    wave, n = audio_lib.fit(x, 399, 16000)  # under 25 ms: no sound
    assert n == 0 and not wave.any()
    assert not audio_lib.slice_mask(0).any() and audio_lib.slice_mask(4800).all()


def test_fit_keeps_the_centre_of_every_slice_of_a_long_track():
    n, cap = 16 * 1000 + 37, 16 * 100
    x = np.random.default_rng(0).normal(size=n).astype(np.float32)
    wave, length = audio_lib.fit(x, None, cap)
    assert length == cap
    for s in range(16):  # slice s of the output = the 100 samples around the centre of slice s of the track
        lo, hi = s * n // 16, (s + 1) * n // 16
        centre = (lo + hi) // 2
        np.testing.assert_array_equal(wave[s * 100 : (s + 1) * 100], x[centre - 50 : centre + 50])


def test_span_takes_the_samples_under_a_time_window():
    x = np.arange(32000)
    np.testing.assert_array_equal(audio_lib.span(x, 0.5, 1.0), x[8000:16000])
    assert len(audio_lib.span(x, 1.9, 5.0)) == 1600  # the track ends at 2.0 s


def _batch(config, tracks):
    pre = input_pipeline.Preprocessor(config, train=False)
    rng = np.random.default_rng(1)
    examples = [pre({"face_mini_xception_fer": rng.normal(size=(16, 135)).astype(np.float32), "audio": t,
                     "audio_length": len(t), "label": 0}) for t in tracks]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}, examples[0]


@pytest.mark.parametrize("fusion_mode", ["concat", "early", "bottleneck", "late"])
def test_a_clip_without_sound_ignores_its_waveform_in_every_fusion_mode(fusion_mode):
    config = fusion.get_config("face+audio")
    config.num_classes = 7  # the dataset's count, which a run resolves from its metadata
    config.model.fusion = fusion_mode
    config.data.audio_seconds = 1.0
    rng = np.random.default_rng(0)
    loud = (rng.normal(size=12000) * 8000).astype(np.int16)
    batch, example = _batch(config, [loud, np.zeros(0, np.int16)])
    assert batch["audio/waveform"].shape == (2, 16000) and batch["audio/length"].tolist() == [12000, 0]
    assert batch["mask/audio"].tolist() == [[True] * 16, [False] * 16]
    model = registry.build_model(config, input_pipeline.shapes_of(config, example))
    assert model.num_frames == 16
    inputs, masks = input_pipeline.model_inputs(batch, tuple(config.modalities))
    logits = np.asarray(model(inputs, masks))
    # Fill the silent clip's padded waveform with noise: its mask is off, so nothing may change ...
    batch["audio/waveform"][1] = rng.normal(size=16000)
    inputs, masks = input_pipeline.model_inputs(batch, tuple(config.modalities))
    np.testing.assert_allclose(np.asarray(model(inputs, masks)), logits, atol=1e-6)
    # ... while the sounding clip's result does depend on its sound.
    batch["audio/waveform"][0] = rng.normal(size=16000) * 0.3
    inputs, masks = input_pipeline.model_inputs(batch, tuple(config.modalities))
    assert np.abs(np.asarray(model(inputs, masks))[0] - logits[0]).max() > 1e-4


def test_cached_audio_features_are_masked_by_the_datasets_audio_mask():
    config = fusion.get_config("face+audio,audio=wav2vec2_base")
    assert config.dataset.name == "dfew_features/mini_xception_fer_wav2vec2_base"
    assert dict(config.modalities.audio) == {"input": "audio_wav2vec2_base", "tokenizer": "linear",
                                             "generator": "wav2vec2_base", "checkpoint": ""}
    pre = input_pipeline.Preprocessor(config, train=False)
    record = {"face_mini_xception_fer": np.zeros((16, 135), np.float32), "label": 0,
              "audio_wav2vec2_base": np.ones((16, 768), np.float32), "audio_mask": np.zeros(16, np.float32)}
    assert not pre(record)["mask/audio"].any()
    record["audio_mask"] = np.ones(16, np.float32)
    assert pre(record)["mask/audio"].all()


def test_omnivec_refuses_the_raw_sound_and_reads_cached_audio_features():
    from configs import omnivec

    c = omnivec.get_config("face+pose+audio")
    assert c.dataset.name == "dfew_features/mini_xception_fer_logmel"
    assert c.modalities.audio.input == "audio_logmel"
    with pytest.raises(ValueError, match="audio=conv"):
        omnivec.get_config("face+audio,audio=conv")


def test_extract_config_names_audio_keys_and_defaults_to_an_audio_source():
    from configs import extract

    c = extract.get_config("mini_xception_fer+wav2vec2_base")
    assert sorted(c.generators) == ["audio_wav2vec2_base", "face_mini_xception_fer"]
    assert c.source.name == "dfew/frames112_audio" and c.output.name == "mini_xception_fer_wav2vec2_base"
    assert extract.get_config("mini_xception_fer").source.name == "dfew/frames112"
    assert c.generators.audio_wav2vec2_base.layer is None  # the last layer unless asked
    c = extract.get_config("mini_xception_fer+wav2vec2_base,layer=8")
    assert c.generators.audio_wav2vec2_base.layer == 8 and "layer" not in c.generators.face_mini_xception_fer
    assert c.output.name == "mini_xception_fer_wav2vec2_base_layer8"
    with pytest.raises(ValueError, match="none of .*resnet18.* takes one"):
        extract.get_config("resnet18,layer=3")


def test_hubert_without_a_path_says_to_pass_one():
    from fer_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="local transformers checkpoint"):
        generators.create("hubert_base")


def test_wav2vec2_base_weights_by_name_load_the_publishers_pretraining_file(tmp_path, monkeypatch):
    """The published file is a Wav2Vec2ForPreTraining state dict (.bin); a random one stands in for it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import jax
    from flax import nnx

    from fer_jax.weights import hub

    torch.manual_seed(0)
    reference = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config()).eval()  # the base config
    entry = hub.WEIGHTS[("wav2vec2_base", "librispeech")]
    path = os.path.join(tmp_path, entry.file_name)
    torch.save(reference.state_dict(), path)
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(hub.WEIGHTS, ("wav2vec2_base", "librispeech"), dataclasses.replace(
        entry, sha256=hub.sha256_of(path), url=f"http://127.0.0.1:9/no-download/{entry.file_name}"))

    module, report = generators.create("wav2vec2_base", weights="librispeech")
    assert report.ok and "quantizer" in " ".join(report.unused), str(report)
    wave = (np.random.default_rng(0).normal(size=(1, 8000)) * 0.1).astype(np.float32)
    graphdef, state = nnx.split(module)
    features, mask = jax.jit(lambda s, w: nnx.merge(graphdef, s)(w))(state, wave)
    assert features.shape == (1, 16, 768) and bool(np.asarray(mask).all())
    with torch.inference_mode():  # the generator normalises each clip, as transformers' feature extractor does
        x = torch.from_numpy((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7))
        hidden = reference.wav2vec2(x).last_hidden_state.numpy()
    ours = np.asarray(module.network(jax.numpy.asarray((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7))))
    assert np.abs(ours - hidden).max() / np.abs(hidden).max() < 1e-4
