"""The build: data/ to the artifacts the pipeline runs on (builder), the encoders, versions kept side by side, safe file writes."""
