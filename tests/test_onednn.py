"""The programs ask TensorFlow for oneDNN (training/onednn.py); a process without it still norms correctly."""

import json
import os
import subprocess
import sys
import textwrap

from tests.training_helpers import ROOT
from training.onednn import ONEDNN_FLAG

# Run in a fresh process: the setting takes only before TensorFlow's import.
_WITHOUT_ONEDNN = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    from keras_mixer.fused_norm import onednn_enabled, onednn_inference_applies
    from keras_mixer.layers import LayerNormalization
    from training.machine import machine_description, xla_for_training

    x = np.random.default_rng(0).standard_normal((2, 256, 256)).astype("float32") * 3 + 1
    norm = LayerNormalization(epsilon=1e-6)
    norm.build(x.shape)
    seen = []
    def forward(t):
        seen.append(onednn_inference_applies(norm, t, False))
        return norm(t, training=False)
    traced = tf.function(forward, input_signature=[tf.TensorSpec((None, 256, 256))])
    ops = {node.op for node in traced.get_concrete_function().graph.as_graph_def().node}
    print(json.dumps({
        "onednn": onednn_enabled(), "machine": machine_description()["onednn"], "applies": seen[0],
        "fused_batch_norm": "FusedBatchNormV3" in ops, "out": traced(tf.constant(x)).numpy().tolist(),
        "x": x.tolist(), "xla": xla_for_training(None, "float32", gpus=[])[0],
    }))
    """
)


def _child(code, flag):
    env = {key: value for key, value in os.environ.items() if key != ONEDNN_FLAG}
    if flag is not None:
        env[ONEDNN_FLAG] = flag
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_programs_turn_onednn_on_unless_the_user_said_otherwise():
    code = "import json, os, training\nfrom keras_mixer.fused_norm import onednn_enabled\n"
    code += f"print(json.dumps([os.environ[{ONEDNN_FLAG!r}], onednn_enabled()]))"
    assert _child(code, None) == ["1", True]  # TensorFlow alone leaves it off on a CPU with AVX2 only
    assert _child(code, "0") == ["0", False]


def test_without_onednn_the_norm_skips_onednns_form_and_stays_exact():
    import numpy as np  # noqa: PLC0415

    from tests.reference_mixer import layer_norm  # noqa: PLC0415

    report = _child(_WITHOUT_ONEDNN, "0")
    assert report["onednn"] is False and report["machine"] is False and report["applies"] is False
    assert report["fused_batch_norm"] is False  # nothing would rewrite it into one op
    assert report["xla"] is False  # float32 training without oneDNN: XLA measured slower
    x = np.array(report["x"], dtype="float64")
    expected = layer_norm(x, np.ones(256), np.zeros(256))
    np.testing.assert_allclose(np.array(report["out"]), expected, rtol=1e-5, atol=1e-5)
