"""Run exported TFLite Mixers on the maintained LiteRT interpreter (`ai-edge-litert`).

`tf.lite.Interpreter` is deprecated in the TensorFlow this package targets, so files are run with
`ai_edge_litert.interpreter.Interpreter` (the same runtime phones use, XNNPACK included).

Example:
    classifier = TFLiteClassifier("saved_models/fashion_mixer/tflite/1/int8.tflite")
    probabilities = classifier.predict(images)   # (N, H, W, C) pixels in [0, 255] -> (N, K)
"""

import numpy as np


class TFLiteClassifier:
    """A TFLite image classifier written by `keras_mixer.export.export_tflite`, run one image at a time.

    Quantised (int8) inputs and outputs are handled with the tensors' own scale and zero point, so
    `predict` always takes float pixels and returns float probabilities.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads (default: the runtime's choice).
    """

    def __init__(self, path, num_threads=None):
        self.path = str(path)
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

        self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]

    @property
    def input_shape(self):
        """(1, H, W, C): the one-image input the file was converted with."""
        return tuple(int(d) for d in self._input["shape"])

    def _quantise(self, image):
        scale, zero_point = self._input["quantization"]
        if self._input["dtype"] == np.float32 or not scale:
            return image.astype(self._input["dtype"])
        info = np.iinfo(self._input["dtype"])
        return np.clip(np.round(image / scale + zero_point), info.min, info.max).astype(self._input["dtype"])

    def _dequantise(self, values):
        scale, zero_point = self._output["quantization"]
        if self._output["dtype"] == np.float32 or not scale:
            return values.astype(np.float32)
        return (values.astype(np.float32) - zero_point) * scale

    def predict(self, images):
        """Class probabilities (N, K) for float pixel images (N, H, W, C) in [0, 255]."""
        images = np.asarray(images, np.float32)
        expected = self.input_shape[1:]
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"Expected images of shape (N, {', '.join(map(str, expected))}). Received: {images.shape}")
        outputs = []
        for image in images:
            self.interpreter.set_tensor(self._input["index"], self._quantise(image[None]))
            self.interpreter.invoke()
            outputs.append(self._dequantise(self.interpreter.get_tensor(self._output["index"]))[0])
        return np.stack(outputs) if outputs else np.zeros((0, int(self._output["shape"][-1])), np.float32)
