"""What machine a figure was measured on: CPU model, its bf16/int8 units, cores, GPUs, versions.

Training summaries and every benchmark record it, so a speed figure always travels with its CPU.
"""

import os
import platform

from keras_mixer.cpu import cpu_model_and_flags

# On a CPU without AVX-512 XLA trained small steps faster and large ones slower. It loses in the
# channel-mixing matmuls (XLA's own CPU matmul against oneDNN's), so the rule reads their size: the
# multiply-adds of one channel-mixing matmul in one replica's step, batch x tokens x hidden x MLP width
# (`channel_mixing_macs`). `python -m benchmarks.xla_training_ab`, float32, AVX2-only EPYC, XLA / graph
# step, median of 12 rounds, by that size: 0.13 G (default model b128) 1.27x; 0.41 G (S/32 b8 1.17x,
# S/16 at 112 px b8 1.10x); 0.54 G (default model b512) 1.11x; 0.84 G (S/16 at 160 px b8) 1.01x;
# 0.93 G (B/32 b8) 1.13x; 1.64 G (S/32 b32 1.03x, S/16 b8 0.94x, S/16 at 112 px b32 0.88x and 0.95x);
# 3.7 G (B/16 b8) 0.92x. The cut sits between 0.93 and 1.64 G, at about their geometric mean; S/32 at
# batch 32 (1.03x) falls on the off side. CPUs with AVX-512 trained S/16 at 224 px faster with XLA.
MAX_XLA_CHANNEL_MACS_WITHOUT_AVX512 = 1_200_000_000


def channel_mixing_macs(model, batch_per_replica):
    """Multiply-adds of one channel-mixing matmul in one replica's train step (what `xla_for_training` reads).

    None for a model without a Mixer's sizes.

    >>> from keras_mixer import MixerS16
    >>> channel_mixing_macs(MixerS16(num_classes=10), 8) / 1e9  # 8 x 196 tokens x 512 x 2048
    1.644167168
    """
    sizes = [getattr(model, name, None) for name in ("num_tokens", "hidden_dim", "channels_mlp_dim")]
    if None in sizes:
        return None
    tokens, hidden, width = sizes
    return batch_per_replica * tokens * hidden * width


def xla_for_training(requested, precision="float32", onednn=None, gpus=None, channel_macs=None, cpu_flags=None):
    """(compile the train step with XLA?, why): `requested` (True / False) wins; None means auto.

    Auto follows what was measured (README, "Performance"). In float32 with TensorFlow's oneDNN on, XLA
    trained faster: the default model 1.3-1.4x through `model.fit` and S/16 1.17x per step on the AMD
    EPYC with AVX-512, S/16 1.10x and 1.01x per step on the Xeon with AMX. On the AMD EPYC with AVX2
    only (oneDNN on, `training/onednn.py`) it depends on the size of the step's channel-mixing matmuls
    (`channel_macs`, from `channel_mixing_macs`; None: not known, XLA on): XLA trained steps of up to
    0.93 G multiply-adds there 1.01-1.27x faster and those of 1.64 G and more 0.88-1.03x as fast, so on
    a CPU without AVX-512 auto keeps XLA off above `MAX_XLA_CHANNEL_MACS_WITHOUT_AVX512`. With oneDNN
    off (that EPYC's TensorFlow default) the default model's step ran 0.75-0.8x as fast with XLA. In
    bfloat16 XLA made S/16 training 0.64x as fast on the AVX-512 EPYC (XLA's CPU matmuls miss oneDNN's
    bf16 rate). GPUs are unmeasured by this project: auto is off there. One rule per CPU type, oneDNN
    setting, model and batch keeps a seeded run deterministic there. `cpu_flags`: this CPU's
    (`keras_mixer.cpu.cpu_model_and_flags`) unless given.

    >>> xla_for_training(None, "float32", onednn=True, gpus=[], cpu_flags=["avx2"])[0]
    True
    >>> xla_for_training(None, "float32", onednn=True, gpus=[], channel_macs=1.6e9, cpu_flags=["avx2"])[0]
    False
    >>> xla_for_training(None, "float32", onednn=True, gpus=[], channel_macs=1.6e9, cpu_flags=["avx512f", "avx2"])[0]
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
    if cpu_flags is None and channel_macs is not None:
        cpu_flags = cpu_model_and_flags()[1]
    limit = MAX_XLA_CHANNEL_MACS_WITHOUT_AVX512
    if channel_macs is not None and channel_macs > limit and "avx512f" not in cpu_flags:
        return False, (
            f"auto: {channel_macs / 1e9:.2f} G multiply-adds per channel-mixing matmul and step on a CPU without"
            f" AVX-512, where XLA trained steps of 1.64 G and more 0.88-1.03x as fast (above {limit / 1e9:.1f} G"
            " it stays off)"
        )
    return True, "auto: float32 with TensorFlow's oneDNN on, where XLA trained 1.01-1.4x faster"


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
