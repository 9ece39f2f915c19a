"""The seed paper's recipe: ImageNet ResNet-18 per-frame features + a temporal transformer (arXiv 2504.21248).

Engel, Li, Hudy, Schleusner, "Multi-modal Transfer Learning for Dynamic Facial Emotion Recognition
in the Wild" (arXiv 2504.21248, 2025): 16 face frames per clip at 112 px, an ImageNet ResNet-18
giving 512 features per frame, learnable temporal position embeddings, a transformer encoder and
a shallow dense head; OpenPose keypoints and OmniVec embeddings as extra modalities.

What it aims at (others' published results, DFEW 5-fold mean, UAR / WAR %, not ours):
  - the seed paper itself: its abstract says only that the multi-modal feature generators
    "modestly improve" accuracy; we could not find its DFEW numbers with the search tool, so
    none is quoted here.
  - Former-DFER (Zhao & Liu, ACM MM 2021; ResNet-18 per frame + transformers, trained end to
    end at 112 px): 53.69 / 65.70, the closest published ResNet-18 + transformer number.
    (Former-DFER's own code keeps the best epoch on the test fold; we report the last step.)

Variants (configs.variants.parse): a mode word, an optional modality subset, key=value options.
  frozen    (default) the transformer on cached features `dfew_features/resnet18` (ImageNet
            ResNet-18 on the stored 112 px frames, extracted once); face = a `linear` tokenizer
            (LayerNorm + Linear) as in configs/fusion.py.
  finetune  end to end on `dfew/frames112`: the `generator` tokenizer (resnet18, weights
            'imagenet') learns at a tenth of the transformer's rate
            (config.optimizer.lr_multipliers on tokenizers/face/generator/.*), with Former-DFER's
            augmentation: a random 104 px crop of the 112 px frames (the centre crop at test
            time) and a horizontal flip of half of the clips.
  face+pose, face+omnivec, face+pose+omnivec (or `+pose`, `+omnivec`: added to face)
            the paper's extra modalities, as configs/fusion.py builds them: `pose` = OpenPose
            keypoints (an `mlp` tokenizer; the features must be extracted from a `frames112_pose`
            build), `omnivec` = a pretrained OmniVec's embeddings extracted next to the ResNet
            features (`dfew_features/resnet18_omnivec`). `finetune` takes `+pose` (from
            `dfew/frames112_pose`), not `+omnivec` (its embeddings exist only as cached features).
            A face-only finetune reads dfew/frames112; with only a `_pose` build, add
            --config.dataset.name=dfew/frames112_pose.
  fold=k    1..5 (default 1). frozen only: features=<setup>, omnivec_run=<pretraining workdir>
            as in configs/fusion.py.
  tiny      shrinks everything (model, batch, steps, crop) for tests and smoke runs.

Hyperparameters on real DFEW, and why:
  - model: width 512 (the ResNet-18 feature size), 3 pre-LN encoder layers, 8 heads, MLP 1024,
    a CLS token read by one dense layer: Former-DFER's temporal transformer (T-Former) size;
    dropout 0.1 in the encoder and before the head, label smoothing 0.1.
  - optimizer: AdamW, peak lr 1e-3, weight decay 0.05 (MAE-DFER's AdamW settings; Former-DFER
    used SGD 0.01), 5 epochs of linear warm-up, cosine decay to 1e-5, gradient clipping at 1.
    finetune: the ResNet-18 at lr 1e-4 (the usual reduced rate for an ImageNet CNN under Adam;
    its BatchNorm statistics are updated from the 32 x 16 = 512 frames of a batch).
  - batch 32 and 100 epochs (Former-DFER and MAE-DFER both train 100 epochs at batch 32):
    100 x ceil(9,356 / 32) = 29,300 steps on a fold's training split. The frozen run is cheap
    (the transformer alone); the fine-tuning run is the expensive one.
  - the reported numbers are those of the last step (no selection on the test fold).

On real DFEW (frames stored at 112 px in data/tfds), fold 1 then all five folds:

    python -m tfds_dfew.build --manual_dir ~/DFEW --data_dir data/tfds --config frames112
    python -m fer_jax.extract --config configs/extract.py:resnet18,weights=imagenet
    python -m fer_jax.train --config configs/paper.py:frozen,fold=1 --workdir runs/paper_frozen_f1
    python -m fer_jax.evaluate --workdir runs/paper_frozen_f1
    python -m fer_jax.cross_validate --config configs/paper.py:frozen --workdir runs/paper_frozen

    python -m fer_jax.train --config configs/paper.py:finetune,fold=1 --workdir runs/paper_ft_f1
    python -m fer_jax.cross_validate --config configs/paper.py:finetune --workdir runs/paper_ft

With pose: DFEW ships no keypoints; run OpenPose over the frames yourself and build
`frames112_pose` (it reads <manual_dir>/OpenPose, or --openpose_dir). The features extracted from
it carry the keypoints along, so the same dfew_features/resnet18 serves face-only and face+pose
runs (extract from frames112_pose instead of frames112 above, not in addition: one setup per
features name):

    python -m tfds_dfew.build --manual_dir ~/DFEW --data_dir data/tfds --config frames112_pose
    python -m fer_jax.extract --config configs/extract.py:resnet18,weights=imagenet,source=frames112_pose
    python -m fer_jax.train --config configs/paper.py:frozen,face+pose --workdir runs/paper_fp_f1
    python -m fer_jax.train --config configs/paper.py:finetune,face+pose --workdir runs/paper_ft_fp_f1

With OmniVec (pretrained on the ResNet-18 features + keypoints above; configs/omnivec.py reads
mini_xception_fer features unless told otherwise, hence the two overrides):

    python -m fer_jax.pretrain --config configs/omnivec.py:face+pose,features=resnet18 \\
        --config.modalities.face.input=face_resnet18 --config.modalities.face.generator=resnet18 \\
        --workdir runs/omnivec_r18
    python -m fer_jax.extract --config configs/extract.py:omnivec,run=runs/omnivec_r18,features=resnet18
    python -m fer_jax.train --config configs/paper.py:frozen,face+pose+omnivec --workdir runs/paper_fpo_f1
"""

