"""Miners: retrieve candidate passages per training query (registered in retrdistill.registry)."""
