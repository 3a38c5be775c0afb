"""Training throughput of the default recipe: synthetic tensors vs the real tfds pipeline.

`python -m benchmarks.train_throughput [--recipe fashion_mnist] [--steps 60] [--repeats 3] [--json out.json]`

Both rows run the same compiled Keras train step (`model.fit`, the recipe's batch size and
steps_per_execution); the only difference is where batches come from. If the pipeline row is
close to the synthetic one, the input pipeline is not the bottleneck. Also times the pipeline
alone (batches/s with no model). Prints a table and writes JSON (min/median/max over repeats).
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _stats(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="fashion_mnist")
    parser.add_argument("--steps", type=int, default=64, help="timed train steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default="benchmarks/train_throughput.json")
    args = parser.parse_args(argv)

    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer import MLPMixer  # noqa: PLC0415
    from training.config import recipe_config  # noqa: PLC0415
    from training.data import dataset_spec, load_split, make_pipeline, open_builder  # noqa: PLC0415
    from training.train import build_optimizer, machine_description, model_arguments  # noqa: PLC0415

    config = recipe_config(args.recipe)
    builder = open_builder(config.data.dataset, args.data_dir or config.data.data_dir)
    spec = dataset_spec(builder, config.data.train_split, config.data.test_split, config.data.validation_fraction)
    model_args = model_arguments(config, spec)
    batch = config.schedule.batch_size
    per_execution = config.distribute.steps_per_execution
    steps = max(args.steps // per_execution, 1) * per_execution

    real = make_pipeline(
        load_split(builder, spec.splits["train"]),
        image_size=model_args["image_size"],
        num_classes=spec.num_classes,
        batch_size=batch,
        training=True,
        augment=config.augment,
        shuffle_buffer=config.data.shuffle_buffer,
    )
    images, labels = next(iter(real))
    synthetic = tf.data.Dataset.from_tensors((images, labels)).repeat()

    def fit_rate(data):
        model = MLPMixer(**model_args)
        model.compile(
            optimizer=build_optimizer(config, steps_per_epoch=1000),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            steps_per_execution=per_execution,
            jit_compile=config.distribute.xla,
        )
        model.fit(data, steps_per_epoch=2 * per_execution, epochs=1, verbose=0)  # trace and warm up
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            rates.append(steps * batch / (time.perf_counter() - start))
        return rates

    def pipeline_rate():
        rates = []
        iterator = iter(real)
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(steps):
                next(iterator)
            rates.append(steps * batch / (time.perf_counter() - start))
        return rates

    rows = {
        "train_step_synthetic_images_per_s": _stats(fit_rate(synthetic)),
        "train_step_tfds_pipeline_images_per_s": _stats(fit_rate(real)),
        "pipeline_only_images_per_s": _stats(pipeline_rate()),
    }
    ratio = (
        rows["train_step_tfds_pipeline_images_per_s"]["median"] / rows["train_step_synthetic_images_per_s"]["median"]
    )
    report = {
        "recipe": args.recipe,
        "model": model_args,
        "batch_size": batch,
        "steps_per_execution": per_execution,
        "timed_steps": steps,
        "repeats": args.repeats,
        "results": rows,
        "pipeline_over_synthetic": ratio,
        "machine": machine_description(),
    }
    print(f"{'measurement':40s} {'min':>8s} {'median':>8s} {'max':>8s}  (images/s)")
    for name, values in rows.items():
        print(f"{name:40s} {values['min']:8.0f} {values['median']:8.0f} {values['max']:8.0f}")
    print(f"real pipeline / synthetic = {ratio:.2f}")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as file:
        json.dump(report, file, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
