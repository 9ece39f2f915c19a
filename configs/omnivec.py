"""OmniVec pretraining: masked-token reconstruction across face features and OpenPose keypoints.

    python -m fer_jax.pretrain --config configs/omnivec.py --workdir runs/omnivec
    python -m fer_jax.pretrain --config configs/omnivec.py:demo --workdir runs/demo_omnivec   # synthetic data

Reads dfew_features/<features> (default mini_xception_fer: extract it from a `_pose` build so the
keypoints travel along) over every stored split but the test fold: the other folds and the
`unlabelled` split of multi-labelled clips. Labels are never read. Inductive by default: fold 1, the
test fold of every recipe's default, is left out (`exclude_fold=k` leaves fold k out instead, for a
run tested on fold k); `transductive` reads every split's inputs, the test folds' included, and
every classifier run that uses it must say `--config.allow_transductive=True` and is named
transductive in its results (fer_jax.inductive).

Variant: a '+'-joined modality subset (`face+pose`, default), then optional items: `demo`
(synthetic data in data/tfds, a short run), `transductive`, generator=<name> (the face features it reads, default
mini_xception_fer; e.g. resnet18), features=<setup>, exclude_fold=k, steps=N, audio=<generator>
(with the `audio` modality: the cached audio features it reconstructs, default logmel; e.g.
face+pose+audio reads dfew_features/mini_xception_fer_logmel, extracted with
configs/extract.py:mini_xception_fer+logmel,source=frames112_pose_audio).
"""

import ml_collections

from configs import fusion, variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parsed = variants.parse(arg, file="omnivec.py", options=("features", "generator", "exclude_fold", "steps", "audio"), words=("demo", "transductive"),
                            default_modalities="face+pose")
    flags, options = parsed.words, parsed.options
    modalities = "+".join(parsed.modalities)
    if "omnivec" in parsed.modalities:
        raise ValueError("configs/omnivec.py: OmniVec cannot read its own output; use face, pose or external.")
    generator = options.get("generator", "mini_xception_fer")  # which cached face features it reads
    audio = options.get("audio", "logmel")  # per-slice vectors it can reconstruct (not the raw sound)
    if audio == "conv":
        raise ValueError("configs/omnivec.py: audio=conv reads the raw sound, which OmniVec cannot reconstruct per "
                         "frame; use cached audio features (audio=logmel or a speech encoder).")
    with_audio = "audio" in parsed.modalities
    features = options.get("features", generator + (f"_{audio}" if with_audio else ""))
    # Modalities, optimizer and bookkeeping as the fusion config; no classifier, no labels.
    c = fusion.get_config(f"{modalities},features={features},generator={generator}"
                          + (f",audio={audio}" if with_audio else ""))
    del c.loss
    del c.num_classes
    del c.eval_batch_size
    del c.eval_every
    del c.dataset.fold
    del c.allow_transductive
    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.mask_ratio = 0.4  # share of present tokens replaced by the mask token
    c.pretrain.modality_mask_prob = 0.5  # share of clips that hide one whole modality (cross-modal)
    if "transductive" in flags and "exclude_fold" in options:
        raise ValueError("configs/omnivec.py: `transductive` reads every fold; it takes no exclude_fold.")
    # the fold left out (the test fold of the runs that will use it); 0 (`transductive`): every clip's inputs
    c.pretrain.exclude_fold = 0 if "transductive" in flags else int(options.get("exclude_fold", 1))

    c.model = ml_collections.ConfigDict()
    c.model.width = 128
    c.model.depth = 2
    c.model.num_heads = 4
    c.model.mlp_dim = 256
    c.model.dropout = 0.0
    c.model.dtype = "float32"

    c.optimizer.lr = 5e-4
    c.optimizer.warmup_steps = 200
    c.batch_size = 64
    c.num_train_steps = 4000  # ~16 epochs of DFEW's 15,906 clips with frames
    c.checkpoint_every = 1000
    c.keep_checkpoints = 2
    if "demo" in flags:
        c.dataset.data_dir = "data/tfds"
        c.num_train_steps = 300
        c.optimizer.warmup_steps = 30
        c.log_every = 10
        c.checkpoint_every = 100
    if "steps" in options:
        c.num_train_steps = int(options["steps"])
    return c
