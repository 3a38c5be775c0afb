"""Every inference path a user runs, timed in alternation: the speed issue's `predict` and SavedModel goals.

    python -m benchmarks.paths_ab --preset mixer_s16 --batch-size 32 --rounds 10 [--precision bfloat16]

One model, four paths, round after round: the Keras graph (a `tf.function` with the batch size known,
`benchmarks.run`'s `keras` row), the same compiled with XLA (`keras_xla`), `model.predict` on a NumPy
batch (`keras_predict_numpy`) and the exported SavedModel's `serving_default` signature, as TF Serving
runs it (`saved_model`), all in `--precision` (bfloat16: the `mixed_bfloat16` model and the bfloat16
SavedModel). Each round's figures are divided by the same round's figure of the path they are held to, and
the goals (`benchmarks.run.FASTEST_PATH_GOALS`) are read on the median: the SavedModel against the fastest
Keras path (the graph or XLA, whichever is faster by median), `predict` against the fastest of the other
three (in bfloat16 the SavedModel, whose MLP kernels are constants). On a shared VM rows measured minutes
apart, as in `benchmarks.run`, drift by more than these goals' 5-10 %. Prints the ratios and writes JSON
(`--json`) with the CPU named.
"""

import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.alternation import (  # noqa: E402
    ab_summary,
    command_line,
    fastest_by_median,
    images_per_second_in_alternation,
    parse_ab,
    paths_ab_parser,
    print_ab,
    ratios_only,
    refuse,
    write_report,
)

KERAS_PATHS = ("keras", "keras_xla")  # the candidates for the fastest Keras path
# {path with a goal: the paths it is held to, the fastest of them by median}
HELD_TO = {"keras_predict_numpy": (*KERAS_PATHS, "saved_model"), "saved_model": KERAS_PATHS}


def inference_paths(model, images, folder, precision="float32"):
    """{path: one call on `images`} for the four paths, each run once (tracing, compiling and export untimed);
    `model` is in `precision` already, and so is the SavedModel exported from it."""
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer.export import export_saved_model  # noqa: PLC0415

    tensor = tf.constant(images)
    graph = tf.function(lambda x: model(x, training=False))
    xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
    path = export_saved_model(model, folder, version=1, precision=precision)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    paths = {
        "keras": lambda: graph(tensor).numpy(),
        "keras_xla": lambda: xla(tensor).numpy(),
        "keras_predict_numpy": lambda: model.predict(images, batch_size=len(images), verbose=0),
        "saved_model": lambda: serve(images=tensor)["probabilities"].numpy(),  # noqa: PLW0108  (must call each time)
    }
    for run in paths.values():
        run()
    return paths


def against_the_fastest(rates):
    """{path: A/B summary over the fastest path it is held to (`HELD_TO`), with that path, its goal and whether
    it was met}, and the fastest Keras path.

    Example:
    >>> rates = {"keras": [10.0, 10.0], "keras_xla": [12.0, 12.0], "keras_predict_numpy": [11.25, 10.0],
    ...          "saved_model": [12.5, 12.5]}
    >>> result, fastest = against_the_fastest(rates)
    >>> fastest, result["saved_model"]["met"], result["keras_predict_numpy"]["held_to"]
    ('keras_xla', True, 'saved_model')
    >>> round(result["keras_predict_numpy"]["median_ratio"], 3), result["keras_predict_numpy"]["met"]
    (0.85, False)
    """
    from benchmarks.run import FASTEST_PATH_GOALS  # noqa: PLC0415

    result = {}
    for path, goal in FASTEST_PATH_GOALS.items():
        held_to = fastest_by_median(rates, HELD_TO[path])
        summary = ratios_only(ab_summary(rates, path, held_to))
        result[path] = {**summary, "held_to": held_to, "goal": goal, "met": summary["median_ratio"] >= goal}
    return result, fastest_by_median(rates, KERAS_PATHS)


def main(argv=None):
    parser = paths_ab_parser("benchmarks.paths_ab", __doc__.split("\n\n")[0], rounds=10, precision="float32")
    args, config, problems = parse_ab(parser, argv)
    if problems:
        return refuse(problems)
    from benchmarks.run import GOAL_BATCH_SIZE, build_model, synthetic_images  # noqa: PLC0415
    from training.machine import machine_description  # noqa: PLC0415

    model, _ = build_model(args.preset, args.precision)
    with tempfile.TemporaryDirectory() as folder:
        paths = inference_paths(model, synthetic_images(config, args.batch_size), folder, args.precision)
        rates = images_per_second_in_alternation(paths, args.rounds, args.batch_size, args.calls)
    comparisons, fastest = against_the_fastest(rates)
    report = {
        "command": command_line("benchmarks.paths_ab", argv),
        "machine": machine_description(),
        "preset": args.preset,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "calls": args.calls,
        "images_per_second": rates,
        "median_images_per_second": {path: statistics.median(values) for path, values in rates.items()},
        "fastest_keras_path": fastest,
        "comparisons": comparisons,
        "goals_apply": args.batch_size == GOAL_BATCH_SIZE,  # the issue sets them at batch 32
    }
    title = f"{args.preset} {args.precision} batch {args.batch_size}"
    for path, summary in comparisons.items():
        held_to = summary["held_to"]
        print_ab({**summary, "median_images_per_second": report["median_images_per_second"]}, title, path, held_to)
        if report["goals_apply"]:
            print(f"goal {path} / {held_to} >= {summary['goal']}: {'met' if summary['met'] else 'MISSED'}")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
