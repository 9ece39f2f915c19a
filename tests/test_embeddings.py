"""External per-clip `.npy` embeddings: the loader, its errors, and extraction as a modality."""

import sys

import os

import numpy as np
import pytest

from fer_jax import extract, input_pipeline, train
from fer_jax.data.embeddings import EmbeddingError, NpyEmbeddings
from tests.helpers import ROOT, features_config
from tfds_dfew import release

sys.path.insert(0, ROOT)


def test_rows_are_resampled_like_frames_and_vectors_repeated(tmp_path):
    rng = np.random.default_rng(0)
    long = rng.normal(size=(37, 5))
    np.save(tmp_path / "00017.npy", long)
    np.save(tmp_path / "18.npy", rng.normal(size=5).astype(np.float16))  # unpadded id, one vector per clip
    exact = rng.normal(size=(16, 5)).astype(np.float32)
    np.save(tmp_path / "00019.npy", exact)
    (tmp_path / "notes.txt").write_text("ignored")
    emb = NpyEmbeddings(str(tmp_path))
    assert emb.dim == 5 and sorted(emb.files) == ["00017", "00018", "00019"]
    idx = release.sample_indices(37)
    np.testing.assert_array_equal(emb.load("17"), long[idx].astype(np.float32))
    vec = np.load(tmp_path / "18.npy").astype(np.float32)
    np.testing.assert_array_equal(emb.load("00018"), np.tile(vec, (16, 1)))
    np.testing.assert_array_equal(emb.load("00019"), exact)
    batch = emb.batch([{"clip_id": b"00019"}, {"clip_id": "00017"}])
    assert batch.shape == (2, 16, 5) and batch.dtype == np.float32


@pytest.mark.parametrize("content, expected", [
    (np.zeros((4, 3)), "values per row"),
    (np.full((4, 5), np.nan), "NaN"),
    (np.zeros((2, 3, 5)), "shape"),
    (np.zeros((0, 5)), "shape"),
    ("pickle", "cannot be read"),
    ("truncated", "cannot be read"),
])
def test_bad_embedding_files_are_named(tmp_path, content, expected):
    np.save(tmp_path / "00001.npy", np.zeros((16, 5)))
    bad = tmp_path / "00002.npy"
    if isinstance(content, np.ndarray):
        np.save(bad, content)
    elif content == "pickle":
        np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        np.save(bad, np.zeros((16, 5)))
        bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(EmbeddingError, match=expected) as info:
        NpyEmbeddings(str(tmp_path)).load("00002")
    assert "00002.npy" in str(info.value)


def test_missing_folder_clip_and_odd_names_are_clear(tmp_path):
    with pytest.raises(EmbeddingError, match="not found"):
        NpyEmbeddings(str(tmp_path / "nowhere"))
    with pytest.raises(EmbeddingError, match="no .npy files"):
        NpyEmbeddings(str(tmp_path))
    np.save(tmp_path / "00001.npy", np.zeros(4))
    with pytest.raises(EmbeddingError, match="no embedding for clip 00002"):
        NpyEmbeddings(str(tmp_path)).load("2")
    np.save(tmp_path / "1.npy", np.zeros(4))
    with pytest.raises(EmbeddingError, match="both clip 00001"):
        NpyEmbeddings(str(tmp_path))
    (tmp_path / "1.npy").unlink()
    # ids that are not numbers are file names as they are, folders for ids that are paths (FERV39k's)
    np.save(tmp_path / "clip_a.npy", np.ones(4))
    os.makedirs(tmp_path / "Crime" / "Angry")
    np.save(tmp_path / "Crime" / "Angry" / "0063.npy", np.full(4, 2.0))
    loader = NpyEmbeddings(str(tmp_path), num_frames=3)
    assert sorted(loader.files) == ["00001", "Crime/Angry/0063", "clip_a"]
    assert loader.load("clip_a").tolist() == [[1.0] * 4] * 3 and loader.load("Crime/Angry/0063")[0, 0] == 2.0


def test_external_embeddings_become_a_trainable_modality(tiny_features, tmp_path):
    _, features_dir, _ = tiny_features
    from configs import extract as extract_configs, fusion

    base = features_config(features_dir)
    clips = []
    for split in input_pipeline.dataset_splits(base):
        source = input_pipeline.open_source(base, split)
        clips += [source[i]["clip_id"].decode() for i in range(len(source))]
    emb_dir = tmp_path / "emb"
    emb_dir.mkdir()
    rng = np.random.default_rng(0)
    for i, clip in enumerate(clips):  # per-segment embeddings of varying length
        np.save(emb_dir / f"{int(clip)}.npy", rng.normal(size=(3 + i % 5, 6)).astype(np.float32))
    c = extract_configs.get_config(f"npy,path={emb_dir},features=mini_xception_fer")
    c.source.data_dir = c.output.data_dir = features_dir
    extract.extract(c)
    config = features_config(features_dir)
    config.modalities = fusion.get_config("face+external").modalities
    config.dataset.name = fusion.get_config("face+external").dataset.name
    assert config.dataset.name == "dfew_features/mini_xception_fer_external"
    record = input_pipeline.open_source(config, "fold1")[0]
    expected = NpyEmbeddings(str(emb_dir)).load(record["clip_id"].decode())
    np.testing.assert_array_equal(record["external"], expected)
    base_record = input_pipeline.open_source(base, "fold1")[0]
    np.testing.assert_array_equal(record["face_mini_xception_fer"], base_record["face_mini_xception_fer"])
    result = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(result["uar"])
    # a clip without its file stops extraction with the clip named
    (emb_dir / f"{int(clips[0])}.npy").unlink()
    c.output.name = "again"
    with pytest.raises(EmbeddingError, match=f"no embedding for clip {clips[0]}"):
        extract.extract(c)
