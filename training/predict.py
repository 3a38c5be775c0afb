"""Classify image files: `python -m training.predict --model MODEL IMAGE_OR_FOLDER... [--top-k 5] [--json out.json]`.

MODEL is a training run's --model-dir (its best.keras, flip-averaged if the run was evaluated so),
a `.keras` file, a SavedModel version folder (`saved_models/<name>/<version>`) or a `.tflite` file.
Folders are searched for JPEG, PNG, BMP and GIF files at any depth. Images are prepared by
`keras_mixer.preprocessing`, as in training and in the serving signatures (a SavedModel is given the
file bytes, through its `serving_bytes` signature, and prepares them itself).

Prints one line per file: the top-k class names and probabilities; a file that cannot be read is
reported on its line and the others still run. `--json` writes every result. Exit code 0 when every
file was classified, 1 when some could not be read, 2 for a bad argument (nothing classified).

As a program it turns on oneDNN's weight cache (`TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`, unless the
environment sets it): the weights never change after loading here, so TensorFlow's matmuls reorder
each one once instead of on every call.
"""

import argparse
import contextlib
import os
import sys

from training import EXIT_BAD_INPUT, EXIT_SOME_FAILED
from training.files import load_keras_file, writable_dir_problem, write_json_atomically
from training.quiet import add_verbose_flag, native_stderr_silenced, quiet_logs

FORMATS = ("run", "keras", "saved_model", "tflite")
FROZEN_WEIGHTS_FLAG = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"  # TensorFlow reads it once per process


class ModelFormatError(ValueError):
    """MODEL is none of the four formats."""


def model_format(path):
    """Which of `FORMATS` the file or folder at `path` is; `ModelFormatError` if none."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "config.json")) and os.path.exists(os.path.join(path, "best.keras")):
            return "run"
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return "saved_model"
    elif os.path.isfile(path) and path.endswith(".keras"):
        return "keras"
    elif os.path.isfile(path) and path.endswith(".tflite"):
        return "tflite"
    raise ModelFormatError(
        "--model must be a training run's --model-dir, a .keras file, a SavedModel version folder "
        f"(holding saved_model.pb) or a .tflite file. Received: {path!r}"
    )


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@contextlib.contextmanager
def _load_errors_named(path, kind):
    """Any error while loading `path` as a `kind` becomes one `ValueError` naming both (their own errors vary)."""
    try:
        yield
    except Exception as error:  # noqa: BLE001  (a cut-off or garbled file: IndexError, OSError, ValueError, ...)
        raise ValueError(f"--model {path!r} could not be loaded as a {kind}: {_first_line(error)}") from error


class Classifier:
    """One of the four formats behind one interface: `prepare(path)` then `predict(prepared batch)`."""

    def __init__(self, path):
        self.path = path
        self.format = model_format(path)
        loader = {
            "run": self._load_run,
            "keras": self._load_keras,
            "saved_model": self._load_saved_model,
            "tflite": self._load_tflite,
        }
        loader[self.format]()

    # --- loading ---------------------------------------------------------------------------

    def _use_keras_model(self, model):
        from keras_mixer.export import model_class_names  # noqa: PLC0415

        self.model = model
        self.image_size, self.num_channels = model.image_size, model.num_channels
        self.class_names = model_class_names(model)
        self._predict = self._predict_keras

    def _load_run(self):
        from training.runs import flip_average_choice  # noqa: PLC0415

        model = load_keras_file(os.path.join(self.path, "best.keras"))
        self._use_keras_model(model.flip_averaged() if flip_average_choice("auto", self.path) else model)

    def _load_keras(self):
        self._use_keras_model(load_keras_file(self.path))

    def _load_saved_model(self):
        import tensorflow as tf  # noqa: PLC0415

        from keras_mixer.export import read_class_names  # noqa: PLC0415

        with _load_errors_named(self.path, "SavedModel"):
            self.model = tf.saved_model.load(self.path).signatures["serving_bytes"]
        self.class_names = read_class_names(os.path.join(self.path, "assets"))
        self._predict = self._predict_saved_model

    def _load_tflite(self):
        from keras_mixer.export import read_class_names  # noqa: PLC0415
        from keras_mixer.lite import TFLiteClassifier  # noqa: PLC0415

        # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." when the interpreter is made.
        with _load_errors_named(self.path, "TFLite file"), native_stderr_silenced():
            self.model = TFLiteClassifier(self.path)
        _, height, width, self.num_channels = self.model.input_shape
        self.image_size = (height, width)
        self.class_names = read_class_names(os.path.dirname(os.path.abspath(self.path)))
        self._predict = self.model.predict

    # --- classifying -----------------------------------------------------------------------

    def prepare(self, path):
        """The file as the model's input (pixels, or bytes for a SavedModel); raises if unreadable."""
        import tensorflow as tf  # noqa: PLC0415

        from keras_mixer.preprocessing import decode_image, load_image  # noqa: PLC0415

        with native_stderr_silenced():  # a corrupt file is reported in the results, not by libjpeg
            if self.format == "saved_model":
                encoded = tf.io.read_file(path)
                decode_image(encoded)  # raises here, per file, rather than failing the whole batch
                return encoded.numpy()
            return load_image(path, self.image_size, self.num_channels).numpy()

    def predict(self, prepared):
        """Class probabilities (N, K) of a list of `prepare` results."""
        import numpy as np  # noqa: PLC0415

        return np.asarray(self._predict(prepared), np.float64)

    def _predict_keras(self, images):
        import keras  # noqa: PLC0415
        import numpy as np  # noqa: PLC0415

        # The model's compiled predict step (graph mode, as TF Serving runs it), not an eager call.
        outputs = self.model.predict_on_batch(np.stack(images))
        if self.model.classifier_activation != "softmax":
            outputs = keras.ops.softmax(outputs)
        return keras.ops.convert_to_numpy(outputs)

    def _predict_saved_model(self, encoded_images):
        import tensorflow as tf  # noqa: PLC0415

        return self.model(encoded_images=tf.constant(encoded_images))["probabilities"].numpy()

    def name_of(self, index):
        return self.class_names[index] if self.class_names else str(index)


