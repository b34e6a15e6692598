"""Indexers: build a searchable index from corpus embeddings (registered in retrdistill.registry)."""
