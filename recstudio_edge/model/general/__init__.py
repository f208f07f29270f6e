"""General (non-sequential) retrieval models, one per file; importing this package registers them."""
from . import bpr, cml, dssm, ease, itemknn, lightgcn, multidae, multivae, ncf, pop  # noqa: F401
