"""Mixer speed on this machine, side by side with the machine's own matmul limit (and timm when installed).

    python -m benchmarks.run                                   # the default suite
    python -m benchmarks.run --presets mixer_b16 --batch-sizes 1,32 --json out.json --plot out.png

For each model (paper presets at 224 px, and `fashion` = the default Fashion-MNIST Mixer) it
measures the GEMM limit (float32 and bfloat16 matmuls of the model's own shapes), inference
(Keras graph, Keras + XLA, the exported SavedModel, TFLite float32 / float16 / dynamic int8 /
int8 at batch 1, the mixed_bfloat16 policy) and training steps (synthetic batches, float32 and
bfloat16; the real tfds pipeline for `fashion`), and timm's Mixers on PyTorch when importable.
Every figure is min/median/max over `--repeats`; batch-1 rows add latency percentiles. Each
throughput row shows its fraction of the float32 (or bfloat16) GEMM limit. Prints a table,
writes JSON (with the machine) and a PNG bar chart.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.flops import flops_per_image, gemm_shapes  # noqa: E402
from training import EXIT_BAD_INPUT  # noqa: E402

FASHION = "fashion"  # the default recipe's model (training/config.py)
ALL_ROWS = ("keras", "xla", "saved_model", "tflite", "bfloat16", "train", "peer")


def _stats(values):
    values = sorted(values)
    return {"min": values[0], "median": statistics.median(values), "max": values[-1]}


def model_config(name):
    """MLPMixer arguments of a benchmark model: a preset at 224 px (3 channels, 1000 classes) or `fashion`."""
    from keras_mixer.presets import preset_config  # noqa: PLC0415

    if name == FASHION:
        from training.config import recipe_config  # noqa: PLC0415

        model = recipe_config("fashion_mnist").model
        return dict(num_blocks=model.num_blocks, hidden_dim=model.hidden_dim, tokens_mlp_dim=model.tokens_mlp_dim,
                    channels_mlp_dim=model.channels_mlp_dim, patch_size=model.patch_size, image_size=model.image_size,
                    num_channels=1, num_classes=10)  # fmt: skip
    return {**preset_config(name), "image_size": 224, "num_channels": 3, "num_classes": 1000}


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


def gemm_limit(config, batch_size, dtype, repeats):
    """FLOP/s of the model's own matmuls run back to back (the best this machine's GEMM does on them)."""
    import tensorflow as tf  # noqa: PLC0415

    total_flops, total_seconds = 0.0, [0.0] * repeats
    for _, m, k, n, count in gemm_shapes(config, batch_size):
        a = tf.random.normal((m, k), dtype=tf.float32)
        b = tf.random.normal((k, n), dtype=tf.float32)
        a, b = tf.cast(a, dtype), tf.cast(b, dtype)
        inner = max(1, int(2e8 // (2 * m * k * n)))  # ~0.2 GFLOP per timed call

        @tf.function
        def run(a=a, b=b, inner=inner):
            total = tf.zeros((), dtype)
            for _ in tf.range(inner):
                total += tf.matmul(a, b)[0, 0]
            return total

        per_call = _time_calls(lambda run=run: run().numpy(), repeats)
        for i, seconds in enumerate(per_call):
            total_seconds[i] += count * seconds / inner
        total_flops += count * 2.0 * m * k * n
    return _stats([total_flops / s for s in total_seconds])


def _images(config, batch_size, seed=0):
    size = config["image_size"]
    shape = (batch_size, size, size, config["num_channels"])
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def _row(kind, images_per_second_runs, config, batch_size, limit=None, latencies=None, note=""):
    row = {"row": kind, "batch_size": batch_size, "images_per_second": _stats(images_per_second_runs), "note": note}
    if limit:
        row["fraction_of_limit"] = row["images_per_second"]["median"] * flops_per_image(config) / limit["median"]
    if latencies:
        row["latency_ms"] = {
            "p50": float(np.percentile(latencies, 50) * 1000),
            "p95": float(np.percentile(latencies, 95) * 1000),
        }
    return row


def keras_inference(model, config, batch_size, repeats, jit_compile=False):
    import tensorflow as tf  # noqa: PLC0415

    images = tf.constant(_images(config, batch_size))
    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    calls = 20 if batch_size == 1 else 1
    seconds = _time_calls(lambda: forward(images).numpy(), repeats, calls)
    latencies = _time_calls(lambda: forward(images).numpy(), 50) if batch_size == 1 else None
    return [batch_size / s for s in seconds], latencies


def saved_model_inference(model, config, batch_size, repeats, folder):
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer.export import export_saved_model  # noqa: PLC0415

    path = os.path.join(folder, "saved_model", "1")
    if not os.path.exists(path):
        path = export_saved_model(model, os.path.dirname(path), version=1)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    images = tf.constant(_images(config, batch_size))
    calls = 20 if batch_size == 1 else 1
    seconds = _time_calls(lambda: serve(images=images)["probabilities"].numpy(), repeats, calls)  # noqa: PLW0108  (must call each time)
    return [batch_size / s for s in seconds]


def tflite_inference(model, config, mode, repeats, folder):
    from keras_mixer.export import export_tflite  # noqa: PLC0415
    from keras_mixer.lite import TFLiteClassifier  # noqa: PLC0415

    path = os.path.join(folder, f"{mode}.tflite")
    calibration = [_images(config, 4, seed=s) for s in range(4)] if mode == "int8" else None
    export_tflite(model, path, mode, calibration)
    classifier = TFLiteClassifier(path, num_threads=os.cpu_count())
    image = _images(config, 1)
    latencies = _time_calls(lambda: classifier.predict(image), max(repeats, 20))
    return [1.0 / s for s in latencies], latencies, os.path.getsize(path)


def training_step_rate(config, batch_size, repeats, precision="float32", dataset=None, steps=4):
    """Images/s of compiled AdamW train steps (clip 1.0, label smoothing) on synthetic or real batches."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer import MLPMixer  # noqa: PLC0415

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32" if precision == "float32" else f"mixed_{precision}")
    try:
        model = MLPMixer(**config)
        optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.05, global_clipnorm=1.0)
        optimizer.build(model.trainable_variables)
        loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
        if dataset is None:
            images = _images(config, batch_size)
            labels = np.eye(config["num_classes"], dtype="float32")[np.arange(batch_size) % config["num_classes"]]
            dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
        iterator = iter(dataset)

        @tf.function
        def train(n):
            for _ in tf.range(n):
                images, labels = next(iterator)
                with tf.GradientTape() as tape:
                    loss = loss_fn(labels, model(images, training=True))
                gradients = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

        count = tf.constant(steps)
        seconds = _time_calls(lambda: train(count).numpy(), repeats)
        return [steps * batch_size / s for s in seconds]
    finally:
        keras.mixed_precision.set_global_policy(policy)


