"""TensorFlow's oneDNN CPU kernels for every program here, also on CPUs where TensorFlow leaves them off.

TensorFlow 2.21 on x86-64 Linux turns oneDNN on by default only on CPUs with AVX512-VNNI, AVX512-BF16,
AVX-VNNI or AMX. Elsewhere (an AMD EPYC with AVX2 only, say) it runs Eigen's kernels unless
`TF_ENABLE_ONEDNN_OPTS=1` is in the environment when TensorFlow is imported. On the 2-core AMD EPYC with
AVX2 only (2026-11-27, README "Performance"), oneDNN ran S/16's forward pass at batch 32 about 1.4x as
fast, and with XLA the default Fashion model's float32 train step about 1.4x as fast as the best step
without oneDNN. So the programs of this repository (`training/`, `benchmarks/`) call `prefer_onednn()`
from their package's `__init__`, before anything imports TensorFlow; a value the user set wins
(`TF_ENABLE_ONEDNN_OPTS=0` keeps Eigen). The library (`keras_mixer`) changes no process-wide setting:
`keras_mixer.fused_norm.onednn_enabled()` says what a process runs.
"""

import os

ONEDNN_FLAG = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn():
    """Ask TensorFlow for its oneDNN kernels, unless the environment already says; too late once it is imported.

    Example:
    >>> prefer_onednn()
    >>> ONEDNN_FLAG in os.environ
    True
    """
    os.environ.setdefault(ONEDNN_FLAG, "1")
