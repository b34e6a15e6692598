"""The parts of one training run, each built by its own builder and wired by :mod:`retrdistill.stages.train`.

* :mod:`~retrdistill.training.data`: the scored groups and corpus texts as the trainer's dataset;
* :mod:`~retrdistill.training.objective`: the loss module (score loss, in-batch negatives, embedding
  distillation, Matryoshka widths) and the counts it records;
* :mod:`~retrdistill.training.fit`: the sentence-transformers trainer run itself, silent, with its loss curve.

Which builder and which trainer a student uses is the student's choice (:class:`retrdistill.parts.Student`),
so a student of another family (a SPLADE ``SparseEncoder``, a ``CrossEncoder``) brings its own without any
change to the stage.
"""
