"""Audio models: log-mel vs librosa, wav2vec 2.0 / HuBERT base vs transformers (random weights, save_pretrained
folders read by our loader), slice pooling, the conv tokenizer, the generator, refusals, bfloat16."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
librosa = pytest.importorskip("librosa")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from fer_jax.models import audio, wav2vec2  # noqa: E402
from fer_jax.weights.audio_loaders import load_speech_encoder  # noqa: E402

torch.set_num_threads(2)
PARITY = 1e-4  # max |ours - reference| / max |reference|
DB_TOLERANCE = 1e-3  # log-mel: max |ours - librosa| in dB
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
TINY_CFG = wav2vec2.SpeechEncoderConfig("tiny_wav2vec2", "wav2vec2", width=64, depth=2, heads=4, mlp_dim=128,
                                        conv_dim=(32,) * 7, pos_kernel=16, pos_groups=4)


def _rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _speech(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """Tones + noise with a slow envelope, amplitude ~0.1, float32[n, samples]."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16_000
    out = []
    for i in range(n):
        f0 = 120.0 + 60.0 * i
        tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (2.0 + i) * t)
        out.append(0.05 * envelope * tone + 0.02 * rng.normal(size=samples))
    return np.stack(out).astype(np.float32)


def _jiggle(model) -> None:
    """Random-init references have LayerNorm = (1, 0), zero biases and weight_g = ||weight_v||: move them."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            if name.endswith("original0") or name.endswith("weight_g"):
                p.mul_(1.0 + 0.5 * torch.rand(p.shape, generator=gen))


def _run(model, *args, **kwargs):
    return np.asarray(nnx.jit(lambda m, *a: m(*a, **kwargs))(model, *args))


def _run_pair(model, *args):
    """A tokenizer / generator under jit: (float[B, 16, D], bool[B, 16]) as numpy."""
    out, mask = nnx.jit(lambda m, *a: m(*a))(model, *args)
    return np.asarray(out), np.asarray(mask)


# -- log-mel --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [audio.LogMelConfig(),
                                 audio.LogMelConfig(n_fft=512, hop_length=256, n_mels=40, fmin=50.0, fmax=7600.0)])
def test_log_mel_matches_librosa(cfg):
    y = _speech(2, 12_345)
    y[1, 8000:] = 0.0  # digital silence: the floor
    ours = np.asarray(audio.log_mel(y, cfg))
    assert ours.shape == (2, 1 + 12_345 // cfg.hop_length, cfg.n_mels)
    for i in range(2):
        mel = librosa.feature.melspectrogram(y=y[i], sr=16_000, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                             n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, window="hann",
                                             center=True, pad_mode="constant", power=2.0)
        ref = librosa.power_to_db(mel, ref=1.0, amin=cfg.amin, top_db=None).T
        assert np.abs(ours[i] - ref).max() < DB_TOLERANCE
    assert ours[1, -1].max() == pytest.approx(-100.0)
    fb = librosa.filters.mel(sr=16_000, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    np.testing.assert_allclose(audio.mel_filterbank(cfg), fb.T, rtol=1e-5, atol=1e-9)


def test_log_mel_of_a_padded_clip_matches_the_clip_alone():
    y = _speech(1, 7_000)
    padded = np.concatenate([y, np.zeros((1, 5_000), np.float32)], axis=1)
    n = int(audio.mel_lengths([7_000])[0])
    np.testing.assert_allclose(np.asarray(audio.log_mel(padded))[:, :n], np.asarray(audio.log_mel(y)), atol=1e-4)
    assert list(np.asarray(audio.mel_lengths([0, 159, 160, 16_000]))) == [0, 1, 2, 101]


# -- slices ---------------------------------------------------------------------------------------


def _slices_reference(x: np.ndarray, n: int, k: int = 16) -> np.ndarray:
    """Each frame goes to the slice holding its centre; an empty slice takes the frame under its centre."""
    out = np.zeros((k, x.shape[1]))
    if n == 0:
        return out
    owner = np.floor(k * (np.arange(n) + 0.5) / n).astype(int)
    for s in range(k):
        rows = x[:n][owner == s]
        out[s] = rows.mean(0) if len(rows) else x[int(np.floor((s + 0.5) * n / k))]
    return out


def test_pool_to_slices():
    x = np.random.default_rng(0).normal(size=(7, 40, 3)).astype(np.float32)
    lengths = np.array([0, 1, 5, 15, 16, 33, 40])
    pooled = np.asarray(audio.pool_to_slices(x, lengths))
    assert pooled.shape == (7, 16, 3)
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(pooled[b], _slices_reference(x[b], n), atol=1e-6, err_msg=f"n={n}")
    np.testing.assert_allclose(np.asarray(audio.pool_to_slices(x[:, :32])), np.asarray(audio.pool_to_slices(x, [32] * 7)))
    np.testing.assert_allclose(pooled[1], np.repeat(x[1, :1], 16, axis=0))  # one frame: repeated
    np.testing.assert_allclose(pooled[4], x[4, :16])  # 16 frames: one each
    assert np.asarray(audio.slice_mask(lengths)).sum(1).tolist() == [0] + [16] * 6


# -- the conv tokenizer ---------------------------------------------------------------------------


def test_audio_conv_tokenizer_shapes_masks_and_padding():
    tok = audio.AudioConvTokenizer(32, rngs=nnx.Rngs(0))
    y = _speech(3, 16_000)
    lengths = np.array([16_000, 7_000, 0])
    tokens, mask = _run_pair(tok, y, lengths)
    assert tokens.shape == (3, 16, 32) and tokens.dtype == np.float32
    assert mask.dtype == np.bool_ and mask.tolist() == [[True] * 16] * 2 + [[False] * 16]
    assert np.all(tokens[2] == 0.0) and np.isfinite(tokens).all()
    alone, alone_mask = _run_pair(tok, y[1:2, :7_000])  # the clip alone, unpadded: the same tokens
    np.testing.assert_allclose(tokens[1], alone[0], atol=1e-5)
    assert alone_mask.all()
    grads = nnx.jit(nnx.grad(lambda m, y, n: jnp.sum(m(y, n)[0] ** 2)))(tok, y, lengths)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


# -- wav2vec 2.0 / HuBERT base vs transformers ----------------------------------------------------


@pytest.fixture(scope="module")
def wav2vec2_ref(tmp_path_factory):
    """(transformers Wav2Vec2Model inside a Wav2Vec2ForPreTraining, the latter's save_pretrained folder)."""
    torch.manual_seed(0)
    ref = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config()).eval()
    _jiggle(ref)
    folder = tmp_path_factory.mktemp("w2v") / "wav2vec2-base"
    ref.save_pretrained(folder)
    return ref.wav2vec2, folder


