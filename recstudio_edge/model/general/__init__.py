"""General (non-sequential) retrieval models, one per file; found by ``recstudio_edge.model.discover``."""
