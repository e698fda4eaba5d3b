"""Data layer: datasets, prompts, vocabularies, seqio tasks and batch sources (the only layer importing TF/seqio)."""
