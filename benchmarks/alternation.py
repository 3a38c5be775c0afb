"""Two code paths timed in alternation in one process, and the A/B summary: shared by the `*_ab` benchmarks.

On a shared VM, rows measured minutes apart drift by more than a few-percent effect; timing the two
paths in turn, round after round, lets both see the machine in the same state.
"""

import argparse
import contextlib
import os
import statistics
import sys
import time


def images_per_second_in_alternation(runs, rounds, images_per_run, calls=1):
    """{name: [images/s per round]}: each `runs[name]()` timed in turn, `rounds` times.

    Each round times `calls` calls of each path, after one untimed call (`benchmarks.run._time_calls`).

    Example:
    >>> rates = images_per_second_in_alternation({"a": lambda: None, "b": lambda: None}, 2, 8)
    >>> sorted(rates), [len(values) for values in rates.values()]
    (['a', 'b'], [2, 2])
    """
    from benchmarks.run import _time_calls  # noqa: PLC0415

    rates = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            (seconds,) = _time_calls(run, repeats=1, calls=calls)
            rates[name].append(images_per_run / seconds)
    return rates


def alternate_train_steps(config, batch_size, rounds, steps, paths):
    """({path: [images/s per round]}, {path: first call's seconds}, max weight difference between the first
    two paths after that call, {path: the op types of its traced step, with their counts}).

    `paths` maps a name to `benchmarks.run.compiled_train_steps` keyword arguments, and optionally
    `traced_in`: a context manager factory the step is traced in (so it keeps what the context chose). Every
    path builds the same seeded model, runs one untimed call of `steps` steps (tracing and compiling), then
    all are timed in alternation. The weight difference shows the paths train the same model.

    Example:
    >>> import contextlib
    >>> from benchmarks.run import model_config
    >>> paths = {"a": {}, "b": {"traced_in": contextlib.nullcontext}}
    >>> rates, _, difference, ops = alternate_train_steps(model_config("fashion"), 2, 1, 1, paths)
    >>> sorted(rates), [len(values) for values in rates.values()], difference, ops["a"] == ops["b"]
    (['a', 'b'], [1, 1], 0.0, True)
    """
    import collections  # noqa: PLC0415

    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from benchmarks.run import compiled_train_steps  # noqa: PLC0415

    count, first_call, steps_of, ops = tf.constant(steps), {}, {}, {}
    for path, options in paths.items():
        traced_in = options.get("traced_in", contextlib.nullcontext)
        keras.utils.set_random_seed(0)
        step_options = {key: value for key, value in options.items() if key != "traced_in"}
        steps_of[path] = train = compiled_train_steps(config, batch_size, **step_options)
        start = time.perf_counter()
        with traced_in():
            train(count).numpy()
        first_call[path] = time.perf_counter() - start
        graph = train.get_concrete_function(count).graph.as_graph_def()
        nodes = [*graph.node, *(node for function in graph.library.function for node in function.node_def)]
        ops[path] = dict(collections.Counter(node.op for node in nodes))
    first, second = ([v.numpy() for v in train.model.weights] for train in list(steps_of.values())[:2])
    difference = max(float(np.abs(a - b).max()) for a, b in zip(first, second))
    runs = {path: (lambda train=train: train(count).numpy()) for path, train in steps_of.items()}
    return images_per_second_in_alternation(runs, rounds, steps * batch_size), first_call, difference, ops


def ab_summary(rates, new, old):
    """The JSON fields of an A/B: each round's `new`/`old` ratio, the medians, and how often `new` won.

    Example:
    >>> summary = ab_summary({"fused": [2.0, 3.0], "unfused": [1.0, 4.0]}, "fused", "unfused")
    >>> summary["ratios_fused_over_unfused"], summary["rounds_fused_faster"]
    ([2.0, 0.75], 1)
    """
    ratios = [a / b for a, b in zip(rates[new], rates[old])]
    return {
        "images_per_second": rates,
        "median_images_per_second": {path: statistics.median(values) for path, values in rates.items()},
        f"ratios_{new}_over_{old}": ratios,
        "median_ratio": statistics.median(ratios),
        f"rounds_{new}_faster": sum(ratio > 1 for ratio in ratios),
    }


