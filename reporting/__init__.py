"""Reports: what a batch, edge-case or gate report says and shows (summary, metrics, figures, HTML), from a scored CSV alone."""
