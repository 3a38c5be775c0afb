"""What machine a figure was measured on: CPU model, its bf16/int8 units, cores, GPUs, versions.

Training summaries and every benchmark record it, so a speed figure always travels with its CPU.
"""

import os
import platform

from keras_mixer.cpu import cpu_model_and_flags


def xla_for_training(requested, precision="float32", onednn=None, gpus=None):
    """(compile the train step with XLA?, why): `requested` (True / False) wins; None means auto.

    Auto follows what was measured (README, "Performance"). In float32 with TensorFlow's oneDNN on, XLA
    trained faster: the default model 1.3-1.4x through `model.fit` and S/16 1.17x per step on the AMD
    EPYC with AVX-512, S/16 1.10x per step on the Xeon with AMX, and the default model's step 1.3-1.4x
    on the AMD EPYC with AVX2 only, once oneDNN is on there (`training/onednn.py`); S/16 on that CPU
    trained 0.93-0.94x as fast with XLA (benchmark runs 19 and 20), so there a large preset wants
    `--xla false`. With oneDNN off (that EPYC's TensorFlow default) the default model's step ran
    0.75-0.8x as fast with XLA. In bfloat16 XLA made S/16 training 0.64x as fast on the AVX-512 EPYC
    (XLA's CPU matmuls miss oneDNN's bf16 rate). So
    auto turns XLA on for float32 with oneDNN on and no GPU, off elsewhere (GPUs are unmeasured by this
    project). One rule per CPU type and oneDNN setting keeps a seeded run deterministic there.

    >>> xla_for_training(None, "float32", onednn=True, gpus=[])[0]
    True
    >>> xla_for_training(None, "float32", onednn=False, gpus=[])
    (False, "auto: TensorFlow's oneDNN is off, where XLA trained 0.75-0.8x as fast")
    """
    if requested is not None:
        return bool(requested), "asked for (--xla)"
    if onednn is None:
        from keras_mixer.fused_norm import onednn_enabled  # noqa: PLC0415

        onednn = onednn_enabled()
    if gpus is None:
        import tensorflow as tf  # noqa: PLC0415

        gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return False, "auto: a GPU is visible (XLA there is unmeasured by this project)"
    if precision != "float32":
        return False, f"auto: {precision} (XLA trained S/16 in bfloat16 0.64x as fast on the AVX-512 EPYC)"
    if onednn:
        return True, "auto: float32 with TensorFlow's oneDNN on, where XLA trained 1.1-1.4x faster"
    return False, "auto: TensorFlow's oneDNN is off, where XLA trained 0.75-0.8x as fast"


def machine_description():
    """{cpu, cpu_flags, onednn, cores, gpus, tensorflow, keras, python} of this machine and process."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer.fused_norm import onednn_enabled  # noqa: PLC0415

    cpu, flags = cpu_model_and_flags()
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "onednn": onednn_enabled(),  # TensorFlow's oneDNN kernels (training/onednn.py)
        "cores": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_logical_devices("GPU")],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }
