"""A/B/C of the MlpBlock: 2-D matmuls (the package), Keras' 3-D `Dense` (the layout before), ReLU.

    python -m benchmarks.mlp_layout [--pairs 2] [--repeats 15] [--variants 2d,3d,relu]
                                    [--json benchmarks/mlp_layout.json]

Each variant runs in its own process, alternating (A, B, C, A, B, C, ...), on the default
Fashion-MNIST Mixer: a `tf.function` train step (AdamW, 8 steps of batch 128 per timed call) and a
forward pass. The "3d" variant replaces `MlpBlock.call` with the plain `Dense -> GELU -> Dense` on
(N, S, C) tensors, which TensorFlow lowers to reshape + matmul + reshape with a separate bias add
and GELU. The "relu" variant is the package's layout with `activation="relu"` (what the GELU costs).
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

VARIANTS = ("2d", "3d", "relu")


def _measure(variant, repeats):
    """Median (train, forward) images/s of one variant in this process."""
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from benchmarks.run import FASHION, model_config  # noqa: PLC0415
    from keras_mixer import MLPMixer  # noqa: PLC0415
    from keras_mixer.layers import MlpBlock  # noqa: PLC0415

    if variant == "3d":

        def call(self, x, training=None):
            return self.dense_1(keras.ops.gelu(self.dense_0(x), approximate=self.gelu_approximate))

        MlpBlock.call = call
    model = MLPMixer(**model_config(FASHION), activation="relu" if variant == "relu" else "gelu")
    optimizer = keras.optimizers.AdamW(1e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (128, 28, 28, 1)).astype("float32"))
    labels = tf.constant(np.eye(10, dtype="float32")[rng.integers(0, 10, 128)])

    @tf.function
    def train(n):
        for _ in tf.range(n):
            with tf.GradientTape() as tape:
                loss = loss_fn(labels, model(images, training=True))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def forward(n):
        total = tf.zeros(())
        for _ in tf.range(n):
            total += tf.reduce_sum(model(images, training=False))
        return total

    steps = tf.constant(8)
    train(steps), forward(steps)
    rates = {"train": [], "forward": []}
    for _ in range(repeats):
        for name, function in (("train", train), ("forward", forward)):
            start = time.perf_counter()
            function(steps).numpy()
            rates[name].append(8 * 128 / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mlp_layout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="alternating rounds of one process per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per process")
    parser.add_argument("--json", default="benchmarks/mlp_layout.json")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(_measure(args.variant, args.repeats)))
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "2d" not in variants or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants must include 2d and name only {VARIANTS}. Received: {args.variants!r}")
    runs = []
    for _ in range(args.pairs):
        for variant in variants:
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.mlp_layout", "--variant", variant, "--repeats", str(args.repeats)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(child.stdout.strip().splitlines()[-1])
            runs.append({"variant": variant, **result})
            print(f"{variant}: train {result['train']:.0f} images/s, forward {result['forward']:.0f} images/s")
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

    write_json_atomically(args.json, {"runs": runs, "median_of_runs": summary, "machine": machine_description()})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
