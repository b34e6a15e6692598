"""The one encoding and scoring engine used by mine, score, index and eval."""
