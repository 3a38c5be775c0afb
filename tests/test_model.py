import keras
import numpy as np
import pytest

from keras_mixer import MLPMixer
from keras_mixer.arguments import drop_path_rates
from keras_mixer.layers import MixerBlock
from tests.model_checks import random_images, run_model_checks

TINY = dict(
    num_blocks=2, hidden_dim=16, tokens_mlp_dim=8, channels_mlp_dim=32, image_size=16, patch_size=4, num_classes=5
)


def _images(n=4, size=16, channels=3, seed=0):
    return random_images(n, size, channels, seed)


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.standard_normal(variable.shape).astype("float32") * 0.2)
    return model


def test_issue_example_builds_and_predicts():
    model = MLPMixer(
        num_classes=10,
        image_size=32,
        patch_size=4,
        num_blocks=8,
        hidden_dim=256,
        tokens_mlp_dim=128,
        channels_mlp_dim=1024,
    )
    assert isinstance(model, MLPMixer) and isinstance(model, keras.Model)
    assert model.num_tokens == 64
    assert model.predict(_images(2, 32), verbose=0).shape == (2, 10)


def test_shared_model_checks_pass_with_dropout_and_drop_path():
    model = _randomize(MLPMixer(**TINY, dropout_rate=0.1, drop_path_rate=0.1))
    run_model_checks(model, _images(), labels=np.array([0, 1, 2, 3]))


def test_shared_model_checks_pass_with_relu_mlps():
    model = _randomize(MLPMixer(**TINY, activation="relu"))
    run_model_checks(model, _images(), labels=np.array([0, 1, 2, 3]))
    mlps = [mlp for block in model.mixer_blocks for mlp in (block.token_mixing, block.channel_mixing)]
    assert [mlp.activation for mlp in mlps] == ["relu"] * 2 * model.num_blocks


def test_shared_model_checks_grayscale_rectangular_softmax():
    model = _randomize(
        MLPMixer(
            **{**TINY, "image_size": (16, 8), "patch_size": (4, 2)}, num_channels=1, classifier_activation="softmax"
        )
    )
    out = run_model_checks(model, _images(4, 16, 1)[:, :, :8])
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert model.grid_size == (4, 4)


@pytest.mark.parametrize("pooling, shape", [(None, (4, 16, 16)), ("avg", (4, 16)), ("max", (4, 16))])
def test_include_top_false_returns_features(pooling, shape):
    model = _randomize(MLPMixer(**TINY, include_top=False, pooling=pooling))
    assert "head" not in [layer.name for layer in model.layers]
    features = run_model_checks(model, _images())
    assert features.shape == shape


def test_avg_pool_is_the_mean_of_token_features():
    tokens_model = _randomize(MLPMixer(**TINY, include_top=False, pooling=None))
    pooled_model = MLPMixer(**TINY, include_top=False, pooling="avg")
    pooled_model.set_weights(tokens_model.get_weights())
    images = _images()
    np.testing.assert_allclose(
        pooled_model.predict(images, verbose=0),
        tokens_model.predict(images, verbose=0).mean(axis=1),
        rtol=1e-5,
        atol=1e-5,
    )


