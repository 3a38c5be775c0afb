"""`MLPMixer`: the whole network as a functional `keras.Model` subclass.

The constructor has three sections: validate the arguments (`arguments.py`); build the layers and wire
the graph ending in `super().__init__(inputs, outputs)`; keep every argument for `get_config`.
Presets (the paper's seven sizes) live in `presets.py`; official weights in `checkpoints.py`.
"""

import contextlib
import dataclasses
import inspect
import weakref

import keras

from keras_mixer.arguments import (
    check_keyword_arguments,
    drop_path_rates,
    validate_mixer_arguments,
)
from keras_mixer.array_input import (
    array_adapter_without_autotuning,
    array_dataset,
    check_batch_size,
    check_image_batch,
    is_in_memory_batch,
    predict_batches,
    predicts_batches_itself,
)
from keras_mixer.checkpoints import load_official_weights, read_official_checkpoint, resized_config
from keras_mixer.constant_kernels import (
    constant_kernels,
    kernel_snapshot,
    kernels_unchanged,
    steps_have_constant_kernels,
)
from keras_mixer.flip_average import AverageMirrorPairs, MirrorImages
from keras_mixer.fused_norm import portable_graph
from keras_mixer.layers import (
    PACKAGE,
    LayerNormalization,
    MixerBlock,
    PatchEmbedding,
    _pair,
    mixed_precision_safe_dtype,
)
from keras_mixer.predict_trace import with_any_batch_size
from keras_mixer.presets import preset_config
from keras_mixer.weights import imagenet1k_class_names, resolve_weights


@dataclasses.dataclass
class _ConstantKernelSteps:
    """A model's MLP kernels as its steps were traced with them as constants (`steps_have_constant_kernels`)."""

    values: dict  # {id(kernel): its value then, in its compute dtype}: `kernel_snapshot`, for `constant_kernels`
    unchanged: object  # a function of no arguments: whether the kernels still hold `values`
    steps: dict = dataclasses.field(default_factory=dict)  # {"predict_function" or "test_function": the step}


# {model: its _ConstantKernelSteps}, outside Keras' attribute tracking.
_CONSTANT_KERNEL_STEPS = weakref.WeakKeyDictionary()


