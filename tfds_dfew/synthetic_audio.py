"""Speech-like sound tracks for the synthetic DFEW release, and the `Clip/original/<id>.mp4` writer.

Real DFEW ships every clip's original video with its sound (`Clip/original/<id>.mp4`). The
synthetic release (tfds_dfew/synthetic.py) writes one per clip: its variable-length face frames
at 25 fps plus a voiced, speech-like track whose prosody follows the clip's class.

The signal (`speech`), synthesised at 16 kHz:
  * source: 12 harmonics of a fundamental f0(t) with a spectral tilt (k^-tilt; loud classes are
    brighter), a little f0 jitter, and a per-clip random phase per harmonic;
  * resonances: a formant-like envelope (3 Gaussian resonances of a vowel from a 5-vowel table,
    scaled by the speaker's formant shift) weights each harmonic; the vowel changes every
    syllable and the formants glide between them;
  * syllables: the voice is gated into syllables (`rate` syllables/s, jittered lengths, a
    raised-sine envelope with per-syllable stress) with pauses between some of them and a short
    noise burst (a consonant) at some syllable onsets;
  * noise: breath noise that follows the voicing envelope and low-level background noise.

Speaker traits are drawn per clip independently of the class: base f0 log-uniform 90..260 Hz,
loudness -6..+3 dB, formant shift 0.85..1.2, breathiness. The class (project order: happy, sad,
neutral, angry, surprise, disgust, fear) sets the prosody relative to the speaker (`PROSODY`):
pitch level (semitones above the speaker's base), pitch range, contour shape (`CONTOURS`:
flat with declination, fall, rise, arch, jump = a sharp rise then a fall, accent = a pitch
peak on every stressed syllable), tremolo depth (6-9 Hz), energy (dB), syllable rate, tilt and
stress variability. Each of them is jittered per clip (`CLIP_JITTER`), so the base f0 range of
the speakers (~18 semitones) hides most of the level differences and sound alone is imperfect.

Intended separability. The hard scenario's face cannot split surprise/fear and angry/disgust
(tfds_dfew/synthetic_hard.py); the sound does, without the body:
  angry     loud (+6 dB), fast (5.6 syll/s), high (+4 st), wide range, a pitch accent on every
            syllable, bright voice;
  disgust   quiet (-5 dB), slow (2.8 syll/s), low (-3 st), a falling contour, dull voice;
  surprise  a sharp rising jump early in the clip then a long fall, wide range, moderately loud;
  fear      high (+6 st), fast (6 syll/s), narrow range, trembling pitch (tremolo ~1 st), soft.
Happy (arch, a bit high and loud), sad (low, slow, quiet, falling) and neutral (flat) differ
mildly, so they overlap each other and the pairs' members. Every clip also draws an
expressiveness (`EXPRESSIVENESS`, 0.25..1.2) that pulls its prosody towards neutral's, so some
clips of every class sound neutral. Measured with a logistic regression on 12 pitch / energy /
rate statistics (librosa yin f0 level, range, slope, wobble; RMS mean, spread; syllable rate;
voiced share; spectral centroid) of 16 kHz tracks of 0.44-1.6 s, 5-fold CV
(tests/test_synthetic_audio.py): 45 clips per class: angry vs disgust 0.91, surprise vs fear
0.90, happy/sad/neutral 0.58, all 7 classes 0.44 (chance 0.14); 100 per class: 0.93, 0.88, 0.62,
0.50.
The `easy` scenario uses the same design. A multi-labelled clip (float[7] blend weights) gets the
weighted mean of its classes' prosody and contours.

`write_original` writes the mp4: MPEG-4 part 2 video (yuv420p, odd sizes padded by edge
replication) and, unless the audio is None, a mono AAC track at 48 kHz (PyAV's native 'aac'
encoder accepts 16 kHz too, but decoded AAC is padded to whole 1024-sample frames, and at 48 kHz
that padding stays below 21 ms). The track holds exactly T / fps seconds (the container says
so through its edit list; a decoder that ignores the end trim returns up to 1023 extra silent
samples at 48 kHz). The file is written under a temporary name and renamed, and its bytes depend
only on the arguments.
"""

