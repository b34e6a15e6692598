"""The sparse (SPLADE) family as one package: what a SparseEncoder checkpoint is and how it encodes and is
searched (``family``), the SPLADE student (``student``, its objective in ``objective``, the masked-LM head check in
``mlm_head``, a decoder LM as the term-weight encoder in ``causal_lm``) and the inverted index (``index``)."""
