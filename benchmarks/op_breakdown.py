"""Where a forward pass spends its time, per TensorFlow op type, after grappler and oneDNN rewrote the graph.

    python -m benchmarks.op_breakdown --preset mixer_s16 --batch-size 32 --precision bfloat16
    python -m benchmarks.op_breakdown --preset mixer_s16 --batch-size 8 --training   # a whole train step

Runs the model's forward pass in a `tf.function` under the TF profiler and sums the executed ops'
times by type (`_MklNativeFusedMatMul` is a matmul with its bias, and GELU when oneDNN fused it;
`Cast`, `Mul`, `SquaredDifference`, `Mean` and `AddN` are mostly LayerNorm and mixed-precision
casts; `XLA (compiled function)` is the fused layer norm of inference, `keras_mixer/fused_norm.py`, and
`_MklLayerNorm` oneDNN's, which runs instead wherever TensorFlow's oneDNN takes the norm's dtype).
What ran is what counts: the names come from the trace, not from the Python graph.
`benchmarks.run` stores this table for S/16 and B/16 in its JSON (row group `breakdown`).
`--training` profiles one step of the default run's optimiser and loss instead: the backward matmuls
(`_MklMatMul`, `BiasAddGrad`), the optimiser's and the gradient clipping's element-wise ops.
By default TensorFlow runs independent ops side by side, and each counts its whole duration, so the
times can add up to more than the call took (a bf16 S/16 step at batch 8 on the 2-core AVX-512 EPYC:
1.1 s of op time in a step of about 0.75 s). `--one-op-at-a-time` runs them one after another.
"""

import argparse
import collections
import glob
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_mixer.export import SAVED_MODEL_PRECISIONS  # noqa: E402
from training.quiet import add_verbose_flag, quiet_logs  # noqa: E402

XLA_RUN_EVENT = "CpuExecutable::ExecuteAsyncOnStream"  # its inner fusions are not TF ops and are not counted
XLA_OP_TYPE = "XLA (compiled function)"


def _executed_ops(trace_folder):
    """(op type, node name, seconds) of every op the trace saw run on the CPU's compute threads."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: PLC0415

    (path,) = glob.glob(os.path.join(trace_folder, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as file:
        space.ParseFromString(file.read())
    for plane in space.planes:
        for line in plane.lines:
            if not (line.name.startswith("tf_Compute") or "Eigen" in line.name):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name == XLA_RUN_EVENT:  # an XLA-compiled function (the fused layer norm) as one op
                    yield XLA_OP_TYPE, "xla", event.duration_ps * 1e-12
                    continue
                node, _, op_type = name.rpartition(":")
                # Executor bookkeeping ("ExecutorState::Process") and thread-pool markers are not ops.
                if node and "::" not in name:
                    yield op_type, node, event.duration_ps * 1e-12


def op_breakdown(model, images, calls=2, unknown_batch=False):
    """[{op, milliseconds (per call), share, count (per call)}], largest first, for `model(images)`.

    `unknown_batch`: trace the forward pass with the batch size unknown, as SavedModel signatures are
    (large norms run as oneDNN's `_MklLayerNorm` with either, where TensorFlow's oneDNN takes their
    dtype, `keras_mixer/fused_norm.py`).
    """
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer.predict_trace import any_batch_size_spec  # noqa: PLC0415

    images = tf.constant(images)
    signature = [any_batch_size_spec(images)] if unknown_batch else None
    forward = tf.function(lambda x: model(x, training=False), input_signature=signature)
    return profile_by_op_type(lambda: forward(images).numpy(), calls)


def profile_by_op_type(call, calls=2):
    """`op_breakdown`'s table for any `call()` that runs TensorFlow ops (warmed up once, then profiled)."""
    import tensorflow as tf  # noqa: PLC0415

    call()  # trace and warm up outside the profile
    with tempfile.TemporaryDirectory() as folder:
        tf.profiler.experimental.start(folder)
        try:
            for _ in range(calls):
                call()
        finally:
            tf.profiler.experimental.stop()
        seconds, count = collections.Counter(), collections.Counter()
        for op_type, _, duration in _executed_ops(folder):
            seconds[op_type] += duration / calls
            count[op_type] += 1
    total = sum(seconds.values()) or 1.0
    return [
        {"op": op, "milliseconds": 1000 * value, "share": value / total, "count": count[op] // calls}
        for op, value in seconds.most_common()
        if value > 0
    ]


def print_breakdown(rows, title):
    print(f"\n{title}\n{'op':34s} {'ms/call':>9} {'share':>7} {'count':>6}")
    for row in rows:
        if row["share"] >= 0.001:
            print(f"{row['op']:34s} {row['milliseconds']:9.1f} {100 * row['share']:6.1f}% {row['count']:6d}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.op_breakdown", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mixer_s16", help="a paper preset (at 224 px) or 'fashion'")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", choices=SAVED_MODEL_PRECISIONS, default="float32")
    parser.add_argument(
        "--training", action="store_true", help="profile a training step (the default run's optimiser and loss)"
    )
    parser.add_argument(
        "--one-op-at-a-time",
        action="store_true",
        help="run one op at a time (inter-op threads 1), so that the op times add up to the call's time; "
        "by default ops that overlap on the cores each count their whole duration",
    )
    parser.add_argument(
        "--unknown-batch",
        action="store_true",
        help="trace the forward pass with the batch size unknown, as SavedModel signatures are "
        "(large norms run as oneDNN's _MklLayerNorm, not as XLA calls)",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    quiet_logs(args.verbose)
    from benchmarks.run import build_model, compiled_train_steps, model_config, synthetic_images  # noqa: PLC0415
    from training import EXIT_BAD_INPUT  # noqa: PLC0415

    problems = [f"--batch-size must be >= 1. Received: {args.batch_size}"] if args.batch_size < 1 else []
    if args.training and args.unknown_batch:
        problems.append("--unknown-batch is for the forward pass; a training step keeps Keras' norm")
    try:
        config = model_config(args.preset)
    except ValueError as error:
        problems.append(str(error))
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    what = "training step" if args.training else "forward pass"
    if args.unknown_batch:
        what += ", traced with the batch size unknown"
    if args.one_op_at_a_time:
        import tensorflow as tf  # noqa: PLC0415

        try:  # only possible before TensorFlow ran its first op in this process
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError as error:
            print(f"error: --one-op-at-a-time needs a process where TensorFlow has not run: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        what += f", one op at a time (inter-op threads: {tf.config.threading.get_inter_op_parallelism_threads()})"
    if args.training:  # the step builds its own model, optimiser and loss
        import tensorflow as tf  # noqa: PLC0415

        train = compiled_train_steps(config, args.batch_size, args.precision)
        one = tf.constant(1)
        rows = profile_by_op_type(lambda: train(one).numpy())
    else:
        model, _ = build_model(args.preset, args.precision)
        rows = op_breakdown(model, synthetic_images(config, args.batch_size), unknown_batch=args.unknown_batch)
    print_breakdown(rows, f"{args.preset}, batch {args.batch_size}, {args.precision}, {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
