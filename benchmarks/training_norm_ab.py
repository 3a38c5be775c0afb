"""oneDNN's layer norm in the train step against Keras' op, in alternation: the A/B behind training's norm.

    python -m benchmarks.training_norm_ab --preset mixer_s16 --precision bfloat16 --batch-size 8 --rounds 8

Builds two identical models with the default run's optimiser and loss (`benchmarks.run.compiled_train_steps`)
and traces one train step as the package runs it (in bfloat16, where TensorFlow's oneDNN takes it, the norms
as oneDNN's batch norm forward and its gradient, `keras_mixer.fused_norm.onednn_training_applies`) and the
other inside `keras_layer_norm()` (Keras' op; the compiled GELU stays in both). `--force` traces the first
side with the oneDNN form whatever the package's rule says (float32 included), to measure where the rule
keeps Keras' op. Then it times them in alternation, `--rounds` times, `--steps` steps per timed call, and
reports the largest weight difference after the first call (bfloat16 rounding apart, the same training).
Prints the per-round ratios and writes JSON (`--json`) with the CPU named.
"""

import contextlib
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

MODULE = "benchmarks.training_norm_ab"


@contextlib.contextmanager
def onednn_norm_in_training_forced():
    """Inside: every fusable norm trains with oneDNN's form, whatever its dtype (the package: bfloat16 only)."""
    from benchmarks.alternation import module_settings  # noqa: PLC0415
    from keras_mixer import fused_norm, layers  # noqa: PLC0415

    def forced(norm, inputs, training):
        return bool(training) and fused_norm._fusable_norm(norm, inputs) and len(inputs.shape) in (2, 3)

    with module_settings((layers, "onednn_training_applies", forced)):
        yield


def main(argv=None):
    parser = train_ab_parser(MODULE, __doc__.split("\n\n")[0], rounds=8, precision="bfloat16")
    parser.add_argument("--force", action="store_true", help="oneDNN's norm on the first side whatever the rule")
    args, config, problems = parse_ab(parser, argv)
    if problems:
        return refuse(problems)
    from keras_mixer.fused_norm import keras_layer_norm, onednn_enabled  # noqa: PLC0415

    onednn = onednn_norm_in_training_forced if args.force else contextlib.nullcontext
    paths = {"onednn": {"precision": args.precision, "traced_in": onednn},
             "keras": {"precision": args.precision, "traced_in": keras_layer_norm}}  # fmt: skip
    rates, _, difference, ops = alternate_train_steps(config, args.batch_size, args.rounds, args.steps, paths)
    report = {
        **train_ab_report(MODULE, argv, args),
        "precision": args.precision,
        "forced": args.force,
        "tensorflow_onednn": onednn_enabled(),
        **ab_summary(rates, "onednn", "keras"),
        "max_weight_difference_after_first_call": difference,
        # The norms in oneDNN's form, on each side (each is one FusedBatchNormV3 in the traced step).
        "norms_in_onednn_form": {side: counts.get("FusedBatchNormV3", 0) for side, counts in ops.items()},
    }
    print_ab(report, f"{args.preset} {args.precision} batch {args.batch_size}", "onednn", "keras", "Keras' norm")
    print(f"largest weight difference after the first call: {difference:.2e}; norms in oneDNN's form: "
          f"{report['norms_in_onednn_form']}")  # fmt: skip
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
