"""The dense family as one package: what a SentenceTransformer checkpoint is and how it encodes and is searched
(``family``), the bi-encoder students' training contract (``bi_encoder``), the students (``student``: any
checkpoint; ``pruned``: cut to fewer layers) and the FAISS indexers (``faiss_index``)."""
