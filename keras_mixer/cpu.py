"""The CPU this process runs on: its model name and the instruction-set flags that decide what a precision costs.

Benchmarks and training summaries record them beside every figure (`training.machine`); the fused norm
asks whether TensorFlow's oneDNN takes bfloat16 here (`keras_mixer.fused_norm`).
"""

import platform

# CPU flags that decide what bfloat16 and int8 cost (lscpu / /proc/cpuinfo names).
PRECISION_FLAGS = (
    "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx_ne_convert", "avx512f", "avx2",
)  # fmt: skip


def cpu_model_and_flags(cpuinfo="/proc/cpuinfo"):
    """(CPU model name, the `PRECISION_FLAGS` it has), from /proc/cpuinfo where there is one.

    Example:
    >>> model, flags = cpu_model_and_flags()
    >>> set(flags) <= set(PRECISION_FLAGS)
    True
    """
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