def fashion_pipeline(batch_size, data_dir=None):
    """The real tfds training pipeline of the default recipe (offline Fashion-MNIST)."""
    from training.config import recipe_config  # noqa: PLC0415
    from training.data import dataset_spec, load_split, make_pipeline, open_builder  # noqa: PLC0415

    config = recipe_config("fashion_mnist")
    builder = open_builder(config.data.dataset, data_dir)
    spec = dataset_spec(builder, config.data.train_split, config.data.test_split, config.data.validation_fraction)
    return make_pipeline(
        load_split(builder, spec.splits["train"]), image_size=config.model.image_size, num_classes=spec.num_classes,
        batch_size=batch_size, training=True, augment=config.augment, shuffle_buffer=config.data.shuffle_buffer,
    ).repeat()  # fmt: skip


def bfloat16_agreement(model_path, data_dir=None):
    """Top-1 agreement of the trained default model under mixed_bfloat16 vs float32, real test split."""
    import keras  # noqa: PLC0415

    import keras_mixer  # noqa: F401, PLC0415
    from training.runs import run_split  # noqa: PLC0415

    data, spec = run_split(os.path.dirname(model_path), "test", batch_size=500, data_dir=data_dir)
    images = np.concatenate([x.numpy() for x, _ in data])
    trained = keras.saving.load_model(model_path)
    float32 = trained.predict(images, batch_size=500, verbose=0).argmax(-1)
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = keras_mixer.MLPMixer.from_config(trained.get_config())
        model.set_weights(trained.get_weights())
        bfloat16 = model.predict(images, batch_size=500, verbose=0).argmax(-1)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return {
        "examples": len(images),
        "split": spec.splits["test"],
        "top1_agreement": float((float32 == bfloat16).mean()),
    }


def timm_rows(name, batch_size, repeats):
    """timm's Mixer on PyTorch CPU (eager and torch.compile), or a note saying it is not installed."""
    try:
        import timm  # noqa: PLC0415
        import torch  # noqa: PLC0415
    except ImportError:
        return [{"row": "timm", "batch_size": batch_size, "note": "timm/torch not installed: pip install torch timm"}]
    timm_name = {"mixer_s16": "mixer_s16_224", "mixer_b16": "mixer_b16_224", "mixer_l16": "mixer_l16_224"}.get(name)
    if timm_name is None:
        return [{"row": "timm", "batch_size": batch_size, "note": f"timm has no {name}"}]
    torch.set_num_threads(os.cpu_count())
    model = timm.create_model(timm_name, pretrained=False).eval()
    images = torch.rand(batch_size, 3, 224, 224) * 255
    rows = []
    for kind, module in (("timm_eager", model), ("timm_compile", torch.compile(model))):
        with torch.no_grad():
            seconds = _time_calls(lambda module=module: module(images), repeats)
        rows.append(
            {
                "row": kind,
                "batch_size": batch_size,
                "images_per_second": _stats([batch_size / s for s in seconds]),
                "note": "",
            }
        )
    return rows


