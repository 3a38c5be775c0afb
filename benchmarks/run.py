"""Mixer speed on this machine, side by side with the machine's own matmul limit and timm in the same run.

    python -m benchmarks.run                                   # the default suite, without timm
    python -m benchmarks.run --presets fashion,mixer_s16 --peer    # + timm's rows (its own venv)
    python -m benchmarks.run --presets mixer_b16 --batch-sizes 1,32 --json out.json --plot out.png

For each model (paper presets at 224 px, and `fashion` = the default Fashion-MNIST Mixer) it measures the
GEMM limit (float32 and bfloat16 matmuls of the model's own shapes); inference: the Keras graph (and
beside it the same graph with Keras' unfused layer norm), `model.predict` and `model.evaluate` on NumPy
(each beside Keras' own array path, `*_unpatched`), Keras + XLA, the exported SavedModel in float32 and
bfloat16, TFLite float32 / float16 / dynamic int8 / int8 at batch 1, the mixed_bfloat16 policy, and the
Keras graph and SavedModel rows again with oneDNN's weight cache (`*_frozen_weights`, in a process of
their own); training steps (synthetic batches, float32 and bfloat16; for `fashion` also the real tfds
pipeline, in its first epoch and once its cache holds the epoch); `model.fit` on NumPy arrays, one epoch of
`FIT_BATCHES` batches, beside Keras' own array path (`fit_numpy_*`, `*_unpatched`); a per-op time breakdown
(`benchmarks/op_breakdown.py`); and, with `--peer`, timm's rows (float32 and bf16-autocast inference,
eager and `torch.compile`, and a training step), each measured right after the Keras row it compares with,
and torch's GEMM limit on the same matmuls (`torch_*` in `limits`): where torch multiplies faster than
TensorFlow, a goal against timm can need more than TensorFlow's own limit, and the targets state that ceiling.
Every figure is min/median/max over `--repeats`; batch-1 rows add latency percentiles. Each throughput row
shows its fraction of the float32 (or bfloat16) GEMM limit. Prints a table, writes JSON (with the CPU
model and its bf16/int8 flags, and which targets apply to that CPU) and a PNG bar chart.
"""

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.flops import flops_per_image, gemm_operands  # noqa: E402
from benchmarks.op_breakdown import print_breakdown  # noqa: E402
from benchmarks.peer import (  # noqa: E402
    DEFAULT_PEER_VENV,
    PEER_REQUIREMENTS,
    PeerError,
    PeerProcess,
    ensure_peer_venv,
    venv_python,
)
from keras_mixer.atomic import save_figure_atomically, write_json_atomically  # noqa: E402
from keras_mixer.cpu import cpu_model_and_flags  # noqa: E402
from keras_mixer.export import TFLITE_MODES  # noqa: E402
from training import EXIT_BAD_INPUT  # noqa: E402
from training.quiet import add_verbose_flag, quiet_logs  # noqa: E402

FASHION = "fashion"  # the default recipe's model (training/config.py)
ALL_ROWS = (
    "keras",
    "predict",
    "xla",
    "saved_model",
    "tflite",
    "bfloat16",
    "frozen",
    "train",
    "fit",
    "peer",
    "breakdown",
)
# What each row group measures (the README's table names them the same way).
PEER_INFERENCE = {"float32": ("timm_eager", "timm_compile"),
                  "bfloat16": ("timm_bfloat16_eager", "timm_bfloat16_compile")}  # fmt: skip
# The speed issue's goals against timm: ours / timm's row at least this (inference at batch 32, training
# the step; bf16 goals apply only on CPUs with bf16 units, `target_classes`).
PEER_GOALS = {"timm_eager": 1.3, "timm_compile": 1.1, "timm_bfloat16_compile": 1.1,
              "timm_train_float32": 1.1, "timm_train_bfloat16": 1.1}  # fmt: skip
GOAL_BATCH_SIZE = 32  # the batch size of every inference goal (the targets' "b32")
# Row / the fastest Keras path (graph or XLA) at least this: `model.predict` within 10 %, the SavedModel
# that TF Serving runs as fast (5 % for noise).
EVALUATE_BATCHES = 4  # batches per `model.evaluate` call in the evaluate rows
FIT_BATCHES = 4  # batches per `model.fit` call (one epoch) in the fit rows
FASTEST_PATH_GOALS = {"keras_predict_numpy": 0.9, "saved_model": 0.95}


def _stats(values):
    values = sorted(values)
    return {"min": values[0], "median": statistics.median(values), "max": values[-1]}


def model_config(name):
    """MLPMixer arguments of a benchmark model: a preset at 224 px (3 channels, 1000 classes) or `fashion`."""
    from keras_mixer.presets import PRESETS, preset_config  # noqa: PLC0415

    if name == FASHION:
        from training.config import TrainConfig  # noqa: PLC0415

        model = TrainConfig().model  # the default run's model
        return dict(num_blocks=model.num_blocks, hidden_dim=model.hidden_dim, tokens_mlp_dim=model.tokens_mlp_dim,
                    channels_mlp_dim=model.channels_mlp_dim, patch_size=model.patch_size, image_size=model.image_size,
                    num_channels=1, num_classes=10)  # fmt: skip
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r} (expected {FASHION} or one of {sorted(PRESETS)})")
    return {**preset_config(name), "image_size": 224, "num_channels": 3, "num_classes": 1000}


def build_model(name, precision="float32"):
    """(a randomly initialised MLPMixer of benchmark model `name` in `precision`, its config)."""
    import keras  # noqa: PLC0415

    from keras_mixer import MLPMixer  # noqa: PLC0415
    from keras_mixer.export import with_precision  # noqa: PLC0415

    config = model_config(name)
    keras.utils.set_random_seed(0)
    return with_precision(MLPMixer(**config), precision), config


def with_random_head(model, seed=0):
    """`model` with its zero-initialised head (the paper's) set to small random values, so that its outputs
    tell two sides of an A/B apart (a zero head gives the same outputs whatever ran before it)."""
    rng = np.random.default_rng(seed)
    for variable in model.get_layer("head").weights:
        variable.assign(rng.normal(0.0, 0.05, variable.shape).astype(variable.dtype))
    return model