def image_files(inputs):
    """The files to classify: each named file, and the image files found in each named folder
    (the same search as a training folder's, `training.folders.image_files_below`)."""
    from training.folders import image_files_below  # noqa: PLC0415

    files = []
    for item in inputs:
        if os.path.isdir(item):
            files += [os.path.join(item, path) for path in image_files_below(item)]
        else:
            files.append(item)
    return files


def _reason(error):
    """One line for a file that could not be classified."""
    if isinstance(error, FileNotFoundError) or "NotFound" in type(error).__name__:
        return "no such file"
    text = getattr(error, "message", None) or str(error)
    return "not a readable JPEG, PNG, BMP or GIF image" if "decode" in text.lower() or "image" in text.lower() else text


def classify(classifier, files, top_k, batch_size=32, progress=False):
    """[{"file", "predictions": [{"class", "name", "probability"}]} or {"file", "error"}] in file order."""
    import numpy as np  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    results = [None] * len(files)
    pending = []

    def flush():
        if not pending:
            return
        probabilities = classifier.predict([prepared for _, prepared in pending])
        for (index, _), row in zip(pending, probabilities):
            best = np.argsort(-row, kind="stable")[:top_k]
            results[index] = {
                "file": files[index],
                "predictions": [
                    {"class": int(c), "name": classifier.name_of(int(c)), "probability": float(row[c])} for c in best
                ],
            }
        pending.clear()

    for index, path in enumerate(tqdm(files, desc="classifying", unit="image", disable=not progress, leave=False)):
        try:
            pending.append((index, classifier.prepare(path)))
        except Exception as error:  # noqa: BLE001  (any unreadable file is reported on its line)
            results[index] = {"file": path, "error": _reason(error)}
        if len(pending) == batch_size:
            flush()
    flush()
    return results


def format_table(results):
    """One line per file: the file, then `name probability` for each of the top-k classes."""
    width = max((len(r["file"]) for r in results), default=4)
    lines = []
    for result in results:
        if "error" in result:
            lines.append(f"{result['file']:<{width}}  error: {result['error']}")
        else:
            cells = "  ".join(f"{p['name']} {p['probability']:.3f}" for p in result["predictions"])
            lines.append(f"{result['file']:<{width}}  {cells}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="a run's --model-dir, a .keras file, a SavedModel version folder or a .tflite"
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and folders of images")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image")
    parser.add_argument("--json", default=None, help="also write every result to this JSON file")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    quiet_logs(args.verbose)

    problems = []
    if args.top_k < 1:
        problems.append(f"--top-k must be a positive integer. Received: {args.top_k}")
    if args.batch_size < 1:
        problems.append(f"--batch-size must be a positive integer. Received: {args.batch_size}")
    try:
        model_format(args.model)
    except ModelFormatError as error:
        problems.append(str(error))
    files = image_files(args.inputs)
    if not files:
        problems.append(f"no image files (JPEG, PNG, BMP, GIF) found in {args.inputs}")
    if args.json and os.path.isdir(args.json):
        problems.append(f"--json must be a file path; {args.json!r} is a folder")
    elif args.json:
        problem = writable_dir_problem(os.path.dirname(os.path.abspath(args.json)), "--json's folder")
        if problem:
            problems.append(problem)
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT

    try:
        classifier = Classifier(args.model)
    except (ValueError, OSError) as error:  # each loader's error names the file and what is wrong with it
        print(f"error: {_first_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    top_k = min(args.top_k, len(classifier.class_names) if classifier.class_names else args.top_k)
    progress = len(files) > 1 and sys.stderr.isatty()
    results = classify(classifier, files, top_k, args.batch_size, progress=progress)
    print(format_table(results))
    failed = sum("error" in r for r in results)
    if args.json:
        report = {
            "model": args.model,
            "format": classifier.format,
            "top_k": top_k,
            "failed": failed,
            "results": results,
        }
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            write_json_atomically(args.json, report)
        except OSError as error:  # WriteError included
            print(f"error: {error}", file=sys.stderr)
            return EXIT_SOME_FAILED
    if failed:
        print(f"{failed} of {len(files)} file(s) could not be classified.", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def weight_cache_helps(cpu_flags):
    """Whether oneDNN's weight cache (`FROZEN_WEIGHTS_FLAG`) was measured faster on a CPU with these flags.

    With AVX-512 it was (S/16, batch 32: 1.05-1.22x on the AMD EPYC); on the AMD EPYC with AVX2 only it
    was slower (0.79x the Keras graph, 0.93x the SavedModel, 2026-11-27; README "Performance").

    >>> weight_cache_helps(["avx512f", "avx2"]), weight_cache_helps(["avx2"])
    (True, False)
    """
    return "avx512f" in cpu_flags


if __name__ == "__main__":
    # This program never changes a weight once the model is loaded, so TensorFlow's oneDNN matmuls
    # may reorder each weight once and keep it (`benchmarks/frozen_weights_ab.py` measures the gain),
    # where that was measured faster. Set here, not in `main`, which tests call inside a process that
    # trains models.
    from keras_mixer.cpu import cpu_model_and_flags

    if weight_cache_helps(cpu_model_and_flags()[1]):
        os.environ.setdefault(FROZEN_WEIGHTS_FLAG, "1")
    sys.exit(main())
