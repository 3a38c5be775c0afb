"""Train an MLP-Mixer on a tfds dataset: `python -m training.train [--recipe NAME] [--flag value ...]`.

Flow: flags -> `TrainConfig` -> checks (before anything is written) -> strategy scope ->
data pipelines + model + optimiser -> `model.fit` with callbacks -> held-out test evaluation of
the best checkpoint -> `summary.json` and `curves.png` in `--model-dir`.

The model dir holds: config.json, backup/ (BackupAndRestore: rerun the same command after a
kill and training continues), best.keras (+ best.json), last.keras, history.csv, logs/
(TensorBoard), summary.json, curves.png.
"""

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

from training import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NON_FINITE
from training.config import add_config_flags, config_from_args, range_problems
from training.files import (
    WriteError,
    load_keras_file,
    read_history,
    save_curves,
    trim_history,
    writable_dir_problem,
    write_json_atomically,
)
from training.folders import write_splits
from training.machine import channel_mixing_macs, machine_description, xla_for_training
from training.quiet import add_verbose_flag, quiet_logs
from training.run_lock import RunLock


class ConfigError(ValueError):
    """A flag combination that cannot work; raised before anything is written."""


# --- checks that need no TensorFlow ----------------------------------------------------------


def model_arguments(config, spec):
    """MLPMixer constructor arguments from the config and the dataset (classes, channels)."""
    from keras_mixer.presets import preset_config  # noqa: PLC0415

    model = config.model
    size = (
        preset_config(model.preset)
        if model.preset
        else {
            "num_blocks": model.num_blocks,
            "hidden_dim": model.hidden_dim,
            "tokens_mlp_dim": model.tokens_mlp_dim,
            "channels_mlp_dim": model.channels_mlp_dim,
            "patch_size": model.patch_size,
        }
    )
    return {
        **size,
        "image_size": model.image_size,
        "num_classes": spec.num_classes,
        "num_channels": spec.num_channels,
        "dropout_rate": model.dropout_rate,
        "drop_path_rate": model.drop_path_rate,
        "activation": model.activation,
    }


def check_model_dir(config):
    """Refuse a model dir holding a different run, unless --overwrite (which moves it aside)."""
    saved = os.path.join(config.model_dir, "config.json")
    if not os.path.exists(saved):
        return
    with open(saved) as file:
        previous = json.load(file)
    current = config.to_dict()
    previous.pop("overwrite", None)
    current.pop("overwrite", None)
    if previous == current:
        return  # same run: resume from backup/ if it is there
    if not config.overwrite:
        changed = sorted(
            f"{section}.{key}" if isinstance(value, dict) else section
            for section, value in current.items()
            for key in (value if isinstance(value, dict) else [None])
            if (previous.get(section, {}).get(key) if key else previous.get(section)) != (value[key] if key else value)
        )
        raise ConfigError(
            f"{config.model_dir} holds a run with a different config (changed: {', '.join(changed)}). "
            "Use another --model-dir, or --overwrite to move the old run aside and start fresh."
        )


def check_batch_split(batch_size, replicas):
    """The global batch is split evenly across replicas (the learning rate is for the global batch)."""
    if batch_size % replicas:
        raise ConfigError(
            f"The global batch must split evenly across {replicas} replicas. Received: batch_size={batch_size}"
        )


def check_test_flip_average(augment):
    """Averaging over mirror images only makes sense for a model that was trained on them."""
    if augment.test_flip_average and not augment.flip:
        raise ConfigError(
            "--test-flip-average averages each test image with its mirror image, which needs a model trained "
            "with random flips. Received: flip=False, test_flip_average=True (pass --test-flip-average false)"
        )


def move_old_run_aside(model_dir):
    """--overwrite keeps the old run as <model_dir>.replaced-<time> (nothing is lost); True if moved."""
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        return False
    target = f"{model_dir.rstrip('/')}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(model_dir, target)
    print(f"Moved the previous run to {target}")
    return True


# --- pieces that need TensorFlow ---------------------------------------------------------------


def build_optimizer(config, steps_per_epoch):
    import keras  # noqa: PLC0415

    from keras_mixer.schedules import WarmupDecay  # noqa: PLC0415

    optim, schedule = config.optim, config.schedule
    learning_rate = WarmupDecay(
        peak=optim.learning_rate,
        warmup_steps=int(schedule.warmup_epochs * steps_per_epoch),
        total_steps=schedule.epochs * steps_per_epoch,
        decay=schedule.decay,
    )
    common = {"global_clipnorm": optim.clip_global_norm} if optim.clip_global_norm else {}
    if optim.ema_decay:
        common.update(use_ema=True, ema_momentum=optim.ema_decay)
    if optim.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=optim.momentum, **common)
    return keras.optimizers.AdamW(
        learning_rate, weight_decay=optim.weight_decay, beta_1=optim.beta_1, beta_2=optim.beta_2, **common
    )


