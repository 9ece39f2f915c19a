"""Frozen CLIP image features + the temporal fusion transformer (DFER-CLIP's visual path, no text).

Per frame, the projected image embedding of a frozen OpenAI CLIP ViT-B/16 (512-d; frames resized to
224 by the generator), cached once by `python -m fer_jax.extract`; over the 16 frames, a CLS token +
learnable temporal position embeddings + a transformer encoder + a dense head.

What it aims at (others' published result, DFEW 5-fold mean, UAR / WAR %, not ours):
  DFER-CLIP (Zhao & Patras, BMVC 2023): 59.61 / 71.25. That model differs from this one in three
  ways, so read the number as a ceiling rather than a target to match: it has a text branch
  (learnable prompts + class descriptions through CLIP's text encoder; the logits are
  video-text similarities), it fine-tunes its image encoder (CLIP ViT-B/32, at lr 1e-5), and its
  code keeps the best epoch on the test fold. Ours has no text branch, keeps CLIP frozen
  (features cached once, so training is the small transformer alone) and reports the last step.

Variants (configs.variants.parse), comma-separated:
  (none)   CLIP ViT-B/16, weights 'openai'   -> dfew_features/clip_vit_b16
  l14      CLIP ViT-L/14, weights 'openai'   -> dfew_features/clip_vit_l14   (768-d)
  siglip   SigLIP ViT-B/16, weights 'webli'  -> dfew_features/siglip_vit_b16 (768-d)
  fold=k   1..5 (default 1)
  tiny     shrinks model, batch and steps for tests and smoke runs

Hyperparameters on real DFEW, and why:
  - transformer as DFER-CLIP's temporal model: width 512, 1 encoder layer, 8 heads, MLP 1024; the
    face features enter through a `linear` tokenizer (LayerNorm + Linear to 512). Dropout 0.1,
    label smoothing 0.1.
  - AdamW, peak lr 1e-3, weight decay 0.05 (MAE-DFER's AdamW settings; DFER-CLIP used SGD at 1e-2
    for its temporal model), 2 epochs of warm-up, cosine decay to 1e-5, gradient clipping at 1.
  - batch 32, 50 epochs (DFER-CLIP trains 50): 50 x ceil(9,356 / 32) = 14,650 steps per fold.

On real DFEW (frames stored at 224 px, DFEW's own face-crop size, so the ViTs see no upsampled
frames; one feature extraction per generator, then any number of training runs):

    python -m tfds_dfew.build --manual_dir ~/DFEW --data_dir data/tfds --config frames224
    python -m fer_jax.extract --config configs/extract.py:clip_vit_b16,weights=openai,source=frames224
    python -m fer_jax.train --config configs/clip.py:fold=1 --workdir runs/clip_b16_f1
    python -m fer_jax.evaluate --workdir runs/clip_b16_f1
    python -m fer_jax.cross_validate --config configs/clip.py --workdir runs/clip_b16

    python -m fer_jax.extract --config configs/extract.py:clip_vit_l14,weights=openai,source=frames224
    python -m fer_jax.cross_validate --config configs/clip.py:l14 --workdir runs/clip_l14
    python -m fer_jax.extract --config configs/extract.py:siglip_vit_b16,weights=webli,source=frames224
    python -m fer_jax.cross_validate --config configs/clip.py:siglip --workdir runs/siglip_b16

(The weights are fetched once into $FER_JAX_CACHE and checked against their pinned SHA-256; on a
machine without internet, put the files named in fer_jax.weights.hub.WEIGHTS there by hand.)
"""

import ml_collections

from configs import fusion, variants

# variant word -> (generator, the weights name to extract its features with); the default is CLIP ViT-B/16
GENERATORS = {"": ("clip_vit_b16", "openai"), "l14": ("clip_vit_l14", "openai"),
              "siglip": ("siglip_vit_b16", "webli")}
TRAIN_CLIPS = 9356  # a DFEW fold's training split (folds 1-2; 9,356..9,361 in the others)
BATCH = 32
EPOCHS = 50


def _steps(epochs: float, batch: int = BATCH) -> int:
    return int(round(epochs * -(-TRAIN_CLIPS // batch)))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parsed = variants.parse(arg, file="clip.py", options=("fold",), words=("tiny", "l14", "siglip"))
    if parsed.modalities:
        raise ValueError(f"configs/clip.py: unknown variant {'+'.join(parsed.modalities)!r}; known: l14, siglip, "
                         "tiny, fold=k.")
    towers = sorted(parsed.words & {"l14", "siglip"})
    if len(towers) > 1:
        raise ValueError(f"configs/clip.py: choose one image tower, not {towers}.")
    generator, _ = GENERATORS[towers[0] if towers else ""]
    c = fusion.get_config(f"face,generator={generator},fold={int(parsed.options.get('fold', 1))}")
    c.dataset.data_dir = "data/tfds"  # where fer_jax.extract writes dfew_features/<generator>
    c.dataset.source = "frames224"  # the build the features are extracted from (what a missing-data message names)
    c.data.crop_size = 0
    c.data.flip = False  # cached features cannot be mirrored

    c.model.width = 512
    c.model.depth = 1
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
    c.optimizer.lr_multipliers = ()
    c.loss.label_smoothing = 0.1

    c.batch_size = BATCH
    c.eval_batch_size = 64
    c.num_train_steps = _steps(EPOCHS)  # 14,650
    c.optimizer.warmup_steps = _steps(2)
    c.log_every = 100
    c.eval_every = _steps(10)
    c.checkpoint_every = _steps(5)
    c.keep_checkpoints = 2

    if "tiny" in parsed.words:  # seconds on a CPU (point config.dataset at a small extraction)
        c.model.width = 32
        c.model.num_heads = 2
        c.model.mlp_dim = 64
        c.batch_size = 8
        c.eval_batch_size = 8
        c.num_train_steps = 4
        c.optimizer.warmup_steps = 1
        c.log_every = 1
        c.eval_every = 0
        c.checkpoint_every = 4
        c.progress_bar = False
    return c
