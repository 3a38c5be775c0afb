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
    alternate_train_steps,
    parse_ab,
    print_ab,
    refuse,
    train_ab_parser,
    train_ab_report,
    write_report,
)

MODULE = "benchmarks.fused_gelu_ab"


def main(argv=None):
    parser = train_ab_parser(MODULE, __doc__.split("\n\n")[0], rounds=9, precision="bfloat16")
    parser.add_argument("--xla", action="store_true", help="compile the whole train step with XLA")
    args, config, problems = parse_ab(parser, argv)
    if problems:
        return refuse(problems)
    from keras_mixer.fused_norm import portable_graph  # noqa: PLC0415  (Keras' GELU: no compiled pieces)

    step = {"precision": args.precision, "jit_compile": args.xla}
    paths = {"compiled": step, "keras": {**step, "traced_in": portable_graph}}
    rates, _, difference, _ = alternate_train_steps(config, args.batch_size, args.rounds, args.steps, paths)
    report = {
        **train_ab_report(MODULE, argv, args),
        "precision": args.precision,
        "whole_step_xla": args.xla,
        **ab_summary(rates, "compiled", "keras"),
        "max_weight_difference_after_first_call": difference,
    }
    title = f"{args.preset} {args.precision} batch {args.batch_size}{' (XLA step)' if args.xla else ''}"
    print_ab(report, title, "compiled", "keras", old_label="Keras' GELU")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
