"""Approximate nearest-neighbour top-k with faiss, for tower models (``model.ann``).

``ann: {index: Flat | IVF<n>,Flat | HNSW<m>, nprobe: .., efSearch: .., efConstruction: ..}``
replaces the full-sort top-k of evaluation and inference (``Recommender.topk_items``) with a
faiss index over the item tower (``item_vectors()`` without the padding row). ``index`` is a
faiss ``index_factory`` string; ``nprobe`` (IVF) and ``efSearch`` (HNSW) are search-time
parameters, ``efConstruction`` (HNSW) a build-time one; ``ip_to_l2`` searches inner product as
L2 over augmented vectors (default: on for IVF, off for HNSW).

- Scorers: ``inner_product`` (faiss inner product), ``cosine`` (inner product of normalised
  vectors), ``euclidean`` (faiss L2; the score is minus the squared distance, as the scorer's).
  A scorer without a faiss metric (``mlp``, ``neumf``) is refused when the model is built.
- History masking: the index is searched for ``k + m`` items per row, ``m`` being the largest
  number of masked items of a row in the batch; masked items are dropped and the first ``k``
  left are kept. With ``Flat`` this is exactly the masked full-sort top-k (at most ``m`` of the
  ``k + m`` best can be masked); with IVF/HNSW it is as approximate as the index.
- Device: faiss-gpu when it is installed, a GPU is present and the model is on it (``Flat`` and
  ``IVF`` indexes; faiss has no GPU HNSW, which stays on the CPU); faiss-cpu otherwise. Results
  are torch tensors on the query's device.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..progress import progress

ADD_CHUNK = 65536  # items added to the index per step (one progress-bar step)
SPEC_KEYS = ("index", "nprobe", "efSearch", "efConstruction", "ip_to_l2")
SEARCH_PARAMS = ("nprobe", "efSearch")


def import_faiss():
    try:
        import faiss  # noqa: F401
    except ImportError:
        raise ImportError("model.ann needs faiss: pip install faiss-cpu (or faiss-gpu on a CUDA machine)") from None
    return faiss


def gpu_available(faiss) -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 and torch.cuda.is_available()


class AnnIndex:
    """A faiss index over item vectors; ``search`` returns masked top-k as torch tensors."""

    def __init__(self, spec: Dict, metric: Optional[str], scorer_name: str = "?"):
        from ..names import did_you_mean

        if isinstance(spec, str):
            spec = {"index": spec}
        if not isinstance(spec, dict):
            raise ValueError(f"model.ann must be a mapping such as {{index: 'IVF256,Flat', nprobe: 16}}, got {spec!r}")
        for k in spec:
            if k not in SPEC_KEYS:
                raise ValueError(f"model.ann: unknown key {k!r}: {did_you_mean(k, SPEC_KEYS)}")
        if metric not in ("ip", "cos", "l2"):
            raise ValueError(f"model.ann: scorer {scorer_name!r} has no metric faiss can search (it scores each "
                             f"(query, item) pair with a network); ANN works with the inner_product, cosine "
                             f"and euclidean scorers")
        self.faiss = import_faiss()
        self.factory = str(spec.get("index", "Flat"))
        self.search_params = {k: spec[k] for k in SEARCH_PARAMS if k in spec}
        self.ef_construction = spec.get("efConstruction")
        self.metric = metric
        # inner product searched as L2 of augmented vectors: default on for IVF (its k-means lists
        # need a metric: recall 0.69 -> 1.00 on bench/ann.py's data), off for HNSW (faiss's own
        # inner-product graph did better there: 0.998 vs 0.79); ip_to_l2 overrides either way
        flat = self.factory.replace(" ", "").upper() == "FLAT"
        default = not flat and "HNSW" not in self.factory.upper()
        self.ip_to_l2 = bool(spec.get("ip_to_l2", default)) and metric == "ip" and not flat
        self.index = None
        self.reduced = False
        self.on_gpu = False
        self.vectors: Optional[torch.Tensor] = None  # what the index holds, to notice a changed tower
        self._gpu_res = None

    # ---- build ---------------------------------------------------------------------------
    def ensure(self, items: torch.Tensor, device: Optional[torch.device] = None) -> None:
        """Build the index unless it already holds exactly ``items`` (compared by value: an
        optimiser step, a loaded checkpoint or a device move all trigger a rebuild; costs one
        ``O(N * D)`` comparison, about one IVF search of a batch: the towers call it once per evaluation epoch)."""
        items = items.detach()
        v = self.vectors
        if v is None or v.shape != items.shape or v.device != items.device or not torch.equal(v, items):
            self.build(items, device)
            self.vectors = items.clone()

    def build(self, items: torch.Tensor, device: Optional[torch.device] = None) -> None:
        """Index ``items [N, D]`` (the real items; result id ``j`` is item ``j + 1``)."""
        faiss = self.faiss
        x = items.detach().float()
        if self.metric == "cos":
            x = F.normalize(x, dim=-1, eps=1e-8)
        # inner product as L2 over the vectors augmented with sqrt(max|v|^2 - |v|^2) (queries with
        # 0), whose L2 order is the inner-product order (Bachrach et al., RecSys 2014); the scores
        # are then recomputed exactly
        self.reduced = self.ip_to_l2
        if self.reduced:
            sq = x.pow(2).sum(1)
            x = torch.cat([x, (sq.max() - sq).clamp(min=0).sqrt().unsqueeze(1)], 1)
        x = x.cpu().contiguous().numpy()
        n, d = x.shape
        fmetric = faiss.METRIC_L2 if self.metric == "l2" or self.reduced else faiss.METRIC_INNER_PRODUCT
        try:
            index = faiss.index_factory(d, self.factory, fmetric)
        except RuntimeError as e:
            raise ValueError(f"model.ann.index {self.factory!r}: faiss cannot build it "
                             f"({str(e).strip().splitlines()[-1]})") from None
        if self.ef_construction is not None:
            hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
            if hnsw is None:
                raise ValueError(f"model.ann.efConstruction applies to HNSW indexes, not {self.factory!r}")
            hnsw.efConstruction = int(self.ef_construction)
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and ivf.nlist > n:
            raise ValueError(f"model.ann.index {self.factory!r}: {ivf.nlist} lists for {n} items; use fewer lists")
        chunks = range(0, n, ADD_CHUNK)
        with progress(total=len(chunks) + (0 if index.is_trained else 1), desc=f"ann {self.factory}",
                      unit="chunk") as bar:
            if not index.is_trained:
                index.train(x)
                bar.update(1)
            for s in chunks:  # in chunks of rows, so that a large build shows its progress
                index.add(x[s:s + ADD_CHUNK])
                bar.update(1)
        self.on_gpu = False
        if device is not None and torch.device(device).type == "cuda" and gpu_available(faiss) \
                and "HNSW" not in self.factory:
            if self._gpu_res is None:
                self._gpu_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_res, torch.device(device).index or 0, index)
            self.on_gpu = True
        space = faiss.GpuParameterSpace() if self.on_gpu else faiss.ParameterSpace()
        for k, v in self.search_params.items():
            try:
                space.set_index_parameter(index, k, int(v))
            except RuntimeError:
                raise ValueError(f"model.ann.{k} does not apply to index {self.factory!r}") from None
        self.index = index

    # ---- search --------------------------------------------------------------------------
    @torch.no_grad()
    def search(self, query: torch.Tensor, k: int, mask_rows: Optional[torch.Tensor] = None,
               mask_cols: Optional[torch.Tensor] = None, num_items: Optional[int] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` ``(scores [B, k], item ids [B, k])`` per query row, best first, on the query's
        device; the ``(mask_rows, mask_cols)`` pairs (row in batch, item id) are never returned.
        A row with fewer than ``k`` results is padded with score ``-inf`` and item 0."""
        if self.index is None:
            raise RuntimeError("AnnIndex.search before build")
        device = query.device
        B = query.size(0)
        q = query.detach().float()
        if self.metric == "cos":
            q = F.normalize(q, dim=-1, eps=1e-8)
        masked = mask_rows is not None and mask_rows.numel() > 0
        extra = int(torch.bincount(mask_rows, minlength=B).max()) if masked else 0
        kk = min(k + extra, self.index.ntotal)
        qs = torch.cat([q, q.new_zeros(B, 1)], 1) if self.reduced else q
        D, I = self.index.search(qs.cpu().contiguous().numpy(), kk)
        scores = torch.from_numpy(D).to(device)
        ids = torch.from_numpy(I).to(device)
        if self.reduced:
            v = self.vectors.to(device)
            scores = torch.einsum("bd,bkd->bk", q, v[ids.clamp(min=0)].float())
        elif self.metric == "l2":
            scores = -scores  # the euclidean scorer's value: minus the squared distance
        invalid = ids < 0  # IVF with few probes may find fewer than kk
        items = ids + 1
        if masked:
            n = int(num_items) if num_items is not None else self.index.ntotal + 1
            keys = torch.unique(mask_rows.to(device).long() * n + mask_cols.to(device).long())
            cand = torch.arange(B, device=device).unsqueeze(1) * n + items
            at = torch.searchsorted(keys, cand).clamp(max=keys.numel() - 1)
            invalid |= keys[at] == cand
        scores = scores.masked_fill(invalid, float("-inf"))
        items = items.masked_fill(invalid, 0)
        order = torch.argsort(invalid.to(torch.int8), dim=1, stable=True)[:, :k]  # kept ones first, in order
        scores, items = scores.gather(1, order), items.gather(1, order)
        if items.size(1) < k:
            pad = k - items.size(1)
            scores = torch.cat([scores, scores.new_full((B, pad), float("-inf"))], 1)
            items = torch.cat([items, items.new_zeros(B, pad)], 1)
        return scores, items


__all__ = ["AnnIndex", "import_faiss", "SPEC_KEYS"]
