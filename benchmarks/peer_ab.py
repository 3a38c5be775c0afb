"""Ours against timm's in alternation, round after round: the speed issue's ratios against the peer.

    python -m benchmarks.peer_ab --preset mixer_s16 --batch-size 32 --rounds 8
    python -m benchmarks.peer_ab --preset mixer_s16 --training --batch-size 8 --rounds 8

`benchmarks.run` measures timm's rows minutes apart from ours, and on a shared VM such rows drift by more than
the goals' margins: on the 2-core AVX2 EPYC two runs 12 minutes apart put timm eager at 11.5 and 13.3
images/s, and one run's rows put `model.predict` 1.16x ahead of the graph, which alternation then measured at
1.03x. Here each round times our path, then timm's rows (in the peer venv's worker, `benchmarks/peer.py`), so
every ratio compares the two in the same minute. Inference: our Keras graph (a `tf.function` with the batch
size known, `benchmarks.run`'s `keras` row) against timm eager and `torch.compile`; with `--saved-model` also
the SavedModel exported in `--precision` (`serving_default`, as TF Serving runs it; in bfloat16 its MLP
kernels are constants, `keras_mixer.constant_kernels`), and with `--predict` the model's `predict` on the NumPy
batch (in bfloat16 with constant MLP kernels too), the goals then read on the fastest of ours by median.
`--training`: our train step of the default run's optimiser and loss in graph mode and with XLA
against timm's step (`benchmarks.run`'s train rows); the goal is read on the faster of our two by median, as
`--xla` would pick. `--precision bfloat16` is the mixed policy (and the bfloat16 SavedModel) against timm's
bf16 autocast; it is refused on a CPU without AMX-BF16 or AVX512-BF16, where no bf16 goal applies and timm's
bf16 step ran 0.1 images/s. Prints each round's ratios and writes JSON (`--json`) with the CPU named, each
goal (`benchmarks.run.PEER_GOALS`) and whether it was met.
"""

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.alternation import (  # noqa: E402
    ab_summary,
    at_least_one_problems,
    command_line,
    fastest_by_median,
    json_flag_problems,
    print_ab,
    ratios_only,
    refuse,
    write_report,
)
from benchmarks.peer import (  # noqa: E402
    DEFAULT_PEER_VENV,
    PEER_REQUIREMENTS,
    TIMM_PRESETS,
    PeerError,
    PeerProcess,
    ensure_peer_venv,
    venv_python,
)
from keras_mixer.cpu import cpu_model_and_flags  # noqa: E402
from keras_mixer.export import SAVED_MODEL_PRECISIONS  # noqa: E402
from training.quiet import add_verbose_flag, quiet_logs  # noqa: E402


def peer_rows(precision, training):
    """timm's rows this A/B times against ours."""
    from benchmarks.run import PEER_INFERENCE  # noqa: PLC0415

    return (f"timm_train_{precision}",) if training else PEER_INFERENCE[precision]


def our_paths(preset, batch_size, precision, training, steps, saved_model_folder=None, predict=False):
    """{name: a call of our path} for `preset`'s model, each traced and run once (tracing is not timed).

    Inference: the Keras graph, where `saved_model_folder` is given the SavedModel exported there, and with
    `predict` the model's `predict` on the NumPy batch.
    """
    import tensorflow as tf  # noqa: PLC0415

    from benchmarks.run import build_model, compiled_train_steps, model_config, synthetic_images  # noqa: PLC0415
    from keras_mixer.export import export_saved_model  # noqa: PLC0415

    config = model_config(preset)
    if not training:
        model, _ = build_model(preset, precision)
        images = tf.constant(synthetic_images(config, batch_size))
        forward = tf.function(lambda x: model(x, training=False))
        paths = {"keras": lambda: forward(images).numpy()}
        if predict:
            array = images.numpy()
            paths["keras_predict_numpy"] = lambda: model.predict(array, batch_size=batch_size, verbose=0)
        if saved_model_folder:
            float32_model, _ = build_model(preset)  # the export casts it to `precision` itself
            path = export_saved_model(float32_model, saved_model_folder, version=1, precision=precision)
            serve = tf.saved_model.load(path).signatures["serving_default"]
            paths["saved_model"] = lambda: serve(images=images)["probabilities"].numpy()  # noqa: PLW0108  (each call)
    else:
        count = tf.constant(steps)
        paths = {}
        for name, jit_compile in (("train", False), ("train_xla", True)):
            train = compiled_train_steps(config, batch_size, precision, jit_compile=jit_compile)
            paths[name] = lambda train=train: train(count).numpy()
    for run in paths.values():
        run()
    return paths


def alternate_with_peer(ours, peer, preset, rows, rounds, batch_size, calls=1, steps=None):
    """{path: [images/s per round]}: each of `ours` (callables, timed here), then each timm row in `rows`
    (timed by `peer`'s worker, after its own warm-up call), `rounds` times. A call is one forward pass of
    `batch_size` images, or with `steps` that many train steps.

    Example:
    >>> class Peer:
    ...     def row(self, kind, preset, batch_size, repeats, steps):
    ...         return {"rates": [4.0] * repeats}
    >>> rates = alternate_with_peer({"keras": lambda: None}, Peer(), "mixer_s16", ["timm_eager"], 2, 32)
    >>> sorted(rates), rates["timm_eager"]
    (['keras', 'timm_eager'], [4.0, 4.0])
    """
    from benchmarks.run import _time_calls  # noqa: PLC0415

    rates = {name: [] for name in [*ours, *rows]}
    for _ in range(rounds):
        for name, run in ours.items():
            (seconds,) = _time_calls(run, repeats=1, calls=calls)
            rates[name].append(batch_size * (steps or 1) / seconds)
        for row in rows:
            answer = peer.row(row, preset, batch_size, repeats=calls, steps=steps or 1)
            if "rates" not in answer:
                raise PeerError(f"timm's {row} did not run: {answer.get('note')}")
            rates[row].append(statistics.harmonic_mean(answer["rates"]))  # images/s over all `calls`
    return rates


