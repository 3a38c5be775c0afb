"""The GPU check: Mixer training and export on an NVIDIA GPU, in one run of at most 8 minutes.

    bash benchmarks/gpu_check.sh              # writes benchmarks/gpu_check.json

Rows (each skipped, with the reason, where it cannot run):
- `fit_s16_<precision>[_xla]`: `model.fit` of S/16 at 224 px under `MirroredStrategy` on every visible
  GPU, float32 and mixed_bfloat16, with and without XLA (synthetic batches; images/s of the second epoch).
- `fit_b16_bfloat16_xla`: B/16 training throughput and MFU (3 x forward FLOPs x images/s over the
  GPU's dense bf16 peak, from `PEAK_BF16_TFLOPS`).
- `export_parity`: a small Mixer trained on the GPU, exported as a SavedModel and a float32 TFLite
  file, both compared with the Keras model on the same images (max abs probability difference).
On a machine without a GPU the GPU rows say so and the export row runs on the CPU, so the script
is checked everywhere (tests/test_benchmarks.py). On a GPU machine without TensorFlow but with JAX (an
image with PyTorch and JAX, say), the fit rows run on Keras' JAX backend instead: one GPU, always
compiled by XLA (so the `_xla` rows are the plain ones), and the export row, which needs TensorFlow, is
skipped with that reason.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None
if not HAS_TENSORFLOW:  # before anything imports Keras
    os.environ.setdefault("KERAS_BACKEND", "jax")

DEADLINE_SECONDS = 7 * 60  # rows not started by then are skipped: the whole check stays under 8 minutes
# Dense bfloat16 peak, TFLOP/s, by a name fragment of the device (vendor data sheets).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}
SMALL = dict(num_blocks=2, hidden_dim=64, tokens_mlp_dim=32, channels_mlp_dim=128, patch_size=4, image_size=32,
             num_channels=3, num_classes=10)  # fmt: skip


def _synthetic(config, batch_size):
    """One synthetic batch, repeated: a tf.data dataset on TensorFlow, a Python generator elsewhere."""
    size, classes = config["image_size"], config["num_classes"]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, size, size, config.get("num_channels", 3))).astype("float32")
    labels = np.eye(classes, dtype="float32")[np.arange(batch_size) % classes]
    if _backend() != "tensorflow":
        return _repeat(images, labels)
    import tensorflow as tf  # noqa: PLC0415

    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def _repeat(images, labels):
    while True:
        yield images, labels


def _backend():
    import keras  # noqa: PLC0415

    return keras.backend.backend()


def fit_rate(strategy, config, precision, jit_compile, batch_per_replica, steps):
    """Images/s of the second epoch of `model.fit` under `strategy` (a MirroredStrategy on every GPU)."""
    import keras  # noqa: PLC0415

    from keras_mixer import MLPMixer  # noqa: PLC0415
    from keras_mixer.export import with_precision  # noqa: PLC0415

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    batch = batch_per_replica * replicas
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = with_precision(MLPMixer(**config), precision)
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05, global_clipnorm=1.0),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
            jit_compile=True if _backend() == "jax" else jit_compile,  # JAX without jit runs op by op
        )
    times = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: times.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: times.append(time.perf_counter()),
    )
    model.fit(_synthetic(config, batch), steps_per_epoch=steps, epochs=2, verbose=0, callbacks=[timer], shuffle=False)
    return {"images_per_second": steps * batch / (times[3] - times[2]), "global_batch": batch,
            "replicas": replicas, "backend": _backend()}  # fmt: skip


def export_parity(config, steps, folder):
    """Train `config` briefly (on the GPU when there is one), export it, compare the exports with Keras."""
    if not HAS_TENSORFLOW:
        return {"skipped": "TensorFlow is not installed on this machine: SavedModel and TFLite export need it"}
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer import MLPMixer  # noqa: PLC0415
    from keras_mixer.export import export_saved_model, export_tflite  # noqa: PLC0415
    from keras_mixer.lite import TFLiteClassifier  # noqa: PLC0415

    model = MLPMixer(**config, classifier_activation="softmax")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(_synthetic(config, 32), steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    images = np.random.default_rng(1).uniform(0, 255, (16, config["image_size"], config["image_size"], 3))
    images = images.astype("float32")
    reference = model.predict(images, verbose=0)
    saved = export_saved_model(model, os.path.join(folder, "saved_model"))
    served = tf.saved_model.load(saved).signatures["serving_default"](images=tf.constant(images))["probabilities"]
    lite = TFLiteClassifier(export_tflite(model, os.path.join(folder, "float32.tflite"))).predict(images)
    return {
        "saved_model_max_abs_difference": float(np.abs(served.numpy() - reference).max()),
        "tflite_float32_max_abs_difference": float(np.abs(lite - reference).max()),
    }


def gpu_description():
    """The visible NVIDIA GPUs' names, as the backend sees them."""
    if _backend() == "jax":
        import jax  # noqa: PLC0415

        return [device.device_kind for device in jax.devices() if device.platform == "gpu"]
    import tensorflow as tf  # noqa: PLC0415

    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return names