def ratios_only(summary):
    """An `ab_summary` without the rates, which every summary of one run would repeat.

    Example:
    >>> sorted(ratios_only(ab_summary({"a": [2.0], "b": [1.0]}, "a", "b")))
    ['median_ratio', 'ratios_a_over_b', 'rounds_a_faster']
    """
    repeated = ("images_per_second", "median_images_per_second")
    return {key: value for key, value in summary.items() if key not in repeated}


def fastest_by_median(rates, paths):
    """Of `paths`, the one with the highest median images/s in `rates`.

    Example:
    >>> fastest_by_median({"graph": [10.0, 12.0], "xla": [11.0, 11.5]}, ["graph", "xla"])
    'xla'
    """
    return max(paths, key=lambda path: statistics.median(rates[path]))


def print_ab(report, title, new, old, old_label=None):
    """Two lines: each round's `new`/`old` ratio, then the median, the rounds `new` won and the median rates."""
    old_label = old_label or old
    ratios = " ".join(f"{ratio:.3f}" for ratio in report[f"ratios_{new}_over_{old}"])
    medians, rounds = report["median_images_per_second"], len(report[f"ratios_{new}_over_{old}"])
    print(f"{title}: {new} / {old_label} per round {ratios}")
    print(f"median {report['median_ratio']:.3f}; {new} faster in {report[f'rounds_{new}_faster']} of {rounds} rounds;"
          f" images/s {new} {medians[new]:.1f}, {old_label} {medians[old]:.1f}")  # fmt: skip


def at_least_one_problems(**values):
    """One message per flag below 1 (`batch_size=0` -> "--batch-size must be >= 1. Received: 0").

    Example:
    >>> at_least_one_problems(rounds=0, steps=2)
    ['--rounds must be >= 1. Received: 0']
    """
    problems = []
    for name, value in values.items():
        if value < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1. Received: {value}")
    return problems


def json_flag_problems(path):
    """Why `--json PATH` could not be written, found before a measurement of minutes: a folder given, or
    a folder that cannot be made or written (`training.files.writable_dir_problem`). [] when fine or unset.

    Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> json_flag_problems(folder) == [f"--json must be a file path; {folder!r} is a folder"]
    True
    >>> json_flag_problems(os.path.join(folder, "new", "ab.json"))
    []
    """
    from training.files import writable_dir_problem  # noqa: PLC0415

    if not path:
        return []
    if os.path.isdir(path):
        return [f"--json must be a file path; {path!r} is a folder"]
    problem = writable_dir_problem(os.path.dirname(os.path.abspath(path)), "--json's folder")
    return [problem] if problem else []


def write_report(path, report):
    """`report` as JSON at `path`, atomically, its folder made first if it is missing."""
    from keras_mixer.atomic import write_json_atomically  # noqa: PLC0415

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json_atomically(path, report)


def preset_and_count_problems(preset, **counts):
    """(the preset's model config or None, every problem with `--preset` and the count flags), checked at once.

    Example:
    >>> config, problems = preset_and_count_problems("fashion", rounds=0)
    >>> config["image_size"], problems
    (28, ['--rounds must be >= 1. Received: 0'])
    """
    from benchmarks.run import model_config  # noqa: PLC0415

    problems = at_least_one_problems(**counts)
    try:
        return model_config(preset), problems
    except ValueError as error:
        return None, [*problems, f"--preset: {error}"]


COUNTED_PER_ROUND = {"steps": "train steps timed per round and path", "calls": "calls timed per round and path"}


def ab_parser(module, description, rounds, batch_size, counted, precision=None):
    """The flags of an A/B: --preset, --batch-size, --rounds, `--{counted}` (a key of `COUNTED_PER_ROUND`),
    --json, --verbose, and with a default `precision` --precision."""
    from keras_mixer.export import SAVED_MODEL_PRECISIONS  # noqa: PLC0415
    from training.quiet import add_verbose_flag  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--preset", default="mixer_s16", help="a paper preset (at 224 px) or 'fashion'")
    if precision:
        parser.add_argument("--precision", choices=SAVED_MODEL_PRECISIONS, default=precision)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument(
        f"--{counted}", type=int, default=2 if counted == "steps" else 1, help=COUNTED_PER_ROUND[counted]
    )
    parser.add_argument("--json", help="write the figures here")
    add_verbose_flag(parser)
    return parser