def comparisons(rates, ours, rows, cpu_flags, batch_size, training):
    """{f"{our path}_over_{timm row}": its A/B summary, with its goal where one is set (inference goals at
    `GOAL_BATCH_SIZE` only) and, of our paths, read on the faster by median (`goal_read_here`)."""
    from benchmarks.run import GOAL_BATCH_SIZE, PEER_GOALS, target_classes  # noqa: PLC0415

    bf16_applies, because = target_classes(cpu_flags)["bfloat16"]
    faster = fastest_by_median(rates, ours)
    result = {}
    for path in ours:
        for row in rows:
            summary = ratios_only(ab_summary(rates, path, row))
            goal = PEER_GOALS.get(row) if training or batch_size == GOAL_BATCH_SIZE else None
            applies = bf16_applies or "bfloat16" not in row
            summary.update(
                goal=goal,
                goal_read_here=path == faster,
                applies=applies,
                applies_because=because if "bfloat16" in row else "every CPU",
                met=summary["median_ratio"] >= goal if goal and applies and path == faster else None,
            )
            result[f"{path}_over_{row}"] = summary
    return result


def _parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mixer_s16", help=f"a paper preset timm also builds: {TIMM_PRESETS}")
    parser.add_argument("--precision", choices=SAVED_MODEL_PRECISIONS, default="float32")
    parser.add_argument("--training", action="store_true", help="train steps instead of inference")
    parser.add_argument("--saved-model", action="store_true", help="inference: also time the exported SavedModel")
    parser.add_argument("--predict", action="store_true", help="inference: also time model.predict on a NumPy batch")
    parser.add_argument("--batch-size", type=int, help="default 32 for inference, 8 for --training")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=1, help="calls timed per round and path")
    parser.add_argument("--steps", type=int, default=2, help="train steps per call (--training)")
    parser.add_argument(
        "--peer-venv",
        help=f"a venv with torch and timm (default {DEFAULT_PEER_VENV}, made on first use: "
        f"{' '.join(PEER_REQUIREMENTS)})",
    )
    parser.add_argument("--json", help="write the figures here")
    add_verbose_flag(parser)
    return parser


def _problems(args, cpu_flags):
    from benchmarks.run import target_classes  # noqa: PLC0415

    problems = at_least_one_problems(batch_size=args.batch_size, rounds=args.rounds, calls=args.calls, steps=args.steps)
    if args.preset not in TIMM_PRESETS:
        problems.append(f"--preset must be a paper preset timm builds, one of {TIMM_PRESETS}. Received: {args.preset}")
    bf16_units, because = target_classes(cpu_flags)["bfloat16"]
    if args.precision == "bfloat16" and not bf16_units:
        problems.append(f"--precision bfloat16 needs a CPU with bf16 units, where its goals apply; here: {because}")
    if (args.saved_model or args.predict) and args.training:
        problems.append("--saved-model and --predict time inference; they do not go with --training")
    if args.peer_venv and not os.path.exists(venv_python(args.peer_venv)):
        problems.append(f"--peer-venv {args.peer_venv!r} has no bin/python; expected a venv with torch and timm")
    return problems + json_flag_problems(args.json)


def main(argv=None):
    args = _parser().parse_args(argv)
    quiet_logs(args.verbose)
    if args.batch_size is None:
        args.batch_size = 8 if args.training else 32
    cpu_flags = cpu_model_and_flags()[1]
    problems = _problems(args, cpu_flags)
    if problems:
        return refuse(problems)
    try:
        peer = PeerProcess(ensure_peer_venv(args.peer_venv or DEFAULT_PEER_VENV, create=not args.peer_venv))
    except PeerError as error:
        return refuse([str(error)])
    try:
        from training.machine import machine_description  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as folder:
            saved_model_folder = os.path.join(folder, "saved_model") if args.saved_model else None
            ours = our_paths(args.preset, args.batch_size, args.precision, args.training, args.steps,
                             saved_model_folder, args.predict)  # fmt: skip
            rows = peer_rows(args.precision, args.training)
            steps = args.steps if args.training else None
            rates = alternate_with_peer(ours, peer, args.preset, rows, args.rounds, args.batch_size, args.calls, steps)
    except PeerError as error:
        return refuse([str(error)])
    finally:
        peer.close()
    report = {
        "command": command_line("benchmarks.peer_ab", argv),
        "machine": machine_description(),
        "peer": peer.versions,
        "preset": args.preset,
        "precision": args.precision,
        "mode": "training" if args.training else "inference",
        "batch_size": args.batch_size,
        "calls": args.calls,
        **({"steps": args.steps} if args.training else {}),
        "images_per_second": rates,
        "median_images_per_second": {path: statistics.median(values) for path, values in rates.items()},
        "comparisons": comparisons(rates, ours, rows, cpu_flags, args.batch_size, args.training),
    }
    title = f"{args.preset} {args.precision} {report['mode']} batch {args.batch_size}"
    for name, summary in report["comparisons"].items():
        path, row = name.split("_over_")
        print_ab({**summary, "median_images_per_second": report["median_images_per_second"]}, title, path, row)
        if summary["goal"] and summary["goal_read_here"]:
            status = {True: "met", False: "MISSED", None: f"does not apply ({summary['applies_because']})"}
            print(f"goal {path} / {row} >= {summary['goal']}: {status[summary['met']]}")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
