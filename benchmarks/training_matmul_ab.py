"""A train step's plain-matmul forms against the fused or convolution forms they replaced, in alternation.

    python -m benchmarks.training_matmul_ab --change mlp --preset mixer_s16 --precision bfloat16 --rounds 8
    python -m benchmarks.training_matmul_ab --change stem --preset mixer_s16 --precision bfloat16 --rounds 8
    python -m benchmarks.training_matmul_ab --change residual --preset mixer_s16 --precision bfloat16 --rounds 8

`--change mlp`: each MLP's first Dense as a plain matmul with its bias added inside the compiled GELU
(`keras_mixer.fused_gelu.biased_gelu_applies`) against the Dense (a matmul TensorFlow fuses with its bias)
followed by the compiled GELU. `--change stem`: the patch embedding as one matmul over the flattened patches
(`keras_mixer.layers.patch_matmul_applies`) against the strided convolution. `--change residual`: the token
MLP's second matmul alone, with its bias, the transpose back, the residual add and `LayerNorm_1` as one compiled
function (`keras_mixer.fused_residual`) against those as separate ops. Builds two identical models with the
default run's optimiser and loss (`benchmarks.run.compiled_train_steps`), traces one train step as the package
runs it and the other with the change switched off, times them in alternation (`--rounds`, `--steps` steps per
timed call) and reports the largest weight difference after the first call (rounding apart, the same training)
and the op types whose counts differ between the two traced steps. Prints the per-round ratios and writes JSON
(`--json`) with the CPU named.
"""

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

MODULE = "benchmarks.training_matmul_ab"

# Each change: the rule in `keras_mixer.layers` that the "before" side turns off, and what it replaces.
CHANGES = {
    "mlp": ("biased_gelu_applies", "the first Dense fused with its bias"),
    "stem": ("patch_matmul_applies", "the stem's convolution"),
    "residual": (
        "token_residual_norm_applies",
        "the token MLP's output bias, transpose back, residual add and LayerNorm_1 as separate ops",
    ),
}


def main(argv=None):
    parser = train_ab_parser(MODULE, __doc__.split("\n\n")[0], rounds=8, precision="bfloat16")
    parser.add_argument("--change", choices=sorted(CHANGES), required=True, help="which plain-matmul form to time")
    args, config, problems = parse_ab(parser, argv)
    if problems:
        return refuse(problems)
    from keras_mixer import layers  # noqa: PLC0415

    rule, replaced = CHANGES[args.change]

    def switched_off():
        return module_settings((layers, rule, lambda *_: False))

    paths = {
        "matmul": {"precision": args.precision},
        "before": {"precision": args.precision, "traced_in": switched_off},
    }
    rates, _, difference, ops = alternate_train_steps(config, args.batch_size, args.rounds, args.steps, paths)
    changed_ops = {
        op: {side: counts.get(op, 0) for side, counts in ops.items()}
        for op in sorted(set(ops["matmul"]) | set(ops["before"]))
        if ops["matmul"].get(op, 0) != ops["before"].get(op, 0)
    }
    report = {
        **train_ab_report(MODULE, argv, args),
        "change": args.change,
        "replaces": replaced,
        "precision": args.precision,
        **ab_summary(rates, "matmul", "before"),
        "max_weight_difference_after_first_call": difference,
        "op_counts_that_differ": changed_ops,
    }
    print_ab(report, f"{args.preset} {args.precision} batch {args.batch_size}, {args.change}", "matmul", "before",
             replaced)  # fmt: skip
    print(f"largest weight difference after the first call: {difference:.2e}; op counts that differ: {changed_ops}")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