def train_ab_parser(module, description, rounds, precision=None):
    """`ab_parser` of a train-step A/B: batch 8, --steps."""
    return ab_parser(module, description, rounds, batch_size=8, counted="steps", precision=precision)


def paths_ab_parser(module, description, rounds, precision=None):
    """`ab_parser` of an A/B of whole inference paths: batch 32, --calls."""
    return ab_parser(module, description, rounds, batch_size=32, counted="calls", precision=precision)


def parse_ab(parser, argv):
    """(args, the preset's model config or None, every problem with the flags): logs quieted, flags checked."""
    from training.quiet import quiet_logs  # noqa: PLC0415

    args = parser.parse_args(argv)
    quiet_logs(args.verbose)
    counts = {name: getattr(args, name) for name in ("batch_size", "rounds", *COUNTED_PER_ROUND) if hasattr(args, name)}
    config, problems = preset_and_count_problems(args.preset, **counts)
    return args, config, problems + json_flag_problems(args.json)


def forward_ab_parser(module, description, rounds, calls, min_elements_help):
    """The flags of every forward-pass A/B of a fused piece: --preset, --precision, --batch-size, --rounds,
    --calls, --min-elements (the piece's size threshold, `min_elements_help` saying which), --json, --verbose."""
    from keras_mixer.export import SAVED_MODEL_PRECISIONS  # noqa: PLC0415
    from training.quiet import add_verbose_flag  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--preset", default="mixer_s16", help="a paper preset (at 224 px) or 'fashion'")
    parser.add_argument("--precision", choices=SAVED_MODEL_PRECISIONS, default="float32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--calls", type=int, default=calls, help="forward passes timed per round and path")
    parser.add_argument("--min-elements", type=int, help=min_elements_help)
    parser.add_argument("--json", help="write the figures here")
    add_verbose_flag(parser)
    return parser


def parse_forward_ab(parser, argv):
    """(args, every problem with the flags, the preset's included): logs quieted, flags checked at once."""
    from training.quiet import quiet_logs  # noqa: PLC0415

    args = parser.parse_args(argv)
    quiet_logs(args.verbose)
    _, problems = preset_and_count_problems(
        args.preset, batch_size=args.batch_size, rounds=args.rounds, calls=args.calls
    )
    if args.min_elements is not None and args.min_elements < 0:
        problems.append(f"--min-elements must be >= 0. Received: {args.min_elements}")
    return args, problems + json_flag_problems(args.json)


def forward_ab_report(module, argv, args, threshold):
    """The fields every forward-pass A/B's JSON starts with: command, machine, preset, precision, batch size,
    the size threshold it ran with, and TensorFlow's thread count."""
    from keras_mixer.fused_norm import tensorflow_threads  # noqa: PLC0415
    from training.machine import machine_description  # noqa: PLC0415

    return {
        "command": command_line(module, argv),
        "machine": machine_description(),
        "preset": args.preset,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "min_elements_per_example": threshold,
        "tensorflow_threads": tensorflow_threads(),
    }


@contextlib.contextmanager
def module_settings(*settings):
    """Each (module, name, value) set for the block and put back after it, whatever happens in it.

    The A/Bs raise the package's thresholds this way, as they are read when a graph is traced.

    Example:
    >>> import types
    >>> module = types.SimpleNamespace(LIMIT=2)
    >>> with module_settings((module, "LIMIT", 8)):
    ...     inside = module.LIMIT
    >>> inside, module.LIMIT
    (8, 2)
    """
    saved = [(module, name, getattr(module, name)) for module, name, _ in settings]
    try:
        for module, name, value in settings:
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def refuse(problems):
    """The one-line error for bad flags, on stderr; returns the exit status for bad input."""
    from training import EXIT_BAD_INPUT  # noqa: PLC0415

    print("error: " + "; ".join(problems), file=sys.stderr)
    return EXIT_BAD_INPUT


def train_ab_report(module, argv, args):
    """The fields every train-step A/B's JSON starts with: its command, the machine, preset and batch size."""
    from training.machine import machine_description  # noqa: PLC0415

    return {
        "command": command_line(module, argv),
        "machine": machine_description(),
        "preset": args.preset,
        "batch_size": args.batch_size,
    }


def command_line(module, argv):
    """The command an A/B ran, for its JSON: `python -m MODULE FLAGS` (`argv` None: this process's flags)."""
    return f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)
