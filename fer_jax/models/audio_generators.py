"""The built-in audio generators, registered by name: wav2vec 2.0 and HuBERT base, and a log-mel front end.

An audio generator maps a clip's sound, waveform float32[B, S] 16 kHz mono with its valid lengths
int32[B], to (float32[B, T, F], mask bool[B, T]): one vector per time slice of the clip (T = the
frames per clip, option `num_slices`). Feature keys in a cached-features dataset: `audio_<name>`.

  wav2vec2_base   wav2vec 2.0 base; features: the last hidden state (or option layer=n's) pooled per
                  slice (F = 768); weights 'librispeech' (facebook/wav2vec2-base's PyTorch .bin, read
                  without torch) or a transformers save_pretrained folder / model.safetensors.
  hubert_base     HuBERT base, as wav2vec2_base; weights: a local transformers folder or file.
  logmel          64-band log-mel averaged per slice (F = 64); no weights.
"""

from __future__ import annotations

from fer_jax.errors import ConfigError
from fer_jax.models import audio, generators, wav2vec2
from fer_jax.weights import audio_loaders, hub


def speech_generator(factory, cfg: wav2vec2.SpeechEncoderConfig, default: str):
    def load(module: wav2vec2.SpeechGenerator, weights: str):
        name = factory.__name__
        if not (weights or default):
            raise ConfigError(f"{name} has no weights by name yet; pass a local transformers checkpoint, e.g. "
                              f"--config.generators.audio_{name}.weights=~/models/hubert-base-ls960 (a folder "
                              "from save_pretrained, or its model.safetensors / pytorch_model.bin).")
        report = audio_loaders.load_speech_encoder(module.network, hub.resolve(name, weights or default))
        if not report.ok:
            raise ConfigError(f"{name}: the weights do not fit this network:\n{report}")
        return report

    def build(rngs, dtype=None, layer=None, num_slices=audio.NUM_SLICES):  # layer: the hidden state pooled
        return wav2vec2.SpeechGenerator(factory(rngs=rngs, dtype=dtype), layer=layer, num_slices=int(num_slices))

    return generators.GeneratorSpec(cfg.width, build, load, weights=(default,) if default else (),
                         input_size="16 kHz mono sound", modality="audio", options=("layer", "num_slices"))


generators.register("wav2vec2_base", speech_generator(wav2vec2.wav2vec2_base, wav2vec2.WAV2VEC2_BASE, "librispeech"))
generators.register("hubert_base", speech_generator(wav2vec2.hubert_base, wav2vec2.HUBERT_BASE, ""))
generators.register("logmel", generators.GeneratorSpec(audio.LogMelConfig().n_mels,
                                 lambda rngs, dtype=None, num_slices=audio.NUM_SLICES: audio.LogMelGenerator(
                                     num_slices=int(num_slices)),
                                 lambda module, weights: "no weights: a fixed log-mel front end",
                                 input_size="16 kHz mono sound", modality="audio", options=("num_slices",)))