from __future__ import annotations

import os

import av
import numpy as np

NUM_CLASSES = 7
SCENARIOS = ("easy", "hard")
TRACK_RATE = 48000  # the AAC track's sample rate
NUM_HARMONICS = 12

# Contour shapes, in units of the pitch range (semitones), over normalised clip time u in [0, 1].
CONTOURS = ("flat", "fall", "rise", "arch", "jump", "accent")
# level st, range st, energy dB, rate syll/s, tilt, stress sigma, tremolo st, pause prob, contour weights
PROSODY = {
    "level":   np.array([2.5, -2.0, 0.0, 4.0, 4.0, -3.0, 6.0]),
    "range":   np.array([5.0, 2.0, 2.5, 8.0, 9.0, 4.0, 2.5]),
    "energy":  np.array([2.0, -4.0, 0.0, 6.0, 3.0, -5.0, -1.0]),
    "rate":    np.array([4.6, 3.2, 4.0, 5.6, 4.0, 2.8, 6.0]),
    "tilt":    np.array([1.1, 1.6, 1.3, 0.8, 1.0, 1.5, 1.2]),
    "stress":  np.array([0.2, 0.15, 0.15, 0.35, 0.25, 0.15, 0.2]),
    "tremolo": np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.1]),
    "pause":   np.array([0.1, 0.25, 0.12, 0.05, 0.1, 0.25, 0.05]),
    #                     flat fall rise arch jump accent
    "contour": np.array([[0.0, 0.0, 0.2, 0.8, 0.0, 0.0],    # happy
                         [0.2, 0.8, 0.0, 0.0, 0.0, 0.0],    # sad
                         [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],    # neutral
                         [0.0, 0.2, 0.0, 0.0, 0.0, 0.8],    # angry
                         [0.0, 0.0, 0.0, 0.0, 1.0, 0.0],    # surprise
                         [0.2, 0.8, 0.0, 0.0, 0.0, 0.0],    # disgust
                         [0.8, 0.0, 0.2, 0.0, 0.0, 0.0]]),  # fear
}
# Per-clip jitter of the class prosody: normal sd (level st, energy dB) or log-normal sd (range, rate).
CLIP_JITTER = {"level": 2.0, "energy": 2.5, "range": 0.3, "rate": 0.15, "tilt": 0.15, "tremolo": 0.35}
# How much of its class's prosody a clip shows (0: a neutral voice; above 1: exaggerated).
EXPRESSIVENESS = (0.25, 1.2)
NEUTRAL = 2
# Vowel formants (Hz) F1, F2, F3: a, e, i, o, u.
VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010],
                   [570, 840, 2410], [300, 870, 2240]], np.float64)
BANDWIDTHS = np.array([150.0, 200.0, 260.0])


def _weights(label) -> np.ndarray:
    if np.ndim(label) == 0:
        index = int(label)
        if not 0 <= index < NUM_CLASSES:
            raise ValueError(f"label must be a class index 0..6 or 7 blend weights, got {label}")
        w = np.zeros(NUM_CLASSES)
        w[index] = 1.0
        return w
    w = np.asarray(label, np.float64)
    if w.shape != (NUM_CLASSES,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"blend weights must be 7 non-negative numbers, got {label}")
    return w / w.sum()


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or len(x) < 2:
        return x
    kernel = np.hanning(width + 2)[1:-1]
    padded = np.pad(x, (width, width), mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="same")[width:-width]


def _contour(kind: str, u: np.ndarray, t: np.ndarray, onsets: np.ndarray, jump_at: float) -> np.ndarray:
    if kind == "flat":
        return -0.15 * u
    if kind == "fall":
        return 0.5 - u
    if kind == "rise":
        return u - 0.5
    if kind == "arch":
        return np.sin(np.pi * u) - 0.5
    if kind == "jump":  # a sharp rise at jump_at, then a fall back over the rest of the clip
        rise = 1.0 / (1.0 + np.exp(-(u - jump_at) / 0.015))
        return -0.3 + 1.0 * rise * np.exp(-np.maximum(u - jump_at, 0.0) / 0.35)
    if kind == "accent":  # a pitch peak early in every syllable
        bumps = np.zeros_like(t)
        for on in onsets:
            bumps += np.exp(-0.5 * ((t - on - 0.05) / 0.045) ** 2)
        return 0.7 * np.minimum(bumps, 1.0) - 0.25 - 0.2 * u
    raise ValueError(kind)