def test_include_preprocessing_maps_pixels_to_minus_one_one():
    with_pre = _randomize(MLPMixer(**TINY))
    without = MLPMixer(**TINY, include_preprocessing=False)
    without.set_weights(with_pre.get_weights())
    images = _images()
    np.testing.assert_allclose(
        with_pre.predict(images, verbose=0), without.predict((images - 127.5) / 127.5, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_official_initialisation_zero_head_and_linear_drop_path():
    model = MLPMixer(**{**TINY, "num_blocks": 4}, drop_path_rate=0.3)
    head = model.get_layer("head")
    assert not np.any(keras.ops.convert_to_numpy(head.kernel)) and not np.any(keras.ops.convert_to_numpy(head.bias))
    np.testing.assert_allclose([b.drop_path.rate for b in model.mixer_blocks], [0.0, 0.1, 0.2, 0.3])
    assert drop_path_rates(0.5, 1) == [0.0]
    stem_kernel = keras.ops.convert_to_numpy(model.get_layer("stem").kernel)
    assert abs(stem_kernel.std() - (4 * 4 * 3) ** -0.5) < 0.03  # lecun normal: std 1/sqrt(fan_in)


def test_layer_names_mirror_the_official_checkpoint():
    names = [layer.name for layer in MLPMixer(**TINY).layers]
    assert names == [
        "images",
        "preprocessing",
        "stem",
        "MixerBlock_0",
        "MixerBlock_1",
        "pre_head_layer_norm",
        "pooling",
        "head",
    ]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_norms_and_head_in_float32(policy):
    reference = _randomize(MLPMixer(**TINY))
    images = _images(8)
    expected = reference.predict(images, verbose=0)
    keras.config.set_dtype_policy(policy)
    model = MLPMixer(**TINY)
    model.set_weights(reference.get_weights())
    out = model(images)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    for name in ("pre_head_layer_norm", "head"):
        assert model.get_layer(name).compute_dtype == "float32"
    block = model.mixer_blocks[0]
    assert block.layer_norm_0.compute_dtype == "float32" and block.token_mixing.compute_dtype == policy.split("_")[1]
    out = keras.ops.convert_to_numpy(out)
    tolerance = 0.15 if policy == "mixed_bfloat16" else 0.02
    np.testing.assert_allclose(out, expected, atol=tolerance * np.abs(expected).max())
    run_model_checks(model, images[:4], labels=np.array([0, 1, 2, 3]), tolerance=1e-3)


def test_jit_compile_with_unknown_batch_size():
    model = _randomize(MLPMixer(**TINY))
    eager = keras.ops.convert_to_numpy(model(_images(7)))
    model.compile(jit_compile=True)
    for batch in (3, 7):
        np.testing.assert_allclose(
            model.predict(_images(7)[:batch], batch_size=batch, verbose=0), eager[:batch], rtol=1e-4, atol=1e-4
        )
    assert model.inputs[0].shape[0] is None


def test_wrong_channel_count_at_call_time_is_one_clear_error():
    model = MLPMixer(**TINY)
    with pytest.raises(ValueError, match=r"expected axis -1 of input shape to have value 3"):
        model(_images(2, 16, 1))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"image_size": 30, "patch_size": 4},
            r"height 30 is not a multiple of the patch height 4.*image_size=\(30, 30\), patch_size=\(4, 4\)",
        ),
        ({"image_size": (16, 18), "patch_size": 4}, r"width 18 is not a multiple"),
        ({"image_size": 0}, r"`image_size` must be a positive int.*Received: image_size=0"),
        ({"patch_size": -4}, r"Received: patch_size=-4"),
        ({"patch_size": (4, 4, 4)}, r"Received: patch_size=\(4, 4, 4\)"),
        ({"num_blocks": 0}, r"`num_blocks` must be a positive integer. Received: num_blocks=0"),
        ({"hidden_dim": -1}, r"Received: hidden_dim=-1"),
        ({"tokens_mlp_dim": 2.5}, r"Received: tokens_mlp_dim=2.5"),
        ({"channels_mlp_dim": 0}, r"Received: channels_mlp_dim=0"),
        ({"num_classes": 0}, r"Received: num_classes=0"),
        ({"num_channels": 0}, r"Received: num_channels=0"),
        ({"dropout_rate": 1.5}, r"Received: dropout_rate=1.5"),
        ({"drop_path_rate": -0.1}, r"Received: drop_path_rate=-0.1"),
        ({"pooling": "mean"}, r"`pooling` must be one of \('avg', 'max'\).*Received: pooling='mean'"),
        ({"pooling": None}, r"when include_top=True"),
        ({"classifier_activation": "relu"}, r"Received: classifier_activation='relu'"),
        ({"layer_norm_epsilon": 0}, r"Received: layer_norm_epsilon=0"),
        ({"activation": "tanh"}, r"`activation` must be one of \('gelu', 'relu'\). Received: activation='tanh'"),
    ],
)
def test_bad_arguments_raise_one_clear_error_before_building(overrides, message):
    with pytest.raises(ValueError, match=message):
        MLPMixer(**{**TINY, **overrides})


