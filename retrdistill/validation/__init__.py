"""Label-free validation: choose epochs, checkpoints and recipes without test labels.

* :mod:`~retrdistill.validation.split`: the held-out fraction of the training queries' scored groups (seeded,
  by query id, never overlapping the training groups) and its settings (``TrainConfig.validation``);
* :mod:`~retrdistill.validation.metrics`: the registered ``validation_metric`` parts (the pseudo-positive's
  rank in the whole corpus; agreement with the teacher on the held-out candidates);
* :mod:`~retrdistill.validation.evaluator`: the sentence-transformers evaluator the trainer calls at the end
  of every epoch (or every N steps), encoding the corpus with the student as it is;
* :mod:`~retrdistill.validation.curve`: a trained student's recorded curve, for the leaderboard, and its figure.
"""
