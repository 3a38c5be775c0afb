"""The SavedModel with its MLP kernels as graph constants against the same with variables, in alternation.

    python -m benchmarks.constant_kernels_ab --preset mixer_s16 --precision bfloat16 --batch-size 32 --rounds 8

Exports the model twice in `--precision` (`keras_mixer.export`), once with the kernels as constants
(`keras_mixer.constant_kernels`: oneDNN reorders each one once) and once as variables, whatever
`CONSTANT_KERNEL_PRECISIONS` says for that precision, loads both and times their `serving_default`
signature round after round. The head, zero at initialisation, is drawn at random so that the two sides'
probabilities tell them apart; the largest difference between them is reported. Prints the per-round
ratios and writes JSON (`--json`) with the CPU named.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.alternation import (  # noqa: E402
    ab_summary,
    command_line,
    images_per_second_in_alternation,
    module_settings,
    parse_ab,
    paths_ab_parser,
    print_ab,
    refuse,
    write_report,
)

SIDES = ("constants", "variables")


def exported_sides(model, precision, folder):
    """({side: the loaded SavedModel's `serving_default`}, {side: how many MLP kernels it stores as variables})
    for both sides of the A/B, exported into `folder`."""
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer import constant_kernels  # noqa: PLC0415
    from keras_mixer.export import export_saved_model  # noqa: PLC0415

    signatures, kernel_variables = {}, {}
    for side in SIDES:
        precisions = (precision,) if side == "constants" else ()
        with module_settings((constant_kernels, "CONSTANT_KERNEL_PRECISIONS", precisions)):
            path = export_saved_model(model, os.path.join(folder, side), version=1, precision=precision)
        loaded = tf.saved_model.load(path)
        signatures[side] = loaded.signatures["serving_default"]
        kernel_variables[side] = sum("mixing/Dense" in v.name and "/kernel" in v.name for v in loaded.variables)
    return signatures, kernel_variables


def main(argv=None):
    module, description = "benchmarks.constant_kernels_ab", __doc__.split("\n\n")[0]
    args, config, problems = parse_ab(paths_ab_parser(module, description, rounds=8, precision="bfloat16"), argv)
    if problems:
        return refuse(problems)
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from benchmarks.run import build_model, synthetic_images, with_random_head  # noqa: PLC0415
    from training.machine import machine_description  # noqa: PLC0415

    model = with_random_head(build_model(args.preset)[0])
    images = tf.constant(synthetic_images(config, args.batch_size))
    with tempfile.TemporaryDirectory() as folder:
        signatures, kernel_variables = exported_sides(model, args.precision, folder)
        outputs = {side: serve(images=images)["probabilities"].numpy() for side, serve in signatures.items()}
        runs = {
            side: (lambda serve=serve: serve(images=images)["probabilities"].numpy())
            for side, serve in signatures.items()
        }
        rates = images_per_second_in_alternation(runs, args.rounds, args.batch_size, args.calls)
    report = {
        "command": command_line("benchmarks.constant_kernels_ab", argv),
        "machine": machine_description(),
        "preset": args.preset,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "calls": args.calls,
        **ab_summary(rates, *SIDES),
        "max_probability_difference": float(np.abs(outputs["constants"] - outputs["variables"]).max()),
        "mlp_kernels_stored_as_variables": kernel_variables,
    }
    print_ab(report, f"{args.preset} {args.precision} SavedModel batch {args.batch_size}", *SIDES)
    print(f"largest difference between the two sides' probabilities: {report['max_probability_difference']:.2e}")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
