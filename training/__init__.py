"""Command-line training, evaluation, export and prediction of MLP-Mixers on tfds datasets and image folders."""

import sys

from training.onednn import prefer_onednn
from training.quiet import quiet_tensorflow_import

prefer_onednn()  # before TensorFlow's import, which the next line does
quiet_tensorflow_import(sys.argv)

EXIT_BAD_INPUT = 2  # a flag, file or dataset that cannot work: one message, nothing written
EXIT_NON_FINITE = 3  # the loss diverged
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it); rerunning resumes
EXIT_SOME_FAILED = 1  # predict: some files could not be read; the others were classified
