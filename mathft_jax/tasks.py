"""Registered seqio tasks and mixtures, one mixture per fine-tuning strategy (see the data issue).

Importing this module registers them; `SeqioSource` imports it. JSONL files can be used without registration
through the "jsonl:/path" task name of `mathft_jax.data.seqio_source`.
"""
