"""Paper Fig. 5: draw a block's token-mixing hidden units as small images.

    python -m training.experiments.token_weights --model runs/default/best.keras
    python -m training.experiments.token_weights --model Mixer-B_16.npz --block 0 --units 96

Each hidden unit of `MixerBlock_<b>/token_mixing/Dense_0` is a weight vector over the S tokens;
reshaped to the (H/P) x (W/P) patch grid it shows which image regions the unit mixes. Units are
paired as the paper shows them: each unit next to the unit most anti-correlated with it (the
opposite-sign detectors the paper points out), pairs sorted by how strongly they are opposed.
Reads a `.keras` Mixer or an official `.npz` checkpoint; writes a PNG.
"""

import argparse
import math
import os
import sys

import numpy as np

from keras_mixer.atomic import save_figure_atomically
from training import EXIT_BAD_INPUT
from training.quiet import add_verbose_flag, quiet_logs


def token_mixing_kernel(path, block):
    """(S, D_S) kernel of block `block`'s first token-mixing Dense, and the (H/P, W/P) grid."""
    from keras_mixer.checkpoints import read_official_checkpoint, save_official_weights  # noqa: PLC0415

    if path.endswith(".keras"):
        from keras_mixer import MLPMixer  # noqa: PLC0415
        from training.files import load_keras_file  # noqa: PLC0415

        model = load_keras_file(path)
        if not isinstance(model, MLPMixer):
            raise ValueError(f"Expected a keras_mixer.MLPMixer in {path}. Received: a {type(model).__name__}")
        params, grid = save_official_weights(model), model.grid_size
    else:
        params = read_official_checkpoint(path)
        grid = None
    blocks = sorted({int(k.split("/")[0].split("_")[1]) for k in params if k.startswith("MixerBlock_")})
    if block not in blocks:
        raise ValueError(f"Unknown block index. Expected one of 0..{max(blocks)}. Received: block={block}")
    kernel = np.asarray(params[f"MixerBlock_{block}/token_mixing/Dense_0/kernel"], np.float32)
    if grid is None:  # an npz has no image size: assume a square grid, as all official models are
        side = math.isqrt(kernel.shape[0])
        if side * side != kernel.shape[0]:
            raise ValueError(f"{path}: {kernel.shape[0]} tokens do not form a square grid")
        grid = (side, side)
    return kernel, tuple(grid)


def unit_correlations(kernel):
    """Pearson correlation between every two hidden units (columns) of a (tokens, units) kernel."""
    units = kernel.T - kernel.T.mean(axis=1, keepdims=True)
    units = units / (np.linalg.norm(units, axis=1, keepdims=True) + 1e-12)
    return units @ units.T


def median_pair_correlation(kernel):
    """Median correlation of the pairs `paired_units` forms: -1 when every unit has an exact opposite.

    >>> k = np.array([[1.0, -1.0, 0.5, -0.5], [2.0, -2.0, -1.0, 1.0], [0.0, 0.0, 1.0, -1.0]])
    >>> float(round(median_pair_correlation(k), 6))
    -1.0
    """
    order, correlation = paired_units(kernel), unit_correlations(kernel)
    return float(np.median([correlation[a, b] for a, b in zip(order[0::2], order[1::2])]))


def random_pair_correlation(shape, draws=20, seed=0):
    """`median_pair_correlation` of Gaussian kernels of `shape`: the value chance alone gives (median of draws)."""
    rng = np.random.default_rng(seed)
    return float(np.median([median_pair_correlation(rng.standard_normal(shape)) for _ in range(draws)]))


def paired_units(kernel):
    """Unit indices in display order: each unit followed by its most anti-correlated partner.

    >>> k = np.array([[1.0, -1.0, 0.5, 0.2], [2.0, -2.0, -0.5, 0.1], [0.0, 0.1, 1.0, -1.0]])
    >>> paired_units(k)
    [0, 1, 2, 3]
    """
    correlation = unit_correlations(kernel)
    np.fill_diagonal(correlation, np.inf)
    free, order = set(range(len(correlation))), []
    # Greedy: the most opposed remaining pair first.
    for first, second in zip(*np.unravel_index(np.argsort(correlation, axis=None), correlation.shape)):
        if first < second and first in free and second in free:
            order += [int(first), int(second)]
            free -= {first, second}
    return order + sorted(free)


def render(kernel, grid, path, units=64, title=""):
    """PNG grid of `units` hidden units (each a (H/P, W/P) image, own colour scale, red + / blue -)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    order = paired_units(kernel)[:units]
    columns = min(16, len(order))
    rows = math.ceil(len(order) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 0.75, rows * 0.75 + 0.5), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, unit in zip(axes.flat, order):
        image = kernel[:, unit].reshape(grid)
        scale = np.abs(image).max() or 1.0
        axis.imshow(image, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure_atomically(figure, path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.experiments.token_weights", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", default="runs/default/best.keras", help="a .keras MLPMixer or an official .npz")
    parser.add_argument("--block", type=int, default=0, help="Mixer block index (0 = first)")
    parser.add_argument("--units", type=int, default=64, help="hidden units to draw (paired)")
    parser.add_argument(
        "--output", default=None, help="PNG path (default: token_weights_block<b>.png beside the model)"
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    quiet_logs(args.verbose)
    if not os.path.isfile(args.model):
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        kernel, grid = token_mixing_kernel(args.model, args.block)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    output = args.output or os.path.join(
        os.path.dirname(os.path.abspath(args.model)), f"token_weights_block{args.block}.png"
    )
    title = f"{os.path.basename(args.model)}: block {args.block} token-mixing units ({grid[0]}x{grid[1]} patch grid)"
    render(kernel, grid, output, args.units, title)
    print(f"wrote {output} ({min(args.units, kernel.shape[1])} of {kernel.shape[1]} units, {grid[0]}x{grid[1]} grid)")
    print(
        f"median correlation of the paired units: {median_pair_correlation(kernel):.2f} "
        f"(random weights of the same shape: {random_pair_correlation(kernel.shape):.2f}, median of 20 draws)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
