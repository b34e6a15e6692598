"""LLMs in the pipeline: one client interface (local transformers or any OpenAI-compatible server), prompt
templates as files, a sharded generation cache, LLM-written training queries and LLM-written hard negatives.

* :mod:`retrdistill.llm.client` — :class:`GenerationParams`, the ``transformers`` and ``openai`` clients
  (registry kind ``llm``);
* :mod:`retrdistill.llm.templates` — prompt template files (bundled ones under ``templates/``);
* :mod:`retrdistill.llm.cache` — every generation keyed and stored in shards, so a killed run resumes;
* :mod:`retrdistill.llm.queries` — the ``llm`` query source (InPars / Promptagator style);
* :mod:`retrdistill.llm.negatives` — the ``llm-negatives`` miner (written hard negatives);
* :mod:`retrdistill.llm.passages` — generated passages beside the corpus (``passages.jsonl``) for training only;
* :mod:`retrdistill.llm.export` — a GGUF checkpoint as a plain transformers folder (for ``transformers serve``).
* :mod:`retrdistill.llm.server` — an OpenAI-compatible HTTP server over the local client (``serve-llm``).
"""
