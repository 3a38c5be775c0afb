"""The train step's layer norms as the package runs them against another form, in alternation: the A/B behind
training's norm.

    python -m benchmarks.training_norm_ab --preset mixer_s16 --precision bfloat16 --against onednn --rounds 8
    python -m benchmarks.training_norm_ab --preset mixer_s16 --precision float32 --against keras --rounds 8

Builds two identical models with the default run's optimiser and loss (`benchmarks.run.compiled_train_steps`)
and traces one train step as the package runs it (the compiled norm with its compiled gradient,
`keras_mixer.fused_norm.compiled_training_applies`, where it applies) and the other with `--against`:
`onednn`, oneDNN's batch-norm form where its rule admits it (`onednn_training_applies`: bfloat16 where
TensorFlow's oneDNN takes it; `--force`: whatever the dtype, to measure where the rule keeps Keras' op), or
`keras`, Keras' op (`keras_layer_norm()`). The compiled GELU stays in both. Then it times them in alternation,
`--rounds` times, `--steps` steps per timed call, and reports the largest weight difference after the first
call (rounding apart, the same training) and the norms in oneDNN's form on each side. Prints the per-round
ratios and writes JSON (`--json`) with the CPU named.
"""

import contextlib
import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.alternation import (  # noqa: E402
    ab_summary,
    alternate_train_steps,
    module_settings,
    parse_ab,
    print_ab,
    refuse,
    train_ab_parser,
    train_ab_report,
    write_report,
)

MODULE = "benchmarks.training_norm_ab"
AGAINST = {"onednn": "oneDNN's form", "keras": "Keras' op"}


@contextlib.contextmanager
def onednn_norm_in_training(force=False):
    """Inside: no compiled training norm (nor the token residual's form that holds one), so oneDNN's form trains
    where its rule admits it; with `force`, every fusable norm, whatever its dtype (the package's rule: bfloat16
    only)."""
    from keras_mixer import fused_norm, layers  # noqa: PLC0415

    def forced(norm, inputs, training):
        return bool(training) and fused_norm._fusable_norm(norm, inputs) and len(inputs.shape) in (2, 3)

    # The token residual's fused form (`keras_mixer.fused_residual`) holds a compiled norm too: it goes as well.
    rules = ("compiled_training_applies", "token_residual_norm_applies")
    settings = [(layers, rule, lambda *_: False) for rule in rules]
    if force:
        settings.append((layers, "onednn_training_applies", forced))
    with module_settings(*settings):
        yield


def main(argv=None):
    parser = train_ab_parser(MODULE, __doc__.split("\n\n")[0], rounds=8, precision="bfloat16")
    parser.add_argument("--against", choices=sorted(AGAINST), default="onednn", help="the other side's norm")
    parser.add_argument("--force", action="store_true", help="with --against onednn: oneDNN's form whatever the dtype")
    args, config, problems = parse_ab(parser, argv)
    if args.force and args.against != "onednn":
        problems.append(f"--force needs --against onednn. Received: --against {args.against}")
    if problems:
        return refuse(problems)
    from keras_mixer.fused_norm import keras_layer_norm, onednn_enabled  # noqa: PLC0415

    other = functools.partial(onednn_norm_in_training, args.force) if args.against == "onednn" else keras_layer_norm
    paths = {"package": {"precision": args.precision},
             args.against: {"precision": args.precision, "traced_in": other}}  # fmt: skip
    rates, _, difference, ops = alternate_train_steps(config, args.batch_size, args.rounds, args.steps, paths)
    report = {
        **train_ab_report(MODULE, argv, args),
        "precision": args.precision,
        "against": args.against,
        "forced": args.force,
        "tensorflow_onednn": onednn_enabled(),
        **ab_summary(rates, "package", args.against),
        "max_weight_difference_after_first_call": difference,
        # The norms in oneDNN's form, on each side (each is one FusedBatchNormV3 in the traced step).
        "norms_in_onednn_form": {side: counts.get("FusedBatchNormV3", 0) for side, counts in ops.items()},
    }
    title = f"{args.preset} {args.precision} batch {args.batch_size}"
    print_ab(report, title, "package", args.against, AGAINST[args.against])
    print(f"largest weight difference after the first call: {difference:.2e}; norms in oneDNN's form: "
          f"{report['norms_in_onednn_form']}")  # fmt: skip
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
