"""Scores of sampled solutions under a model (`mathft-infer` mode="score"), each field a forward pass of its own:
"score" = p(correct) / (p(correct) + p(incorrect)) under the evaluator prompt (at the first token where the two
labels differ), "loglik" = log p(text | generator prompt) over the text's tokens (a "seq" evaluator's score).
Shapes: B rows, L the (bucketed) prompt + text length."""
import json

import jax
import jax.numpy as jnp
import numpy as np

from mathft_jax import partitioning
from mathft_jax.inference import decoding
from mathft_jax.models import Decoder, abstract_params
from mathft_jax.text import prompts as prompt_lib
from mathft_jax.text.tokenizer import Tokenizer
from mathft_jax.training.train_step import token_log_probs


def padded_batches(items: list, size: int):
  """(index, the real items, the items padded to `size` with copies of the last): fixed shapes for jit."""
  for i in range(0, len(items), size):
    batch = items[i:i + size]
    yield i // size, batch, batch + [batch[-1]] * (size - len(batch))


SCORE_FIELDS = ("score", "loglik")


def score_fns(cfg, mesh=None, fields=SCORE_FIELDS) -> dict:
  """{field: jitted fn} for `fields` only, each a forward pass over its own prompt:
  "score": (params, tokens [B, L], mask [B, L], label_ids [2]) -> p(correct) / (p(correct) + p(incorrect)) [B],
    read at the evaluator prompt's last position;
  "loglik": (params, tokens [B, L], weights [B, L], mask [B, L]) -> sum of log p(token) over the weighted
    (solution) tokens [B], with the generator prompt."""
  decoder = Decoder(cfg)

  def label_score(params, tokens, mask, label_ids):
    logits, _ = decoder.apply({"params": params}, tokens, decoding.mask_positions(mask), mask)
    last = jax.nn.log_softmax(logits[:, -1])
    correct, incorrect = last[:, label_ids[0]], last[:, label_ids[1]]
    return jnp.exp(correct - jnp.logaddexp(correct, incorrect))

  def loglik(params, tokens, weights, mask):
    logits, _ = decoder.apply({"params": params}, tokens[:, :-1], decoding.mask_positions(mask)[:, :-1], mask[:, :-1])
    logp, _ = token_log_probs(logits, tokens[:, 1:])
    return jnp.sum(logp * weights[:, 1:], axis=-1)

  chosen = {name: fn for name, fn in (("score", label_score), ("loglik", loglik)) if name in fields}
  if mesh is None:
    return {name: jax.jit(fn) for name, fn in chosen.items()}
  batch = partitioning.batch_sharding(mesh)
  params_sharding = partitioning.boxed_to_sharding(abstract_params(cfg), mesh)
  shardings = {"score": (params_sharding, batch, batch, None), "loglik": (params_sharding, batch, batch, batch)}
  return {name: partitioning.jit_on_mesh(fn, mesh, in_shardings=shardings[name]) for name, fn in chosen.items()}


def score_chunk(fns: dict, params, tokenizer: Tokenizer, candidates, problems_by_id, batch_size) -> list[str]:
  """Score records for `candidates`, with only the fields that `fns` (from `score_fns`) compute, each prompt built
  only if needed.
  Prompts and texts are tokenized as in training: the evaluator prompt followed by the labels' shared prefix, and
  generator prompt + text by `Tokenizer.example_ids`."""
  if "score" in fns:
    prefix, correct_id, incorrect_id = tokenizer.evaluator_labels()
    label_ids = jnp.asarray((correct_id, incorrect_id))
  lines = []
  for _, real, padded in padded_batches(candidates, batch_size):
    out, num_tokens = {}, None
    if "score" in fns:
      ids = [tokenizer.prompt_ids(prompt_lib.evaluator_input(problems_by_id[c["problem_id"]], c["text"])) + prefix
             for c in padded]
      tokens, mask = decoding.left_pad(ids, decoding.bucket_length(max(map(len, ids))), tokenizer.pad_id)
      out["score"] = fns["score"](params, tokens, mask, label_ids)
    if "loglik" in fns:
      pairs = [tokenizer.example_ids(prompt_lib.generator_input(problems_by_id[c["problem_id"]]), c["text"])
               for c in padded]
      prompts, full = [p for p, _ in pairs], [p + t for p, t in pairs]
      tokens, mask = decoding.left_pad(full, decoding.bucket_length(max(map(len, full))), tokenizer.pad_id)
      weights = mask.copy()
      for i, p in enumerate(prompts):  # loss on the solution tokens only
        weights[i, mask.shape[1] - len(full[i]):mask.shape[1] - len(full[i]) + len(p)] = 0
      out["loglik"] = fns["loglik"](params, tokens, weights.astype(np.float32), mask)
      num_tokens = [len(f) - len(p) for f, p in zip(full, prompts)]
    out = jax.device_get(out)
    for i, c in enumerate(real):
      record = {"problem_id": c["problem_id"], "sample_id": c["sample_id"]}
      record.update({k: float(v[i]) for k, v in out.items()})
      if num_tokens is not None:
        record["num_tokens"] = num_tokens[i]
      lines.append(json.dumps(record) + "\n")
  return lines
