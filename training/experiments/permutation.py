"""Paper §3.4: train a Mixer and a small ResNet under three fixed input orders and compare.

    python -m training.experiments.permutation --dataset fashion_mnist --epochs 2

Orders, each one seeded permutation applied to every train and test image inside tf.data:
  original      the images as they are
  patch_pixel   patches shuffled, and the pixels inside every patch by one shared shuffle
  global        all pixel positions shuffled

The Mixer is exactly invariant to `patch_pixel` (the shuffle is absorbed by its stem and
token-mixing weights), so its `patch_pixel` run starts from the original run's initial weights
permuted accordingly and then follows the same training path, to float rounding. The ResNet's
convolutions rely on neighbouring pixels and have no such symmetry. Writes `permutation.json`
(test accuracy per model x order, per evaluation, seeds, config) and `permutation.png` (one panel
per model, like the paper's Figure 4) into `--output-dir`. No model selection happens here: the
test split is only measured.
"""

import argparse
import os
import sys
import time

import numpy as np

from keras_mixer.atomic import save_figure_atomically
from training import EXIT_BAD_INPUT
from training.config import parse_bool_or_auto
from training.quiet import add_verbose_flag, quiet_logs

ORDERS = ("original", "patch_pixel", "global")
MODELS = ("mixer", "resnet")
STYLES = {
    "original": {"marker": "o", "linestyle": "-", "linewidth": 3, "alpha": 0.6},
    "patch_pixel": {"marker": "s", "linestyle": "--"},
    "global": {"marker": "^", "linestyle": ":"},
}


PERMUTATION_LEARNING_RATE = 2e-3  # the README's results were measured at this peak rate (the default is 4e-3)


def pixel_order(order, height, width, patch_size, seed):
    """Flat source index per output pixel: `permuted.flat[i] = image.flat[result[i]]` (row-major H x W).

    >>> pixel_order("original", 2, 2, 1, 0).tolist()
    [0, 1, 2, 3]
    >>> sorted(pixel_order("global", 4, 4, 2, 0).tolist()) == list(range(16))
    True
    """
    if order not in ORDERS:
        raise ValueError(f"Unknown order. Expected one of {ORDERS}. Received: {order!r}")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"The patch size must divide the image. Received: patch_size={patch_size} for {height}x{width} images"
        )
    index = np.arange(height * width).reshape(height, width)
    rng = np.random.default_rng(seed)
    if order == "original":
        return index.reshape(-1)
    if order == "global":
        return rng.permutation(height * width)
    tokens, pixels = patch_pixel_orders(height, width, patch_size, seed)
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = index.reshape(grid_h, patch_size, grid_w, patch_size).transpose(0, 2, 1, 3)
    patches = patches.reshape(grid_h * grid_w, patch_size * patch_size)[tokens][:, pixels]
    return patches.reshape(grid_h, grid_w, patch_size, patch_size).transpose(0, 2, 1, 3).reshape(-1)


def patch_pixel_orders(height, width, patch_size, seed):
    """(token order pi, within-patch pixel order sigma) of the seeded `patch_pixel` shuffle."""
    rng = np.random.default_rng(seed)
    tokens = rng.permutation((height // patch_size) * (width // patch_size))
    return tokens, rng.permutation(patch_size * patch_size)


def permute_mixer_weights(params, tokens, pixels, patch_size):
    """Official-layout Mixer weights that see `patch_pixel`-shuffled images as the originals see the originals.

    The stem kernel's pixel positions are reordered by `pixels` and every token-mixing weight's
    token axis by `tokens` (its Dense_0 rows, Dense_1 columns and bias).
    """
    permuted = dict(params)
    kernel = params["stem/kernel"]
    flat = kernel.reshape(patch_size * patch_size, *kernel.shape[2:])
    permuted["stem/kernel"] = flat[pixels].reshape(kernel.shape)
    for key, value in params.items():
        if key.endswith("token_mixing/Dense_0/kernel"):
            permuted[key] = value[tokens]
        elif key.endswith("token_mixing/Dense_1/kernel"):
            permuted[key] = value[:, tokens]
        elif key.endswith("token_mixing/Dense_1/bias"):
            permuted[key] = value[tokens]
    return permuted


def permute_dataset(dataset, order_index):
    """Apply a flat pixel order to every (image, label) of a tf.data dataset (all channels alike)."""
    import tensorflow as tf  # noqa: PLC0415

    order_index = tf.constant(order_index, tf.int32)

    def permute(image, label):
        shape = tf.shape(image)
        flat = tf.reshape(image, (shape[0] * shape[1], shape[2]))
        return tf.reshape(tf.gather(flat, order_index), shape), label

    return dataset.map(permute, num_parallel_calls=tf.data.AUTOTUNE)


def small_resnet(image_size, num_channels, num_classes, widths=(32, 64, 128), blocks=(1, 1, 2), seed=0):
    """A small ResNet (basic blocks, batch norm, stride-2 stem) for 28-32 px images; logits out.

    With the defaults it has about as many parameters as the default Mixer (0.61 M vs 0.55 M).

    >>> small_resnet(28, 1, 10).count_params() > 500_000
    True
    """
    import keras  # noqa: PLC0415

    initializer = keras.initializers.HeNormal(seed=seed)

    def conv(x, filters, strides=1, kernel=3):
        return keras.layers.Conv2D(
            filters, kernel, strides, padding="same", use_bias=False, kernel_initializer=initializer
        )(x)

    def norm(x):
        # Momentum 0.9: the moving statistics must settle within the short schedules used here.
        return keras.layers.BatchNormalization(momentum=0.9)(x)

    def block(x, filters, strides):
        shortcut = x
        y = keras.layers.ReLU()(norm(conv(x, filters, strides)))
        y = norm(conv(y, filters))
        if strides != 1 or shortcut.shape[-1] != filters:
            shortcut = norm(conv(shortcut, filters, strides, kernel=1))
        return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))

    inputs = keras.Input((image_size, image_size, num_channels))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.ReLU()(norm(conv(x, widths[0], strides=2)))
    for stage, (filters, count) in enumerate(zip(widths, blocks)):
        for index in range(count):
            x = block(x, filters, strides=2 if stage > 0 and index == 0 else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.Zeros())(x)
    return keras.Model(inputs, outputs, name="small_resnet")