import ml_collections

from configs import fusion, variants

WORDS = ("frozen", "finetune", "tiny")
MODALITIES = ("face", "pose", "omnivec")
OPTIONS = ("fold", "features", "omnivec_run")
GENERATOR = "resnet18"
WEIGHTS = "imagenet"
TRAIN_CLIPS = 9356  # a DFEW fold's training split (folds 1-2; 9,356..9,361 in the others)
BATCH = 32
EPOCHS = 100


def _steps(epochs: float, batch: int = BATCH) -> int:
    return int(round(epochs * -(-TRAIN_CLIPS // batch)))


def _normalise(arg: str | None) -> str:
    """'+pose' -> 'face+pose': a modality item that starts with '+' adds to face."""
    items = [a.strip() for a in (arg or "").split(",") if a.strip()]
    return ",".join("face" + a if a.startswith("+") else a for a in items)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parsed = variants.parse(_normalise(arg), file="paper.py", options=OPTIONS, words=WORDS,
                            default_modalities="face")
    words, options, modalities = parsed.words, parsed.options, parsed.modalities
    if {"frozen", "finetune"} <= words:
        raise ValueError("configs/paper.py: choose one of 'frozen' (cached features) and 'finetune' (end to end).")
    finetune = "finetune" in words
    tiny = "tiny" in words
    fold = int(options.get("fold", 1))
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or "face" not in modalities:
        raise ValueError(f"configs/paper.py: unexpected variant {'+'.join(modalities)!r}; the recipe is the face "
                         "frames, optionally with pose and omnivec (face, face+pose, +omnivec, face+pose+omnivec), "
                         f"the words {', '.join(WORDS)} and the options {', '.join(o + '=' for o in OPTIONS)}.")

    if finetune:
        extra = sorted(set(options) - {"fold"})
        if extra:
            raise ValueError(f"configs/paper.py: {extra} apply to cached features (frozen), not to finetune.")
        if set(modalities) - {"face", "pose"}:
            raise ValueError(f"configs/paper.py: finetune trains on dfew frames, which carry no "
                             f"{sorted(set(modalities) - {'face', 'pose'})} input (OmniVec embeddings exist only "
                             "as cached features); use frozen for those, e.g. configs/paper.py:frozen,face+omnivec.")
        c = fusion.get_config(f"{'+'.join(modalities)},generator={GENERATOR},fold={fold}")
        c.dataset.name = "dfew/frames112_pose" if "pose" in modalities else "dfew/frames112"
        c.modalities.face = ml_collections.ConfigDict(
            {"input": "frames", "tokenizer": "generator", "generator": GENERATOR, "weights": WEIGHTS,
             "pretrained": True})
        c.data.crop_size = 104  # random crop of the 112 px frames in training, centre crop at test
        c.data.flip = True
        c.optimizer.lr_multipliers = (("tokenizers/face/generator/.*", 0.1),)
    else:
        passed = [f"{k}={options[k]}" for k in ("features", "omnivec_run") if k in options]
        c = fusion.get_config(",".join(["+".join(modalities), f"generator={GENERATOR}", f"fold={fold}"] + passed))
        c.data.crop_size = 0
        c.data.flip = False  # cached features cannot be mirrored (keypoints could, but stay with the face)
    c.dataset.data_dir = "data/tfds"  # where tfds_dfew.build (as above) and fer_jax.extract put them

    c.model.width = 512
    c.model.depth = 3
    c.model.num_heads = 8
    c.model.mlp_dim = 1024
    c.model.dropout = 0.1
    c.model.attention_dropout = 0.0
    c.model.head_dropout = 0.1
    c.model.fusion = "concat"

    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-3
    c.optimizer.weight_decay = 0.05
    c.optimizer.end_lr_factor = 0.01
    c.optimizer.grad_clip_norm = 1.0
    c.loss.label_smoothing = 0.1

    c.batch_size = BATCH
    c.eval_batch_size = 64
    c.num_train_steps = _steps(EPOCHS)  # 29,300
    c.optimizer.warmup_steps = _steps(5)
    c.log_every = 100
    c.eval_every = _steps(10)
    c.checkpoint_every = _steps(5)
    c.keep_checkpoints = 2

    if tiny:  # seconds on a CPU: tests and smoke runs (point config.dataset at a small build)
        c.model.width = 32
        c.model.depth = 1
        c.model.num_heads = 2
        c.model.mlp_dim = 64
        c.batch_size = 2 if finetune else 8  # finetune: 2 clips = 32 frames through ResNet-18 per step
        c.eval_batch_size = 2 if finetune else 8
        c.num_train_steps = 2 if finetune else 4
        c.optimizer.warmup_steps = 1
        c.log_every = 1
        c.eval_every = 0
        c.checkpoint_every = c.num_train_steps
        c.progress_bar = False
        if finetune:
            c.data.crop_size = 56  # fits the 64 px test builds too
    return c
