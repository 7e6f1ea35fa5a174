"""The loop that learns: edge cases and the regression suite, the review queue, the gate, their command line (python -m loop)."""
