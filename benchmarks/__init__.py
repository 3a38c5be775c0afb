"""Speed and accuracy measurements of the Mixer: `python -m benchmarks.run` and its pieces."""

import sys

from training.quiet import quiet_tensorflow_import

quiet_tensorflow_import(sys.argv)  # before any module here imports keras_mixer (and TensorFlow)
