"""The demo: fusion transformer on face features, OpenPose keypoints, sound and OmniVec embeddings of the synthetic data, fold 1.

    make demo        # hard synthetic data -> build -> extract -> pretrain OmniVec -> extract it -> fold-1 ablation
    python -m fer_jax.cross_validate --config configs/demo.py --workdir runs/demo --folds 1 \
        --subsets face,face+pose,face+audio,face+pose+audio,face+pose+omnivec
    python -m fer_jax.train --config configs/demo.py:face --workdir runs/demo_face     # any configs/fusion.py variant

Same model as configs/fusion.py:face+pose+omnivec+audio (the sound read raw, through the log-mel
conv tokenizer), sized for the hard scenario's ~780 training clips of fold 1
(`python -m tfds_dfew.synthetic --scenario hard`, whose clips last at most 2.4 s).
"""

from configs import fusion


def get_config(arg: str | None = None):
    c = fusion.get_config(arg or "face+pose+omnivec+audio")
    c.dataset.data_dir = "data/tfds"
    c.data.audio_seconds = 2.5
    c.num_train_steps = 600  # ~25 epochs of fold 1's ~780 training clips
    c.optimizer.warmup_steps = 50
    c.log_every = 10
    c.eval_every = 200
    c.checkpoint_every = 200
    return c
