"""Evidence that fusion uses its modalities: on a small hard synthetic tree, face+pose clearly beats face alone,
and masking pose out of the face+pose run falls back to about face-only. A fusion that ignored a modality fails here."""

import numpy as np
import pytest

from fer_jax import evaluate, extract, train
from tests.helpers import extract_config, features_config

pytestmark = pytest.mark.slow
CLIPS, SIZE, STEPS = 420, 64, 400


@pytest.fixture(scope="module")
def hard_features(tmp_path_factory):
    """dfew_features/mini_xception_fer (with keypoints) of a small hard-scenario tree: its data_dir."""
    from tfds_dfew import build, synthetic

    root = tmp_path_factory.mktemp("hard") / "DFEW"
    synthetic.generate(root, CLIPS, seed=0, frame_size=SIZE, scenario="hard", multi_frac=0.0, workers=2,
                       audio=False)
    data_dir = str(tmp_path_factory.mktemp("hard_tfds"))
    build.build(str(root), data_dir, config=f"frames{SIZE}_pose", num_workers=2)
    config = extract_config(data_dir, data_dir)
    config.source.name = f"dfew/frames{SIZE}_pose"
    config.batch_size = 16
    extract.extract(config)
    return data_dir


def _train(data_dir, modalities, workdir):
    from configs import fusion

    config = features_config(data_dir, num_train_steps=STEPS, batch_size=32, eval_batch_size=64, log_every=50,
                             checkpoint_every=STEPS, **{"model.width": 64, "model.mlp_dim": 128,
                                                        "optimizer.warmup_steps": 40})
    config.modalities = fusion.get_config(modalities).modalities
    result = train.train_and_evaluate(config, str(workdir))
    return result


def test_face_and_pose_complement_each_other(hard_features, tmp_path):
    face = _train(hard_features, "face", tmp_path / "face")
    both = _train(hard_features, "face+pose", tmp_path / "face_pose")
    without_pose = evaluate.evaluate_checkpoint(str(tmp_path / "face_pose"), drop_modalities=("pose",), write=False)
    print(f"UAR face {face['uar']:.3f}, face+pose {both['uar']:.3f}, face+pose without pose "
          f"{without_pose['uar']:.3f}")
    assert both["uar"] >= face["uar"] + 0.08, (face["uar"], both["uar"])
    # the pose tokens carry what face+pose gains: masking them loses most of the gain
    assert without_pose["uar"] <= face["uar"] + 0.5 * (both["uar"] - face["uar"]), without_pose["uar"]
    assert np.isfinite(without_pose["war"])
