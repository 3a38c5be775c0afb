"""The optimiser update as one XLA call against Keras' own, in alternation: the A/B behind `training/fused_update.py`.

    python -m benchmarks.fused_update_ab --preset mixer_s16 --batch-size 8 --rounds 12

Builds two identical models with the default run's optimiser and loss (`benchmarks.run.compiled_train_steps`),
one whose update is compiled by XLA (`training.fused_update`), and times their train steps in
alternation, `--rounds` times, `--steps` steps per timed call, so both see the machine in the same
state. Also prints each path's first call (tracing and compiling) and the largest weight difference
after it. Writes JSON (`--json`) with the CPU named.
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

MODULE = "benchmarks.fused_update_ab"


def main(argv=None):
    parser = train_ab_parser(MODULE, __doc__.split("\n\n")[0], rounds=12)
    args, config, problems = parse_ab(parser, argv)
    if problems:
        return refuse(problems)
    paths = {"fused": {"fused_update": True}, "keras": {"fused_update": False}}
    rates, first_call, difference, _ = alternate_train_steps(config, args.batch_size, args.rounds, args.steps, paths)
    report = {
        **train_ab_report(MODULE, argv, args),
        "first_call_seconds": first_call,
        "max_weight_difference_after_first_call": difference,
        **ab_summary(rates, "fused", "keras"),
    }
    fused, keras_update = first_call["fused"], first_call["keras"]
    print(f"first call (trace and compile): fused {fused:.1f} s, Keras' update {keras_update:.1f} s;"
          f" weights differ by at most {difference:.2g} after it")  # fmt: skip
    print_ab(report, f"{args.preset} float32 batch {args.batch_size}", "fused", "keras", old_label="Keras' update")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
