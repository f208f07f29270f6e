"""``connect(model, datamodule, trainer=None)``: what a model and its data tell each other, in one call.

The model never reads the trainer's data module and the data module never reads the model; the
caller who built both (the runner, a test, a plain-Lightning script) connects them before fitting::

    dm = RecDataModule(data_cfg, "datasets", model_cls.data_kind, steps_per_call=16)
    dm.setup()
    model = BPR(num_users=dm.num_users, num_items=dm.num_items)
    trainer = lightning.pytorch.Trainer(max_epochs=20)
    connect(model, dm, trainer)
    trainer.fit(model, datamodule=dm)

In order, ``connect``

1. checks that the data's activity groups (``datamodule.group_num``: ``data.group_num``, or the
   sample files') do not exceed the model's ``group_num`` (one plugin copy per group, PINRec);
2. gives the model the facts of its training data: ``model.on_data(datamodule.item_counts(),
   datamodule.train_keys())`` (samplers, popularity, LightGCN's graph), and marks it connected
   (a model that overrides ``on_data`` refuses to fit unconnected);
3. asks the model which negatives the data pipeline should draw
   (``model.pipeline_negatives(datamodule.kind, datamodule.dataset_sampling_count)`` ->
   ``(sampler, count)`` or None) and hands the answer to ``datamodule.set_negative_sampler``;
4. with a trainer, decides the fast training loop for that trainer's fit
   (``model/fastloop.py``) and sets ``datamodule.loader_steps``, the batches per training step
   (``train.steps_per_call`` when the fast loop is in force, else 1); without one, Lightning's
   automatic loop, one batch per step.

Every step is duck-typed: an object without the method or attribute skips it. Call it again for
another model, data module or trainer; it returns the batches per training step.
"""
from __future__ import annotations

from typing import Optional


def connect(model, datamodule, trainer: Optional[object] = None) -> int:
    """Connect ``model`` and ``datamodule`` (and the fit by ``trainer``): the module docstring."""
    data_groups = getattr(datamodule, "group_num", None)
    model_groups = getattr(model, "group_num", None)
    if data_groups and model_groups is not None and int(data_groups) > int(model_groups):
        raise ValueError(f"the data has {int(data_groups)} activity groups (data.group_num) but "
                         f"{type(model).__name__} has model.group_num={int(model_groups)} plugin copies")

    on_data, counts = getattr(model, "on_data", None), getattr(datamodule, "item_counts", None)
    if callable(on_data) and callable(counts):
        keys = datamodule.train_keys() if callable(getattr(datamodule, "train_keys", None)) else None
        on_data(counts(), keys)
        model.data_connected = True

    hand_over = getattr(datamodule, "set_negative_sampler", None)
    if callable(hand_over):
        ask = getattr(model, "pipeline_negatives", None)
        wanted = ask(getattr(datamodule, "kind", None), int(getattr(datamodule, "dataset_sampling_count", 0) or 0)) \
            if callable(ask) else None
        hand_over(*(wanted if wanted is not None else (None,)))

    steps = 1
    if trainer is not None or hasattr(model, "automatic_optimization"):
        from .model.fastloop import switch

        steps = switch(model, trainer, int(getattr(datamodule, "steps_per_call", 1) or 1))
    if hasattr(datamodule, "loader_steps"):
        datamodule.loader_steps = steps
    return steps


__all__ = ["connect"]
