"""Every inference path a user runs, timed in alternation: the speed issue's `predict` and SavedModel goals.

    python -m benchmarks.paths_ab --preset mixer_s16 --batch-size 32 --rounds 10

One model, four paths, round after round: the Keras graph (a `tf.function` with the batch size known,
`benchmarks.run`'s `keras` row), the same compiled with XLA (`keras_xla`), `model.predict` on a NumPy
batch (`keras_predict_numpy`) and the exported SavedModel's `serving_default` signature, as TF Serving
runs it (`saved_model`). The fastest Keras path is the graph or XLA, whichever is faster by median; each
round's `predict` and SavedModel figures are divided by that path's figure of the same round, and the
goals (`benchmarks.run.FASTEST_PATH_GOALS`) are read on the median. On a shared VM rows measured minutes
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


def inference_paths(model, images, folder):
    """{path: one call on `images`} for the four paths, each run once (tracing, compiling and export untimed)."""
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer.export import export_saved_model  # noqa: PLC0415

    tensor = tf.constant(images)
    graph = tf.function(lambda x: model(x, training=False))
    xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
    serve = tf.saved_model.load(export_saved_model(model, folder, version=1)).signatures["serving_default"]
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
    """{path: A/B summary over the fastest Keras path, with its goal and whether it was met}, and that path.

    Example:
    >>> rates = {"keras": [10.0, 10.0], "keras_xla": [12.0, 12.0], "keras_predict_numpy": [11.4, 10.0],
    ...          "saved_model": [12.0, 11.0]}
    >>> result, fastest = against_the_fastest(rates)
    >>> fastest, result["keras_predict_numpy"]["met"], result["saved_model"]["met"]
    ('keras_xla', False, True)
    """
    from benchmarks.run import FASTEST_PATH_GOALS  # noqa: PLC0415

    fastest = fastest_by_median(rates, KERAS_PATHS)
    result = {}
    for path, goal in FASTEST_PATH_GOALS.items():
        summary = ratios_only(ab_summary(rates, path, fastest))
        result[path] = {**summary, "goal": goal, "met": summary["median_ratio"] >= goal}
    return result, fastest


def main(argv=None):
    parser = paths_ab_parser("benchmarks.paths_ab", __doc__.split("\n\n")[0], rounds=10)
    args, config, problems = parse_ab(parser, argv)
    if problems:
        return refuse(problems)
    from benchmarks.run import GOAL_BATCH_SIZE, build_model, synthetic_images  # noqa: PLC0415
    from training.machine import machine_description  # noqa: PLC0415

    model, _ = build_model(args.preset)
    with tempfile.TemporaryDirectory() as folder:
        paths = inference_paths(model, synthetic_images(config, args.batch_size), folder)
        rates = images_per_second_in_alternation(paths, args.rounds, args.batch_size, args.calls)
    comparisons, fastest = against_the_fastest(rates)
    report = {
        "command": command_line("benchmarks.paths_ab", argv),
        "machine": machine_description(),
        "preset": args.preset,
        "batch_size": args.batch_size,
        "calls": args.calls,
        "images_per_second": rates,
        "median_images_per_second": {path: statistics.median(values) for path, values in rates.items()},
        "fastest_keras_path": fastest,
        "comparisons": comparisons,
        "goals_apply": args.batch_size == GOAL_BATCH_SIZE,  # the issue sets them at batch 32
    }
    title = f"{args.preset} float32 batch {args.batch_size}"
    for path, summary in comparisons.items():
        print_ab({**summary, "median_images_per_second": report["median_images_per_second"]}, title, path, fastest)
        if report["goals_apply"]:
            print(f"goal {path} / {fastest} >= {summary['goal']}: {'met' if summary['met'] else 'MISSED'}")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