def _time_calls(function, repeats, calls=1):
    """Seconds per call of `function()` for each repeat (after one warm-up)."""
    function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        seconds.append((time.perf_counter() - start) / calls)
    return seconds


def gemm_plan(config, batch_size, training=False):
    """`gemm_operands` with what timing them needs: [(a shape, b shape, flags, count, FLOPs, inner)].

    `inner`: how many of that matmul one timed call runs back to back (about 0.2 GFLOP a call).

    >>> config = {"image_size": 32, "patch_size": 16, "num_channels": 3, "hidden_dim": 8,
    ...           "tokens_mlp_dim": 2, "channels_mlp_dim": 16, "num_blocks": 1, "num_classes": 5}
    >>> gemm_plan(config, 1)[0]  # the stem, (4 x 768) @ (768 x 8): 2 * 4 * 768 * 8 FLOPs
    ((4, 768), (768, 8), {}, 1, 49152.0, 4069)
    """
    plan = []
    for a_shape, b_shape, flags, count in gemm_operands(config, batch_size, training):
        flops = 2.0 * math.prod(a_shape) * (b_shape[0] if flags.get("transpose_b") else b_shape[1])
        plan.append((a_shape, b_shape, flags, count, flops, max(1, int(2e8 // flops))))
    return plan


def limit_from_seconds(plan, seconds):
    """min/median/max FLOP/s of a `gemm_plan` whose entry i took `seconds[i][r]` per timed call in repeat r.

    >>> plan = [((2, 2), (2, 2), {}, 3, 16.0, 4)]  # 3 uses of a 16-FLOP matmul, 4 per timed call
    >>> limit_from_seconds(plan, [[1.0, 2.0]])["max"]  # 48 FLOPs in 3 x 1.0 / 4 s at best
    64.0
    """
    total_flops = sum(count * flops for _, _, _, count, flops, _ in plan)
    repeats = len(seconds[0])
    total_seconds = [
        sum(count * per_call[r] / inner for (_, _, _, count, _, inner), per_call in zip(plan, seconds))
        for r in range(repeats)
    ]
    return _stats([total_flops / s for s in total_seconds])


def gemm_limit(config, batch_size, dtype, repeats, training=False):
    """FLOP/s of the model's own matmuls run back to back, min/median/max over `repeats`.

    The limit the rows are compared with is the max: the best this machine's GEMM does on these
    shapes. On the shared 2-core VMs the repeats of one GEMM spread by up to 1.6x (a slow repeat
    seems to run on one core), so a median limit would flatter every row.
    `training=True` adds the backward pass's two matmuls per forward one, as TensorFlow's gradient runs
    them (`gemm_operands`): transposed operands, and for the kernel's gradient the batch's rows as the
    inner dimension. The training rows are compared with that limit.
    """
    import tensorflow as tf  # noqa: PLC0415

    plan, seconds = gemm_plan(config, batch_size, training), []
    for a_shape, b_shape, flags, _, _, inner in plan:
        a = tf.cast(tf.random.normal(a_shape), dtype)
        b = tf.cast(tf.random.normal(b_shape), dtype)

        @tf.function
        def run(a=a, b=b, inner=inner, flags=flags):
            total = tf.zeros((), dtype)
            for _ in tf.range(inner):
                total += tf.matmul(a, b, **flags)[0, 0]
            return total

        seconds.append(_time_calls(lambda run=run: run().numpy(), repeats))
    return limit_from_seconds(plan, seconds)


def peer_gemm_limit(peer, config, batch_size, dtype, repeats, training=False):
    """`gemm_limit` of torch in the peer process: the same matmuls, transposes and counts, timed the same way.

    Where timm's framework multiplies faster than TensorFlow, a goal against timm can need more than 100 % of
    TensorFlow's limit; this figure, in the same run, says so. {"note": why} when the peer could not run it.
    """
    plan = gemm_plan(config, batch_size, training)
    answer = peer.gemm_seconds([(a, b, flags, inner) for a, b, flags, _, _, inner in plan], dtype, repeats)
    if "seconds" not in answer:
        return {"note": answer["note"]}
    return {**limit_from_seconds(plan, answer["seconds"]), "note": f"torch {peer.versions['torch']}"}


def _limit_key(dtype, batch_size, training=False):
    """The name of a GEMM limit in the report's `limits` (torch's: the same with `torch_` before it)."""
    return f"{dtype}{'_training' if training else ''}_b{batch_size}"


def _record_limit(result, peer, config, batch_size, dtype, repeats, training=False):
    """TensorFlow's `gemm_limit`, stored in `result["limits"]` and returned; with a peer, torch's beside it."""
    key = _limit_key(dtype, batch_size, training)
    result["limits"][key] = gemm_limit(config, batch_size, dtype, repeats, training)
    if peer is not None:
        result["limits"][f"torch_{key}"] = peer_gemm_limit(peer, config, batch_size, dtype, repeats, training)
    return result["limits"][key]


def _training_row(kind, rates, config, batch_size, limit):
    """`_row` of a training rate, its fraction of the training GEMM limit `limit` (FLOP/s) counting the forward
    and the backward pass (3x the forward FLOPs)."""
    row = _row(kind, rates, config, batch_size)
    row["fraction_of_limit"] = row["images_per_second"]["median"] * 3 * flops_per_image(config) / limit
    return row


def _labelled_images(config, batch_size, batches):
    """(images, labels): `batches` batches of `synthetic_images` as one NumPy array, and integer labels."""
    images = np.concatenate([synthetic_images(config, batch_size)] * batches)
    return images, np.arange(len(images)) % config["num_classes"]


def synthetic_images(config, batch_size, seed=0):
    """Uniform random pixels in [0, 255] of the model's input shape."""
    size = config["image_size"]
    shape = (batch_size, size, size, config["num_channels"])
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def _row(kind, images_per_second_runs, config, batch_size, limit=None, latencies=None, note=""):
    row = {"row": kind, "batch_size": batch_size, "images_per_second": _stats(images_per_second_runs), "note": note}
    if limit:
        row["fraction_of_limit"] = row["images_per_second"]["median"] * flops_per_image(config) / limit["max"]
    if latencies:
        row["latency_ms"] = {
            "p50": float(np.percentile(latencies, 50) * 1000),
            "p95": float(np.percentile(latencies, 95) * 1000),
        }
    return row


def keras_inference(model, config, batch_size, repeats, jit_compile=False):
    import tensorflow as tf  # noqa: PLC0415

    images = tf.constant(synthetic_images(config, batch_size))
    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    calls = 20 if batch_size == 1 else 1
    seconds = _time_calls(lambda: forward(images).numpy(), repeats, calls)
    latencies = _time_calls(lambda: forward(images).numpy(), 50) if batch_size == 1 else None
    return [batch_size / s for s in seconds], latencies


def predict_inference(model, config, batch_size, repeats, predict=None):
    """`model.predict` on a NumPy batch: the call users make (or `predict(model, images, ...)` in its place)."""
    images = synthetic_images(config, batch_size)
    predict = predict or type(model).predict
    calls = 20 if batch_size == 1 else 1
    seconds = _time_calls(lambda: predict(model, images, batch_size=batch_size, verbose=0), repeats, calls)
    return [batch_size / s for s in seconds]


def evaluate_inference(model, config, batch_size, repeats, evaluate=None):
    """`model.evaluate` on NumPy images and labels, `EVALUATE_BATCHES` batches of `batch_size` a call (as a test
    set is read), or `evaluate(model, images, labels, ...)` in its place; on a copy of `model` compiled with a
    cross-entropy loss."""
    import keras  # noqa: PLC0415

    images, labels = _labelled_images(config, batch_size, EVALUATE_BATCHES)
    compiled = type(model).from_config(model.get_config())
    compiled.set_weights(model.get_weights())
    compiled.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    evaluate = evaluate or type(compiled).evaluate
    calls = 20 if batch_size == 1 else 1
    seconds = _time_calls(lambda: evaluate(compiled, images, labels, batch_size=batch_size, verbose=0), repeats, calls)
    return [len(images) / s for s in seconds]


def fit_training(name, batch_size, repeats, precision="float32", fit=None):
    """Images/s per repeat of `model.fit` for one epoch of `FIT_BATCHES` batches of NumPy images and labels, the
    call users make (or `fit(model, images, labels, ...)` in its place): a fresh model of `name` in `precision`,
    compiled with AdamW and a cross-entropy loss."""
    import keras  # noqa: PLC0415

    model, config = build_model(name, precision)
    images, labels = _labelled_images(config, batch_size, FIT_BATCHES)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=loss)
    fit = fit or type(model).fit
    seconds = _time_calls(lambda: fit(model, images, labels, batch_size=batch_size, epochs=1, verbose=0), repeats)
    return [len(images) / s for s in seconds]


def saved_model_inference(model, config, batch_size, repeats, folder, precision="float32"):
    """The exported SavedModel's `serving_default` signature, as TF Serving runs it."""
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer.export import export_saved_model  # noqa: PLC0415

    path = os.path.join(folder, f"saved_model_{precision}", "1")
    if not os.path.exists(path):
        path = export_saved_model(model, os.path.dirname(path), version=1, precision=precision)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    images = tf.constant(synthetic_images(config, batch_size))
    calls = 20 if batch_size == 1 else 1
    seconds = _time_calls(lambda: serve(images=images)["probabilities"].numpy(), repeats, calls)  # noqa: PLW0108  (must call each time)
    return [batch_size / s for s in seconds]


def tflite_inference(model, config, mode, repeats, folder):
    from keras_mixer.export import export_tflite  # noqa: PLC0415
    from keras_mixer.lite import TFLiteClassifier  # noqa: PLC0415

    path = os.path.join(folder, f"{mode}.tflite")
    calibration = [synthetic_images(config, 4, seed=s) for s in range(4)] if mode == "int8" else None
    export_tflite(model, path, mode, calibration)
    classifier = TFLiteClassifier(path, num_threads=os.cpu_count())
    image = synthetic_images(config, 1)
    latencies = _time_calls(lambda: classifier.predict(image), max(repeats, 20))
    return [1.0 / s for s in latencies], latencies, os.path.getsize(path)


def compiled_train_steps(config, batch_size, precision="float32", dataset=None, jit_compile=False, fused_update=None):
    """`train(n)`: a `tf.function` running n steps of the default run's optimiser and loss on `config`'s model.

    Batches come from `dataset`, or are one synthetic batch of `batch_size` repeated. With `jit_compile`
    the step (not the loop around it) is compiled by XLA, as `fit` does with `--xla`. `fused_update` compiles
    the optimiser's update alone (`training.fused_update`); by default it does where the step is not
    compiled whole, as `training.train.compile_for_training` does.
    """
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer import MLPMixer  # noqa: PLC0415
    from keras_mixer.export import with_precision  # noqa: PLC0415
    from training.config import TrainConfig  # noqa: PLC0415
    from training.train import build_optimizer, exclude_from_weight_decay  # noqa: PLC0415

    model = with_precision(MLPMixer(**config), precision)
    run = TrainConfig()  # the default run's optimiser (AdamW, clip 1.0) and label smoothing
    optimizer = build_optimizer(run, steps_per_epoch=1000)
    exclude_from_weight_decay(optimizer, model)
    optimizer.build(model.trainable_variables)
    if fused_update is None:
        fused_update = not jit_compile
    if fused_update:
        from training.fused_update import compile_update_with_xla  # noqa: PLC0415

        compile_update_with_xla(optimizer)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=run.augment.label_smoothing)
    if dataset is None:
        images = synthetic_images(config, batch_size)
        labels = np.eye(config["num_classes"], dtype="float32")[np.arange(batch_size) % config["num_classes"]]
        dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    iterator = iter(dataset)

    @tf.function(jit_compile=jit_compile)
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def train(n):
        loss = tf.zeros(())
        for _ in tf.range(n):
            loss = step(*next(iterator))
        return loss

    train.model = model  # for the A/Bs that compare weights
    return train


def training_step_rate(config, batch_size, repeats, precision="float32", steps=4, jit_compile=False):
    """Images/s of compiled train steps of the default run's optimiser and loss, on one synthetic batch.

    (The real pipeline's rows come from `fashion_pipeline_training_rates`.)
    """
    import tensorflow as tf  # noqa: PLC0415

    train = compiled_train_steps(config, batch_size, precision, jit_compile=jit_compile)
    count = tf.constant(steps)
    seconds = _time_calls(lambda: train(count).numpy(), repeats)
    return [steps * batch_size / s for s in seconds]


def fashion_pipeline(batch_size, data_dir=None):
    """The real tfds training pipeline of the default recipe (offline Fashion-MNIST), and its steps per epoch."""
    from training.config import TrainConfig  # noqa: PLC0415
    from training.data import dataset_spec, load_split, make_pipeline, open_builder  # noqa: PLC0415

    config = TrainConfig()
    builder = open_builder(config.data.dataset, data_dir)
    spec = dataset_spec(builder, config.data.train_split, config.data.test_split, config.data.validation_fraction)
    pipeline = make_pipeline(
        load_split(builder, spec.splits["train"]), image_size=config.model.image_size, num_classes=spec.num_classes,
        batch_size=batch_size, training=True, augment=config.augment, shuffle_buffer=config.data.shuffle_buffer,
    )  # fmt: skip
    return pipeline, math.ceil(spec.train_examples / batch_size)


def pipeline_step_rates(run_steps, batch_size, repeats, steps, epoch_steps):
    """Images/s of a cached training pipeline's steps: (in its first epoch, once the cache holds the epoch).

    `run_steps(n)` runs n train steps and waits for them. The first epoch reads and decodes every
    example and fills the cache; every later epoch (9 of the default run's 10) reads the cache. So the
    first list times calls inside the first epoch, then the rest of that epoch runs untimed, and the
    second list times calls after it.

    Example:
    >>> done = []
    >>> first, steady = pipeline_step_rates(done.append, batch_size=2, repeats=2, steps=3, epoch_steps=20)
    >>> done, len(first), len(steady)
    ([3, 3, 3, 11, 3, 3, 3], 2, 2)
    """
    first_steps = max(1, min(steps, epoch_steps // (repeats + 1)))  # warm-up and repeats stay in epoch 1
    first = _time_calls(lambda: run_steps(first_steps), repeats)
    remaining = epoch_steps - (repeats + 1) * first_steps
    if remaining > 0:
        run_steps(remaining)
    steady = _time_calls(lambda: run_steps(steps), repeats)
    return [first_steps * batch_size / s for s in first], [steps * batch_size / s for s in steady]


def fashion_pipeline_training_rates(config, batch_size, repeats, steps, data_dir=None):
    """`pipeline_step_rates` of float32 graph-mode train steps on the default recipe's real pipeline."""
    import tensorflow as tf  # noqa: PLC0415

    pipeline, epoch_steps = fashion_pipeline(batch_size, data_dir)
    train = compiled_train_steps(config, batch_size, dataset=pipeline)
    return pipeline_step_rates(lambda n: train(tf.constant(n)).numpy(), batch_size, repeats, steps, epoch_steps)


def bfloat16_agreement(model_path, data_dir=None):
    """Top-1 agreement of the trained default model under mixed_bfloat16 vs float32, real test split."""
    from keras_mixer.export import with_precision  # noqa: PLC0415
    from training.files import load_keras_file  # noqa: PLC0415
    from training.runs import run_split  # noqa: PLC0415

    data, spec = run_split(os.path.dirname(model_path), "test", batch_size=500, data_dir=data_dir)
    images = np.concatenate([x.numpy() for x, _ in data])
    trained = load_keras_file(model_path)
    float32 = trained.predict(images, batch_size=500, verbose=0).argmax(-1)
    bfloat16 = with_precision(trained, "bfloat16").predict(images, batch_size=500, verbose=0).argmax(-1)
    return {
        "examples": len(images),
        "split": spec.splits["test"],
        "top1_agreement": float((float32 == bfloat16).mean()),
    }


def _peer_rows(peer, kinds, name, batch_size, repeats, config, limit, steps=2, flops_factor=1):
    """timm rows from the peer process (or a note per row when there is no peer or no timm model)."""
    rows = []
    has_bf16_units, why = target_classes(cpu_model_and_flags()[1])["bfloat16"]
    for kind in kinds:
        if peer is None:
            rows.append({"row": kind, "batch_size": batch_size, "note": "not run: add --peer (timm in its own venv)"})
            continue
        if "bfloat16" in kind and not has_bf16_units:
            # On the AVX2 EPYC timm's bf16 train step ran at 0.1 images/s, 25 of run 19's 31 minutes (torch
            # has no fast bf16 path there), and no bf16 goal applies to such a CPU.
            rows.append({"row": kind, "batch_size": batch_size, "note": f"not run: {why}, where no bf16 goal applies"})
            continue
        answer = peer.row(kind, name, batch_size, repeats, steps=steps)
        if "rates" not in answer:
            rows.append(answer)
            continue
        row = _row(kind, answer["rates"], config, batch_size, note=f"torch {peer.versions['torch']}")
        row["fraction_of_limit"] = row["images_per_second"]["median"] * flops_factor * flops_per_image(config) / limit
        rows.append(row)
    return rows


def run_model(name, batch_sizes, repeats, rows_wanted, data_dir, train_batch, peer=None):
    """Every row for one model; returns a dict (limits, rows, breakdown). timm's rows (from `peer`) are
    measured right after the Keras row they compare with, so both see the machine in the same state.
    The SavedModels and TFLite files it times (about 430 MB for S/16) are removed when it returns."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{name}_") as folder:
        return _measure_model(name, folder, batch_sizes, repeats, rows_wanted, data_dir, train_batch, peer)


def _measure_model(name, folder, batch_sizes, repeats, rows_wanted, data_dir, train_batch, peer):
    import keras  # noqa: PLC0415

    from benchmarks.frozen_weights_ab import measure_in_a_process  # noqa: PLC0415
    from benchmarks.op_breakdown import op_breakdown  # noqa: PLC0415
    from keras_mixer.export import with_precision  # noqa: PLC0415
    from keras_mixer.fused_norm import keras_layer_norm  # noqa: PLC0415

    model, config = build_model(name)
    bf16_model = with_precision(model, "bfloat16") if "bfloat16" in rows_wanted else None
    result = {"model": name, "config": config, "flops_per_image": flops_per_image(config), "limits": {}, "rows": []}
    rows = result["rows"]
    with_peer = "peer" in rows_wanted and name != FASHION
    limit_peer = peer if with_peer else None  # torch's GEMM limits beside TensorFlow's
    for batch_size in batch_sizes:
        limit32 = _record_limit(result, limit_peer, config, batch_size, "float32", repeats)
        limit16 = _record_limit(result, limit_peer, config, batch_size, "bfloat16", repeats)
        _progress(f"{name} b{batch_size}: GEMM limit {limit32['max'] / 1e9:.0f} GFLOP/s f32")
        if "keras" in rows_wanted:
            rates, latencies = keras_inference(model, config, batch_size, repeats)
            rows.append(_row("keras", rates, config, batch_size, limit32, latencies))
            with keras_layer_norm():  # the before: Keras' own layer norm op (keras_mixer/fused_norm.py)
                rates, latencies = keras_inference(model, config, batch_size, repeats)
            rows.append(_row("keras_unfused_norm", rates, config, batch_size, limit32, latencies))
        if with_peer:
            rows += _peer_rows(peer, PEER_INFERENCE["float32"], name, batch_size, repeats, config, limit32["max"])
        if "predict" in rows_wanted:
            rates = predict_inference(model, config, batch_size, repeats)
            rows.append(_row("keras_predict_numpy", rates, config, batch_size, limit32))
            # Keras' own array path, which MLPMixer.predict replaces (keras_mixer/array_input.py): the before.
            rates = predict_inference(model, config, batch_size, repeats, predict=keras.Model.predict)
            rows.append(_row("keras_predict_numpy_unpatched", rates, config, batch_size, limit32))
            rates = evaluate_inference(model, config, batch_size, repeats)  # Keras' adapter, autotuning off
            rows.append(_row("keras_evaluate_numpy", rates, config, batch_size, limit32))
            rates = evaluate_inference(model, config, batch_size, repeats, evaluate=keras.Model.evaluate)
            rows.append(_row("keras_evaluate_numpy_unpatched", rates, config, batch_size, limit32))
        if "xla" in rows_wanted:
            rates, latencies = keras_inference(model, config, batch_size, repeats, jit_compile=True)
            rows.append(_row("keras_xla", rates, config, batch_size, limit32, latencies))
        if "saved_model" in rows_wanted:
            rates = saved_model_inference(model, config, batch_size, repeats, folder)
            rows.append(_row("saved_model", rates, config, batch_size, limit32))
        if bf16_model is not None:
            rates, latencies = keras_inference(bf16_model, config, batch_size, repeats)
            rows.append(_row("keras_bfloat16", rates, config, batch_size, limit16, latencies))
            with keras_layer_norm():
                rates, latencies = keras_inference(bf16_model, config, batch_size, repeats)
            rows.append(_row("keras_bfloat16_unfused_norm", rates, config, batch_size, limit16, latencies))
            if with_peer:
                kinds = PEER_INFERENCE["bfloat16"]
                rows += _peer_rows(peer, kinds, name, batch_size, repeats, config, limit16["max"])
            if "saved_model" in rows_wanted:
                rates = saved_model_inference(model, config, batch_size, repeats, folder, precision="bfloat16")
                rows.append(_row("saved_model_bfloat16", rates, config, batch_size, limit16))
        if "frozen" in rows_wanted:
            # oneDNN's weight cache, in a process of its own: TensorFlow reads the flag once per process,
            # and this one trains later (benchmarks/frozen_weights_ab.py).
            frozen = measure_in_a_process(name, batch_size, repeats, frozen=True)["rates"]
            for kind, rates in frozen.items():
                limit = limit16 if "bfloat16" in kind else limit32
                rows.append(_row(f"{kind}_frozen_weights", rates, config, batch_size, limit))
        _progress(f"{name} b{batch_size}: inference rows done")
    if "breakdown" in rows_wanted:
        batch = max(batch_sizes)
        images = synthetic_images(config, batch)
        result["breakdown"] = {"batch_size": batch, "float32": op_breakdown(model, images)}
        if bf16_model is not None:
            result["breakdown"]["bfloat16"] = op_breakdown(bf16_model, images)
        _progress(f"{name}: op breakdown done")
    if "tflite" in rows_wanted:
        limit = result["limits"].get("float32_b1") or gemm_limit(config, 1, "float32", repeats)
        for mode in TFLITE_MODES:
            rates, latencies, size = tflite_inference(model, config, mode, repeats, folder)
            rows.append(_row(f"tflite_{mode}", rates, config, 1, limit, latencies, note=f"{size / 2**20:.1f} MiB"))
        _progress(f"{name}: TFLite rows done")
    batch = train_batch if name != FASHION else 128  # the train and fit rows' batch size
    if "train" in rows_wanted:
        steps = 16 if name == FASHION else 2
        for precision in ("float32", "bfloat16"):
            limit = _record_limit(result, limit_peer, config, batch, precision, repeats, training=True)["max"]
            for xla in (False, True):
                rates = training_step_rate(config, batch, repeats, precision, steps=steps, jit_compile=xla)
                rows.append(_training_row(f"train_{precision}{'_xla' if xla else ''}", rates, config, batch, limit))
            if with_peer:
                rows += _peer_rows(peer, (f"timm_train_{precision}",), name, batch, repeats, config, limit, steps, 3)
            if name == FASHION and precision == "float32":
                rates = fashion_pipeline_training_rates(config, batch, repeats, steps, data_dir)
                for kind, kind_rates in zip(("train_float32_tfds_first_epoch", "train_float32_tfds_pipeline"), rates):
                    rows.append(_training_row(kind, kind_rates, config, batch, limit))
        _progress(f"{name}: training rows done")
    if "fit" in rows_wanted:
        import keras  # noqa: PLC0415

        for precision in ("float32", "bfloat16"):
            limit = result["limits"].get(_limit_key(precision, batch, training=True))
            limit = (limit or _record_limit(result, None, config, batch, precision, repeats, training=True))["max"]
            # Our adapter (autotuning off), then Keras' own array path, `keras.Model.fit`.
            for suffix, fit in (("", None), ("_unpatched", keras.Model.fit)):
                rates = fit_training(name, batch, repeats, precision, fit)
                rows.append(_training_row(f"fit_numpy_{precision}{suffix}", rates, config, batch, limit))
        _progress(f"{name}: fit rows done")
    return result


def _progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _median(rows, kind, batch_size):
    for row in rows:
        if row["row"] == kind and row["batch_size"] == batch_size and "images_per_second" in row:
            return row["images_per_second"]["median"]
    return None


def _ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


def target_classes(cpu_flags):
    """Which CPU-dependent goals apply on a CPU with these flags, and why (the issue's CPU classes)."""
    bf16 = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in cpu_flags]
    int8 = [flag for flag in ("amx_int8", "avx512_vnni", "avx_vnni") if flag in cpu_flags]
    return {
        "any": (True, "every CPU"),
        "bfloat16": (bool(bf16), f"has {', '.join(bf16)}" if bf16 else "no AMX-BF16 or AVX512-BF16"),
        "int8": (bool(int8), f"has {', '.join(int8)}" if int8 else "no VNNI or AMX-INT8"),
    }


def _training_ceiling(name, precision, limits, rows):
    """Stated figures that bound a training goal against timm: TensorFlow's GEMM limit over torch's on the
    train step's matmuls, and our step over timm's if ours ran at TensorFlow's limit (1 / timm's fraction of
    it). A goal above that ceiling cannot be met with TensorFlow's matmuls on this CPU."""
    figures = []
    for key, ours in limits.items():
        if not key.startswith(f"{precision}_training_b"):
            continue
        theirs = limits.get(f"torch_{key}", {})
        figures.append(
            (
                f"{name} {precision} GEMM limit, train step's matmuls b{key.rsplit('_b', 1)[1]}: "
                "TensorFlow / torch (stated as measured)",
                _ratio(ours.get("max"), theirs.get("max")),
            )
        )
    timm = next((r for r in rows if r["row"] == f"timm_train_{precision}" and "fraction_of_limit" in r), None)
    if timm:
        figures.append(
            (
                f"{name} {precision} training / timm step, if ours ran at TensorFlow's GEMM limit "
                "(a ceiling, stated as measured)",
                _ratio(1.0, timm["fraction_of_limit"]),
            )
        )
    return figures


def check_targets(results, agreement, cpu_flags=()):
    """The issues' targets, each with the measured figure, whether it applies on this CPU and is met.

    `met` is None when the figure was not measured or the goal does not apply to this CPU class.
    """
    from keras_mixer import fused_norm  # noqa: PLC0415

    classes = target_classes(cpu_flags)
    targets = []

    def add(what, value, goal, cpu_class="any"):
        applies, because = classes[cpu_class]
        met = None if value is None or goal is None or not applies else value >= goal
        targets.append(
            {
                "target": what,
                "measured": value,
                "goal": goal,
                "met": met,
                "applies": applies,
                "cpu_class": cpu_class,
                "applies_because": because,
            }
        )

    threads = fused_norm.tensorflow_threads()
    # Above the thread limit the package runs Keras' op on both norm rows: say so rather than imply a fusion.
    fused = "fused" if threads <= fused_norm.MAX_TENSORFLOW_THREADS else f"not fused ({threads} threads)"
    for result in results:
        name, rows = result["model"], result["rows"]

        def median(kind, batch_size=GOAL_BATCH_SIZE, rows=rows):
            return _median(rows, kind, batch_size)

        def training(kind, rows=rows, with_xla=True):
            """Median images/s of training row `kind`; for ours, the faster of graph and XLA (`--xla` picks)."""
            kinds = (kind, f"{kind}_xla") if with_xla else (kind,)
            rates = [r["images_per_second"]["median"] for r in rows if r["row"] in kinds and "images_per_second" in r]
            return max(rates, default=None)

        if name != FASHION:
            keras32 = next((r for r in rows if r["row"] == "keras" and r["batch_size"] == GOAL_BATCH_SIZE), None)
            add(f"{name} float32 inference b32 (graph) / GEMM limit", keras32 and keras32["fraction_of_limit"], 0.9)
            for peer in PEER_INFERENCE["float32"]:
                add(f"{name} float32 inference b32 / {peer}", _ratio(median("keras"), median(peer)), PEER_GOALS[peer])
            fastest = max(filter(None, (median("keras"), median("keras_xla"))), default=None)
            add(
                f"{name} model.predict(NumPy) b32 / fastest Keras path",
                _ratio(median("keras_predict_numpy"), fastest),
                FASTEST_PATH_GOALS["keras_predict_numpy"],
            )
            add(
                f"{name} SavedModel b32 / fastest Keras path",
                _ratio(median("saved_model"), fastest),
                FASTEST_PATH_GOALS["saved_model"],
            )
            for prefix in ("keras", "keras_bfloat16"):
                add(
                    f"{name} {prefix} b32, {fused} / Keras' unfused layer norm (stated as measured)",
                    _ratio(median(prefix), median(f"{prefix}_unfused_norm")),
                    None,
                )
            bf16 = next((r for r in rows if r["row"] == "keras_bfloat16" and r["batch_size"] == GOAL_BATCH_SIZE), None)
            add(
                f"{name} bfloat16 inference b32 / bf16 GEMM limit", bf16 and bf16["fraction_of_limit"], 0.75, "bfloat16"
            )
            add(
                f"{name} bfloat16 inference b32 / timm bf16 compile",
                _ratio(median("keras_bfloat16"), median("timm_bfloat16_compile")),
                PEER_GOALS["timm_bfloat16_compile"],
                "bfloat16",
            )
            for kind in ("keras_bfloat16", "saved_model_bfloat16"):
                add(
                    f"{name} bfloat16 {kind.split('_bfloat16')[0]} b32, oneDNN weight cache / timm bf16 compile",
                    _ratio(median(f"{kind}_frozen_weights"), median("timm_bfloat16_compile")),
                    PEER_GOALS["timm_bfloat16_compile"],
                    "bfloat16",
                )
            add(
                f"{name} bfloat16 SavedModel b32 / float32 SavedModel",
                _ratio(median("saved_model_bfloat16"), median("saved_model")),
                None,
                "bfloat16",
            )
            add(
                f"{name} float32 training (faster of graph, XLA) / timm float32 step",
                _ratio(training("train_float32"), training("timm_train_float32")),
                PEER_GOALS["timm_train_float32"],
            )
            add(
                f"{name} bfloat16 training (faster of graph, XLA) / timm bf16 step",
                _ratio(training("train_bfloat16"), training("timm_train_bfloat16")),
                PEER_GOALS["timm_train_bfloat16"],
                "bfloat16",
            )
            for precision, cpu_class in (("float32", "any"), ("bfloat16", "bfloat16")):
                for target, value in _training_ceiling(name, precision, result.get("limits", {}), rows):
                    add(target, value, None, cpu_class)
        add(
            f"{name} bfloat16 / float32 training (each the faster of graph, XLA)",
            _ratio(training("train_bfloat16"), training("train_float32")),
            2.0,
            "bfloat16",
        )
        tflite32 = median("tflite_float32", 1)
        for mode in ("dynamic_int8", "int8"):
            add(
                f"{name} TFLite {mode} / float32 b1 (stated as measured)",
                _ratio(median(f"tflite_{mode}", 1), tflite32),
                None,
                "int8",
            )
        if name == "mixer_s16":
            train32 = next((r for r in rows if r["row"] == "train_float32"), None)
            add("mixer_s16 float32 training / training GEMM limit", train32 and train32["fraction_of_limit"], 0.85)
        for precision, cpu_class in (("float32", "any"), ("bfloat16", "bfloat16")):
            add(
                f"{name} {precision} fit(NumPy) / fit through Keras' own array path (stated as measured)",
                _ratio(
                    training(f"fit_numpy_{precision}", with_xla=False),
                    training(f"fit_numpy_{precision}_unpatched", with_xla=False),
                ),
                None,
                cpu_class,
            )
        pipeline = training("train_float32_tfds_pipeline")
        if pipeline:
            synthetic = training("train_float32", with_xla=False)  # all three graph mode
            add(f"{name} training: real tfds pipeline (cached epochs) / synthetic", _ratio(pipeline, synthetic), 0.9)
            add(
                f"{name} training: real tfds pipeline, first epoch / synthetic (stated as measured)",
                _ratio(training("train_float32_tfds_first_epoch"), synthetic),
                None,
            )
    if agreement:
        add("bfloat16 vs float32 top-1 agreement, Fashion-MNIST test", agreement["top1_agreement"], 0.995, "bfloat16")
    return [t for t in targets if t["measured"] is not None or t["goal"] is not None]


COLUMNS = "{:10s} {:32s} {:>5} {:>15} {:>17} {:>9} {:>13}"


def print_table(report):
    print("\n" + COLUMNS.format("model", "row", "batch", "img/s (median)", "min-max", "of limit", "p50/p95 ms"))
    for result in report["results"]:
        for row in result["rows"]:
            if "images_per_second" not in row:
                print(f"{result['model']:10s} {row['row']:32s} {row['batch_size']:5d}  {row['note']}")
                continue
            ips = row["images_per_second"]
            fraction = f"{100 * row['fraction_of_limit']:.0f} %" if "fraction_of_limit" in row else ""
            latency = f"{row['latency_ms']['p50']:.1f}/{row['latency_ms']['p95']:.1f}" if "latency_ms" in row else ""
            spread = f"{ips['min']:.1f}-{ips['max']:.1f}"
            print(
                COLUMNS.format(
                    result["model"], row["row"], row["batch_size"], f"{ips['median']:.1f}", spread, fraction, latency
                )
            )
    for result in report["results"]:
        for precision, rows in result.get("breakdown", {}).items():
            if precision != "batch_size":
                print_breakdown(
                    rows[:8],
                    f"{result['model']}: time per op type, batch {result['breakdown']['batch_size']}, "
                    f"{precision} (benchmarks/op_breakdown.py)",
                )
    for result in report["results"]:
        limits = result.get("limits", {})
        if limits:
            print(f"\n{result['model']}: GEMM limits, GFLOP/s (max of the repeats)")
        for key, limit in limits.items():
            if not key.startswith("torch_"):
                torch = limits.get(f"torch_{key}", {})
                theirs = f"   torch {torch['max'] / 1e9:7.0f}" if "max" in torch else ""
                print(f"  {key:28s} TensorFlow {limit['max'] / 1e9:7.0f}{theirs}")
    machine = report["machine"]
    print(f"\ntargets on {machine['cpu']} ({', '.join(machine.get('cpu_flags', [])) or 'no bf16/int8 flags'}):")
    for target in report["targets"]:
        value = "not measured" if target["measured"] is None else f"{target['measured']:.3f}"
        if not target["applies"]:
            status = f"does not apply ({target['applies_because']})"
        else:
            status = {True: "met", False: "MISSED", None: "-"}[target["met"]]
        goal = "stated" if target["goal"] is None else f"goal {target['goal']}"
        print(f"  {target['target']:64s} {value:>12s} ({goal})  {status}")


def _plot_limits(axis, limits):
    """TensorFlow's GEMM limit beside torch's on the same matmuls, for each limit the peer measured too."""
    keys = [key for key in limits if "max" in limits.get(f"torch_{key}", {})]
    positions = np.arange(len(keys))
    for offset, label, prefix, color in ((-0.2, "TensorFlow", "", "tab:blue"), (0.2, "torch", "torch_", "tab:orange")):
        values = [limits[f"{prefix}{key}"]["max"] / 1e9 for key in keys]
        axis.barh(positions + offset, values, height=0.4, label=label, color=color)
    axis.set_yticks(positions, keys)
    axis.invert_yaxis()
    axis.set_xlabel("GEMM limit, GFLOP/s (max of the repeats), same matmuls")
    axis.set_title("the frameworks' matmuls" if keys else "no torch limits for this model")
    if keys:
        axis.legend()


def plot(report, path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    results = report["results"]
    with_torch = any(key.startswith("torch_") for result in results for key in result.get("limits", {}))
    panels = 2 if with_torch else 1
    figure, axes = plt.subplots(panels, len(results), figsize=(6 * len(results), 4.5 * panels), squeeze=False)
    for axis, result in zip(axes[-1] if with_torch else (), results):
        _plot_limits(axis, result.get("limits", {}))
    for axis, result in zip(axes[0], results):
        rows = [r for r in result["rows"] if "images_per_second" in r]
        labels = [f"{r['row']} b{r['batch_size']}" for r in rows]
        values = [r["images_per_second"]["median"] for r in rows]
        errors = [
            [v - r["images_per_second"]["min"] for v, r in zip(values, rows)],
            [r["images_per_second"]["max"] - v for v, r in zip(values, rows)],
        ]
        axis.barh(labels, values, xerr=errors, color="tab:blue")
        axis.set_xscale("log")
        axis.set_xlabel("images / s (median, min-max)")
        axis.set_title(f"{result['model']} ({result['flops_per_image'] / 1e9:.2f} GFLOP/image)")
        axis.invert_yaxis()
    machine = report["machine"]
    tensorflow = f", TensorFlow {machine['tensorflow']}" if machine.get("tensorflow") else ""
    figure.suptitle(f"{machine['cpu']} ({machine['cores']} cores){tensorflow}", fontsize=9)
    figure.tight_layout()
    save_figure_atomically(figure, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--presets",
        default=f"{FASHION},mixer_s16",
        help=f"comma-separated presets or {FASHION!r} (B/16: add mixer_b16)",
    )
    parser.add_argument("--batch-sizes", default="1,32", help="inference batch sizes")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch for the 224-px presets")
    parser.add_argument("--rows", default=",".join(ALL_ROWS), help=f"comma-separated subset of {ALL_ROWS}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="runs/default/best.keras", help="trained default model (bfloat16 agreement)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--peer",
        action="store_true",
        help="measure timm's rows too, in a venv of their own "
        f"(created on first use at {DEFAULT_PEER_VENV}: {' '.join(PEER_REQUIREMENTS)})",
    )
    parser.add_argument("--peer-venv", default=None, help="an existing venv with torch and timm (implies --peer)")
    parser.add_argument("--json", default="benchmarks/results.json")
    parser.add_argument("--plot", default="benchmarks/results.png")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    quiet_logs(args.verbose)

    from keras_mixer.presets import PRESETS  # noqa: PLC0415

    names = [n for n in args.presets.split(",") if n]
    rows_wanted = [r for r in args.rows.split(",") if r]
    problems = [
        f"unknown model {n!r} (expected {FASHION} or one of {sorted(PRESETS)})"
        for n in names
        if n != FASHION and n not in PRESETS
    ]
    problems += [f"unknown row {r!r} (expected {ALL_ROWS})" for r in rows_wanted if r not in ALL_ROWS]
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    except ValueError:
        problems.append(f"--batch-sizes must be integers, got {args.batch_sizes!r}")
        batch_sizes = []
    for flag, values in (
        ("--batch-sizes", batch_sizes),
        ("--train-batch", [args.train_batch]),
        ("--repeats", [args.repeats]),
    ):
        problems += [f"{flag} must be >= 1. Received: {value}" for value in values if value < 1]
    if args.peer_venv and not os.path.exists(venv_python(args.peer_venv)):
        problems.append(f"--peer-venv {args.peer_venv!r} has no bin/python; expected a venv with torch and timm")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT

    from training.machine import machine_description  # noqa: PLC0415

    started = time.time()
    peer = None
    if "peer" in rows_wanted and (args.peer or args.peer_venv):
        try:
            python = ensure_peer_venv(args.peer_venv or DEFAULT_PEER_VENV, create=not args.peer_venv, log=_progress)
            peer = PeerProcess(python)
        except PeerError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        _progress(f"peer: torch {peer.versions['torch']}, timm {peer.versions['timm']} ({python})")
    try:
        results = [
            run_model(n, batch_sizes, args.repeats, rows_wanted, args.data_dir, args.train_batch, peer) for n in names
        ]
    finally:
        if peer is not None:
            peer.close()
    agreement = None
    if FASHION in names and "bfloat16" in rows_wanted and os.path.exists(args.model):
        agreement = bfloat16_agreement(args.model, args.data_dir)
    report = {
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_description(),
        "repeats": args.repeats,
        "results": results,
        "bfloat16_agreement": agreement,
        "peer": peer.versions if peer else None,
        "wall_seconds": None,
    }
    report["targets"] = check_targets(results, agreement, report["machine"]["cpu_flags"])
    report["wall_seconds"] = time.time() - started
    print_table(report)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    write_json_atomically(args.json, report)
    plot(report, args.plot)
    print(f"\nwrote {args.json} and {args.plot} ({report['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
