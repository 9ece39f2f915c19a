"""Extraction on several hosts: each process computes the features of its share of every split, on its own
devices; process 0 writes the one features dataset once every share is there.

    <out_dir>/<dataset>_features/<name>/_parts-<key>/<split>-<p>-of-<P>.npz   process p's share of a split
                                                      FAILED                  process 0 could not write the dataset

Process p takes the p-th contiguous block of every split (clips [p*n/P, (p+1)*n/P)), in batches read ahead
as a single host reads them (`tfds_dfew.features.read_ahead`), and writes its clip ids and features as one
file through the path layer (a shared folder or a gs:// bucket every host sees; written whole, so a reader
never sees half of one). Process 0 waits for all of them, then builds the dataset as a single host does,
reading the source again (for the fields it carries along; TFDS's numpy reader cannot skip decoding the
frames, so they are decoded again, about 200 clips/s per core at 112 px) and taking each clip's features
from the shares; it deletes the shares once the dataset is complete. The other processes
wait until their own share is gone (the dataset is complete) and return its folder. `<key>` names the
setup and the source build, so the shares of an interrupted extraction of the same setup are reused by
its rerun (a share already there is not computed again) and never mixed with another's. The processes
synchronise through these files only: no collective, so no barrier can time out during a long build.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time

import jax
import numpy as np

from fer_jax import paths
from fer_jax.errors import UserError
from tfds_dfew import datasets
from tfds_dfew import features as features_lib

log = logging.getLogger(__name__)

POLL_S = 1.0
FAILED = "FAILED"


class ExtractionFailed(UserError):
    """Process 0 of a multi-host extraction could not write the dataset."""


def parts_dir(out_dir: str, output: str, setup: dict, source) -> str:
    key = hashlib.sha256(json.dumps({"setup": setup, "source": features_lib.source_build(source)}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    return paths.join(out_dir, *output.split("/"), f"_parts-{key}")


def _part(folder: str, split: str, p: int, count: int) -> str:
    return paths.join(folder, f"{split}-{p}-of-{count}.npz")


def share(n: int, p: int, count: int) -> range:
    """Process p's contiguous block of n clips."""
    return range(n * p // count, n * (p + 1) // count)


def compute_share(source, run, *, batch: int, folder: str, p: int, count: int) -> None:
    """Computes and writes this process's share of every split (skipping shares already written)."""
    for split in sorted(source.info.splits.keys()):
        target = _part(folder, split, p, count)
        if paths.exists(target):
            log.info("%s: share %d of %d already written", split, p + 1, count)
            continue
        data = source.as_data_source(split=split)
        ids, outputs = [], {}
        for records in features_lib.read_ahead(data, share(len(data), p, count), batch):
            out = run(records)
            ids += [r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else str(r["clip_id"]) for r in records]
            for key, value in out.items():
                outputs.setdefault(key, []).append(np.asarray(value, np.float32))
        arrays = {f"feature/{k}": np.concatenate(v) for k, v in outputs.items()}
        buffer = io.BytesIO()
        np.savez(buffer, clip_ids=np.asarray(ids, dtype=str), **arrays)
        paths.write_bytes(target, buffer.getvalue())
        log.info("%s: wrote share %d of %d (%d clips)", split, p + 1, count, len(ids))


def _load_shares(source, folder: str, count: int) -> dict[str, dict[str, np.ndarray]]:
    """{clip id: {feature key: array}} from every process's shares, waiting until all of them exist."""
    wanted = [_part(folder, split, p, count) for split in sorted(source.info.splits.keys()) for p in range(count)]
    waited = time.time()
    while True:
        missing = [w for w in wanted if not paths.exists(w)]
        if not missing:
            break
        if time.time() - waited > 60:
            log.info("waiting for %d shares of other processes (first: %s)", len(missing), missing[0])
            waited = time.time()
        time.sleep(POLL_S)
    table = {}
    for path in wanted:
        with np.load(io.BytesIO(paths.read_bytes(path)), allow_pickle=False) as stored:
            keys = [k for k in stored.files if k.startswith("feature/")]
            values = {k[len("feature/"):]: stored[k] for k in keys}
            for i, clip_id in enumerate(stored["clip_ids"]):
                table[str(clip_id)] = {k: v[i] for k, v in values.items()}
    return table


def extract(source, run, *, batch: int, out_dir: str, output: str, setup: dict, write) -> str:
    """The multi-host extraction of `run`'s features of `source`; `write(compute)` builds the dataset
    (process 0) and returns its folder, which every process returns."""
    p, count = jax.process_index(), jax.process_count()
    folder = parts_dir(out_dir, output, setup, source)
    started = time.time()
    if p == 0 and paths.exists(paths.join(folder, FAILED)):
        paths.remove(paths.join(folder, FAILED))  # an earlier attempt's; this one starts again
    compute_share(source, run, batch=batch, folder=folder, p=p, count=count)
    if p != 0:
        return _wait_for_dataset(folder, _part(folder, sorted(source.info.splits.keys())[0], p, count), out_dir,
                                 output, started)
    try:
        table = _load_shares(source, folder, count)

        def lookup(records):
            ids = [r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else str(r["clip_id"]) for r in records]
            missing = [i for i in ids if i not in table]
            if missing:
                raise ExtractionFailed(f"the shares in {folder} hold no features for clip {missing[0]}: they were "
                                       "written from another build of the source; delete that folder and rerun.")
            return {k: np.stack([table[i][k] for i in ids]) for k in table[ids[0]]}

        path = write(lookup)
    except BaseException as e:
        paths.write_text(paths.join(folder, FAILED), f"{type(e).__name__}: {e}")
        raise
    paths.remove(folder)
    return path


def _wait_for_dataset(folder: str, own: str, out_dir: str, output: str, started: float) -> str:
    """Waits (process p > 0) until process 0 has written the dataset (it deletes the shares then)."""
    while paths.exists(own):
        failed = paths.join(folder, FAILED)
        if paths.exists(failed) and paths.mtime(failed) >= started - 1:
            raise ExtractionFailed(f"process 0 could not write {output}: {paths.read_text(failed)[:300]}")
        time.sleep(POLL_S)
    path = datasets.version_dir(out_dir, output)
    if path is None:
        raise ExtractionFailed(f"the shares of {output} in {folder} were removed, but no complete dataset is in "
                               f"{out_dir}; rerun the extraction.")
    return path
