"""End to end from frames: a per-frame encoder + the fusion transformer, trained on `dfew` frames.

    python -m fer_jax.train --config configs/frames.py --workdir runs/frames_f1           # CNN from scratch
    python -m fer_jax.train --config configs/frames.py:finetune --workdir runs/ft_f1     # fine-tune mini-Xception
    python -m fer_jax.train --config configs/frames.py:tiny --workdir /tmp/t             # seconds, for tests

`finetune` trains the pretrained mini_xception_fer generator (at a tenth of the learning rate)
together with the transformer; `python -m fer_jax.extract` can then cache the fine-tuned
generator's features (`--config.generators.face_mini_xception_fer.checkpoint=runs/ft_f1`).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_classes = 7

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "dfew/frames112"
    c.dataset.data_dir = "data/tfds"
    c.dataset.fold = 1

    # modality name -> where it comes from and how it becomes tokens
    c.modalities = ml_collections.ConfigDict()
    c.modalities.face = ml_collections.ConfigDict(
        {"input": "frames", "tokenizer": "cnn", "channels": (24, 48, 96, 192)})

    c.data = ml_collections.ConfigDict()
    c.data.crop_size = 96
    c.data.flip = True
    c.data.read_threads = 2
    c.data.prefetch = 4

    c.model = ml_collections.ConfigDict()
    c.model.width = 128
    c.model.depth = 2
    c.model.num_heads = 4
    c.model.mlp_dim = 256
    c.model.dropout = 0.1
    c.model.attention_dropout = 0.0
    c.model.head_dropout = 0.1
    c.model.modality_dropout = 0.0
    c.model.fusion = "concat"  # concat | early | bottleneck | late
    c.model.bottleneck_tokens = 4  # bottleneck fusion: shared tokens per layer
    c.model.fusion_layer = 0  # bottleneck fusion: first layer that exchanges tokens
    c.model.dtype = "float32"

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"
    c.optimizer.lr = 2e-3
    c.optimizer.weight_decay = 0.05
    c.optimizer.warmup_steps = 30
    c.optimizer.grad_clip_norm = 1.0
    c.optimizer.end_lr_factor = 0.01
    # ((regex over parameter paths, learning-rate factor), ...); factor 0 freezes
    c.optimizer.lr_multipliers = ()

    c.loss = ml_collections.ConfigDict()
    c.loss.label_smoothing = 0.1
    c.loss.class_weights = ml_collections.FieldReference(None, field_type=list)

    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_train_steps = 300
    c.log_every = 10
    c.eval_every = 100
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    c.skip_nonfinite_batches = False
    c.progress_bar = True

    if arg == "tiny":  # a few seconds: tests and smoke runs
        c.modalities.face.channels = (8, 16)
        c.data.crop_size = 32
        c.model.width = 32
        c.model.depth = 1
        c.model.num_heads = 2
        c.model.mlp_dim = 64
        c.batch_size = 8
        c.eval_batch_size = 8
        c.num_train_steps = 6
        c.log_every = 2
        c.eval_every = 0
        c.checkpoint_every = 3
        c.optimizer.warmup_steps = 2
        c.progress_bar = False
    elif arg == "finetune":
        c.modalities.face = ml_collections.ConfigDict(
            {"input": "frames", "tokenizer": "generator", "generator": "mini_xception_fer", "weights": "",
             "pretrained": True})
        c.data.crop_size = 104
        c.optimizer.lr = 1e-3
        c.optimizer.lr_multipliers = (("tokenizers/face/generator/.*", 0.1),)
    elif arg not in (None, ""):
        raise ValueError(f"configs/frames.py: unknown variant {arg!r}; use 'tiny', 'finetune' or nothing.")
    return c
