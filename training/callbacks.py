"""Keras callbacks of the trainer: atomic backups and best/last checkpoints, a loud NaN stop, throughput."""

import json
import math
import os
import shutil
import signal
import threading
import time

import keras

from training.files import WriteError, atomic_path, write_json_atomically, write_text_atomically


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise at the first non-finite loss, before any checkpoint of the broken weights is written.

    Keras' `TerminateOnNaN` only sets `stop_training`, after which epoch-end callbacks still
    save the NaN weights; raising stops everything at once and the CLI turns it into a message.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"Training stopped: the loss became {float(loss)} at step {batch}. Lower --learning-rate, "
                "keep --clip-global-norm on, or use --precision float32. Checkpoints hold the last good epoch."
            )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`, acted on at the next step boundary (never in the middle of a save)."""


class StopOnInterrupt(keras.callbacks.Callback):
    """Ctrl-C stops training at the next step's end instead of wherever Python happens to be.

    A SIGINT that lands inside a checkpoint or backup write would abort it halfway (and some
    writers swallow it); here it only sets a flag, and the next batch end raises
    `TrainingInterrupted`, after the writes in flight have finished. A second Ctrl-C interrupts
    at once. Outside `fit` the usual handler is back.
    """

    def __init__(self):
        super().__init__()
        self.requested = False
        self._previous = None

    def _request(self, signum, frame):
        if self.requested:  # a second Ctrl-C: the user means now
            raise TrainingInterrupted()
        self.requested = True

    def on_train_begin(self, logs=None):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._request)

    def on_train_batch_end(self, batch, logs=None):
        if self.requested:
            raise TrainingInterrupted()

    def restore(self):
        """Put the previous SIGINT handler back (also when `fit` ends by an exception)."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_train_end(self, logs=None):
        self.restore()


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Save `last.keras` every epoch and `best.keras` when `monitor` improves, each atomically.

    Writes go to a temporary file in the same folder, then `os.replace`, so a kill at any point
    leaves the previous file intact. Given the run's `SwapEMAWeights` callback, the files hold
    the averaged weights.
    """

    def __init__(self, folder, monitor="val_accuracy", mode="max", enabled=True, ema=None):
        super().__init__()
        self.ema = ema
        self.folder = folder
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = -math.inf
        self.enabled = enabled

    def on_train_begin(self, logs=None):
        # A resumed run keeps the best value of the run it continues.
        record = os.path.join(self.folder, "best.json")
        if os.path.exists(record):
            with open(record) as file:
                self.best = self.sign * json.load(file)["value"]

    def _save(self, name):
        if self.ema:
            self.ema.on_test_begin()  # swap the average in, as for validation
        try:
            with atomic_path(os.path.join(self.folder, name)) as temporary:
                self.model.save(temporary)
        finally:
            if self.ema:
                self.ema.on_test_end()

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled:
            return
        self._save("last.keras")
        value = (logs or {}).get(self.monitor)
        if value is None:
            value = (logs or {}).get(self.monitor.removeprefix("val_"))
        if value is not None and self.sign * value > self.best:
            self.best = self.sign * value
            self._save("best.keras")
            record = {"monitor": self.monitor, "value": float(value), "epoch": epoch + 1}
            write_json_atomically(os.path.join(self.folder, "best.json"), record)


class Throughput(keras.callbacks.Callback):
    """Training images per second of each epoch (train steps only, validation excluded)."""

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.per_epoch = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._end = None

    def on_train_batch_end(self, batch, logs=None):
        self._end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self._end is not None:
            self.per_epoch.append(self.images_per_epoch / (self._end - self._start))
            if logs is not None:
                logs["images_per_second"] = self.per_epoch[-1]


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup survives SIGKILL at any instant.

    Keras writes `latest.weights.h5` in place, so a kill during the write leaves a corrupt file
    and the restart fails. Here every backup (weights + epoch metadata together) goes into a
    fresh `state-*` folder, and a one-line pointer file is swapped in with `os.replace` only
    once the folder is complete; restarts read whatever the pointer names.
    """

    POINTER = "current"

    def _point_at(self, state_dir):
        self._weights_path = os.path.join(state_dir, "latest.weights.h5")
        self._training_metadata_path = os.path.join(state_dir, "training_metadata.json")
        self._prev_weights_path = self._weights_path + ".bkp"  # unused: states are never half-written
        self._prev_training_metadata_path = self._training_metadata_path + ".bkp"

    def completed_epochs(self):
        """Epochs the backup holds (0 without one): a resumed run starts after them."""
        pointer = os.path.join(self.backup_dir, self.POINTER)
        if not os.path.exists(pointer):
            return 0
        with open(pointer) as file:
            metadata = os.path.join(self.backup_dir, file.read().strip(), "training_metadata.json")
        with open(metadata) as file:
            return int(json.load(file)["epoch"])

    def _load_model(self):
        pointer = os.path.join(self.backup_dir, self.POINTER)
        if os.path.exists(pointer):
            with open(pointer) as file:
                self._point_at(os.path.join(self.backup_dir, file.read().strip()))
        super()._load_model()

    def _save_model(self):
        name = f"state-{self._current_epoch:05d}-{self._last_batch_seen:07d}"
        final = os.path.join(self.backup_dir, name)
        partial = final + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        try:
            os.makedirs(partial)
            self.model.save_weights(os.path.join(partial, "latest.weights.h5"))
            with open(os.path.join(partial, "training_metadata.json"), "w") as file:
                json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, file)
        except OSError as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise WriteError(
                f"Could not write the backup {partial}: {error.strerror or error}. The previous backup is intact; "
                "free some space and run the same command again to resume."
            ) from error
        os.replace(partial, final)
        write_text_atomically(os.path.join(self.backup_dir, self.POINTER), name)
        self._point_at(final)
        for other in os.listdir(self.backup_dir):
            if other.startswith("state-") and other != name:
                shutil.rmtree(os.path.join(self.backup_dir, other), ignore_errors=True)