@pytest.fixture(scope="module")
def hubert_ref(tmp_path_factory):
    """(transformers HubertModel, its save_pretrained folder: bare keys, config.json model_type 'hubert')."""
    torch.manual_seed(1)
    ref = transformers.HubertModel(transformers.HubertConfig()).eval()
    _jiggle(ref)
    folder = tmp_path_factory.mktemp("hubert") / "hubert-base"
    ref.save_pretrained(folder)
    return ref, folder


@pytest.fixture(scope="module")
def wav2vec2_loaded(wav2vec2_ref):
    model = nnx.eval_shape(lambda: wav2vec2.wav2vec2_base(rngs=nnx.Rngs(0)))
    report = load_speech_encoder(model, wav2vec2_ref[1])
    return model, report


def test_wav2vec2_base_matches_transformers(wav2vec2_ref, wav2vec2_loaded):
    ref, _ = wav2vec2_ref
    model, report = wav2vec2_loaded
    assert report.ok, report
    assert sorted(report.unused) == ["masked_spec_embed", "project_hid.bias", "project_hid.weight", "project_q.bias",
                                     "project_q.weight", "quantizer.codevectors", "quantizer.weight_proj.bias",
                                     "quantizer.weight_proj.weight"]
    x = _speech(2, 16_000)
    with torch.no_grad():
        out = ref(torch.from_numpy(x), output_hidden_states=True)
    ours = _run(model, x)
    assert ours.shape == (2, 49, 768) and ours.dtype == np.float32  # 50 Hz
    assert _rel(ours, out.last_hidden_state.numpy()) < PARITY
    states = nnx.jit(lambda m, x: m.hidden_states(x, up_to=6))(model, x)
    assert len(states) == 7 and _rel(states[6], out.hidden_states[6].numpy()) < PARITY
    assert _rel(states[0], out.hidden_states[0].numpy()) < PARITY


def test_hubert_base_matches_transformers(hubert_ref):
    ref, folder = hubert_ref
    model = nnx.eval_shape(lambda: wav2vec2.hubert_base(rngs=nnx.Rngs(0)))
    report = load_speech_encoder(model, folder, strict=True)
    assert report.ok and "hubert" in report.checkpoint_arch and report.unused == ["masked_spec_embed"], report
    x = _speech(1, 16_000, seed=3)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).last_hidden_state.numpy()
    assert _rel(_run(model, x), want) < PARITY


def test_wav2vec2_bfloat16_runs_and_is_close(wav2vec2_ref, wav2vec2_loaded):
    model = nnx.eval_shape(lambda: wav2vec2.wav2vec2_base(rngs=nnx.Rngs(0), dtype=jnp.bfloat16))
    load_speech_encoder(model, wav2vec2_ref[1], strict=True)
    x = _speech(1, 16_000)
    half, full = _run(model, x), _run(wav2vec2_loaded[0], x)
    assert half.dtype == np.float32 and np.isfinite(half).all()
    assert model.layers[0].fc1.kernel.get_value().dtype == jnp.float32  # parameters stay float32
    assert _rel(half, full) < 0.1


# -- padding, layouts, the generator (a tiny encoder: fast) ---------------------------------------