def steps_per_execution_for(steps_per_fit_epoch, requested):
    """The most train steps per graph call, up to `requested`, that divide `steps_per_fit_epoch`.

    `model.fit` runs whole executions (Keras 3.15): at 16 steps per execution an epoch of 445 steps runs
    448 (28 x 16), so a run would outlast its learning-rate schedule and its epochs would not be the
    passes over the data they claim to be. A divisor keeps every epoch exact.

    >>> steps_per_execution_for(445, 16)
    5
    >>> steps_per_execution_for(448, 16)
    16
    >>> steps_per_execution_for(8, 16)
    8
    """
    return max(d for d in range(1, min(requested, steps_per_fit_epoch) + 1) if steps_per_fit_epoch % d == 0)


def xla_choice(model, config, replicas):
    """(XLA for the train step?, why) for `model` trained with `config` over `replicas`: `xla_for_training`
    given the run's `--xla`, precision and step size. `compile_for_training` and the run summary share it."""
    batch_per_replica = config.schedule.batch_size // replicas
    return xla_for_training(
        config.distribute.xla, config.distribute.precision, channel_macs=channel_mixing_macs(model, batch_per_replica)
    )


def compile_for_training(model, config, steps_per_epoch, steps_per_fit_epoch=None):
    """Compile `model` as a run with `config` trains it: the optimiser and schedule (`build_optimizer`), no
    weight decay on biases and norms, label-smoothed cross-entropy on logits, accuracy, and the run's
    steps per execution and XLA (`--xla`, or by machine: `training.machine.xla_for_training`).

    `steps_per_fit_epoch`: the `steps_per_epoch` that `fit` gets, where it is not the data's epoch (a
    fraction of it between evaluations); the steps per execution must divide it (`steps_per_execution_for`).
    """
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from training.fused_update import compile_update_with_xla  # noqa: PLC0415

    optimizer = build_optimizer(config, steps_per_epoch)
    exclude_from_weight_decay(optimizer, model, config.optim.decay_head)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.augment.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution_for(
            steps_per_fit_epoch or steps_per_epoch, config.distribute.steps_per_execution
        ),
        jit_compile=xla_choice(model, config, tf.distribute.get_strategy().num_replicas_in_sync)[0],
    )
    # Built now, not by the first train step. Outside a strategy scope Keras 3.15 creates the optimiser's
    # slots inside that trace, which is slow and makes tf.function trace the step twice: the Fashion
    # model's first 8 steps took 15.2 s that way and 10.5 s this way (2-core AVX2 EPYC, no strategy).
    model.optimizer.build(model.trainable_variables)
    if not model.jit_compile:  # a step compiled whole by XLA fuses the update already
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # inside a loss-scale wrapper
        compile_update_with_xla(optimizer)
    return model


def exclude_from_weight_decay(optimizer, model, decay_head=True):
    """No decay on biases and LayerNorm parameters (and the head kernel unless `decay_head`)."""
    excluded = [v for v in model.trainable_variables if len(v.shape) == 1]
    if not decay_head and model.include_top:
        excluded.append(model.get_layer("head").kernel)
    optimizer.exclude_from_weight_decay(var_list=excluded)


def initialise_from(model_args, model_config, class_names):
    """The `--init-from` weights as official keys, and the model arguments they need.

    A published set name (`imagenet1k`, ...) is downloaded for `--preset` (cached); a `.keras` file
    is read through its model; anything else must be an official .npz. The model takes the
    checkpoint's channel count (the pipeline converts the images) and its token-mixing size. A
    `.keras` model whose classes are not the dataset's `class_names` gives no head: the new head
    starts at zero, as in the paper's fine-tuning, instead of mapping old classes onto new ones.
    """
    from keras_mixer.checkpoints import HEAD_KEYS, read_official_checkpoint, resized_config, save_official_weights  # noqa: PLC0415
    from keras_mixer.weights import resolve_weights  # noqa: PLC0415

    try:
        path, _ = resolve_weights(model_config.preset, model_config.init_from)
    except ValueError as error:
        raise ConfigError(f"--init-from: {error}") from None
    if path.endswith(".keras"):
        source = load_keras_file(path, flag="--init-from")
        params = save_official_weights(source)
        if source.class_names is not None and list(source.class_names) != list(class_names):
            print(f"--init-from {path}: its classes are not this dataset's, so the head starts anew (at zero).")
            params = {key: value for key, value in params.items() if key not in HEAD_KEYS}
    else:
        params = read_official_checkpoint(path)
    return resized_config(model_args, params, model_config.token_mixing_resize), params