def test_structural_arguments_are_required():
    with pytest.raises(TypeError, match="num_blocks"):
        MLPMixer(num_classes=10)


@pytest.mark.parametrize(
    "build, typo, suggestion",
    [
        (lambda: MLPMixer(**TINY, pach_size=8), "pach_size", "patch_size"),
        (lambda: MLPMixer.from_preset("mixer_s32", num_clases=10), "num_clases", "num_classes"),
        (lambda: __import__("keras_mixer").MixerS32(num_clases=10), "num_clases", "num_classes"),
    ],
)
def test_a_misspelt_argument_is_refused_with_the_closest_name(build, typo, suggestion):
    with pytest.raises(TypeError, match=rf"unexpected keyword argument `{typo}`\. Did you mean `{suggestion}`\?"):
        build()


def test_keras_own_keywords_stay_accepted():
    model = MLPMixer(**TINY, name="mine", trainable=False, dtype="float32")
    assert (model.name, model.trainable) == ("mine", False)


def test_class_names_travel_with_the_model_and_are_checked(tmp_path):
    model = MLPMixer(**TINY, class_names=["a", "b", "c", "d", "e"])
    model.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras").class_names == ["a", "b", "c", "d", "e"]
    assert model.flip_averaged().class_names == model.class_names
    with pytest.raises(ValueError, match="num_classes=5, but 2 names"):
        MLPMixer(**TINY, class_names=["a", "b"])
    with pytest.raises(ValueError, match="a list of strings"):
        MLPMixer(**TINY, class_names="abcde")


@pytest.mark.parametrize("flip_average", [False, True])
def test_an_empty_batch_gives_an_empty_result(flip_average):
    model = MLPMixer(**TINY, flip_average=flip_average)
    empty = np.zeros((0, 16, 16, 3), "float32")
    assert tuple(model(empty).shape) == (0, 5)
    assert model.predict(empty, verbose=0).shape == (0, 5)


def test_predict_on_arrays_equals_the_direct_call_for_any_batch_size():
    model = _randomize(MLPMixer(**TINY))
    images = _images(7)
    direct = keras.ops.convert_to_numpy(model(images))
    for batch_size in (None, 1, 3, 7, 100):
        np.testing.assert_allclose(model.predict(images, batch_size=batch_size, verbose=0), direct, atol=1e-5)
    np.testing.assert_allclose(model.predict(keras.ops.convert_to_tensor(images), verbose=0), direct, atol=1e-5)


def test_predict_traces_its_step_once_for_every_batch_size(monkeypatch):
    # Keras traces with the first batch's size, then again, relaxed, for a batch of another size (the last).
    # The package traces once with the size unknown, which lets large norms run as oneDNN's (test_fused_norm).
    model = _randomize(MLPMixer(**TINY))
    images = _images(7)
    traced_batch_sizes = []
    block_call = MixerBlock.call

    def recording_call(self, inputs, *args, **kwargs):
        traced_batch_sizes.append(inputs.shape[0])
        return block_call(self, inputs, *args, **kwargs)

    monkeypatch.setattr(MixerBlock, "call", recording_call)
    predicted = model.predict(images, batch_size=3, verbose=0)  # batches of 3, 3 and 1
    if keras.backend.backend() == "tensorflow":
        assert traced_batch_sizes == [None] * TINY["num_blocks"]  # one trace of each block
    monkeypatch.undo()
    np.testing.assert_allclose(predicted, keras.ops.convert_to_numpy(model(images)), atol=1e-5)