def speech(rng: np.random.Generator, label, duration_s: float, *, scenario: str = "easy",
           sample_rate: int = 16000) -> np.ndarray:
    """A speech-like track float32[round(duration_s * sample_rate)] in [-1, 1] (module docstring).

    label: class index 0..6 (project order) or float[7] blend weights (a multi-labelled clip).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    w = _weights(label)
    n = int(round(duration_s * sample_rate))
    if n <= 0:
        return np.zeros(0, np.float32)
    sr = float(sample_rate)
    t = np.arange(n) / sr
    u = t / max(t[-1], 1e-6)
    # Speaker traits (class independent), then per-clip jitters: a fixed number of draws.
    base_f0 = float(np.exp(rng.uniform(np.log(90.0), np.log(260.0))))
    loudness = rng.uniform(-6.0, 3.0)
    formant_shift = rng.uniform(0.85, 1.2)
    breathiness = rng.uniform(0.02, 0.08)
    background_db = rng.uniform(-34.0, -22.0)
    trem_hz = rng.uniform(6.0, 9.0)
    jump_at = rng.uniform(0.08, 0.3)
    expressive = rng.uniform(*EXPRESSIVENESS)
    j = {k: rng.normal(0.0, s) for k, s in CLIP_JITTER.items()}
    # The class's prosody, pulled towards neutral's by the clip's expressiveness.
    neutral = np.eye(NUM_CLASSES)[NEUTRAL]
    w = neutral + expressive * (w - neutral)
    p = {k: float(w @ v) for k, v in PROSODY.items() if k != "contour"}
    level = p["level"] + j["level"]
    prange = p["range"] * np.exp(j["range"])
    energy = p["energy"] + j["energy"]
    rate = p["rate"] * np.exp(j["rate"])
    tilt = max(0.4, p["tilt"] + j["tilt"])
    tremolo = p["tremolo"] * np.exp(j["tremolo"])

    # Syllables: onset, voiced length, vowel, stress; pauses between some of them.
    onsets, lengths, vowels, stress = [], [], [], []
    pos = rng.uniform(0.0, 0.12)
    while pos < duration_s - 0.04:
        period = rng.uniform(0.75, 1.25) / rate
        onsets.append(pos)
        lengths.append(period * rng.uniform(0.55, 0.8))
        vowels.append(int(rng.integers(len(VOWELS))))
        stress.append(float(np.exp(rng.normal(0.0, p["stress"]))))
        pos += period
        if rng.uniform() < p["pause"]:
            pos += rng.uniform(0.1, 0.3)
    if not onsets:
        onsets, lengths, vowels, stress = [0.0], [duration_s], [0], [1.0]
    onsets = np.asarray(onsets)
    env = np.zeros(n)
    burst = np.zeros(n)
    formants = np.zeros((n, 3))
    micro = np.zeros(n)
    for on, length, vowel, s in zip(onsets, lengths, vowels, stress):
        a, b = int(on * sr), min(n, int((on + length) * sr))
        if b <= a:
            continue
        x = np.linspace(0.0, 1.0, b - a)
        attack = np.sin(0.5 * np.pi * np.minimum(x / 0.25, 1.0))
        release = np.minimum(1.0, (1.0 - x) / 0.35) ** 0.7
        env[a:b] = np.maximum(env[a:b], s * attack * release)
        formants[a:] = VOWELS[vowel] * formant_shift
        micro[a:] = rng.normal(0.0, 0.12)
        if rng.uniform() < 0.5:  # a consonant: 20-40 ms of noise before the vowel
            c = int(rng.uniform(0.02, 0.04) * sr)
            burst[max(0, a - c):a] += 0.3 * s
    first = int(onsets[0] * sr)
    formants[:first] = formants[first] if first < n else VOWELS[0]
    formants = np.stack([_smooth(formants[:, i], int(0.03 * sr)) for i in range(3)], axis=1)
    micro = _smooth(micro, int(0.05 * sr))

    # f0 contour in semitones above the speaker's base.
    cw = np.maximum(w @ PROSODY["contour"], 0.0)
    shape = sum(cw[i] * _contour(kind, u, t, onsets, jump_at) for i, kind in enumerate(CONTOURS) if cw[i] > 0)
    jitter = _smooth(rng.normal(0.0, 1.0, n), int(0.02 * sr)) * 3.0
    semis = (level + prange * shape + prange * micro + tremolo * np.sin(2 * np.pi * trem_hz * t
             + rng.uniform(0, 2 * np.pi)) + 0.15 * jitter)
    f0 = np.clip(base_f0 * 2.0 ** (semis / 12.0), 60.0, 600.0)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = np.zeros(n)
    offsets = rng.uniform(0, 2 * np.pi, NUM_HARMONICS)
    for k in range(1, NUM_HARMONICS + 1):
        fk = k * f0
        shape_k = 0.04 + sum(np.exp(-0.5 * ((fk - formants[:, i]) / BANDWIDTHS[i]) ** 2) * (1.0, 0.7, 0.4)[i]
                             for i in range(3))
        amp = k ** -tilt * shape_k * (fk < 0.45 * sr)
        voiced += amp * np.sin(k * phase + offsets[k - 1])
    white = rng.normal(0.0, 1.0, n)
    hiss = np.diff(white, prepend=0.0) * 0.5
    speech_sig = voiced * env + hiss * (breathiness * 4.0 * env + burst)
    active = env > 0.1
    ref = np.sqrt(np.mean(speech_sig[active] ** 2)) if active.any() else 1.0
    target = 0.08 * 10 ** ((loudness + energy) / 20.0)
    speech_sig = speech_sig * (target / max(ref, 1e-8))
    pink = _smooth(rng.normal(0.0, 1.0, n), 8)
    pink *= 0.08 * 10 ** (background_db / 20.0) / max(np.sqrt(np.mean(pink ** 2)), 1e-8)
    return np.tanh(speech_sig + pink).astype(np.float32)


def _even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(frames)


def write_original(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray | None, *,
                   fps: int = 25, sample_rate: int = 16000) -> str:
    """Writes an mp4: frames uint8[T, H, W, 3] as MPEG-4 video at fps, and `audio` (float[n] mono at
    sample_rate, n = T / fps * sample_rate after rounding; trimmed or zero-padded to that) as an AAC
    track at TRACK_RATE, or no audio stream when audio is None. Atomic (temp name + rename)."""

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8[T > 0, H, W, 3], got {frames.dtype}{list(frames.shape)}")
    frames = _even(frames)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}.mp4"
    num_samples = int(round(len(frames) * sample_rate / fps))
    try:
        with av.open(tmp, "w", format="mp4", options={"fflags": "+bitexact"}) as container:
            video = container.add_stream("mpeg4", rate=fps)
            video.height, video.width = frames.shape[1:3]
            video.pix_fmt = "yuv420p"
            video.bit_rate = max(100_000, int(frames.shape[1] * frames.shape[2] * fps * 0.15))
            track = None
            if audio is not None:
                track = container.add_stream("aac", rate=TRACK_RATE, layout="mono")
                track.bit_rate = 48_000
            for k, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = k
                container.mux(video.encode(frame))
            container.mux(video.encode())
            if track is not None:
                samples = np.zeros(num_samples, np.float32)
                audio = np.asarray(audio, np.float32).reshape(-1)[:num_samples]
                samples[:len(audio)] = np.clip(audio, -1.0, 1.0)
                chunk = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
                chunk.sample_rate = sample_rate
                chunk.pts = 0
                container.mux(track.encode(chunk))
                container.mux(track.encode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
