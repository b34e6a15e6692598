"""Collections in BEIR format, training-query sources, and their validation."""
