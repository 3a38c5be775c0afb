"""Does pre-training transfer, and which token-mixing resize carries it to a higher resolution?

    python -m training.experiments.transfer            # ~10-15 minutes on 2 CPU cores

Everything runs offline on Fashion-MNIST, through the same code a user runs (`--dataset PATH`,
`--init-from`, `--token-mixing-resize` of `python -m training.train`):

1. A "published" model: the default Mixer pre-trained on classes 0-4 (28 px), written as a folder of
   PNG files (`pretrain/train`, `pretrain/test`) and trained with `--dataset`.
2. A small "user" folder from classes 5-9, as PNG files: `--per-class` training images per class
   (100), and a held-out test folder (`--test-per-class`, 200, from Fashion-MNIST's test split).
3. Arms, all with the same flags, step budget and held-out images, `--seeds` seeds each:
     scratch_28        random initialisation, 28 px
     finetune_28       from the pre-trained model, 28 px
     appendix_c_56     56 px (2x), token mixing resized by the paper's Appendix C
     reinit_56         56 px, token-mixing weights left random (a shape-mismatch-skipping loader)
     interpolate_56    56 px, token-mixing weights interpolated as 2-D grids (not the paper's)
     interpolate_42    42 px (1.5x, which Appendix C cannot do), interpolated

Each arm trains without a validation part for a fixed number of epochs and is measured once, on
the user's test folder, with the last epoch's weights: nothing is selected on the test images.
Writes `transfer.json` (every run: flags, test accuracy, seconds) and `transfer.png` (mean, spread
and each seed per arm) into `--output-dir`.
"""

import argparse
import os
import sys
import time

import numpy as np

from keras_mixer.atomic import save_figure_atomically, write_json_atomically
from training import EXIT_BAD_INPUT
from training.quiet import add_verbose_flag, quiet_logs

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
USER_CLASSES = (5, 6, 7, 8, 9)
# arm -> (image size, flags beyond the shared ones); "{pretrained}" is the pre-trained model's path.
ARMS = {
    "scratch_28": (28, []),
    "finetune_28": (28, ["--init-from", "{pretrained}"]),
    "appendix_c_56": (56, ["--init-from", "{pretrained}", "--token-mixing-resize", "appendix_c"]),
    "reinit_56": (56, ["--init-from", "{pretrained}", "--token-mixing-resize", "reinit"]),
    "interpolate_56": (56, ["--init-from", "{pretrained}", "--token-mixing-resize", "interpolate"]),
    "interpolate_42": (42, ["--init-from", "{pretrained}", "--token-mixing-resize", "interpolate"]),
}
# The same for every arm, chosen before any run (nothing here was tuned on the test images).
SHARED_FLAGS = [
    "--validation-fraction", "0",
    "--test-flip-average", "false",
    "--learning-rate", "1e-3",
    "--warmup-epochs", "1",
    "--batch-size", "50",
    "--steps-per-execution", "1",
]  # fmt: skip


def folder_name(class_name):
    """A class name as a folder name ("T-shirt/top" -> "T-shirt_top")."""
    return class_name.replace("/", "_").replace(os.sep, "_")


def write_png_folder(images, labels, class_names, folder):
    """Write uint8 images (N, H, W, C) as `folder/<class>/<index>.png`; returns the file count."""
    import tensorflow as tf  # noqa: PLC0415

    for name in class_names:
        os.makedirs(os.path.join(folder, folder_name(name)), exist_ok=True)
    encoded = tf.data.Dataset.from_tensor_slices(images).map(tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE)
    for index, (png, label) in enumerate(zip(encoded.as_numpy_iterator(), labels)):
        with open(os.path.join(folder, folder_name(class_names[label]), f"{index:05d}.png"), "wb") as file:
            file.write(png)
    return len(labels)