def _build(model_name, config, spec, initial_mixer_params=None):
    import keras  # noqa: PLC0415

    from keras_mixer import MLPMixer, load_official_weights  # noqa: PLC0415
    from training.train import model_arguments  # noqa: PLC0415

    keras.utils.set_random_seed(config.seed)
    if model_name == "resnet":
        return small_resnet(config.model.image_size, spec.num_channels, spec.num_classes, seed=config.seed)
    model = MLPMixer(**model_arguments(config, spec))
    if initial_mixer_params is not None:
        load_official_weights(model, initial_mixer_params)
    return model


def run_cell(model_name, config, spec, builder, order_index, evals_per_epoch, initial_mixer_params=None):
    """Train one model under one input order; returns (model, test accuracy after each evaluation)."""

    from training.data import load_split, make_pipeline  # noqa: PLC0415
    from training.train import compile_for_training  # noqa: PLC0415

    common = dict(
        image_size=config.model.image_size, num_classes=spec.num_classes, batch_size=config.schedule.batch_size
    )
    train = make_pipeline(
        permute_dataset(load_split(builder, spec.splits["train"], shuffle_files=True, seed=config.seed), order_index),
        training=True,
        seed=config.seed,
        shuffle_buffer=config.data.shuffle_buffer,
        **common,
    )  # no augmentation: a flip or crop does not commute with the shuffles
    test = make_pipeline(
        permute_dataset(load_split(builder, spec.splits["test"]), order_index), training=False, **common
    )
    model = _build(model_name, config, spec, initial_mixer_params)
    steps_per_epoch = spec.train_examples // config.schedule.batch_size
    steps_per_evaluation = steps_per_epoch // evals_per_epoch
    compile_for_training(model, config, steps_per_epoch, steps_per_evaluation)  # the schedule spans the whole run
    history = model.fit(
        train,
        epochs=config.schedule.epochs * evals_per_epoch,
        steps_per_epoch=steps_per_evaluation,
        validation_data=test,  # measured, never used to choose anything
        verbose=2,
        shuffle=False,  # the pipeline shuffles; Keras' own flag only warns on a dataset
    )
    return model, [float(v) for v in history.history["val_accuracy"]]


