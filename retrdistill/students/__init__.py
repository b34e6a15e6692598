"""Students: the fast models being trained (registered in retrdistill.registry)."""
