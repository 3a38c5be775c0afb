"""Published weights by name: resolve `weights=` to a local .npz, downloading into the Keras cache.

`resolve_weights("mixer_b16", "imagenet1k")` returns the path of the official `Mixer-B_16.npz`
of that set, downloaded once through `keras.utils.get_file` (Keras cache dir, progress bar) into
`<KERAS_HOME>/models/keras_mixer/<set>/`. What lives here and not elsewhere:

- A download goes to a private temporary name and is renamed into place only after it checked
  out (its sha256 where `PUBLISHED_WEIGHTS` knows it, else that it is a whole .npz archive), so an
  interrupted, killed or corrupt download never leaves a file a later call would trust.
- A file already in the cache is used without any request.
- No network, a refused connection or an HTTP error raises one `WeightsDownloadError` within the
  timeout, naming the URL and how to pass a local file instead.
- `KERAS_MIXER_WEIGHTS_URL` replaces the public bucket's URL with a mirror (tests point it at a
  server on 127.0.0.1).

The table of published files is data in `presets.py` (`PUBLISHED_WEIGHTS`).
"""

import hashlib
import os
import socket
import zipfile

import keras

from keras_mixer.presets import MIXER_WEIGHTS_URL, WEIGHT_SET_NAMES, published_weights

WEIGHTS_URL_VARIABLE = "KERAS_MIXER_WEIGHTS_URL"
CACHE_SUBDIR = os.path.join("models", "keras_mixer")
DOWNLOAD_TIMEOUT_SECONDS = 30
CLASS_NAMES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "imagenet1k_class_names.tsv")


class WeightsDownloadError(OSError):
    """Published weights could not be downloaded (network, server, or a corrupt file)."""


def weights_url(row):
    """The row's URL, with `$KERAS_MIXER_WEIGHTS_URL` in place of the public bucket when it is set.

    Example:
    >>> from keras_mixer.presets import published_weights
    >>> weights_url(published_weights("mixer_b16", "imagenet1k")).endswith("/imagenet1k/Mixer-B_16.npz")
    True
    """
    mirror = os.environ.get(WEIGHTS_URL_VARIABLE)
    return row["url"] if not mirror else mirror.rstrip("/") + row["url"][len(MIXER_WEIGHTS_URL) :]


def is_weight_set_name(weights):
    """True for a published set name (`imagenet1k`, ...) that is not also an existing file."""
    return isinstance(weights, str) and weights in WEIGHT_SET_NAMES and not os.path.exists(weights)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _problem_with(path, sha256):
    """Why the file at `path` cannot be trusted, or None."""
    if sha256 is not None:
        actual = _sha256(path)
        return None if actual == sha256 else f"its sha256 is {actual}, expected {sha256}"
    # No published sum: the file must at least be a complete zip archive (the end record is last).
    return None if zipfile.is_zipfile(path) else "it is not a complete .npz (zip) archive"


def download_weights(preset, weight_set, cache_dir=None, timeout=DOWNLOAD_TIMEOUT_SECONDS):
    """The local path of a published checkpoint, downloaded on first use; see the module docstring.

    Args:
        preset: a preset name ("mixer_b16", ...).
        weight_set: "imagenet1k", "imagenet21k", "sam" or "gsam" (what exists for the preset).
        cache_dir: the cache root (default: Keras', `$KERAS_HOME` or `~/.keras`).
        timeout: seconds a connection may stay silent before the download fails.

    Example (downloads 229 MiB the first time):
        path = download_weights("mixer_b16", "imagenet1k")
    """
    row = published_weights(preset, weight_set)
    url = weights_url(row)
    file_name = url.rsplit("/", 1)[-1]
    cache_root = cache_root_dir(cache_dir)
    subdir = os.path.join(CACHE_SUBDIR, weight_set)
    folder = os.path.join(cache_root, subdir)
    final = os.path.join(folder, file_name)
    if os.path.isfile(final) and _problem_with(final, row["sha256"]) is None:
        return final
    os.makedirs(folder, exist_ok=True)
    # A private name per process: two downloads never write one file, and a killed one is never trusted.
    staging_name = f".{file_name}.{os.getpid()}.partial"
    staging = os.path.join(folder, staging_name)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # urllib's urlretrieve, which get_file uses, has no timeout of its own
    try:
        keras.utils.get_file(
            fname=staging_name, origin=url, cache_dir=cache_root, cache_subdir=subdir, force_download=True
        )
        problem = _problem_with(staging, row["sha256"])
        if problem:
            raise WeightsDownloadError(f"The file downloaded from {url} is corrupt: {problem}. {_local_file_hint(row)}")
        os.replace(staging, final)
    except WeightsDownloadError:
        raise
    except Exception as error:  # get_file raises a bare Exception for URL errors
        raise WeightsDownloadError(
            f"Could not download the {weight_set!r} weights of {preset!r} from {url}: {error}. {_local_file_hint(row)}"
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
        if os.path.exists(staging):
            os.remove(staging)
    return final


def cache_root_dir(cache_dir=None):
    """Keras' cache root, as `keras.utils.get_file` picks it: `cache_dir`, `$KERAS_HOME` or `~/.keras`."""
    root = os.path.expanduser(cache_dir or os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    os.makedirs(root, exist_ok=True)
    return root


def _local_file_hint(row):
    return (
        f"Without network access, download {row['url']} elsewhere and pass its path instead "
        f"(weights='/path/to/{row['url'].rsplit('/', 1)[-1]}', or --init-from PATH), or set "
        f"{WEIGHTS_URL_VARIABLE} to a mirror."
    )


def resolve_weights(preset, weights, cache_dir=None):
    """`weights` as a local .npz path: a published set name is downloaded (cached); a path is kept.

    Returns `(path, row)`, where `row` is the `PUBLISHED_WEIGHTS` row for a set name and None for
    a path. Raises `ValueError` for a name with no published file for `preset`, or a path that
    does not exist.

    Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "mine.npz")
    >>> np.savez(path, x=np.zeros(1))
    >>> resolve_weights("mixer_b16", path)[1] is None
    True
    """
    if is_weight_set_name(weights):
        if preset is None:
            raise ValueError(
                f"weights={weights!r} names a published set, which exists per preset: pass a preset "
                f"(MLPMixer.from_preset(PRESET, weights=...), or --preset with --init-from)."
            )
        return download_weights(preset, weights, cache_dir=cache_dir), published_weights(preset, weights)
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise ValueError(
            f"weights must be a published set name ({', '.join(WEIGHT_SET_NAMES)}) or the path of an "
            f"existing file. Received: weights={weights!r}"
        )
    return path, None


def imagenet1k_class_names():
    """The 1,000 readable ImageNet class names, in the class order of every published 1k head.

    Example:
    >>> imagenet1k_class_names()[:2]
    ['tench', 'goldfish']
    """
    with open(CLASS_NAMES_FILE, encoding="utf-8") as file:
        return [line.rstrip("\n").split("\t", 1)[1] for line in file if line.strip()]
