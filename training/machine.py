"""What machine a figure was measured on: CPU model, its bf16/int8 units, cores, GPUs, versions.

Training summaries and every benchmark record it, so a speed figure always travels with its CPU.
"""

import os
import platform

from keras_mixer.cpu import cpu_model_and_flags

# On a CPU without AVX-512 XLA trained models with few tokens faster and models with many slower
# (`python -m benchmarks.xla_training_ab`, float32, AVX2-only EPYC, XLA / graph step, median of 12 rounds):
# 16 tokens 1.27x (default model, batch 128) and 1.11x (batch 512); 49 tokens 1.17x (S/32 b8), 1.13x
# (B/32 b8), 1.03x (S/32 b32); 196 tokens 0.94x (S/16 b8), 0.92x (B/16 b8). The same S/16 at 112 px
# (49 tokens) 1.10x and at 160 px (100 tokens) 1.01x, even: the cut sits there, at the geometric mean of
# 49 and 196. The batch matters too (S/32 b32 1.03x, S/16 at 112 px b32 0.88x and 0.95x); the cut
# is for the batch-8 steps measured. CPUs with AVX-512 trained S/16 at 224 px faster with XLA.
MAX_XLA_TOKENS_WITHOUT_AVX512 = 98


def xla_for_training(requested, precision="float32", onednn=None, gpus=None, num_tokens=None, cpu_flags=None):
    """(compile the train step with XLA?, why): `requested` (True / False) wins; None means auto.

    Auto follows what was measured (README, "Performance"). In float32 with TensorFlow's oneDNN on, XLA
    trained faster: the default model 1.3-1.4x through `model.fit` and S/16 1.17x per step on the AMD
    EPYC with AVX-512, S/16 1.10x per step on the Xeon with AMX. On the AMD EPYC with AVX2 only (oneDNN
    on, `training/onednn.py`) it depends on the token count: XLA trained the 16- and 49-token models
    1.03-1.27x faster and the 196-token ones (S/16, B/16 at 224 px) 0.92-0.94x as fast, so on a CPU
    without AVX-512 auto keeps XLA off above `MAX_XLA_TOKENS_WITHOUT_AVX512` tokens (`num_tokens`; None:
    not known, XLA on). With oneDNN off (that EPYC's TensorFlow default) the default model's step ran
    0.75-0.8x as fast with XLA. In bfloat16 XLA made S/16 training 0.64x as fast on the AVX-512 EPYC
    (XLA's CPU matmuls miss oneDNN's bf16 rate). GPUs are unmeasured by this project: auto is off there.
    One rule per CPU type, oneDNN setting and model keeps a seeded run deterministic there.
    `cpu_flags`: this CPU's (`keras_mixer.cpu.cpu_model_and_flags`) unless given.

    >>> xla_for_training(None, "float32", onednn=True, gpus=[], cpu_flags=["avx2"])[0]
    True
    >>> xla_for_training(None, "float32", onednn=True, gpus=[], num_tokens=196, cpu_flags=["avx2"])[0]
    False
    >>> xla_for_training(None, "float32", onednn=True, gpus=[], num_tokens=196, cpu_flags=["avx512f", "avx2"])[0]
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
    if not onednn:
        return False, "auto: TensorFlow's oneDNN is off, where XLA trained 0.75-0.8x as fast"
    if cpu_flags is None and num_tokens is not None:
        cpu_flags = cpu_model_and_flags()[1]
    if num_tokens is not None and num_tokens > MAX_XLA_TOKENS_WITHOUT_AVX512 and "avx512f" not in cpu_flags:
        return False, (
            f"auto: {num_tokens} tokens on a CPU without AVX-512, where XLA trained the 196-token S/16 and B/16"
            f" 0.92-0.94x as fast (more than {MAX_XLA_TOKENS_WITHOUT_AVX512} tokens keep it off)"
        )
    return True, "auto: float32 with TensorFlow's oneDNN on, where XLA trained 1.03-1.4x faster"


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
