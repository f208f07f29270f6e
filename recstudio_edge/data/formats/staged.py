"""What sample-file sources share (``formats/__init__.py``'s contract): samples read per stage,
``{stage: samples}``, each with ``user_id``, ``label`` (float 0/1), the scored item in the field
``TARGET`` and ``batch(idx)`` giving the zoo's batch fields. PINRec's and ECRec's files are read so."""
from __future__ import annotations

import torch

from ..errors import DataError


class StagedSamples:
    """Mixin of a source holding ``self.samples`` (``{stage: samples}``), ``self.folder``, ``self.paths``
    (``{stage: Path}`` of the files named) and ``self.num_items``; a subclass sets ``FORMAT`` (its
    ``data.format``), ``HOLDS`` (what its files hold, for the wrong-kind error) and ``TARGET``."""

    FORMAT, HOLDS, TARGET, KIND = "", "CTR", "item_id", "ctr"

    def stages(self) -> set:
        """The stages whose file was read."""
        return set(self.samples)

    def item_counts(self) -> torch.Tensor:
        """Positive training rows per scored item."""
        tr = self.samples["train"]
        return torch.bincount(getattr(tr, self.TARGET)[tr.label > 0.5], minlength=self.num_items)

    def train_keys(self) -> torch.Tensor:
        """Sorted ``user * num_items + item`` keys of the positive training rows."""
        tr = self.samples["train"]
        pos = tr.label > 0.5
        return torch.unique(tr.user_id[pos] * self.num_items + getattr(tr, self.TARGET)[pos])

    def kind_error(self, kind: str) -> DataError:
        return DataError(str(self.folder), message=f"data.format={self.FORMAT} holds {self.HOLDS} samples; "
                                                   f"this model trains on '{kind}' data")

    def _dataset(self, kind: str, stage: str):
        from ..dataset import BatchDataset

        if kind != self.KIND:
            raise self.kind_error(kind)
        if stage not in self.samples:
            where = self.paths.get(stage)
            raise DataError(str(where if where is not None else self.folder),
                            message=f"no {stage} sample file" + ("" if where is not None else
                                                                 f" (data.files names none for {stage})"))
        s = self.samples[stage]
        return BatchDataset(len(s), s.batch)

    def train(self, kind: str):
        return self._dataset(kind, "train")

    def eval(self, kind: str, stage: str):
        return self._dataset(kind, stage)
