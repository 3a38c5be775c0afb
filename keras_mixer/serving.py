"""Client for a Mixer served by TF Serving, over REST or gRPC.

`predict` sends images to a model exported by `keras_mixer.export.export_saved_model` and returns what
the SavedModel's signature returns locally: a dict of NumPy arrays `probabilities` (N, K),
`classes` (N, k), `scores` (N, k) and `class_names` (N, k). REST needs only the standard library;
gRPC needs the `serving` extra (`pip install 'keras-mixer[serving]'`, which brings
`tensorflow-serving-api`).

Example (against a running server, see the README's "Serving" section):
    from keras_mixer import serving
    out = serving.predict(images, url="http://localhost:8501", model="fashion_mixer")
    out = serving.predict(images, url="grpc://localhost:8500", model="fashion_mixer")
    out = serving.predict([open("shoe.png", "rb").read()], url="http://localhost:8501",
                          model="fashion_mixer", signature="serving_bytes")
"""

import base64
import json
import urllib.error
import urllib.request

import numpy as np

# Input names of the exported signatures (the serving functions' argument names).
SIGNATURE_INPUTS = {"serving_default": "images", "serving_uint8": "images", "serving_bytes": "encoded_images"}
OUTPUTS = ("probabilities", "classes", "scores", "class_names")


class ServingError(RuntimeError):
    """The server answered with an error (its message is kept)."""


def _check_inputs(images, signature):
    if signature not in SIGNATURE_INPUTS:
        raise ValueError(f"Unknown signature. Expected one of {sorted(SIGNATURE_INPUTS)}. Received: {signature!r}")
    if signature == "serving_bytes":
        if isinstance(images, (bytes, str)) or not all(isinstance(item, bytes) for item in images):
            raise ValueError("signature 'serving_bytes' takes a list of encoded JPEG/PNG files (bytes objects).")
        return list(images)
    images = np.asarray(images)
    if images.ndim != 4 or not np.issubdtype(images.dtype, np.number):
        raise ValueError(
            f"Expected a batch of images (N, H, W, C) of numbers. Received: shape {images.shape}, dtype {images.dtype}"
        )
    return images.astype(np.uint8 if signature == "serving_uint8" else np.float32)


def rest_request_body(images, signature="serving_default", columns=False):
    """The JSON body of a REST `:predict` call: row ("instances") or column ("inputs") format.

    Encoded images are sent as `{"b64": ...}`, TF Serving's encoding of binary strings.

    >>> import numpy as np
    >>> rest_request_body(np.zeros((1, 1, 1, 1)))
    {'signature_name': 'serving_default', 'instances': [[[[0.0]]]]}
    >>> rest_request_body([b"\\x89PNG"], "serving_bytes", columns=True)
    {'signature_name': 'serving_bytes', 'inputs': [{'b64': 'iVBORw=='}]}
    """
    values = _check_inputs(images, signature)
    if signature == "serving_bytes":
        values = [{"b64": base64.b64encode(item).decode("ascii")} for item in values]
    else:
        values = values.tolist()
    return {"signature_name": signature, ("inputs" if columns else "instances"): values}


def parse_rest_response(payload):
    """The REST answer (row "predictions" or column "outputs") as a dict of arrays.

    >>> parse_rest_response({"predictions": [{"classes": [3, 1]}, {"classes": [0, 2]}]})["classes"].tolist()
    [[3, 1], [0, 2]]
    """
    if "error" in payload:
        raise ServingError(payload["error"])
    if "outputs" in payload:
        outputs = payload["outputs"]
        return {key: np.asarray(value) for key, value in outputs.items()}
    rows = payload["predictions"]
    return {key: np.asarray([row[key] for row in rows]) for key in rows[0]} if rows else {}


def _rest_predict(images, url, model, signature, version, columns, timeout):
    target = f"{url.rstrip('/')}/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    body = json.dumps(rest_request_body(images, signature, columns)).encode()
    request = urllib.request.Request(target, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return parse_rest_response(json.load(answer))
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        raise ServingError(f"{target} answered {error.code}: {detail}") from None
    except urllib.error.URLError as error:
        raise ServingError(f"No TF Serving REST endpoint at {url}: {error.reason}") from None


def _grpc_predict(images, url, model, signature, version, timeout):
    try:
        import grpc  # noqa: PLC0415
        import tensorflow as tf  # noqa: PLC0415
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(
            "gRPC needs tensorflow-serving-api: pip install 'keras-mixer[serving]' (or use an http:// url for REST)."
        ) from error
    values = _check_inputs(images, signature)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version:
        request.model_spec.version.value = int(version)
    request.inputs[SIGNATURE_INPUTS[signature]].CopyFrom(tf.make_tensor_proto(values))
    with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise ServingError(f"{url} answered {error.code().name}: {error.details()}") from None
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def predict(images, *, url, model, signature="serving_default", version=None, columns=False, timeout=30.0):
    """Predictions of a served Mixer for a batch of images.

    Args:
        images: (N, H, W, C) pixels in [0, 255] (any size: the server resizes), or for
            `signature="serving_bytes"` a list of encoded JPEG/PNG files.
        url: `http://host:8501` for REST, `grpc://host:8500` for gRPC.
        model: the model name TF Serving serves (its folder name under the model base path).
        signature: `serving_default` (float32), `serving_uint8` or `serving_bytes`.
        version: a specific version (default: the server's latest).
        columns: REST only: column ("inputs") instead of row ("instances") format.
        timeout: seconds.

    Returns:
        dict of NumPy arrays: probabilities (N, K), classes, scores and class_names (N, top-k).
    """
    if url.startswith("grpc://"):
        outputs = _grpc_predict(images, url, model, signature, version, timeout)
    elif url.startswith(("http://", "https://")):
        outputs = _rest_predict(images, url, model, signature, version, columns, timeout)
    else:
        raise ValueError(f"Expected a url starting with http://, https:// or grpc://. Received: {url!r}")
    if "class_names" in outputs:
        outputs["class_names"] = outputs["class_names"].astype(str)
    return outputs
