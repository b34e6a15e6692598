"""Distillation losses (registered in retrdistill.registry); thin adapters over sentence-transformers' losses."""
