"""Command-line training, evaluation and export of MLP-Mixers on tfds datasets."""

EXIT_BAD_INPUT = 2  # a flag, file or dataset that cannot work: one message, nothing written
EXIT_NON_FINITE = 3  # the loss diverged