def fashion_arrays(data_dir, split):
    """(uint8 images (N, 28, 28, 1), int labels, class names) of a Fashion-MNIST split, offline."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    from training.data import open_builder  # noqa: PLC0415

    builder = open_builder("fashion_mnist", data_dir, split=split)
    images, labels = tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True, batch_size=-1))
    return images, labels, builder.info.features["label"].names


def pick(images, labels, classes, per_class=None):
    """The first `per_class` examples of each of `classes` (all when None), relabelled 0..len-1."""
    chosen = []
    for new_label, label in enumerate(classes):
        members = np.flatnonzero(labels == label)[:per_class]
        chosen += [(index, new_label) for index in members]
    chosen.sort()
    return images[[i for i, _ in chosen]], np.array([y for _, y in chosen])


def write_folders(work_dir, data_dir, per_class, test_per_class, pretrain_per_class):
    """The pre-training folder (classes 0-4) and the user folder (classes 5-9); returns both paths."""
    train_images, train_labels, names = fashion_arrays(data_dir, "train")
    test_images, test_labels, _ = fashion_arrays(data_dir, "test")
    folders = {}
    for role, classes, train_count, test_count in (
        ("pretrain", PRETRAIN_CLASSES, pretrain_per_class, None),
        ("user", USER_CLASSES, per_class, test_per_class),
    ):
        root = os.path.join(work_dir, role)
        folders[role] = root
        if os.path.isdir(root):
            continue  # written by an earlier run of this command
        partial = root + ".partial"
        class_names = [names[c] for c in classes]
        write_png_folder(*pick(train_images, train_labels, classes, train_count), class_names, f"{partial}/train")
        write_png_folder(*pick(test_images, test_labels, classes, test_count), class_names, f"{partial}/test")
        os.replace(partial, root)
    return folders


def train_run(argv):
    """`python -m training.train ARGV` in this process (the CLI's own parser and `train`); returns the summary."""
    from training.config import add_config_flags, config_from_args  # noqa: PLC0415
    from training.train import train  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return train(config_from_args(parser.parse_args(argv)), verbose=0)


def last_epoch_accuracy(model_dir):
    """Test accuracy of the run's last weights (`last.keras`), one view per image."""
    from training.evaluate import evaluate  # noqa: PLC0415

    return evaluate(model_dir, checkpoint="last.keras", flip_average="off")["test_accuracy"]


def run_experiment(work_dir, data_dir, seeds, epochs, pretrain_epochs, per_class, test_per_class, arms):
    """Pre-train once, then every arm x seed; returns the results dict written to `transfer.json`."""
    import keras  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    started = time.time()
    folders = write_folders(work_dir, data_dir, per_class, test_per_class, pretrain_per_class=None)
    pretrain_dir = os.path.join(work_dir, "runs", "pretrain")
    pretrain_flags = ["--dataset", folders["pretrain"], "--epochs", str(pretrain_epochs), "--model-dir", pretrain_dir]
    pretrain_flags += ["--validation-fraction", "0.05"]
    pretrain = train_run(pretrain_flags)
    pretrained = os.path.join(pretrain_dir, "best.keras")
    runs = []
    cells = [(arm, seed) for arm in arms for seed in seeds]
    for arm, seed in tqdm(cells, desc="fine-tuning", unit="run"):
        image_size, extra = ARMS[arm]
        model_dir = os.path.join(work_dir, "runs", f"{arm}_seed{seed}")
        flags = ["--dataset", folders["user"], "--image-size", str(image_size), "--epochs", str(epochs)]
        flags += [*SHARED_FLAGS, "--seed", str(seed), "--model-dir", model_dir]
        flags += [flag.format(pretrained=pretrained) for flag in extra]
        run_started = time.time()
        summary = train_run(flags)
        runs.append(
            {
                "arm": arm,
                "seed": seed,
                "command": "python -m training.train " + " ".join(flags),
                "test_accuracy": last_epoch_accuracy(model_dir),
                "parameters": summary["parameters"],
                "seconds": time.time() - run_started,
            }
        )
        keras.utils.clear_session()
    return {
        "pretrain": {
            "command": "python -m training.train " + " ".join(pretrain_flags),
            "test_accuracy_classes_0_4": pretrain["test_accuracy"],
            "single_view_test_accuracy": pretrain["single_view_test_accuracy"],
        },
        "user_folder": {"train_per_class": per_class, "test_per_class": test_per_class, "classes": list(USER_CLASSES)},
        "epochs": epochs,
        "steps": epochs * (per_class * len(USER_CLASSES) // 50),
        "seeds": list(seeds),
        "runs": runs,
        "arms": summarise(runs),
        "wall_seconds": time.time() - started,
    }


def summarise(runs):
    """{arm: mean, std, min, max test accuracy over seeds} in the order the arms ran."""
    table = {}
    for arm in dict.fromkeys(run["arm"] for run in runs):
        values = np.array([run["test_accuracy"] for run in runs if run["arm"] == arm])
        table[arm] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
            "seeds": len(values),
        }
    return table


def save_plot(results, path):
    """Mean test accuracy per arm (bar), each seed (dots), min-max (whisker)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    arms = list(results["arms"])
    figure, axis = plt.subplots(figsize=(9, 4))
    for position, arm in enumerate(arms):
        row = results["arms"][arm]
        axis.bar(position, 100 * row["mean"], color="#8fb3d9", width=0.6)
        axis.plot([position, position], [100 * row["min"], 100 * row["max"]], color="black", linewidth=1)
        seeds = [100 * r["test_accuracy"] for r in results["runs"] if r["arm"] == arm]
        axis.scatter([position] * len(seeds), seeds, color="black", s=12, zorder=3)
    axis.set_xticks(range(len(arms)), arms, rotation=20)
    low = min(100 * r["test_accuracy"] for r in results["runs"])
    axis.set_ylim(max(0, low - 5), 100)
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(
        f"Fashion-MNIST classes 5-9, {results['user_folder']['train_per_class']} training images per class, "
        f"{results['steps']} steps, {len(results['seeds'])} seeds"
    )
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    save_figure_atomically(figure, path)


def table_markdown(results):
    """The README table: one row per arm."""
    lines = ["| arm | image | test accuracy, mean ± std | min – max |", "|---|---|---:|---:|"]
    for arm, row in results["arms"].items():
        lines.append(
            f"| `{arm}` | {ARMS[arm][0]} px | {100 * row['mean']:.2f} ± {100 * row['std']:.2f} % "
            f"| {100 * row['min']:.2f} – {100 * row['max']:.2f} % |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.experiments.transfer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--work-dir", default="runs/transfer", help="image folders and runs go here")
    parser.add_argument("--output-dir", default="docs/images", help="where transfer.json and transfer.png go")
    parser.add_argument("--data-dir", default=None, help="tfds data dir (Fashion-MNIST is prepared offline)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs of every arm")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=100, help="user training images per class (at most 100)")
    parser.add_argument("--test-per-class", type=int, default=200, help="user test images per class")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    quiet_logs(args.verbose)
    problems = [
        f"{flag} must be a positive integer. Received: {value}"
        for flag, value in (
            ("--epochs", args.epochs),
            ("--pretrain-epochs", args.pretrain_epochs),
            ("--per-class", args.per_class),
            ("--test-per-class", args.test_per_class),
        )
        if value < 1
    ]
    if args.per_class > 100:
        problems.append(f"--per-class is at most 100 (a small user folder). Received: {args.per_class}")
    if args.per_class * len(USER_CLASSES) < 50:
        problems.append(f"--per-class {args.per_class} gives fewer images than one batch of 50")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    results = run_experiment(
        args.work_dir, args.data_dir, args.seeds, args.epochs, args.pretrain_epochs, args.per_class,
        args.test_per_class, args.arms,
    )  # fmt: skip
    os.makedirs(args.output_dir, exist_ok=True)
    write_json_atomically(os.path.join(args.output_dir, "transfer.json"), results)
    save_plot(results, os.path.join(args.output_dir, "transfer.png"))
    print(table_markdown(results))
    print(
        f"pre-trained on classes 0-4: test {100 * results['pretrain']['single_view_test_accuracy']:.2f} % "
        f"(one view); {results['wall_seconds']:.0f} s in all; {os.path.join(args.output_dir, 'transfer.json')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
