"""The compiled GELU at inference against oneDNN's fused one, in alternation: the A/B behind its setting.

    python -m benchmarks.inference_gelu_ab --preset mixer_s16 --batch-size 32 --rounds 10

Builds one model and traces its forward pass twice, both with the batch size unknown (as
`MLPMixer.predict` and the SavedModels trace it, so both run oneDNN's norm): once with each large GELU
one XLA-compiled call after a matmul fused with its bias ("compiled"), and once inside
`keras_gelu_at_inference()`, where TensorFlow fuses Keras' GELU into the matmul as a oneDNN post-op
("onednn"). Then it times the two in alternation, `--rounds` times, `--calls` forward passes each, so
both see the machine in the same state. The compiled side runs whatever the CPU's flags and thread count
(the A/B is the measurement behind `ONEDNN_GELU_KEPT_WITH`); `--min-elements` replaces
`MIN_INFERENCE_ELEMENTS_PER_EXAMPLE` (0 compiles every GELU). Prints the per-round ratios and writes
JSON (`--json`) with the CPU named, whether the XLA GELU ran, and the largest difference of the two
sides' outputs.
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
    refuse,
    write_report,
)

MODULE = "benchmarks.inference_gelu_ab"


def forward_passes(model, images):
    """({"compiled": ..., "onednn": ...} forward passes on `images`, the two sides' largest output difference)."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer.fused_gelu import keras_gelu_at_inference  # noqa: PLC0415
    from keras_mixer.predict_trace import any_batch_size_spec  # noqa: PLC0415

    images = tf.constant(images)
    spec = [any_batch_size_spec(images)]
    compiled = tf.function(lambda x: model(x, training=False), input_signature=spec)
    onednn = tf.function(lambda x: model(x, training=False), input_signature=spec)
    compiled_outputs = compiled(images).numpy()
    with keras_gelu_at_inference():
        onednn_outputs = onednn(images).numpy()  # traced (and so fixed) with Keras' GELU
    difference = float(np.abs(compiled_outputs - onednn_outputs).max())
    runs = {name: (lambda f=function: f(images).numpy()) for name, function in
            (("compiled", compiled), ("onednn", onednn))}  # fmt: skip
    return runs, difference


def main(argv=None):
    parser = forward_ab_parser(
        MODULE,
        __doc__.split("\n\n")[0],
        rounds=10,
        calls=2,
        min_elements_help="compile GELUs from this many hidden values per image instead of the package's "
        "MIN_INFERENCE_ELEMENTS_PER_EXAMPLE (0 compiles every GELU: the evidence for that threshold)",
    )
    args, problems = parse_forward_ab(parser, argv)
    if problems:
        return refuse(problems)
    from benchmarks.fused_norm_ab import op_ran  # noqa: PLC0415
    from benchmarks.op_breakdown import XLA_OP_TYPE  # noqa: PLC0415
    from benchmarks.run import build_model, synthetic_images, with_random_head  # noqa: PLC0415
    from keras_mixer import fused_gelu, fused_norm  # noqa: PLC0415

    model, config = build_model(args.preset, args.precision)
    threshold = fused_gelu.MIN_INFERENCE_ELEMENTS_PER_EXAMPLE if args.min_elements is None else args.min_elements
    # read when the forward pass is traced; the compiled side runs whatever this CPU and its thread count
    with module_settings(
        (fused_gelu, "MIN_INFERENCE_ELEMENTS_PER_EXAMPLE", threshold),
        (fused_gelu, "ONEDNN_GELU_KEPT_WITH", ()),
        (fused_norm, "MAX_TENSORFLOW_THREADS", math.inf),
    ):
        runs, difference = forward_passes(with_random_head(model), synthetic_images(config, args.batch_size))
        xla_ran = op_ran(runs["compiled"], XLA_OP_TYPE)
        rates = images_per_second_in_alternation(runs, args.rounds, args.batch_size, args.calls)
    report = {
        **forward_ab_report(MODULE, argv, args, threshold),
        "xla_gelu_ran": xla_ran,
        "max_output_difference": difference,
        **ab_summary(rates, "compiled", "onednn"),
    }
    print_ab(report, f"{args.preset} {args.precision} batch {args.batch_size}", "compiled", "onednn",
             "oneDNN's fused GELU")  # fmt: skip
    print(f"largest output difference {difference:.2e}")
    if not xla_ran:
        print(f"note: no GELU ran compiled (none has {threshold} hidden values per image, or no TensorFlow CPU)")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
