"""Inference with oneDNN's weight cache (`TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`) against without, in alternation.

    python -m benchmarks.frozen_weights_ab --preset mixer_s16 --batch-size 32 --pairs 5

TensorFlow's oneDNN matmuls reorder their weights into a blocked layout on every call. With
`TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1` each fused matmul of a graph reorders them on its first call
and keeps the result, so that process must never change a weight after a graph has run with it:
a later `assign` or `set_weights` is silently ignored by graphs traced before (`training.predict`
and TF Serving never change one; training does every step). TensorFlow reads the variable once
per process, so each side runs in its own process, alternating (off, on, off, on, ...). Each process
times the Keras graph and the exported SavedModel in float32 and bfloat16 at `--batch-size`, and
returns the logits of two fixed images, which must not depend on the setting. Prints each row's
per-pair ratios and writes JSON (`--json`) with the CPU named.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.alternation import (  # noqa: E402
    ab_summary,
    command_line,
    json_flag_problems,
    preset_and_count_problems,
    print_ab,
    write_report,
)
from training.predict import FROZEN_WEIGHTS_FLAG  # noqa: E402

ROWS = ("keras", "keras_bfloat16", "saved_model", "saved_model_bfloat16")  # as `benchmarks.run` names them


def measure(preset, batch_size, repeats):
    """{"rates": {row: [images/s per repeat]}, "logits": the float32 model's logits of two fixed images}, here."""

    from benchmarks.run import (  # noqa: PLC0415
        build_model,
        keras_inference,
        saved_model_inference,
        synthetic_images,
        with_random_head,
    )

    rates, logits = {}, None
    for precision in ("float32", "bfloat16"):
        model, config = build_model(preset, precision)
        with_random_head(model)  # so that the logits carry weight
        if precision == "float32":
            logits = model.predict(synthetic_images(config, 2, seed=1), verbose=0).tolist()
        suffix = "" if precision == "float32" else f"_{precision}"
        rates[f"keras{suffix}"] = keras_inference(model, config, batch_size, repeats)[0]
        with tempfile.TemporaryDirectory() as folder:
            rates[f"saved_model{suffix}"] = saved_model_inference(model, config, batch_size, repeats, folder, precision)
    return {"rates": rates, "logits": logits}


def measure_in_a_process(preset, batch_size, repeats, frozen):
    """`measure` in a new process, with oneDNN's weight cache on (`frozen`) or off."""
    command = [sys.executable, "-m", "benchmarks.frozen_weights_ab", "--child", "--preset", preset,
               "--batch-size", str(batch_size), "--repeats", str(repeats)]  # fmt: skip
    env = {**os.environ, FROZEN_WEIGHTS_FLAG: "1" if frozen else "0"}
    child = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    if child.returncode != 0:
        raise RuntimeError(f"the {FROZEN_WEIGHTS_FLAG}={int(frozen)} process failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def alternate(preset, batch_size, repeats, pairs):
    """({row: {"frozen": [images/s per pair], "reordered": [...]}}, largest logit difference between the two)."""
    rates = {row: {"frozen": [], "reordered": []} for row in ROWS}
    largest_difference = 0.0
    for _ in range(pairs):
        results = {}
        for side, frozen in (("reordered", False), ("frozen", True)):
            results[side] = measure_in_a_process(preset, batch_size, repeats, frozen)
            for row in ROWS:
                rates[row][side].append(statistics.median(results[side]["rates"][row]))
        pairs_of_logits = zip(_flat(results["frozen"]["logits"]), _flat(results["reordered"]["logits"]))
        largest_difference = max([largest_difference, *(abs(a - b) for a, b in pairs_of_logits)])
    return rates, largest_difference


def _flat(nested):
    return [value for row in nested for value in row]


def main(argv=None):
    description = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frozen_weights_ab", description=description)
    parser.add_argument("--preset", default="mixer_s16", help="a paper preset (at 224 px) or 'fashion'")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs of processes (off, on)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row and process")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one measuring process
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.preset, args.batch_size, args.repeats)))
        return 0

    from training import EXIT_BAD_INPUT  # noqa: PLC0415
    from training.machine import machine_description  # noqa: PLC0415

    _, problems = preset_and_count_problems(
        args.preset, batch_size=args.batch_size, pairs=args.pairs, repeats=args.repeats
    )
    problems += json_flag_problems(args.json)
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        rates, largest_difference = alternate(args.preset, args.batch_size, args.repeats, args.pairs)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report = {
        "command": command_line("benchmarks.frozen_weights_ab", argv),
        "machine": machine_description(),
        "preset": args.preset,
        "batch_size": args.batch_size,
        "largest_logit_difference": largest_difference,
        "rows": {row: ab_summary(rates[row], "frozen", "reordered") for row in ROWS},
    }
    for row in ROWS:
        print_ab(report["rows"][row], f"{args.preset} {row} batch {args.batch_size}", "frozen", "reordered")
    print(f"largest difference between the two sides' float32 logits: {largest_difference:.2e}")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