def train(config, extra_layers=(), verbose="auto"):
    """Run one training job described by `config`; returns the summary dict.

    Raises `ConfigError` / `DatasetError` / `ValueError` before anything is written when the
    config cannot work, and `NonFiniteLossError` when the loss diverges.
    """
    started = time.time()
    import keras  # noqa: PLC0415

    from keras_mixer import MLPMixer, load_official_weights  # noqa: PLC0415
    from keras_mixer.arguments import validate_size_pairs  # noqa: PLC0415
    from training import callbacks as cb  # noqa: PLC0415
    from training.data import fits_in_memory, make_pipeline, open_source  # noqa: PLC0415
    from training.distribute import enable_multi_worker_fit, is_chief, make_strategy  # noqa: PLC0415
    from training.evaluate import evaluate  # noqa: PLC0415

    # 1. Everything that can be wrong is checked before the model dir is touched.
    problems = range_problems(config)
    problems += [problem for problem in [writable_dir_problem(config.model_dir)] if problem]
    if problems:
        raise ConfigError("; ".join(problems))
    check_test_flip_average(config.augment)
    check_model_dir(config)
    finished = os.path.join(config.model_dir, "summary.json")
    if os.path.exists(finished) and not config.overwrite:
        with open(finished) as file:  # the same config finished here before: report, don't retrain
            return {**json.load(file), "already_complete": True}
    # A folder's file lists come from the run being resumed; --overwrite starts from the folder.
    source = open_source(config.data, None if config.overwrite else config.model_dir)
    spec = source.spec
    model_args = model_arguments(config, spec)
    validate_size_pairs(model_args["image_size"], model_args["patch_size"])
    params = None
    if config.model.init_from:
        model_args, params = initialise_from(model_args, config.model, spec.class_names)
    strategy = make_strategy(config.distribute.strategy)
    replicas = strategy.num_replicas_in_sync
    batch_size = config.schedule.batch_size
    check_batch_split(batch_size, replicas)
    steps_per_epoch = spec.train_examples // batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"batch_size={batch_size} exceeds the {spec.train_examples} training examples.")

    chief = is_chief(strategy)
    # One process per model dir for the whole run (only the chief writes it): taken after every
    # check above, so bad input still writes nothing.
    with contextlib.ExitStack() as locks:
        if chief:
            locks.enter_context(RunLock(config.model_dir))
            if config.overwrite and move_old_run_aside(config.model_dir):
                locks.enter_context(RunLock(config.model_dir))  # the new, empty run dir
        # Non-chief workers write their backups to a private scratch dir.
        run_dir = config.model_dir if chief else tempfile.mkdtemp(prefix="mixer_worker_")
        os.makedirs(run_dir, exist_ok=True)
        if chief:
            write_json_atomically(os.path.join(run_dir, "config.json"), config.to_dict())
            if source.splits_record is not None:
                write_splits(run_dir, source.splits_record)

        # 2. Build.
        keras.utils.set_random_seed(config.seed)
        if config.distribute.precision != "float32":
            keras.mixed_precision.set_global_policy(f"mixed_{config.distribute.precision}")
        channels = model_args["num_channels"]
        pipeline = dict(
            image_size=model_args["image_size"],
            num_classes=spec.num_classes,
            cache=config.data.cache and fits_in_memory(spec.train_examples, model_args["image_size"], channels),
            decode=source.decode,
            num_channels=channels,
        )
        train_data = make_pipeline(
            source.examples("train", shuffle_files=True, seed=config.seed),
            batch_size=batch_size,
            training=True,
            augment=config.augment,
            seed=config.seed,
            shuffle_buffer=config.data.shuffle_buffer,
            extra_layers=extra_layers,
            **pipeline,
        )
        validation_data = None
        if spec.splits["validation"]:
            validation_data = make_pipeline(
                source.examples("validation"), batch_size=batch_size, training=False, **pipeline
            )
        with strategy.scope():
            model = MLPMixer(**model_args, class_names=spec.class_names)
            if params is not None:
                load_official_weights(
                    model, params, allow_resize=True, token_mixing_resize=config.model.token_mixing_resize
                )
            compile_for_training(model, config, steps_per_epoch)
        enable_multi_worker_fit(model)

        # 3. Fit.
        throughput = cb.Throughput(steps_per_epoch * batch_size)
        # With an EMA, validation and checkpoints see the averaged weights; training and the
        # backup keep the raw ones (fit itself ends by copying the average into the model).
        ema = keras.callbacks.SwapEMAWeights(swap_on_epoch=False) if config.optim.ema_decay else None
        # Order matters at epoch end: history and checkpoints first, the backup last, so a kill
        # between them repeats an epoch rather than losing one.
        interrupt = cb.StopOnInterrupt()
        backup = cb.AtomicBackupAndRestore(os.path.join(run_dir, "backup"))
        trim_history(os.path.join(run_dir, "history.csv"), backup.completed_epochs())
        callbacks = [
            interrupt,
            cb.StopOnNonFiniteLoss(),
            throughput,
            *([ema] if ema else []),
            cb.AtomicModelCheckpoint(
                run_dir, monitor="val_accuracy" if validation_data else "accuracy", enabled=chief, ema=ema
            ),
            keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
            keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False, profile_batch=0),
            backup,
        ]
        fit_started = time.time()
        try:
            model.fit(
                train_data,
                epochs=config.schedule.epochs,
                steps_per_epoch=steps_per_epoch,
                validation_data=validation_data,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,  # the pipeline shuffles; Keras' own shuffle flag only warns on a dataset
            )
        finally:
            interrupt.restore()
        fit_seconds = time.time() - fit_started

        # 4. The held-out test split, once, with the checkpoint chosen on validation.
        summary = {
            "epochs": config.schedule.epochs,
            "replicas": replicas,
            "dataset": spec.name,
            "weights_fingerprint": weights_fingerprint(model),
        }
        if chief:
            xla, xla_because = xla_choice(model, config, replicas)
            test = evaluate(run_dir, data_dir=config.data.data_dir)
            with open(os.path.join(run_dir, "best.json")) as file:
                best_record = json.load(file)
            history = read_history(os.path.join(run_dir, "history.csv"))
            summary.update(
                {
                    "test_accuracy": test["test_accuracy"],
                    "test_loss": test["test_loss"],
                    "test_flip_average": test["flip_average"],
                    "single_view_test_accuracy": test["single_view_test_accuracy"],
                    "best_epoch": best_record["epoch"],
                    # Without a validation part the best checkpoint follows the training accuracy.
                    "selected_by": best_record["monitor"],
                    "best_validation_accuracy": best_record["value"]
                    if best_record["monitor"] == "val_accuracy"
                    else None,
                    "final_epoch_metrics": history[-1] if history else {},
                    "wall_seconds": time.time() - started,
                    "fit_seconds_this_process": fit_seconds,
                    "train_images_per_second": (
                        sorted(throughput.per_epoch)[len(throughput.per_epoch) // 2] if throughput.per_epoch else None
                    ),
                    "parameters": model.count_params(),
                    "model": model_args,
                    "splits": spec.splits,
                    "class_names": spec.class_names,
                    "config": config.to_dict(),
                    # The run's precision as chosen (--precision; float32 unless asked): it is not switched
                    # by machine, as bf16 trained the default model no faster (README, "Performance").
                    "precision": config.distribute.precision,
                    "xla": xla,
                    "xla_because": xla_because,
                    # --steps-per-execution or the largest divisor of the epoch below it (exact epochs).
                    "steps_per_execution": model.steps_per_execution,
                    "steps_per_epoch": steps_per_epoch,
                    "machine": machine_description(),
                }
            )
            write_json_atomically(os.path.join(run_dir, "summary.json"), summary)
            save_curves(os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "curves.png"))
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
        return summary


