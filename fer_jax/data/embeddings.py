"""External per-clip embeddings as a modality: one `.npy` file per clip, computed by any model.

    <directory>/00017.npy                  float[T', E] (per frame or per segment) or float[E] (one per clip)
    <directory>/Crime/Angry/0063.npy       a clip whose id is a path (FERV39k's Scene/Emotion/NNNN)

A clip's file is named by its clip id: a numeric id zero-padded or not (`00017.npy`, `17.npy`), a
path-like id as folders. Rows are resampled to the dataset's frames per clip (16 unless built
otherwise, with the same uniform index spacing as the frames); a single vector is repeated over
the frames. `fer_jax.extract` (generator `npy`)
stores them in a cached-features dataset next to the other modalities.
"""

from __future__ import annotations

import os

import numpy as np

from fer_jax.errors import BadInputError

from tfds_dfew import frames as frames_lib


class EmbeddingError(BadInputError):
    """An embedding file is missing or unusable; the message names the file or clip and what to do."""


def _key(clip_id: str) -> str:
    """How a clip id is looked up: a number zero-padded to 5 digits as DFEW and MAFW write them ('17' ->
    '00017'), anything else (FERV39k's Scene/Emotion/NNNN) as it is."""
    return f"{int(clip_id):05d}" if clip_id.isdigit() and int(clip_id) <= 99999 else clip_id


class NpyEmbeddings:
    """Reads `<directory>/<clip id>.npy` as float32[num_frames, E]; E is fixed by the first file."""

    def __init__(self, directory: str, *, num_frames: int = 16):
        self.directory = os.path.abspath(directory)
        self.num_frames = num_frames
        if not os.path.isdir(self.directory):
            raise EmbeddingError(f"{self.directory}: embeddings folder not found. Write one <clip id>.npy per clip "
                                 "there (float[T, E] or float[E]) and pass its path.")
        self.files: dict[str, str] = {}
        for folder, _, names in sorted(os.walk(self.directory)):
            for name in sorted(names):
                stem, ext = os.path.splitext(name)
                if ext.lower() != ".npy":
                    continue
                path = os.path.join(folder, name)
                clip_id = _key(os.path.relpath(os.path.join(folder, stem), self.directory).replace(os.sep, "/"))
                if clip_id in self.files:
                    raise EmbeddingError(f"{path} and {self.files[clip_id]} are both clip {clip_id}; keep one.")
                self.files[clip_id] = path
        if not self.files:
            raise EmbeddingError(f"{self.directory}: no .npy files; write one <clip id>.npy per clip.")
        first = next(iter(self.files.values()))
        self.dim = int(self._read(first).shape[-1])

    def _read(self, path: str) -> np.ndarray:
        try:
            x = np.load(path, allow_pickle=False)
        except Exception as e:  # truncated file, pickled object, not an .npy at all
            raise EmbeddingError(f"{path}: cannot be read as a numeric .npy array ({type(e).__name__}: {e}); "
                                 "save it again with numpy.save.") from None
        if x.ndim not in (1, 2) or x.shape[-1] == 0 or x.shape[0] == 0:
            raise EmbeddingError(f"{path}: shape {x.shape}; expected float[T, E] (per frame) or float[E] (per clip).")
        if not np.issubdtype(x.dtype, np.number):
            raise EmbeddingError(f"{path}: dtype {x.dtype} is not numeric.")
        if not np.all(np.isfinite(x)):
            raise EmbeddingError(f"{path}: holds NaN or Inf values; recompute this clip's embedding.")
        return x

    def load(self, clip_id: str) -> np.ndarray:
        """float32[num_frames, E] for a clip id (any zero padding)."""
        clip_id = _key(str(clip_id))
        path = self.files.get(clip_id)
        if path is None:
            raise EmbeddingError(
                f"{self.directory}: no embedding for clip {clip_id} (expected {clip_id}.npy). Every clip of the "
                "source dataset needs one, the multi-labelled (unlabelled split) clips included.")
        x = self._read(path)
        if x.shape[-1] != self.dim:
            raise EmbeddingError(f"{path}: {x.shape[-1]} values per row, but the other files have {self.dim}.")
        if x.ndim == 1:
            return np.broadcast_to(x.astype(np.float32), (self.num_frames, self.dim)).copy()
        return x[frames_lib.sample_indices(len(x), self.num_frames)].astype(np.float32)

    def batch(self, records) -> np.ndarray:
        """float32[n, num_frames, E] for dataset records (their `clip_id`)."""
        ids = [r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else str(r["clip_id"]) for r in records]
        return np.stack([self.load(c) for c in ids])
