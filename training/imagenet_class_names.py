"""Regenerate `keras_mixer/data/imagenet1k_class_names.tsv`: readable names of the 1,000 ImageNet classes.

`python -m training.imagenet_class_names` (needs Debian's `wordnet-base`: `apt-get install wordnet-base`).

The ImageNet-1k class order of every published 1k head is the sorted WordNet ids that tfds ships in
`tensorflow_datasets/datasets/imagenet2012/labels.txt`. An id such as `n01440764` is a noun synset
of WordNet 3.0 (`n` + its byte offset in `data.noun`), and Debian's `wordnet-base` is WordNet 3.0,
so each id maps to its synset's first word offline ("tench"). Two names occur twice in ImageNet
(crane the bird and the machine; maillot the tank suit and the swimsuit); those two pairs keep
their WordNet id in brackets. The output has one `wordnet_id<TAB>name` line per class, in class order.
"""

import argparse
import collections
import os
import sys

from keras_mixer.atomic import write_text_atomically
from training import EXIT_BAD_INPUT

WORDNET_NOUNS = "/usr/share/wordnet/data.noun"
OUTPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "keras_mixer", "data")


def tfds_imagenet_ids():
    """The 1,000 WordNet ids in class order, from tfds's own label file."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    path = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
    with open(path) as file:
        return [line.strip() for line in file if line.strip()]


def wordnet_first_words(path=WORDNET_NOUNS):
    """{"n<offset>": first word of the synset} from WordNet's `data.noun`."""
    words = {}
    with open(path, encoding="latin-1") as file:
        for line in file:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" ")
            words["n" + fields[0]] = fields[4].replace("_", " ")
    return words


def class_names(ids, words):
    """Readable names for `ids`; names that would repeat carry their id."""
    missing = [wnid for wnid in ids if wnid not in words]
    if missing:
        raise ValueError(f"{len(missing)} ids are not in WordNet 3.0's nouns, e.g. {missing[:3]}")
    counts = collections.Counter(words[wnid] for wnid in ids)
    return [words[wnid] if counts[words[wnid]] == 1 else f"{words[wnid]} ({wnid})" for wnid in ids]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.imagenet_class_names", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--wordnet", default=WORDNET_NOUNS, help="WordNet 3.0 data.noun")
    parser.add_argument("--output-dir", default=OUTPUT)
    args = parser.parse_args(argv)
    if not os.path.isfile(args.wordnet):
        print(f"error: {args.wordnet} not found: apt-get install wordnet-base", file=sys.stderr)
        return EXIT_BAD_INPUT
    ids = tfds_imagenet_ids()
    names = class_names(ids, wordnet_first_words(args.wordnet))
    path = os.path.join(args.output_dir, "imagenet1k_class_names.tsv")
    write_text_atomically(path, "".join(f"{wnid}\t{name}\n" for wnid, name in zip(ids, names)))
    print(f"{len(names)} names written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