def run_model(name, batch_sizes, repeats, rows_wanted, data_dir, train_batch):
    """Every row for one model; returns a dict (limits, rows, targets' inputs)."""
    import keras  # noqa: PLC0415

    from keras_mixer import MLPMixer  # noqa: PLC0415

    config = model_config(name)
    keras.utils.set_random_seed(0)
    model = MLPMixer(**config)
    result = {"model": name, "config": config, "flops_per_image": flops_per_image(config), "limits": {}, "rows": []}
    folder = tempfile.mkdtemp(prefix=f"bench_{name}_")
    for batch_size in batch_sizes:
        limit32 = gemm_limit(config, batch_size, "float32", repeats)
        limit16 = gemm_limit(config, batch_size, "bfloat16", repeats)
        result["limits"][f"float32_b{batch_size}"] = limit32
        result["limits"][f"bfloat16_b{batch_size}"] = limit16
        _progress(f"{name} b{batch_size}: GEMM limit {limit32['median'] / 1e9:.0f} GFLOP/s f32")
        if "keras" in rows_wanted:
            rates, latencies = keras_inference(model, config, batch_size, repeats)
            result["rows"].append(_row("keras", rates, config, batch_size, limit32, latencies))
        if "xla" in rows_wanted:
            rates, latencies = keras_inference(model, config, batch_size, repeats, jit_compile=True)
            result["rows"].append(_row("keras_xla", rates, config, batch_size, limit32, latencies))
        if "saved_model" in rows_wanted:
            rates = saved_model_inference(model, config, batch_size, repeats, folder)
            result["rows"].append(_row("saved_model", rates, config, batch_size, limit32))
        if "bfloat16" in rows_wanted:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
            try:
                bf16_model = MLPMixer(**config)
                bf16_model.set_weights(model.get_weights())
            finally:
                keras.mixed_precision.set_global_policy("float32")
            rates, latencies = keras_inference(bf16_model, config, batch_size, repeats)
            result["rows"].append(_row("keras_bfloat16", rates, config, batch_size, limit16, latencies))
        if "peer" in rows_wanted:
            for row in timm_rows(name, batch_size, repeats):
                if "images_per_second" in row:
                    row["fraction_of_limit"] = (
                        row["images_per_second"]["median"] * result["flops_per_image"] / limit32["median"]
                    )
                result["rows"].append(row)
        _progress(f"{name} b{batch_size}: inference rows done")
    if "tflite" in rows_wanted:
        limit = result["limits"].get("float32_b1") or gemm_limit(config, 1, "float32", repeats)
        for mode in ("float32", "float16", "dynamic_int8", "int8"):
            rates, latencies, size = tflite_inference(model, config, mode, repeats, folder)
            row = _row(f"tflite_{mode}", rates, config, 1, limit, latencies, note=f"{size / 2**20:.1f} MiB")
            result["rows"].append(row)
        _progress(f"{name}: TFLite rows done")
    if "train" in rows_wanted:
        batch = train_batch if name != FASHION else 128
        limit32 = gemm_limit(config, batch, "float32", repeats)
        limit16 = gemm_limit(config, batch, "bfloat16", repeats)
        train_flops = 3 * result["flops_per_image"]  # forward + backward (2x)
        for precision, limit in (("float32", limit32), ("bfloat16", limit16)):
            rates = training_step_rate(config, batch, repeats, precision, steps=16 if name == FASHION else 2)
            row = _row(f"train_{precision}", rates, config, batch)
            row["fraction_of_limit"] = row["images_per_second"]["median"] * train_flops / limit["median"]
            result["rows"].append(row)
        if name == FASHION:
            rates = training_step_rate(config, batch, repeats, dataset=fashion_pipeline(batch, data_dir), steps=16)
            row = _row("train_float32_tfds_pipeline", rates, config, batch)
            row["fraction_of_limit"] = row["images_per_second"]["median"] * train_flops / limit32["median"]
            result["rows"].append(row)
        _progress(f"{name}: training rows done")
    return result


def _progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _median(rows, kind, batch_size):
    for row in rows:
        if row["row"] == kind and row["batch_size"] == batch_size and "images_per_second" in row:
            return row["images_per_second"]["median"]
    return None


