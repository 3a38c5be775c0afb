"""The compiled GELU of training against Keras' own, in alternation: the A/B behind `keras_mixer/fused_gelu.py`.

    python -m benchmarks.fused_gelu_ab --preset mixer_s16 --precision bfloat16 --batch-size 8 --rounds 9

Builds two identical models with the default run's optimiser and loss (`benchmarks.run.compiled_train_steps`)
and traces one train step as the package runs it (the GELU's forward and gradient each one XLA call)
and the other inside `portable_graph()` (Keras' GELU). Then it times them in alternation, `--rounds`
times, `--steps` steps per timed call, so both see the machine in the same state. `--xla` compiles
the whole step with XLA (as `--xla` training does), where the GELU is compiled either way. Prints the
per-round ratios and writes JSON (`--json`) with the CPU named.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.alternation import (  # noqa: E402
    ab_summary,
    images_per_second_in_alternation,
    parse_train_ab,
    print_ab,
    refuse,
    train_ab_parser,
    train_ab_report,
    write_report,
)
from keras_mixer.export import SAVED_MODEL_PRECISIONS  # noqa: E402

MODULE = "benchmarks.fused_gelu_ab"


def alternate(config, batch_size, precision, rounds, steps, jit_compile=False):
    """{"compiled": [images/s per round], "keras": [...]}, the two train steps timed in alternation."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from benchmarks.run import compiled_train_steps  # noqa: PLC0415
    from keras_mixer.fused_norm import portable_graph  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    compiled = compiled_train_steps(config, batch_size, precision, jit_compile=jit_compile)
    keras.utils.set_random_seed(0)
    keras_gelu = compiled_train_steps(config, batch_size, precision, jit_compile=jit_compile)
    count = tf.constant(steps)
    compiled(count).numpy()
    with portable_graph():
        keras_gelu(count).numpy()  # traced (and so fixed) with Keras' GELU

    runs = {"compiled": lambda: compiled(count).numpy(), "keras": lambda: keras_gelu(count).numpy()}
    return images_per_second_in_alternation(runs, rounds, steps * batch_size)


def main(argv=None):
    parser = train_ab_parser(MODULE, __doc__.split("\n\n")[0], rounds=9)
    parser.add_argument("--precision", choices=SAVED_MODEL_PRECISIONS, default="bfloat16")
    parser.add_argument("--xla", action="store_true", help="compile the whole train step with XLA")
    args, config, problems = parse_train_ab(parser, argv)
    if problems:
        return refuse(problems)
    rates = alternate(config, args.batch_size, args.precision, args.rounds, args.steps, args.xla)
    report = {
        **train_ab_report(MODULE, argv, args),
        "precision": args.precision,
        "whole_step_xla": args.xla,
        **ab_summary(rates, "compiled", "keras"),
    }
    title = f"{args.preset} {args.precision} batch {args.batch_size}{' (XLA step)' if args.xla else ''}"
    print_ab(report, title, "compiled", "keras", old_label="Keras' GELU")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
