"""What a method learns: the synthetic set and its parameterisations."""

from datadistill.synthetic.base import SYNSETS, SyntheticSet, create_synset
from datadistill.synthetic.formation import MultiFormationSet, check_factor, decode, encode
from datadistill.synthetic.pixels import PixelSet

__all__ = [
    "SYNSETS",
    "MultiFormationSet",
    "PixelSet",
    "SyntheticSet",
    "check_factor",
    "create_synset",
    "decode",
    "encode",
]
