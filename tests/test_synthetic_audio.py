"""The synthetic release's original videos (Clip/original/<id>.mp4) and their class-dependent sound."""

import os

import av
import numpy as np
import pytest

from tfds_dfew import synthetic, synthetic_audio
from tfds_dfew.synthetic_draw import clip_rng

SR = 16000


def _decode(path):
    """(video frame count, video fps, audio float32[n] or None, audio rate, audio stream seconds)."""
    with av.open(path) as container:
        video = container.streams.video[0]
        fps = float(video.average_rate)
        if not container.streams.audio:
            audio = None, None, None
        else:
            stream = container.streams.audio[0]
            seconds = float(stream.duration * stream.time_base)
            audio = (np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)]),
                     stream.sample_rate, seconds)
    with av.open(path) as container:
        count = sum(1 for _ in container.decode(video=0))
    return count, fps, *audio


def _features(x, sr=SR):
    """12 prosodic statistics of one track: pitch level/range/slope/wobble, energy, rate, brightness."""
    import librosa

    hop = 160
    rms = librosa.feature.rms(y=x, frame_length=512, hop_length=hop)[0]
    db = 20 * np.log10(rms + 1e-5)
    f0 = librosa.yin(x, fmin=60, fmax=700, sr=sr, frame_length=1024, hop_length=hop)
    m = min(len(db), len(f0))
    db, f0 = db[:m], f0[:m]
    voiced = db > np.percentile(db, 90) - 15
    if voiced.sum() < 3:
        voiced[:] = True
    semis = 12 * np.log2(f0[voiced] / 100.0)
    times = np.flatnonzero(voiced) / max(m - 1, 1)
    slope = np.polyfit(times, semis, 1)[0] if len(np.unique(times)) > 1 else 0.0
    wobble = np.median(np.abs(np.diff(semis))) if len(semis) > 1 else 0.0
    env = (db > np.percentile(db, 90) - 12).astype(np.int8)
    onsets = np.count_nonzero(np.diff(env) == 1) + env[0]
    centroid = librosa.feature.spectral_centroid(y=x, sr=sr, n_fft=512, hop_length=hop)[0][:m]
    return np.array([
        np.median(semis), np.percentile(semis, 90) - np.percentile(semis, 10), np.std(semis),
        slope, wobble, times[np.argmax(semis)],
        np.mean(db), np.std(db), np.percentile(db, 95),
        onsets / (len(x) / sr), voiced.mean(), np.log(np.mean(centroid[voiced]) + 1.0),
    ])


def _cv_accuracy(features, labels):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(model, features, labels, cv=folds).mean())


def _sounds(per_class, seed=0, scenario="hard"):
    feats, labels = [], []
    for c in range(7):
        for i in range(per_class):
            rng = clip_rng(seed, 1000 * c + i, 4)
            duration = int(rng.integers(11, 41)) / 25.0
            feats.append(_features(synthetic_audio.speech(rng, c, duration, scenario=scenario)))
            labels.append(c)
    return np.array(feats), np.array(labels)


def test_speech_range_length_and_blend():
    x = synthetic_audio.speech(np.random.default_rng(0), 3, 0.92, scenario="hard")
    assert x.dtype == np.float32 and x.shape == (14720,)
    assert np.abs(x).max() <= 1.0 and np.sqrt(np.mean(x ** 2)) > 0.01
    blend = np.zeros(7)
    blend[[0, 4]] = 0.5
    y = synthetic_audio.speech(np.random.default_rng(0), blend, 0.5, scenario="easy")
    assert y.shape == (8000,) and np.isfinite(y).all()
    with pytest.raises(ValueError):
        synthetic_audio.speech(np.random.default_rng(0), 7, 1.0, scenario="hard")


def test_write_original_odd_size_and_no_audio(tmp_path):
    frames = np.random.default_rng(1).integers(0, 255, (13, 31, 45, 3), dtype=np.uint8)
    audio = synthetic_audio.speech(np.random.default_rng(2), 5, 13 / 25)
    path = synthetic_audio.write_original(tmp_path / "a.mp4", frames, audio)
    count, fps, samples, rate, seconds = _decode(path)
    assert (count, fps) == (13, 25.0)
    assert abs(seconds - 13 / 25) < 1e-6 and abs(len(samples) / rate - 13 / 25) <= 0.03
    synthetic_audio.write_original(tmp_path / "b.mp4", frames, None)
    assert _decode(tmp_path / "b.mp4")[2] is None
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "b.mp4"]  # no temp files left


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("orig")
    kw = dict(scenario="hard", frame_size=48, max_frames=24, openpose=False, annotation=False, workers=1)
    a = synthetic.generate(root / "a", 25, seed=5, **kw)
    b = synthetic.generate(root / "b", 25, seed=5, **kw)
    return a, b


def test_originals_deterministic_and_timed(trees):
    a, b = trees
    drawn = sorted(set(a["ids"]) - set(a["missing_ids"]))
    orig = os.path.join(a["out_dir"], "Clip", "original")
    assert sorted(os.listdir(orig)) == [f"{c}.mp4" for c in drawn]
    with_sound = [c for c in drawn if c not in a["silent_ids"]]
    assert with_sound and a["original_ids"] == drawn
    for cid in with_sound[:6]:
        count, fps, samples, rate, seconds = _decode(os.path.join(orig, f"{cid}.mp4"))
        other = _decode(os.path.join(b["out_dir"], "Clip", "original", f"{cid}.mp4"))[2]
        np.testing.assert_array_equal(samples, other)
        t = a["num_frames"][cid]
        assert (count, fps) == (t, 25.0)
        assert abs(seconds - t / 25) <= 0.03 and abs(len(samples) / rate - t / 25) <= 0.03
        assert np.sqrt(np.mean(samples ** 2)) > 0.005


def test_silent_fraction(trees):
    a, _ = trees
    drawn = sorted(set(a["ids"]) - set(a["missing_ids"]))
    silent = a["silent_ids"]
    assert 1 <= len(silent) <= max(1, round(0.1 * len(drawn)) + 1)
    for cid in silent:
        assert _decode(os.path.join(a["out_dir"], "Clip", "original", f"{cid}.mp4"))[2] is None
    plain = synthetic.silent_clips(drawn, 5, 0.3)
    assert plain == synthetic.silent_clips(drawn, 5, 0.3) and len(plain) == round(0.3 * len(drawn))


def test_sound_separates_face_pairs_but_not_everything():
    feats, labels = _sounds(45)
    pair = lambda a, b: _cv_accuracy(feats[np.isin(labels, [a, b])], labels[np.isin(labels, [a, b])])
    angry_disgust, surprise_fear = pair(3, 5), pair(4, 6)
    all7 = _cv_accuracy(feats, labels)
    print(f"angry/disgust {angry_disgust:.3f} surprise/fear {surprise_fear:.3f} 7-class {all7:.3f}")
    assert angry_disgust >= 0.75 and surprise_fear >= 0.75
    assert 2.0 / 7 < all7 < 0.9
