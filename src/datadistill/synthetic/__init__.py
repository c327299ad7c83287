"""What a method learns: the synthetic set and its parameterisations."""

from datadistill.synthetic.base import SYNSETS, SyntheticSet, create_synset
from datadistill.synthetic.pixels import PixelSet

__all__ = ["SYNSETS", "PixelSet", "SyntheticSet", "create_synset"]
