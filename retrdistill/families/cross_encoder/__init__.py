"""The cross-encoder family as one package: what a CrossEncoder checkpoint is and how it scores pairs
(``family``) and the cross-encoder student (``student``, its objective in ``objective``)."""
