"""Prepare tfds's own `fashion_mnist` from Debian's `dataset-fashion-mnist` files, offline.

Debian re-compressed the upstream IDX files, so their .gz checksums differ from the ones tfds
registers (tfds rejects them as `manual_dir`). The *decompressed* bytes are upstream's, and that
is what this module pins and verifies. Preparation runs tfds's real `FashionMNIST` builder (same
features, splits, version) with a download manager that serves the local files instead of the
network; afterwards `tfds.load("fashion_mnist")` works as anywhere else.

Command line: `python -m training.offline_data [--data-dir DIR]`.
"""

import argparse
import gzip
import hashlib
import os
import tempfile

from training.quiet import add_verbose_flag, quiet_logs

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"

# sha256 of the decompressed upstream IDX files (identical to zalandoresearch/fashion-mnist's).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
OFFLINE_DATASETS = ("fashion_mnist",)


class ChecksumError(ValueError):
    """A local source file does not hold the bytes the project pinned."""


def decompress_verified(source_dir, target_dir):
    """Decompress the four .gz files into `target_dir`, verifying each against the pinned sha256.

    Returns {name: path}. Raises `FileNotFoundError` (with the install command) or `ChecksumError`.
    """
    paths = {}
    for name, expected in FASHION_MNIST_SHA256.items():
        source = os.path.join(source_dir, name + ".gz")
        if not os.path.isfile(source):
            raise FileNotFoundError(
                f"Fashion-MNIST source file {source} is missing. Install Debian's package: {INSTALL_HINT}"
            )
        target = os.path.join(target_dir, name)
        digest = hashlib.sha256()
        with gzip.open(source, "rb") as compressed, open(target, "wb") as raw:
            for chunk in iter(lambda: compressed.read(1 << 20), b""):
                digest.update(chunk)
                raw.write(chunk)
        if digest.hexdigest() != expected:
            raise ChecksumError(
                f"{source} decompresses to sha256 {digest.hexdigest()}, expected {expected}: the file is "
                f"corrupt or not Fashion-MNIST. Reinstall it: apt-get install --reinstall dataset-fashion-mnist"
            )
        paths[name] = target
    return paths


class _LocalFilesDownloadManager:
    """The part of `tfds.download.DownloadManager` that the MNIST builders use, served from disk."""

    def __init__(self, files):
        self._files = files
        self.downloaded_size = 0

    def download_and_extract(self, url_or_urls):
        def local(url):
            name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gz")
            if name not in self._files:
                raise ValueError(f"No offline copy of {url}; this dataset cannot be prepared offline.")
            return self._files[name]

        if isinstance(url_or_urls, dict):
            return {key: local(url) for key, url in url_or_urls.items()}
        return local(url_or_urls)


def prepare_fashion_mnist(data_dir=None, source_dir=DEBIAN_DIR):
    """Build tfds's `fashion_mnist` into `data_dir` from the Debian files; no network.

    Does nothing when the dataset is already prepared. Returns the tfds builder.

    Example (needs Debian's dataset-fashion-mnist):
        builder = prepare_fashion_mnist("/tmp/tfds")
        ds = tfds.load("fashion_mnist", split="test", data_dir="/tmp/tfds")
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415  (heavy; only when preparing)

    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    if builder.is_prepared():
        return builder
    with tempfile.TemporaryDirectory(prefix="fashion_mnist_src_") as scratch:
        manager = _LocalFilesDownloadManager(decompress_verified(source_dir, scratch))
        builder._make_download_manager = lambda download_dir, download_config: manager
        # tfds writes into an incomplete-* folder and renames it when done (atomic).
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def prepare_command(dataset, data_dir=None):
    """The exact shell command that prepares `dataset` (what error messages print)."""
    flags = f" --data-dir {data_dir}" if data_dir else ""
    if dataset in OFFLINE_DATASETS:
        return f"{INSTALL_HINT} && python -m training.offline_data{flags}"
    return (
        f'python -c "import tensorflow_datasets as tfds; tfds.builder({dataset!r}'
        f'{", data_dir=" + repr(data_dir) if data_dir else ""}).download_and_prepare()"'
        "   # on a machine with internet access; then copy the data dir here"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="tfds data dir (default: tfds's, ~/tensorflow_datasets)")
    parser.add_argument("--source-dir", default=DEBIAN_DIR, help="folder holding the four Fashion-MNIST .gz files")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    quiet_logs(args.verbose)
    builder = prepare_fashion_mnist(args.data_dir, args.source_dir)
    print(f"fashion_mnist ready in {builder.data_dir}")


if __name__ == "__main__":
    main()