def check_targets(results, agreement):
    """The issue's targets, each with the measured figure and whether it is met (None: not measured)."""
    targets = []

    def add(what, value, goal, higher=True):
        met = None if value is None else (value >= goal if higher else value <= goal)
        targets.append({"target": what, "measured": value, "goal": goal, "met": met})

    for result in results:
        name, rows = result["model"], result["rows"]
        if name in ("mixer_s16", "mixer_b16"):
            keras32 = next((r for r in rows if r["row"] == "keras" and r["batch_size"] == 32), None)
            add(f"{name} float32 inference b32 / GEMM limit", keras32 and keras32["fraction_of_limit"], 0.9)
            k = _median(rows, "keras", 32)
            for peer, goal in (("timm_eager", 1.3), ("timm_compile", 1.1)):
                p = _median(rows, peer, 32)
                add(f"{name} inference b32 vs {peer}", k / p if k and p else None, goal)
            bf = _median(rows, "keras_bfloat16", 32)
            add(f"{name} bfloat16 / float32 inference b32", bf / k if bf and k else None, 1.8)
        tfl = _median(rows, "tflite_float32", 1)
        for mode in ("dynamic_int8", "int8"):
            q = _median(rows, f"tflite_{mode}", 1)
            add(f"{name} TFLite {mode} / float32 b1", q / tfl if q and tfl else None, 2.0)
        train32 = next((r for r in rows if r["row"] == "train_float32"), None)
        if name == "mixer_s16":
            add("mixer_s16 training float32 / limit (3x forward FLOPs)", train32 and train32["fraction_of_limit"], 0.85)
        train16 = next((r for r in rows if r["row"] == "train_bfloat16"), None)
        if train32 and train16:
            ratio = train16["images_per_second"]["median"] / train32["images_per_second"]["median"]
            add(f"{name} bfloat16 / float32 training", ratio, 1.5)
        pipeline = next((r for r in rows if r["row"] == "train_float32_tfds_pipeline"), None)
        if pipeline and train32:
            ratio = pipeline["images_per_second"]["median"] / train32["images_per_second"]["median"]
            add(f"{name} training: real tfds pipeline / synthetic", ratio, 0.9)
    if agreement:
        add("bfloat16 vs float32 top-1 agreement, Fashion-MNIST test", agreement["top1_agreement"], 0.99)
    return targets


COLUMNS = "{:10s} {:28s} {:>5} {:>15} {:>17} {:>9} {:>13}"


def print_table(report):
    print("\n" + COLUMNS.format("model", "row", "batch", "img/s (median)", "min-max", "of limit", "p50/p95 ms"))
    for result in report["results"]:
        for row in result["rows"]:
            if "images_per_second" not in row:
                print(f"{result['model']:10s} {row['row']:28s} {row['batch_size']:5d}  {row['note']}")
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
    print("\ntargets:")
    for target in report["targets"]:
        value = "not measured" if target["measured"] is None else f"{target['measured']:.3f}"
        status = {True: "met", False: "MISSED", None: "-"}[target["met"]]
        print(f"  {target['target']:60s} {value:>14s} (goal {target['goal']})  {status}")


def plot(report, path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    results = report["results"]
    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for axis, result in zip(axes[0], results):
        rows = [r for r in result["rows"] if "images_per_second" in r]
        labels = [f"{r['row']} b{r['batch_size']}" for r in rows]
        values = [r["images_per_second"]["median"] for r in rows]
        errors = [[v - r["images_per_second"]["min"] for v, r in zip(values, rows)],
                  [r["images_per_second"]["max"] - v for v, r in zip(values, rows)]]  # fmt: skip
        axis.barh(labels, values, xerr=errors, color="tab:blue")
        axis.set_xscale("log")
        axis.set_xlabel("images / s (median, min-max)")
        axis.set_title(f"{result['model']} ({result['flops_per_image'] / 1e9:.2f} GFLOP/image)")
        axis.invert_yaxis()
    figure.suptitle(f"{report['machine']['cpu']} ({report['machine']['cores']} cores)", fontsize=9)
    figure.tight_layout()
    temporary = path + ".tmp.png"
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, path)


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
    parser.add_argument("--json", default="benchmarks/results.json")
    parser.add_argument("--plot", default="benchmarks/results.png")
    args = parser.parse_args(argv)

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
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT

    from training.files import write_json_atomically  # noqa: PLC0415
    from training.machine import machine_description  # noqa: PLC0415

    started = time.time()
    results = [run_model(n, batch_sizes, args.repeats, rows_wanted, args.data_dir, args.train_batch) for n in names]
    agreement = None
    if FASHION in names and "bfloat16" in rows_wanted and os.path.exists(args.model):
        agreement = bfloat16_agreement(args.model, args.data_dir)
    report = {
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_description(),
        "repeats": args.repeats,
        "results": results,
        "bfloat16_agreement": agreement,
        "wall_seconds": None,
    }
    report["targets"] = check_targets(results, agreement)
    report["wall_seconds"] = time.time() - started
    print_table(report)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    write_json_atomically(args.json, report)
    plot(report, args.plot)
    print(f"\nwrote {args.json} and {args.plot} ({report['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