def peak_bf16_flops(device_name):
    for fragment, tflops in PEAK_BF16_TFLOPS.items():
        if fragment in device_name:
            return tflops * 1e12
    return None


def fit_rows(gpus, started, rows_config=None, steps=20, only=None, batch=64):
    """Every row as a dict; GPU rows become {"skipped": reason} without a GPU, past the deadline or not in `only`."""
    from benchmarks.run import model_config  # noqa: PLC0415

    s16, b16 = rows_config or (model_config("mixer_s16"), model_config("mixer_b16"))
    plan = [(f"fit_s16_{p}{'_xla' if xla else ''}", s16, p, xla, batch) for p in ("float32", "bfloat16")
            for xla in (False, True)]  # fmt: skip
    plan.append(("fit_b16_bfloat16_xla", b16, "bfloat16", True, batch))
    rows = {}
    # One strategy for every row: several MirroredStrategy objects in one process can collide in their
    # collective instance keys ("Shape mismatch in the collective instance").
    strategy = None
    if gpus and _backend() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415

        strategy = tf.distribute.MirroredStrategy()
    for name, config, precision, xla, row_batch in plan:
        if not gpus:
            rows[name] = {"skipped": f"no NVIDIA GPU visible to Keras' {_backend()} backend on this machine"}
        elif only is not None and name not in only:
            rows[name] = {"skipped": "not selected"}
        elif time.perf_counter() - started > DEADLINE_SECONDS:
            rows[name] = {"skipped": f"time budget ({DEADLINE_SECONDS} s) spent"}
        elif _backend() == "jax" and xla and config is s16:
            rows[name] = {"skipped": "the JAX backend always compiles with XLA: see the same row without _xla"}
        else:
            rows[name] = fit_rate(strategy, config, precision, xla, row_batch, steps)
            print(f"{name}: {rows[name]['images_per_second']:.0f} images/s", flush=True)
    b16_row = rows["fit_b16_bfloat16_xla"]
    if "images_per_second" in b16_row:
        b16_row.update(training_mfu(b16, b16_row["images_per_second"] / b16_row["replicas"], gpus[0]))
    return rows


def training_mfu(config, images_per_second_per_gpu, device_name):
    """{"tflops_per_gpu", "mfu"}: 3 x forward FLOPs x images/s, over the device's dense bf16 peak (None if unknown).

    >>> from benchmarks.run import model_config
    >>> round(training_mfu(model_config("mixer_b16"), 1000.0, "NVIDIA H100 80GB HBM3")["mfu"], 3)
    0.076
    """
    from benchmarks.flops import flops_per_image  # noqa: PLC0415

    achieved = 3 * flops_per_image(config) * images_per_second_per_gpu
    peak = peak_bf16_flops(device_name)
    return {"tflops_per_gpu": achieved / 1e12, "mfu": achieved / peak if peak else None}


def _machine():
    """`training.machine.machine_description()`, or its TensorFlow-free part on a machine without TensorFlow."""
    import keras  # noqa: PLC0415

    from keras_mixer.cpu import cpu_model_and_flags  # noqa: PLC0415
    from training.machine import machine_description  # noqa: PLC0415

    if HAS_TENSORFLOW:
        return machine_description()
    cpu, flags = cpu_model_and_flags()
    return {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(), "keras": keras.__version__,
            "backend": keras.backend.backend(), "python": sys.version.split()[0]}  # fmt: skip


def main(argv=None):
    from training import EXIT_BAD_INPUT  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="benchmarks/gpu_check.json")
    parser.add_argument("--batch", type=int, default=64, help="training batch per GPU of the fit rows")
    args = parser.parse_args(argv)
    if args.batch < 1:
        print(f"error: --batch must be >= 1. Received: {args.batch}", file=sys.stderr)
        return EXIT_BAD_INPUT
    started = time.perf_counter()
    from keras_mixer.atomic import write_json_atomically  # noqa: PLC0415

    gpus = gpu_description()
    report = {"machine": _machine(), "gpus": gpus, "rows": fit_rows(gpus, started, batch=args.batch)}
    with tempfile.TemporaryDirectory() as folder:
        parity = export_parity(SMALL, 30, folder)
    report["rows"]["export_parity"] = {**parity, "trained_on": gpus[0] if gpus else "CPU"}
    report["wall_seconds"] = time.perf_counter() - started
    write_json_atomically(args.json, report)
    print(json.dumps(report["rows"], indent=1))
    print(f"wrote {args.json} ({report['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
