"""The fusion transformer on cached generator features (the fast path), one fold.

    python -m fer_jax.train --config configs/fusion.py:face --workdir runs/face_f1
    python -m fer_jax.train --config configs/fusion.py:face,fold=2 --workdir runs/face_f2
    python -m fer_jax.train --config configs/fusion.py:face,generator=resnet18 --workdir runs/r18_f1

The variant is a comma-separated list: a '+'-joined modality subset first (`face`, `pose`,
`omnivec`, `external`, `audio`, e.g. `face+pose+omnivec`), then optional key=value items:
dataset=dfew|mafw|ferv39k (whose cached features: `<dataset>_features/...`; default dfew), fold=k
(the dataset's folds: 1..5 for DFEW and MAFW, 1 for FERV39k's one train/test split),
generator=<name> (which cached features the face modality reads), features=<dfew_features setup
name> (default: the generator's, with `_omnivec` / `_external` appended for those modalities),
omnivec_run=<pretraining workdir> (fine-tune that OmniVec end to end instead of reading its
extracted features), audio=conv|logmel|wav2vec2_base|hubert_base (how the sound is read: `conv`,
the default, trains a log-mel + 1-D conv tokenizer on the raw sound the features dataset carries
from a dfew/*_audio build; a generator name reads its cached features `audio_<name>`, extracted
next to the face features, e.g. configs/extract.py:mini_xception_fer+wav2vec2_base).
Extract the features first: python -m fer_jax.extract --config configs/extract.py:<generator>
(then configs/extract.py:omnivec,run=... or configs/extract.py:npy,path=... for those modalities).
"""

import json
import os

import ml_collections

from configs import variants

OPTIONS = ("fold", "generator", "features", "omnivec_run", "audio", "dataset")
AUDIO_GENERATORS = ("logmel", "wav2vec2_base", "hubert_base")  # audio=<one of these>: cached features


