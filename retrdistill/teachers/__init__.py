"""Teachers: score (query, passage) pairs for distillation (registered in retrdistill.registry).

Every teacher offers ``fingerprint()`` (what determines its scores), ``score_groups(queries, groups)`` and
``retrieve(queries, k)`` (its own leaderboard row).
"""
