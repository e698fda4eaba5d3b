"""Inference without TensorFlow: KV-cache sampling (`decoding`) and the `mathft-infer` binary (`infer`: N samples
per problem, evaluator scores, chunked idempotent output)."""
