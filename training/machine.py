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
