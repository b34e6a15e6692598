"""Lucene through Anserini (the ``[lucene]`` extra): the Java runtime and jar (:mod:`.runtime`), BM25 as a miner
and an eval system (:mod:`.bm25`), impact search over a sparse index's quantised vectors (:mod:`.impact`) and the
export of a sparse index as Anserini's JsonVectorCollection (:mod:`.export`)."""