@pytest.fixture(scope="module")
def tiny_ref(tmp_path_factory):
    torch.manual_seed(2)
    ref = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY)).eval()
    _jiggle(ref)
    folder = tmp_path_factory.mktemp("tiny") / "tiny-wav2vec2"
    ref.save_pretrained(folder)
    return ref, folder


def _tiny(folder) -> wav2vec2.Wav2Vec2Encoder:
    model = wav2vec2.Wav2Vec2Encoder(TINY_CFG, rngs=nnx.Rngs(0))
    assert load_speech_encoder(model, folder, strict=True).ok
    return model


def test_padded_clip_matches_the_clip_alone(tiny_ref):
    ref, folder = tiny_ref
    model = _tiny(folder)
    x = _speech(2, 8_000, seed=4)
    x[1, 5_000:] = 0.0
    lengths = np.array([8_000, 5_000])
    ours = _run(model, x, lengths)
    frames = np.asarray(model.frame_lengths(lengths))
    assert frames.tolist() == [24, 15]
    with torch.no_grad():
        full = ref(torch.from_numpy(x[:1])).last_hidden_state.numpy()[0]
        short = ref(torch.from_numpy(x[1:, :5_000])).last_hidden_state.numpy()[0]
    assert _rel(ours[0], full) < PARITY
    assert _rel(ours[1, :15], short) < PARITY


def test_loader_reads_weight_g_weight_v_and_torch_bin_files(tiny_ref, tmp_path):
    ref, folder = tiny_ref
    state = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                 "weight_v"): torch.from_numpy(v)
             for k, v in load_file(folder / "model.safetensors").items()}
    assert "encoder.pos_conv_embed.conv.weight_g" in state
    old = tmp_path / "old_layout.bin"
    torch.save({f"wav2vec2.{k}": v for k, v in state.items()}, old)
    model = wav2vec2.Wav2Vec2Encoder(TINY_CFG, rngs=nnx.Rngs(5))
    report = load_speech_encoder(model, old)
    assert report.ok and report.unused == ["masked_spec_embed"], report
    x = _speech(1, 4_000)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).last_hidden_state.numpy()
    assert _rel(_run(model, x), want) < PARITY


def test_speech_generator_pools_16_slices_and_masks(tiny_ref):
    model = _tiny(tiny_ref[1])
    gen = wav2vec2.SpeechGenerator(model)
    x = _speech(3, 8_000, seed=5)
    lengths = np.array([8_000, 3_000, 0])
    x[1, 3_000:], x[2] = 0.0, 0.0
    feats, mask = _run_pair(gen, x, lengths)
    assert feats.shape == (3, 16, 64) and feats.dtype == np.float32
    assert mask.tolist() == [[True] * 16] * 2 + [[False] * 16]
    assert np.all(feats[2] == 0.0)
    clip = x[1:2, :3_000]
    normed = (clip - clip.mean()) / np.sqrt(clip.var() + 1e-7)
    want = audio.pool_to_slices(_run(model, normed))[0]
    np.testing.assert_allclose(feats[1], np.asarray(want), atol=1e-4)
    first = wav2vec2.SpeechGenerator(model, layer=1, normalize=False)
    got, _ = _run_pair(first, x[:1])
    layer1 = nnx.jit(lambda m, x: m.hidden_states(x, up_to=1)[1])(model, x[:1])
    np.testing.assert_allclose(np.asarray(got), np.asarray(audio.pool_to_slices(layer1)), atol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        wav2vec2.SpeechGenerator(model, layer=3)


# -- refusals -------------------------------------------------------------------------------------


def test_loader_refuses_other_architectures_before_writing(tiny_ref, tmp_path):
    model = wav2vec2.Wav2Vec2Encoder(TINY_CFG, rngs=nnx.Rngs(0))
    before = np.asarray(model.layers[0].fc1.kernel.get_value()).copy()
    hubert_tiny = tmp_path / "hubert_tiny"
    transformers.HubertModel(transformers.HubertConfig(**TINY)).save_pretrained(hubert_tiny)
    with pytest.raises(ValueError, match="hubert"):  # the other family (config.json model_type), right shapes
        load_speech_encoder(model, hubert_tiny)
    base = wav2vec2.Wav2Vec2Encoder(dataclasses.replace(TINY_CFG, depth=3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="depth 2 vs 3"):
        load_speech_encoder(base, tiny_ref[1])
    big = nnx.eval_shape(lambda: wav2vec2.wav2vec2_base(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="width 64 vs 768"):
        load_speech_encoder(big, tiny_ref[1])
    vit = tmp_path / "vit.safetensors"
    save_file({"vision_model.embeddings.patch_embedding.weight": np.zeros((8, 3, 4, 4), np.float32),
               "vision_model.encoder.layers.0.layer_norm1.weight": np.zeros(8, np.float32)}, str(vit))
    with pytest.raises(ValueError, match="vision transformer"):
        load_speech_encoder(model, vit)
    np.testing.assert_array_equal(np.asarray(model.layers[0].fc1.kernel.get_value()), before)