@keras.saving.register_keras_serializable(package=PACKAGE)
class MLPMixer(keras.Model):
    """The MLP-Mixer image classifier (Tolstikhin et al., NeurIPS 2021), paper-exact.

    stem (patch embedding) -> `num_blocks` x MixerBlock -> pre-head LayerNorm -> pooling over
    tokens -> head. Initialisation follows the official model: the head kernel and bias are
    zero, other kernels lecun-normal, biases zero; stochastic depth grows linearly over blocks
    from 0 to `drop_path_rate`. Under mixed precision the norms and the head run in float32
    and the output is float32.

    Args:
        num_blocks, hidden_dim, tokens_mlp_dim, channels_mlp_dim: the size of the network
            (paper Table 1: blocks, C, D_S, D_C). Required.
        num_classes: outputs of the head (used when `include_top=True`). Default 1000.
        image_size: int or (height, width) of the input. Default 224.
        patch_size: int or (height, width) of a patch; must divide `image_size`. Default 16.
        num_channels: channels of the input image. Default 3.
        dropout_rate: dropout inside every MLP (after GELU and after the output). Default 0.
        drop_path_rate: stochastic-depth rate of the last block. Default 0.
        include_top: add the classification head. Default True.
        pooling: "avg" (official) or "max" over tokens; with `include_top=False` also None,
            which returns the normalised token features (N, S, C).
        include_preprocessing: the model takes pixels in [0, 255] and maps them to [-1, 1]
            (what official checkpoints expect). False: the input is already normalised.
        classifier_activation: None (logits) or "softmax".
        gelu_approximate: tanh-approximate GELU, as the official model (timm uses exact erf).
        activation: the MLPs' nonlinearity, "gelu" (the paper's) or "relu" (not the paper's
            model; ~1.4x faster training on a CPU, where TensorFlow fuses it into the matmul).
        layer_norm_epsilon: 1e-6, as the official model.
        class_names: None, or a name per output class; kept in the config (and so in `.keras`
            files and exports), used by `training.predict` and the serving signatures.
        flip_average: test-time augmentation, not the paper's model: the output is the mean of
            the outputs for each image and its left-right mirror image (twice the compute).
            `model.flip_averaged()` makes such a copy of a trained model. Default False.
        name: the model's name.

    Example:
    >>> import numpy as np
    >>> model = MLPMixer(num_classes=10, image_size=28, patch_size=7, num_channels=1,
    ...                  num_blocks=2, hidden_dim=32, tokens_mlp_dim=16, channels_mlp_dim=64)
    >>> model.predict(np.zeros((2, 28, 28, 1)), verbose=0).shape
    (2, 10)
    """

    def __init__(
        self,
        *,
        num_blocks,
        hidden_dim,
        tokens_mlp_dim,
        channels_mlp_dim,
        num_classes=1000,
        image_size=224,
        patch_size=16,
        num_channels=3,
        dropout_rate=0.0,
        drop_path_rate=0.0,
        include_top=True,
        pooling="avg",
        include_preprocessing=True,
        classifier_activation=None,
        gelu_approximate=True,
        layer_norm_epsilon=1e-6,
        activation="gelu",
        flip_average=False,
        class_names=None,
        name="mlp_mixer",
        **kwargs,
    ):
        # --- 1. validate -------------------------------------------------------------------
        check_keyword_arguments(type(self), kwargs)
        # Every constructor argument but `name`, by name: validated here, kept for get_config below.
        given = dict(locals())
        arguments = {key: given[key] for key in CONSTRUCTOR_ARGUMENTS}
        image_size, patch_size = validate_mixer_arguments(arguments)

        # --- 2. build the graph --------------------------------------------------------------
        safe_dtype = mixed_precision_safe_dtype(None)
        inputs = keras.Input(shape=(*image_size, num_channels), name="images")
        x = inputs
        if flip_average:
            x = MirrorImages(name="mirror_images")(x)
        if include_preprocessing:
            # Pixels [0, 255] -> [-1, 1]: (x - 127.5) / 127.5.
            x = keras.layers.Rescaling(scale=1 / 127.5, offset=-1.0, name="preprocessing")(x)
        x = PatchEmbedding(hidden_dim, patch_size, name="stem")(x)
        for index, rate in enumerate(drop_path_rates(drop_path_rate, num_blocks)):
            x = MixerBlock(
                tokens_mlp_dim,
                channels_mlp_dim,
                dropout_rate=dropout_rate,
                drop_path_rate=rate,
                gelu_approximate=gelu_approximate,
                layer_norm_epsilon=layer_norm_epsilon,
                activation=activation,
                name=f"MixerBlock_{index}",
            )(x)
        x = LayerNormalization(epsilon=layer_norm_epsilon, name="pre_head_layer_norm", dtype=safe_dtype)(x)
        if pooling == "avg":
            x = keras.layers.GlobalAveragePooling1D(name="pooling", dtype=safe_dtype)(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling1D(name="pooling", dtype=safe_dtype)(x)
        if include_top:
            x = keras.layers.Dense(
                num_classes,
                kernel_initializer="zeros",  # official: zero head kernel and bias
                bias_initializer="zeros",
                activation=classifier_activation,
                name="head",
                dtype=safe_dtype,
            )(x)
        if flip_average:
            x = AverageMirrorPairs(name="average_mirror_pairs", dtype=safe_dtype)(x)
        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)

        # --- 3. keep every argument ------------------------------------------------------------
        arguments.update(image_size=image_size, patch_size=patch_size)
        if class_names is not None:
            arguments["class_names"] = list(class_names)
        for key, value in arguments.items():
            setattr(self, key, value)

    @property
    def grid_size(self):
        """(rows, columns) of the token grid: image size // patch size."""
        return tuple(s // p for s, p in zip(self.image_size, self.patch_size))

    @property
    def num_tokens(self):
        """S, the number of tokens (patches)."""
        rows, cols = self.grid_size
        return rows * cols

    @property
    def mixer_blocks(self):
        """The MixerBlock layers, in order."""
        return [self.get_layer(f"MixerBlock_{i}") for i in range(self.num_blocks)]

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            **{key: getattr(self, key) for key in CONSTRUCTOR_ARGUMENTS},
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("image_size", "patch_size"):
            config[key] = _pair(config[key])
        return cls(**config)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`keras.Model.predict`, at the speed of a direct call on NumPy input; empty batches work.

        In bfloat16 on TensorFlow (`mixed_bfloat16`) the MLP kernels are traced as constants, as in the bfloat16
        SavedModel (`keras_mixer.constant_kernels.steps_have_constant_kernels`), and traced again after they
        change; a bfloat16 copy of them is kept to tell.

        On the TensorFlow backend an array or tensor is not fed through `tf.data`: each batch is sliced and
        converted on the calling thread (`keras_mixer.array_input.predict_batches`; tf.data's pipeline cost
        time on every batch and, with autotuning, often left the forward pass on one core). With several
        replicas it goes through a dataset without autotuning.
        An array or tensor of the wrong shape or of no numbers, or a `batch_size` that is not a positive integer,
        is refused with one `ValueError` naming what was expected and what came (`keras_mixer.array_input`).
        An empty batch of images gives an empty (0, ...) result (Keras' predict loop runs no step on
        zero images and fails; the model itself handles them).
        """
        self._check_array_input(x, batch_size)
        if is_in_memory_batch(x):
            if x.shape[0] == 0:
                return keras.ops.convert_to_numpy(self(x, training=False))
        with self._kernels_as_constants_in("predict_function"):
            if predicts_batches_itself(self, x, steps):
                return predict_batches(self, x, batch_size=batch_size, verbose=verbose, callbacks=callbacks)
            dataset = array_dataset(x, batch_size)
            if dataset is not None:
                x, batch_size = dataset, None
            return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):  # fmt: skip
        """`keras.Model.fit`; on the TensorFlow backend, arrays or tensors (and `validation_data` given as arrays)
        go through Keras' own array adapter with `tf.data`'s autotuning off
        (`keras_mixer.array_input.array_adapter_without_autotuning`), as in `evaluate`. Batches, shuffling and
        weights are Keras' own. With `validation_split` or `steps_per_epoch`, Keras' loop takes the arrays as usual.
        """
        if not validation_split and steps_per_epoch is None:
            self._check_array_input(x, batch_size)
            adapter = array_adapter_without_autotuning(x, y, sample_weight, batch_size, shuffle, class_weight)
            if adapter is not None:
                x, y, sample_weight, class_weight = adapter, None, None, None
            if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3) and not validation_steps:
                validation_batch_size = validation_batch_size or batch_size
                validation = array_adapter_without_autotuning(*validation_data, batch_size=validation_batch_size)
                validation_data = validation_data if validation is None else validation
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                           validation_split=validation_split, validation_data=validation_data, shuffle=shuffle,
                           class_weight=class_weight, sample_weight=sample_weight, initial_epoch=initial_epoch,
                           steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                           validation_batch_size=validation_batch_size, validation_freq=validation_freq)  # fmt: skip

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False, **kwargs):  # fmt: skip
        """`keras.Model.evaluate`; in bfloat16 on TensorFlow with the MLP kernels traced as constants, as `predict`
        (a probe on the 2-core Sapphire Rapids, S/16, 64 images in batches of 32: 1.68x Keras' own `evaluate`,
        6 of 6 alternating rounds, 2026-12-07).

        `fit`'s validation keeps them as variables: the kernels change every epoch, and each change would
        trace the step again.

        On the TensorFlow backend, images, labels and sample weights given as arrays or tensors reach Keras' loop
        through Keras' own array adapter with `tf.data`'s autotuning off
        (`keras_mixer.array_input.array_adapter_without_autotuning`), as in `fit`: autotuning often left the forward
        pass on one core. The results are the same.
        Images of the wrong shape or of no numbers, or a `batch_size` that is not a positive integer, are refused
        with one `ValueError`, as in `predict`.
        """
        during_fit = kwargs.get("_use_cached_eval_dataset", False)
        if not during_fit:  # fit's validation reads the data fit was given
            self._check_array_input(x, batch_size)
            adapter = None if steps is not None else array_adapter_without_autotuning(x, y, sample_weight, batch_size)
            if adapter is not None:
                x, y, sample_weight = adapter, None, None
        with contextlib.nullcontext() if during_fit else self._kernels_as_constants_in("test_function"):
            return super().evaluate(x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                                    steps=steps, callbacks=callbacks, return_dict=return_dict, **kwargs)  # fmt: skip

    def _check_array_input(self, x, batch_size):
        """One `ValueError` for a `batch_size` that is not a positive integer or None, or images given as an array
        or tensor of the wrong shape or of no numbers (`keras_mixer.array_input`)."""
        check_batch_size(batch_size)
        if is_in_memory_batch(x):
            check_image_batch(x, self.input_shape[1:])

    @contextlib.contextmanager
    def _kernels_as_constants_in(self, step):
        """Where `steps_have_constant_kernels(self)` (bfloat16 on TensorFlow): Keras' `step` ("predict_function" or
        "test_function") traced with the MLP kernels as constants, which oneDNN reorders once; elsewhere nothing
        changes. Each call first checks (one compiled call) that the kernels still hold what the traces hold; when
        they changed (training between two calls) every step is traced again, with their new values."""
        if not steps_have_constant_kernels(self):
            yield
            return
        traced = _CONSTANT_KERNEL_STEPS.get(self)
        if traced is None or not traced.unchanged():
            snapshot = kernel_snapshot(self)  # one copy, for the traces and the check
            traced = _CONSTANT_KERNEL_STEPS[self] = _ConstantKernelSteps(snapshot, kernels_unchanged(self, snapshot))
        if getattr(self, step) is not traced.steps.get(step):
            setattr(self, step, None)  # traced with other kernels, or with variables
        with constant_kernels(self, traced.values):  # any trace in this call, a new batch shape's too
            yield
        traced.steps[step] = getattr(self, step)

    def make_predict_function(self, force=False):
        """Keras' predict step, whose first call traces it with the batch size unknown, on TensorFlow.

        One trace serves every batch size, and its large norms run as oneDNN's layer norm
        (`keras_mixer.predict_trace`).
        """
        if self.predict_function is not None and not force:
            return self.predict_function
        super().make_predict_function(force)  # sets self.predict_function (and returns it in some Keras versions)
        self.predict_function = with_any_batch_size(self.predict_function)
        return self.predict_function

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """`keras.Model.export`, traced inside `portable_graph()`: the artefact holds no XLA-compiled
        functions, so TF Serving (without `--xla_cpu_compilation_enabled`) and converters run it."""
        with portable_graph():
            return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)

    def flip_averaged(self):
        """A copy of this model, same weights, whose output averages each image with its mirror image.

        Test-time augmentation for a model trained with random horizontal flips (see
        `keras_mixer.flip_average`); the copy costs twice the compute per image.

        Example:
        >>> import numpy as np
        >>> model = MLPMixer(num_classes=10, image_size=28, patch_size=7, num_channels=1,
        ...                  num_blocks=1, hidden_dim=16, tokens_mlp_dim=8, channels_mlp_dim=32)
        >>> averaged = model.flip_averaged()
        >>> averaged.flip_average, averaged.predict(np.zeros((3, 28, 28, 1)), verbose=0).shape
        (True, (3, 10))
        """
        twin = type(self).from_config({**self.get_config(), "flip_average": True})
        twin.set_weights(self.get_weights())
        return twin

    @classmethod
    def from_preset(cls, preset, weights=None, token_mixing_resize="appendix_c", **overrides):
        """Build one of the paper's seven configurations, optionally with official weights.

        Args:
            preset: one of `keras_mixer.PRESETS` ("mixer_s32", ..., "mixer_h14").
            weights: None (random init); the name of a published set for this preset
                ("imagenet1k", "imagenet21k", "sam", "gsam"; see `keras_mixer.PUBLISHED_WEIGHTS`),
                downloaded once into the Keras cache; or the path of an official .npz file.
                The head loads when `num_classes` is the file's (the set's class count by
                default), and a 1000-class ImageNet head gets the ImageNet class names.
            token_mixing_resize: how token-mixing weights follow an `image_size` other than the
                checkpoint's 224 px. "appendix_c" (default, the paper's scheme): the size must be
                an integer multiple K, and `tokens_mlp_dim` becomes K² times the preset's
                (block-diagonal copies). "interpolate" (not the paper's scheme): any size; the
                token-mixing weights are resampled as 2-D grids and `tokens_mlp_dim` is kept.
            **overrides: any constructor argument (num_classes, image_size, ...).

        Example:
        >>> model = MLPMixer.from_preset("mixer_s32", num_classes=10, image_size=64)
        >>> model.num_tokens
        4
        """

        check_keyword_arguments(cls, overrides)  # before any download
        config = {**preset_config(preset), **overrides}
        if weights is None:
            return cls(**config)
        path, row = resolve_weights(preset, weights)
        if row is not None:
            config["num_classes"] = overrides.get("num_classes", row["num_classes"])
            if config["num_classes"] == row["num_classes"] == 1000:
                config.setdefault("class_names", imagenet1k_class_names())
        params = read_official_checkpoint(path)
        fitted = resized_config(config, params, token_mixing_resize)
        if "num_channels" in overrides and fitted["num_channels"] != overrides["num_channels"]:
            raise ValueError(
                f"The checkpoint's stem takes {fitted['num_channels']}-channel images. "
                f"Received: num_channels={overrides['num_channels']}"
            )
        model = cls(**fitted)
        load_official_weights(model, params, allow_resize=True, token_mixing_resize=token_mixing_resize)
        return model


# The constructor's own arguments; its signature is the one list of them. validate_mixer_arguments
# checks each, __init__ keeps each as an attribute, get_config returns each.
CONSTRUCTOR_ARGUMENTS = tuple(
    key for key in inspect.signature(MLPMixer.__init__).parameters if key not in ("self", "name", "kwargs")
)
