"""A float32 train step compiled whole by XLA against the graph step, in alternation: the A/B behind `--xla auto`.

    python -m benchmarks.xla_training_ab --preset mixer_s16 --batch-size 8 --rounds 12

Builds two identical models with the default run's optimiser and loss (`benchmarks.run.compiled_train_steps`):
one whose step is compiled whole by XLA, as `fit` does with `--xla true`, and one whose step runs as a
TensorFlow graph with the optimiser's update compiled alone, as `--xla false` does. Times their steps in
alternation, `--rounds` times, `--steps` steps per timed call, so both see the machine in the same state.
Also prints each path's first call (tracing and compiling) and the largest weight difference after it.
Writes JSON (`--json`) with the CPU named.
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

MODULE = "benchmarks.xla_training_ab"
PATHS = {"xla": {"jit_compile": True}, "graph": {"jit_compile": False}}


def main(argv=None):
    parser = train_ab_parser(MODULE, __doc__.split("\n\n")[0], rounds=12)
    parser.add_argument("--image-size", type=int, help="another input size than the preset's (224 px, fashion 28)")
    args, config, problems = parse_ab(parser, argv)
    if config and args.image_size is not None:
        if args.image_size < 1 or args.image_size % config["patch_size"]:
            problems.append(f"--image-size must be a positive multiple of the patch size {config['patch_size']}."
                            f" Received: {args.image_size}")  # fmt: skip
        config = {**config, "image_size": args.image_size}
    if problems:
        return refuse(problems)
    rates, first_call, difference, _ = alternate_train_steps(config, args.batch_size, args.rounds, args.steps, PATHS)
    report = {
        **train_ab_report(MODULE, argv, args),
        "model": config,
        "tokens": (config["image_size"] // config["patch_size"]) ** 2,
        "first_call_seconds": first_call,
        "max_weight_difference_after_first_call": difference,
        **ab_summary(rates, "xla", "graph"),
    }
    print(f"first call (trace and compile): XLA {first_call['xla']:.1f} s, graph {first_call['graph']:.1f} s;"
          f" weights differ by at most {difference:.2g} after it")  # fmt: skip
    title = f"{args.preset} at {config['image_size']} px ({report['tokens']} tokens) float32 batch {args.batch_size}"
    print_ab(report, title, "xla", "graph")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