def weights_fingerprint(model):
    """sha256 of every weight's bytes: equal on all workers of a correct synchronous run."""
    import hashlib  # noqa: PLC0415

    import keras  # noqa: PLC0415

    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(keras.ops.convert_to_numpy(variable).tobytes())
    return digest.hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    add_config_flags(parser)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    quiet_logs(args.verbose)
    config = config_from_args(args)

    from keras_mixer.weights import WeightsDownloadError  # noqa: PLC0415
    from training.callbacks import NonFiniteLossError  # noqa: PLC0415
    from training.data import DatasetError  # noqa: PLC0415

    try:
        summary = train(config)
    except (ConfigError, DatasetError, ValueError, WeightsDownloadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NON_FINITE
    except WriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            f"\nInterrupted. {config.model_dir} keeps every finished epoch; run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if summary.get("already_complete"):
        print(f"{config.model_dir} already holds this finished run (--overwrite trains it again).")
    print(f"weights fingerprint: {summary['weights_fingerprint']}")
    if "test_accuracy" in summary:
        validation = summary.get("best_validation_accuracy")
        chosen_by = f"validation {validation:.4f}" if validation is not None else "no validation part: train accuracy"
        views = (
            f"mean over each image and its mirror; one view: {summary['single_view_test_accuracy']:.4f}"
            if summary.get("test_flip_average")
            else "one view"
        )
        print(
            f"test accuracy {summary['test_accuracy']:.4f} ({views}; best epoch {summary['best_epoch']}, {chosen_by}); "
            f"{summary['train_images_per_second']:.0f} train images/s; "
            f"{summary['wall_seconds']:.0f} s; summary: {os.path.join(config.model_dir, 'summary.json')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
