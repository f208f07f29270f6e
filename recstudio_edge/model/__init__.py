"""Models and the parts they are built from. Importing this package registers every model."""
from . import loss, sampler, scorer  # noqa: F401  (register losses, samplers, scorers)
from .base import Recommender
from .towers import ItemTower, TowerFree, TwoTower
from .general import bpr, pop  # noqa: F401
from .sequential import bert4rec, caser, fpmc, gru4rec, narm, sasrec  # noqa: F401
from .ctr import din  # noqa: F401
from .edge import pinrec  # noqa: F401

__all__ = ["Recommender", "TowerFree", "ItemTower", "TwoTower"]
