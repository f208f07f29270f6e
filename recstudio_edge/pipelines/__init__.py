"""Models' own task runners: a model class names them in ``tasks = {"train": "<module>:<function>"}``
(``recstudio_edge.runner.model_task``); each function takes ``(run, extra_callbacks)`` as the runner's
tasks do and returns the same kind of dict. ``mcrec``: MCRec's three-model pipeline."""