def plot(result, path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    models = list(result["test_accuracy"])
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), sharey=True, squeeze=False)
    for axis, model_name in zip(axes[0], models):
        curves = result["test_accuracy"][model_name]
        for order, curve in ((o, curves[o]) for o in ORDERS if o in curves):
            epochs = [(i + 1) / result["evals_per_epoch"] for i in range(len(curve))]
            style = STYLES.get(order, {})  # dashed over solid: identical curves stay visible
            axis.plot(epochs, [100 * v for v in curve], label=order, **style)
        axis.set_title(f"{model_name} ({result['parameters'][model_name]:,} parameters)")
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0][0].set_ylabel(f"test accuracy (%), {result['dataset']}")
    figure.tight_layout()
    save_figure_atomically(figure, path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.experiments.permutation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", default="fashion_mnist", help="tfds image-classification dataset")
    parser.add_argument("--data-dir", default=None, help="tfds data dir")
    parser.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="epochs per model x order (short default; the paper trains to convergence)",
    )
    parser.add_argument("--evals-per-epoch", type=int, default=4, help="test evaluations per epoch (curve points)")
    parser.add_argument("--patch-size", type=int, default=7, help="Mixer patch size (must divide the image size)")
    parser.add_argument("--image-size", type=int, default=28, help="image size the pipeline resizes to")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--models", default="mixer,resnet", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--orders", default=",".join(ORDERS), help=f"comma-separated: {', '.join(ORDERS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the permutations, initialisation and shuffling")
    parser.add_argument(
        "--xla",
        type=parse_bool_or_auto,
        default=None,
        metavar="{true,false,auto}",
        help="compile each train step with XLA, as `training.train --xla` (default auto: the machine decides)",
    )
    parser.add_argument("--output-dir", default="runs/permutation")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    quiet_logs(args.verbose)

    from training.config import TrainConfig  # noqa: PLC0415

    models = [m for m in args.models.split(",") if m]
    orders = [o for o in args.orders.split(",") if o]
    problems = [f"unknown model {m!r} (expected {MODELS})" for m in models if m not in MODELS]
    problems += [f"unknown order {o!r} (expected {ORDERS})" for o in orders if o not in ORDERS]
    if args.image_size % args.patch_size:
        problems.append(
            f"the patch size must divide the image size: patch_size={args.patch_size}, image_size={args.image_size}"
        )
    if args.epochs < 1 or args.evals_per_epoch < 1:
        problems.append("--epochs and --evals-per-epoch must be at least 1")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT

    from keras_mixer import save_official_weights  # noqa: PLC0415
    from training.data import DatasetError, dataset_spec, open_builder  # noqa: PLC0415
    from training.files import write_json_atomically  # noqa: PLC0415

    config = TrainConfig()  # the default run, with the learning rate the README's results were measured at
    config.optim.learning_rate = PERMUTATION_LEARNING_RATE
    config.data.dataset, config.data.data_dir = args.dataset, args.data_dir
    config.data.train_split, config.data.test_split = args.train_split, args.test_split
    config.data.validation_fraction = 0.0
    config.model.image_size, config.model.patch_size = args.image_size, args.patch_size
    config.schedule.epochs, config.schedule.batch_size, config.seed = args.epochs, args.batch_size, args.seed
    config.distribute.xla = args.xla
    try:
        builder = open_builder(args.dataset, args.data_dir, split=args.train_split)
        spec = dataset_spec(builder, args.train_split, args.test_split, 0.0)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    batches = spec.train_examples // args.batch_size
    if batches < args.evals_per_epoch:
        print(
            f"error: --evals-per-epoch {args.evals_per_epoch} needs at least that many batches per epoch; "
            f"{args.train_split} holds {spec.train_examples} examples, {batches} batches of {args.batch_size}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT

    started = time.time()
    size, patch = args.image_size, args.patch_size
    result = {"dataset": spec.name, "splits": spec.splits, "evals_per_epoch": args.evals_per_epoch, "seed": args.seed}
    result.update({"test_accuracy": {}, "final_test_accuracy": {}, "parameters": {}, "seconds": {}})
    result["config"] = config.to_dict()
    for model_name in models:
        result["test_accuracy"][model_name], result["final_test_accuracy"][model_name] = {}, {}
        initial = None
        if model_name == "mixer" and "patch_pixel" in orders:
            # The same starting function for both orders: the original init, permuted for patch_pixel.
            initial = save_official_weights(_build("mixer", config, spec))
        for order in orders:
            print(f"--- {model_name}, order {order}")
            cell_started = time.time()
            params = None
            if initial is not None:
                params = initial
                if order == "patch_pixel":
                    params = permute_mixer_weights(initial, *patch_pixel_orders(size, size, patch, args.seed), patch)
            order_index = pixel_order(order, size, size, patch, args.seed)
            model, curve = run_cell(model_name, config, spec, builder, order_index, args.evals_per_epoch, params)
            result["test_accuracy"][model_name][order] = curve
            result["final_test_accuracy"][model_name][order] = curve[-1]
            result["parameters"][model_name] = model.count_params()
            result["seconds"][f"{model_name}/{order}"] = time.time() - cell_started
    result["wall_seconds"] = time.time() - started
    os.makedirs(args.output_dir, exist_ok=True)
    write_json_atomically(os.path.join(args.output_dir, "permutation.json"), result)
    plot(result, os.path.join(args.output_dir, "permutation.png"))
    print("final test accuracy (%):")
    for model_name, row in result["final_test_accuracy"].items():
        print(f"  {model_name:7s}" + "".join(f"  {order} {100 * value:.2f}" for order, value in row.items()))
    print(f"wrote {args.output_dir}/permutation.json and permutation.png ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
