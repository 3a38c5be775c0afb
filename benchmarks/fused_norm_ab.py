"""The fused layer norms against Keras' own, alternating in one process: the A/B behind `keras_mixer/fused_norm.py`.

    python -m benchmarks.fused_norm_ab --preset mixer_s16 --precision bfloat16 --batch-size 32 --rounds 15

Builds one model and traces its forward pass three times: with the batch size known inside
`without_onednn_norm()` ("fused": each LayerNorm one XLA-compiled call where `fused_inference_applies`);
with the batch size unknown, as `MLPMixer.predict` and the SavedModel signatures run it ("onednn":
TensorFlow rewrites each norm into oneDNN's `_MklLayerNorm`, where `onednn_inference_applies`; the
package's graphs with a known batch size run the same); and inside `portable_graph()` with the batch
size known ("unfused": Keras' op). Then it times the three in alternation, `--rounds` times, so
all see the machine in the same state; on a shared VM, rows measured minutes apart (as in
`benchmarks.run`) drift by more than the effect. Prints the per-round ratios against Keras' op and writes
JSON (`--json`) with the CPU named, and whether `_MklLayerNorm` ran (`onednn_layer_norm_ran`) and the
XLA norm (`xla_norm_ran`).
`--min-elements 0` fuses every norm, small ones too (the measurement behind the size threshold).
The XLA side is fused whatever the thread count (the A/B is the measurement behind
`MAX_TENSORFLOW_THREADS`); the JSON records `tensorflow_threads`: compare `taskset -c 0,1` runs with
runs on all cores.
"""

import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.alternation import (  # noqa: E402
    ab_summary,
    forward_ab_parser,
    forward_ab_report,
    images_per_second_in_alternation,
    module_settings,
    parse_forward_ab,
    print_ab,
    ratios_only,
    refuse,
    write_report,
)
from benchmarks.op_breakdown import XLA_OP_TYPE, profile_by_op_type  # noqa: E402

MODULE = "benchmarks.fused_norm_ab"


def forward_passes(model, images):
    """{"fused": ..., "onednn": ..., "unfused": ...}: the model's forward pass on `images`, traced three ways."""
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer.fused_norm import portable_graph, without_onednn_norm  # noqa: PLC0415
    from keras_mixer.predict_trace import any_batch_size_spec  # noqa: PLC0415

    images = tf.constant(images)
    fused = tf.function(lambda x: model(x, training=False))
    onednn = tf.function(lambda x: model(x, training=False), input_signature=[any_batch_size_spec(images)])
    unfused = tf.function(lambda x: model(x, training=False))
    with without_onednn_norm():
        fused(images).numpy()  # traced (and so fixed) with the XLA norm
    onednn(images).numpy()
    with portable_graph():
        unfused(images).numpy()  # traced (and so fixed) without the XLA norm; the batch size known: Keras' op
    return {name: (lambda f=function: f(images).numpy()) for name, function in
            (("fused", fused), ("onednn", onednn), ("unfused", unfused))}  # fmt: skip


def op_ran(forward, op):
    """Whether TensorFlow ran `op` (an op type, or `op_breakdown.XLA_OP_TYPE`) in one profiled call of `forward`."""
    return any(row["op"] == op for row in profile_by_op_type(forward, calls=1))


def main(argv=None):
    parser = forward_ab_parser(
        MODULE,
        __doc__.split("\n\n")[0],
        rounds=15,
        calls=3,
        min_elements_help="fuse norms from this many elements per example instead of the package's "
        "MIN_ELEMENTS_PER_EXAMPLE (0 fuses every norm: the evidence for that threshold)",
    )
    args, problems = parse_forward_ab(parser, argv)
    if problems:
        return refuse(problems)
    from benchmarks.run import build_model, synthetic_images  # noqa: PLC0415
    from keras_mixer import fused_norm  # noqa: PLC0415

    model, config = build_model(args.preset, args.precision)
    threshold = fused_norm.MIN_ELEMENTS_PER_EXAMPLE if args.min_elements is None else args.min_elements
    # read when the forward pass is traced
    with module_settings(
        (fused_norm, "MIN_ELEMENTS_PER_EXAMPLE", threshold), (fused_norm, "MAX_TENSORFLOW_THREADS", math.inf)
    ):
        runs = forward_passes(model, synthetic_images(config, args.batch_size))
        onednn_ran = op_ran(runs["onednn"], "_MklLayerNorm")
        xla_ran = op_ran(runs["fused"], XLA_OP_TYPE)  # the package would run oneDNN's norm there
        rates = images_per_second_in_alternation(runs, args.rounds, args.batch_size, args.calls)
    report = {
        **forward_ab_report(MODULE, argv, args, threshold),
        "onednn_layer_norm_ran": onednn_ran,
        "xla_norm_ran": xla_ran,
        **ab_summary(rates, "fused", "unfused"),
        "onednn_over_unfused": ratios_only(ab_summary(rates, "onednn", "unfused")),
        "onednn_over_fused": ratios_only(ab_summary(rates, "onednn", "fused")),
    }
    title = f"{args.preset} {args.precision} batch {args.batch_size}"
    print_ab(report, title, "fused", "unfused", "unfused (Keras' op)")
    print_ab({**report, **report["onednn_over_unfused"]}, title, "onednn", "unfused", "unfused (Keras' op)")
    print_ab({**report, **report["onednn_over_fused"]}, title, "onednn", "fused", "fused (XLA)")
    if not onednn_ran:
        print("note: TensorFlow did not run _MklLayerNorm on the onednn side (no oneDNN in this TensorFlow?)")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
