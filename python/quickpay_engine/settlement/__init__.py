"""Settlement: the batcher, the pipeline (the saga) and the facade the API calls."""
