"""End to end from frames: a per-frame encoder + the fusion transformer, trained on `dfew` frames.

    python -m fer_jax.train --config configs/frames.py --workdir runs/frames_f1           # CNN from scratch
    python -m fer_jax.train --config configs/frames.py:finetune --workdir runs/ft_f1     # fine-tune mini-Xception
    python -m fer_jax.train --config configs/frames.py:tiny --workdir /tmp/t             # seconds, for tests

`finetune` trains the pretrained mini_xception_fer generator (at a tenth of the learning rate)
together with the transformer; `python -m fer_jax.extract` can then cache the fine-tuned
generator's features (`--config.generators.face_mini_xception_fer.checkpoint=runs/ft_f1`).
"""

import ml_collections

from configs import fusion, variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """arg: '' | 'tiny' | 'finetune', optionally followed by ',fold=k'."""
    parsed = variants.parse(arg, file="frames.py", options=("fold",), words=("tiny", "finetune"))
    if parsed.modalities:
        raise ValueError(f"configs/frames.py: unknown variant {'+'.join(parsed.modalities)!r}; use 'tiny', "
                         "'finetune' or nothing.")
    variant = next(iter(parsed.words), "")
    options = parsed.options
    # Model, optimizer, loss and bookkeeping as configs/fusion.py; the input side differs.
    c = fusion.get_config(f"face,fold={options.get('fold', 1)}")
    c.dataset.name = "dfew/frames112"
    c.dataset.data_dir = "data/tfds"

    # modality name -> where it comes from and how it becomes tokens
    c.modalities = ml_collections.ConfigDict()
    c.modalities.face = ml_collections.ConfigDict(
        {"input": "frames", "tokenizer": "cnn", "channels": (24, 48, 96, 192)})
    c.data.update({"crop_size": 96, "flip": True, "read_threads": 2, "prefetch": 4})  # sampler etc. as fusion.py

    c.optimizer.lr = 2e-3
    c.optimizer.warmup_steps = 30
    c.num_train_steps = 300
    c.log_every = 10
    c.eval_every = 100
    c.checkpoint_every = 100

    if variant == "tiny":  # a few seconds: tests and smoke runs
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
    elif variant == "finetune":
        c.modalities.face = ml_collections.ConfigDict(
            {"input": "frames", "tokenizer": "generator", "generator": "mini_xception_fer", "weights": "",
             "pretrained": True})
        c.data.crop_size = 104
        c.optimizer.lr = 1e-3
        c.optimizer.lr_multipliers = (("tokenizers/face/generator/.*", 0.1),)
    return c
