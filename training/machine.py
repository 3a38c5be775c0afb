"""What machine a figure was measured on: CPU model, its bf16/int8 units, cores, GPUs, versions.

Training summaries and every benchmark record it, so a speed figure always travels with its CPU.
"""

import os
import platform

# CPU flags that decide what bfloat16 and int8 cost (lscpu / /proc/cpuinfo names).
PRECISION_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


def cpu_model_and_flags(cpuinfo="/proc/cpuinfo"):
    """(CPU model name, the `PRECISION_FLAGS` it has), from /proc/cpuinfo where there is one."""
    fields = {}
    try:
        with open(cpuinfo) as file:
            for line in file:  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    model = fields.get("model name") or platform.processor() or platform.machine()
    return model, [flag for flag in PRECISION_FLAGS if flag in flags]


def xla_for_training(requested, precision="float32", cpu_flags=None, gpus=None):
    """(compile the train step with XLA?, why): `requested` (True / False) wins; None means auto.

    Auto follows what was measured on the AMD EPYC with AVX-512 (README, "Performance"): in float32,
    XLA trained the default model 1.3-1.4x faster through `model.fit` and S/16 1.17x faster per step;
    in bfloat16 it made S/16 training 0.64x as fast (XLA's CPU matmuls miss oneDNN's bf16 rate). On
    the AMD EPYC with AVX2 only, float32 `fit` was no faster. So auto turns XLA on for float32 on a
    CPU with AVX-512 and no GPU, off elsewhere (GPUs are unmeasured by this project). One rule per
    CPU type keeps a seeded run deterministic on that type.

    >>> xla_for_training(None, "float32", cpu_flags=["avx512f", "avx2"], gpus=[])[0]
    True
    >>> xla_for_training(None, "float32", cpu_flags=["avx2"], gpus=[])
    (False, 'auto: a CPU without AVX-512, where XLA trained no faster')
    """
    if requested is not None:
        return bool(requested), "asked for (--xla)"
    if cpu_flags is None:
        cpu_flags = cpu_model_and_flags()[1]
    if gpus is None:
        import tensorflow as tf  # noqa: PLC0415

        gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return False, "auto: a GPU is visible (XLA there is unmeasured by this project)"
    if precision != "float32":
        return False, f"auto: {precision} (XLA trained S/16 in bfloat16 0.64x as fast on the AVX-512 EPYC)"
    if "avx512f" in cpu_flags:
        return True, "auto: float32 on a CPU with AVX-512, where XLA trained 1.2-1.4x faster"
    return False, "auto: a CPU without AVX-512, where XLA trained no faster"


def machine_description():
    """{cpu, cpu_flags, cores, gpus, tensorflow, keras, python} of this machine."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    cpu, flags = cpu_model_and_flags()
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_logical_devices("GPU")],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }
