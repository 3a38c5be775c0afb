"""A/B of MLP layouts: 2-D matmuls (the package), Keras' 3-D `Dense`, ReLU, token mixing without transposes.

    python -m benchmarks.mlp_layout [--pairs 2] [--repeats 15] [--variants 2d,3d,relu]   # or add contract
                                    [--preset fashion] [--precision float32] [--train-batch 128]
                                    [--forward-batch 128] [--steps 8] [--json benchmarks/mlp_layout.json]

Each variant runs in its own process, alternating (A, B, C, A, B, C, ...), on the default
Fashion-MNIST Mixer or a paper preset at 224 px: a `tf.function` train step (AdamW, `--steps` steps
per timed call) and a forward pass. The variants:
- "2d": the package (`MlpBlock` folds the leading axes, so each Dense is a 2-D matmul);
- "3d": the plain `Dense -> GELU -> Dense` on (N, S, C) tensors, which TensorFlow lowers to reshape +
  matmul + reshape with a separate bias add and GELU (the layout before);
- "relu": the package with `activation="relu"` (what the GELU costs);
- "contract": token mixing as a contraction over the token axis, `W0^T @ x` batched over the images,
  with no transposes (the speed issue's lead); the channel mixing is the package's.
Prints the median images/s of each process, each variant's speed relative to "2d", and writes JSON.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VARIANTS = ("2d", "3d", "relu", "contract")


def _contract_tokens(self, x, training=None):
    """`MixerBlock.call` with token mixing as `W0^T @ x` batched over the images: no transposes."""
    from keras import ops  # noqa: PLC0415

    mlp = self.token_mixing
    y = ops.cast(self.layer_norm_0(x), mlp.compute_dtype)
    kernel_0, bias_0 = (ops.cast(w, y.dtype) for w in (mlp.dense_0.kernel, mlp.dense_0.bias))
    kernel_1, bias_1 = (ops.cast(w, y.dtype) for w in (mlp.dense_1.kernel, mlp.dense_1.bias))
    hidden = ops.matmul(ops.transpose(kernel_0), y) + bias_0[:, None]  # (N, tokens_mlp_dim, C)
    hidden = ops.gelu(hidden, approximate=mlp.gelu_approximate)
    y = ops.matmul(ops.transpose(kernel_1), hidden) + bias_1[:, None]  # (N, S, C)
    x = x + ops.cast(self.drop_path(y, training=training), x.dtype)
    y = self.channel_mixing(self.layer_norm_1(x), training=training)
    return x + ops.cast(self.drop_path(y, training=training), x.dtype)


def _measure(variant, settings):
    """Median (train, forward) images/s of one variant in this process."""
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from benchmarks.run import compiled_train_steps, model_config, synthetic_images  # noqa: PLC0415
    from keras_mixer import MLPMixer  # noqa: PLC0415
    from keras_mixer.export import with_precision  # noqa: PLC0415
    from keras_mixer.layers import MixerBlock, MlpBlock  # noqa: PLC0415

    config = {**model_config(settings["preset"]), "activation": "relu" if variant == "relu" else "gelu"}
    model = with_precision(MLPMixer(**config), settings["precision"])
    images = tf.constant(synthetic_images(config, settings["forward_batch"]))
    if variant == "3d":

        def call(self, x, training=None):
            return self.dense_1(keras.ops.gelu(self.dense_0(x), approximate=self.gelu_approximate))

        MlpBlock.call = call
    if variant == "contract":
        before = model(images[:2], training=False)
        MixerBlock.call = _contract_tokens
        tolerance = 1e-4 if settings["precision"] == "float32" else 0.1
        # The A/B compares two layouts of one function: the same weights give the same logits.
        np.testing.assert_allclose(model(images[:2], training=False), before, atol=tolerance, rtol=tolerance)
    train = compiled_train_steps(config, settings["train_batch"], settings["precision"])

    @tf.function
    def forward(n):
        total = tf.zeros(())
        for _ in tf.range(n):
            total += tf.reduce_sum(tf.cast(model(images, training=False), tf.float32))
        return total

    steps = tf.constant(settings["steps"])
    train(steps), forward(steps)
    rates = {"train": [], "forward": []}
    batches = {"train": settings["train_batch"], "forward": settings["forward_batch"]}
    for _ in range(settings["repeats"]):
        for name, function in (("train", train), ("forward", forward)):
            start = time.perf_counter()
            function(steps).numpy()
            rates[name].append(settings["steps"] * batches[name] / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def _settings_problems(args):
    """One line per flag that cannot work, before any process starts."""
    from benchmarks.run import model_config  # noqa: PLC0415

    problems = [
        f"--{flag.replace('_', '-')} must be >= 1. Received: {getattr(args, flag)}"
        for flag in ("pairs", "repeats", "train_batch", "forward_batch", "steps")
        if getattr(args, flag) < 1
    ]
    try:
        model_config(args.preset)
    except ValueError as error:
        problems.append(f"--preset: {error}")
    return problems


def main(argv=None):
    from keras_mixer.export import SAVED_MODEL_PRECISIONS  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m benchmarks.mlp_layout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="alternating rounds of one process per variant")
    parser.add_argument("--variants", default="2d,3d,relu", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per process")
    parser.add_argument("--preset", default="fashion", help="'fashion' (the default model) or a paper preset at 224 px")
    parser.add_argument("--precision", choices=SAVED_MODEL_PRECISIONS, default="float32")
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--forward-batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="steps (or forward passes) per timed call")
    parser.add_argument("--json", default="benchmarks/mlp_layout.json")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args(argv)
    settings = {key: getattr(args, key) for key in ("preset", "precision", "train_batch", "forward_batch", "steps")}
    if args.variant:
        print(json.dumps(_measure(args.variant, {**settings, "repeats": args.repeats})))
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "2d" not in variants or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants must include 2d and name only {VARIANTS}. Received: {args.variants!r}")
    problems = _settings_problems(args)
    if problems:
        parser.error("; ".join(problems))
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    runs = []
    for _ in range(args.pairs):
        for variant in variants:
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.mlp_layout", "--variant", variant, "--repeats", str(args.repeats),
                 *flags],
                check=False, capture_output=True, text=True,
            )  # fmt: skip
            if child.returncode != 0:
                print(f"error: the {variant!r} process failed:\n{child.stderr[-2000:]}", file=sys.stderr)
                return 1
            result = json.loads(child.stdout.strip().splitlines()[-1])
            runs.append({"variant": variant, **result})
            print(f"{variant}: train {result['train']:.1f} images/s, forward {result['forward']:.1f} images/s")
    summary = {
        variant: {
            kind: statistics.median(r[kind] for r in runs if r["variant"] == variant) for kind in ("train", "forward")
        }
        for variant in variants
    }
    for variant in (v for v in variants if v != "2d"):
        for kind in ("train", "forward"):
            print(f"{kind}: {variant} / 2d = {summary[variant][kind] / summary['2d'][kind]:.2f}")
    from training.files import write_json_atomically  # noqa: PLC0415
    from training.machine import machine_description  # noqa: PLC0415

    report = {"settings": settings, "runs": runs, "median_of_runs": summary, "machine": machine_description()}
    write_json_atomically(args.json, report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
