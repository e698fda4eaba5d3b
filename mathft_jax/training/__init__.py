"""Training: the train state and steps (`train_step`), the sharded `Trainer`, optimizers (`optim`), orbax
checkpoints of the train state (`checkpointing`), metric logging, and the `mathft-train` binary (`train`).
Imports no TensorFlow; the seqio batch source lives in `mathft_jax.data`."""