def _omnivec_inputs(run: str, generator: str) -> dict:
    """{part: dataset key} the pretraining run in `run` read (face and pose when its config is not there yet)."""
    path = os.path.join(os.path.expanduser(run), "config.json")
    if not os.path.exists(path):
        return {"face": f"face_{generator}", "pose": "pose"}
    with open(path) as f:
        modalities = json.load(f).get("modalities", {})
    return {name: spec["input"] for name, spec in modalities.items()}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = variants.parse(arg, file="fusion.py", options=OPTIONS, default_modalities="face")
    modalities, options = variant.modalities, variant.options
    generator = options.get("generator", "mini_xception_fer")
    omnivec_run = options.get("omnivec_run", "")  # fine-tune this pretraining run's OmniVec
    audio = options.get("audio", "conv")
    if audio != "conv" and audio not in AUDIO_GENERATORS:
        raise ValueError(f"configs/fusion.py: audio={audio!r}: expected conv or one of {list(AUDIO_GENERATORS)}.")
    cached_audio = "audio" in modalities and audio != "conv"
    # Cached features: the face generator's (+ an audio generator's), plus the OmniVec / external keys
    # extracted next to them.
    default_features = (generator + (f"_{audio}" if cached_audio else "")
                        + ("_omnivec" if "omnivec" in modalities and not omnivec_run else "")
                        + ("_external" if "external" in modalities else ""))
    dataset = options.get("dataset", "dfew")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_classes = 0  # 0: the dataset's (a run records the number it trained with in its config.json)

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = f"{dataset}_features/{options.get('features', default_features)}"
    c.dataset.data_dir = "data/tfds"  # the default of tfds_dfew.build and fer_jax.extract too
    c.dataset.fold = int(options.get("fold", 1))

    available = {
        "face": {"input": f"face_{generator}", "tokenizer": "linear", "generator": generator, "checkpoint": ""},
        # OpenPose keypoints carried in the features dataset (extract from a dfew/*_pose build)
        "pose": {"input": "pose", "tokenizer": "mlp", "generator": "", "checkpoint": ""},
        # a pretrained OmniVec's per-frame embeddings, extracted once (configs/extract.py:omnivec)
        "omnivec": {"input": "omnivec", "tokenizer": "linear", "generator": "omnivec", "checkpoint": ""},
        # per-clip embeddings of an external model (configs/extract.py:npy)
        "external": {"input": "external", "tokenizer": "linear", "generator": "npy", "checkpoint": ""},
        # the clip's sound: raw (carried from a dfew/*_audio build) through a log-mel conv tokenizer,
        # or an audio generator's cached per-slice features (masked by the dataset's audio_mask)
        "audio": ({"input": "audio", "tokenizer": "audio_conv", "generator": "", "checkpoint": ""} if not cached_audio
                  else {"input": f"audio_{audio}", "tokenizer": "linear", "generator": audio, "checkpoint": ""}),
    }
    if omnivec_run:  # the OmniVec network itself, on its own inputs, fine-tuned with the transformer
        available["omnivec"] = {"input": "", "tokenizer": "omnivec", "checkpoint": omnivec_run,
                                "inputs": _omnivec_inputs(omnivec_run, generator)}
    unknown = [m for m in modalities if m not in available]
    if unknown:
        raise ValueError(f"configs/fusion.py: unknown modality {unknown}; available: {sorted(available)}.")
    c.modalities = ml_collections.ConfigDict({m: available[m] for m in modalities})

    c.data = ml_collections.ConfigDict({"crop_size": 0, "flip": False, "read_threads": 2, "prefetch": 8,
                                        "keypoint_min_confidence": 0.05})
    c.data.num_frames = 0  # T the model reads; 0 = every frame the dataset stores per clip (16 unless built _t<n>)
    # Raw sound: every clip's track padded to this length; a longer one keeps this much spread over its
    # 16 time slices (fer_jax.data.audio.fit). DFEW's clips last 2-5 s.
    c.data.audio_seconds = 6.0
    # Training order: 'shuffle' (a new permutation of the split each epoch) or 'class_balanced' (a clip
    # of class c drawn with probability proportional to n_c ** -balance_power: 1 makes every class
    # equally frequent, 0 keeps the data's class frequencies).
    c.data.sampler = "shuffle"
    c.data.balance_power = 1.0

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
    c.optimizer.lr = 1e-3
    c.optimizer.weight_decay = 0.05
    c.optimizer.warmup_steps = 100
    c.optimizer.grad_clip_norm = 1.0
    c.optimizer.end_lr_factor = 0.01
    # (regex over parameter paths, factor): the fine-tuned OmniVec learns at a tenth of the rate
    c.optimizer.lr_multipliers = (("tokenizers/omnivec/omnivec/.*", 0.1),) if omnivec_run else ()

    c.loss = ml_collections.ConfigDict()
    c.loss.label_smoothing = 0.1
    # "" (none) | "balanced" (1 / class count over the fold's training split, mean 1) | one number per
    # class, comma-separated, in the dataset's class order (DFEW's seven: e.g. "1,1,1,1,1,5,1")
    c.loss.class_weights = ""
    # Soft targets: weight lambda of the annotators' vote distribution in the target,
    # (1 - lambda) * smoothed one-hot + lambda * votes / sum(votes). Needs a dataset with `votes`.
    c.loss.soft_targets = 0.0

    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_train_steps = 3000  # ~10 epochs of a DFEW fold's 9,356 training clips
    c.log_every = 50
    c.eval_every = 1000
    c.checkpoint_every = 500
    # multi-process runs: the most seconds between two agreements on stopping (SIGTERM / Ctrl-C); each
    # agreement blocks the host, so not every step (0: after every step). Keep it below the grace period.
    c.stop_check_s = 10.0
    c.keep_checkpoints = 2
    c.async_checkpointing = True  # the step goes on while a checkpoint is written
    c.skip_nonfinite_batches = False
    # an OmniVec (feature or tokenizer) pretrained on the test fold's inputs is refused unless this is True;
    # such a run's results are named transductive (fer_jax.inductive)
    c.allow_transductive = False
    c.progress_bar = True
    return c
