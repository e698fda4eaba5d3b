"""The batched inference binary `mathft-infer` (no TensorFlow): sample N solutions per problem, or score samples.

mode="sample": problems (a JSONL file, "math:<manual_dir>:<split>" or "synthetic:<split>:<count>") ->
  one JSON line per sample: problem_id, sample_id, text, num_tokens, logprob, finish_reason (eos/stop/length).
mode="score": the samples of `candidates_dir` -> problem_id, sample_id, score = p(correct) / (p(correct) +
  p(incorrect)) under the evaluator prompt (probabilities of the first token where the two labels differ), and
  loglik = log p(text | generator prompt) summed over the text's num_tokens tokens (the score of a
  sequence-likelihood evaluator); `score_fields` picks one or both.
Output: OUTPUT_DIR/manifest.json (checkpoint, step, sampling settings, seed) and OUTPUT_DIR/chunks/
chunk-<c>.jsonl, each written atomically (temp file + rename); chunk c holds problems [c*K, (c+1)*K) and uses RNG
fold_in(seed, c), so a restarted or differently sharded run writes the same files; shard s of S does the chunks
with c % S == s and then writes shard-<s>-of-<S>.COMPLETE.
"""
import json
import os
import time
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mathft_jax.inference import decoding
from mathft_jax import partitioning
from mathft_jax.text import prompts as prompt_lib
from mathft_jax.models import Decoder, abstract_params, params_io
from mathft_jax.text.problems import load_problems
from mathft_jax.text.tokenizer import Tokenizer
from mathft_jax.training.train_step import token_log_probs


class InferenceInputError(ValueError):
  """Bad problems/candidates input or a manifest that does not match this run; names file and line."""


def read_problems(spec: str) -> list[dict]:
  """Problems to sample (see `mathft_jax.text.problems`); each needs a problem text."""
  records = load_problems(spec)
  missing = [r["problem_id"] for r in records if "problem" not in r]
  if missing:
    raise InferenceInputError(f"{spec}: {len(missing)} records have no 'problem' text, e.g. {missing[:3]}")
  return records


def _write_atomic(path: str, lines: Sequence[str]) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.writelines(lines)
  os.replace(tmp, path)


def _check_manifest(output_dir: str, manifest: dict) -> None:
  path = os.path.join(output_dir, "manifest.json")
  if os.path.exists(path):
    with open(path) as f:
      existing = json.load(f)
    if existing != manifest:
      diff = {k: (existing.get(k), manifest.get(k)) for k in set(existing) | set(manifest)
              if existing.get(k) != manifest.get(k)}
      raise InferenceInputError(f"{path} belongs to a different run (existing vs this run: {diff}); use a new "
                                f"output_dir")
  elif jax.process_index() == 0:
    _write_atomic(path, [json.dumps(manifest, indent=2, sort_keys=True)])


def _sampler(temperature: float, top_k: int, top_p: float):
  if temperature == 0:
    return decoding.Greedy()
  if top_k:
    return decoding.TopK(temperature=temperature, k=top_k)
  if top_p < 1.0:
    return decoding.TopP(temperature=temperature, p=top_p)
  return decoding.Temperature(temperature)


def _batches(items: list, size: int):
  for i in range(0, len(items), size):
    batch = items[i:i + size]
    yield i // size, batch, batch + [batch[-1]] * (size - len(batch))  # fixed shapes: pad with copies


def cut_at_stop(text: str, stops: Sequence[str], finish: str) -> tuple[str, str]:
  """(text up to the first stop string, finish reason). Decoding stops when the new tokens end with a stop string's
  tokens; a subword tokenizer may spell the string with other tokens in context, so the text is also cut wherever
  one appears (then the finish reason is "stop", as if decoding had caught it)."""
  cut = min((text.find(x) for x in stops if x in text), default=-1)
  return (text[:cut], "stop") if cut >= 0 else (text, finish)


def _sample_chunk(generate_fns, params, cfg, tokenizer: Tokenizer, problems, chunk_rng, settings) -> list[str]:
  lines = []
  stops = settings["stop_strings"]
  for b, real, padded in _batches(problems, settings["batch_size"]):
    make_prompt = prompt_lib.few_shot_input if settings["prompt_format"] == "few_shot" else prompt_lib.generator_input
    ids = [tokenizer.prompt_ids(make_prompt(p["problem"])) for p in padded]
    length = decoding.bucket_length(max(map(len, ids)))
    if length not in generate_fns:
      generate_fns[length] = decoding.make_generate_fn(
          cfg, num_samples=settings["num_samples"], max_new_tokens=settings["max_new_tokens"],
          sampler=_sampler(settings["temperature"], settings["top_k"], settings["top_p"]), eos_id=tokenizer.eos_id,
          pad_id=tokenizer.pad_id, stop_sequences=tuple(tuple(tokenizer.encode(s)) for s in stops),
          mesh=settings["device_mesh"])
    tokens, mask = decoding.left_pad(ids, length, tokenizer.pad_id)
    out = jax.device_get(generate_fns[length](params, tokens, mask, jax.random.fold_in(chunk_rng, b)))
    n = settings["num_samples"]
    for i, problem in enumerate(real):
      for s in range(n):
        row = i * n + s
        count = int(out["num_tokens"][row])
        finish = decoding.FINISH_NAMES[int(out["finish"][row])]
        kept = out["tokens"][row, :count - 1 if finish == "eos" else count]
        text, finish = cut_at_stop(tokenizer.decode(kept.tolist()), stops, finish)
        lines.append(json.dumps({"problem_id": problem["problem_id"], "sample_id": s, "text": text,
                                 "num_tokens": count, "logprob": float(out["logprob"][row]),
                                 "finish_reason": finish}) + "\n")
  return lines


SCORE_FIELDS = ("score", "loglik")


def _score_fns(cfg, mesh=None, fields=SCORE_FIELDS) -> dict:
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

  def on_mesh(jitted):
    def call(*args):
      with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.DEFAULT_RULES):
        return jitted(*args)
    return call
  return {name: on_mesh(jax.jit(fn, in_shardings=shardings[name])) for name, fn in chosen.items()}


def _score_chunk(score_fns: dict, params, tokenizer: Tokenizer, candidates, problems_by_id, batch_size) -> list[str]:
  """Score records for `candidates`, with only the fields `score_fns` computes (each prompt built only if needed).
  Prompts and texts are tokenized as in training: the evaluator prompt followed by the labels' shared prefix, and
  generator prompt + text by `Tokenizer.example_ids`."""
  if "score" in score_fns:
    prefix, correct_id, incorrect_id = tokenizer.evaluator_labels()
    label_ids = jnp.asarray((correct_id, incorrect_id))
  lines = []
  for _, real, padded in _batches(candidates, batch_size):
    out, num_tokens = {}, None
    if "score" in score_fns:
      ids = [tokenizer.prompt_ids(prompt_lib.evaluator_input(problems_by_id[c["problem_id"]], c["text"])) + prefix
             for c in padded]
      tokens, mask = decoding.left_pad(ids, decoding.bucket_length(max(map(len, ids))), tokenizer.pad_id)
      out["score"] = score_fns["score"](params, tokens, mask, label_ids)
    if "loglik" in score_fns:
      pairs = [tokenizer.example_ids(prompt_lib.generator_input(problems_by_id[c["problem_id"]]), c["text"])
               for c in padded]
      prompts, full = [p for p, _ in pairs], [p + t for p, t in pairs]
      tokens, mask = decoding.left_pad(full, decoding.bucket_length(max(map(len, full))), tokenizer.pad_id)
      weights = mask.copy()
      for i, p in enumerate(prompts):  # loss on the solution tokens only
        weights[i, mask.shape[1] - len(full[i]):mask.shape[1] - len(full[i]) + len(p)] = 0
      out["loglik"] = score_fns["loglik"](params, tokens, weights.astype(np.float32), mask)
      num_tokens = [len(f) - len(p) for f, p in zip(full, prompts)]
    out = jax.device_get(out)
    for i, c in enumerate(real):
      record = {"problem_id": c["problem_id"], "sample_id": c["sample_id"]}
      record.update({k: float(v[i]) for k, v in out.items()})
      if num_tokens is not None:
        record["num_tokens"] = num_tokens[i]
      lines.append(json.dumps(record) + "\n")
  return lines


def read_candidate_chunks(candidates_dir: str) -> list[dict]:
  chunk_dir = os.path.join(candidates_dir, "chunks")
  records = []
  for name in sorted(n for n in os.listdir(chunk_dir) if n.endswith(".jsonl")):
    with open(os.path.join(chunk_dir, name)) as f:
      for line_no, line in enumerate(f, 1):
        try:
          records.append(json.loads(line))
        except ValueError as e:
          raise InferenceInputError(f"{os.path.join(chunk_dir, name)}:{line_no}: not JSON ({e})") from None
  return records


def infer(*, mode: str, output_dir: str, checkpoint_path: str, problems: str, tokenizer: Optional[str] = None,
          num_samples: int = 64, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
          max_new_tokens: int = 512, seed: int = 0, chunk_size: int = 16, batch_size: int = 4,
          shard_id: Optional[int] = None, num_shards: Optional[int] = None, stop_strings: Sequence[str] = (),
          candidates_dir: Optional[str] = None, mesh: Optional[partitioning.MeshConfig] = None,
          prompt_format: str = "generator", score_fields: Sequence[str] = SCORE_FIELDS) -> int:
  """Runs `mode` ("sample" or "score") and returns the number of records this call wrote (0 when all existed).

  shard_id / num_shards default to this process's index / the process count (one shard per host).
  mesh: shard decoding or scoring over this host's local devices (params restored straight into their shards by
    the logical-axis rules; prompts over data x fsdp, so batch_size must divide evenly).
  score_fields: what mode="score" computes, each a forward pass of its own: "score" (the evaluator's label
    probability, for "ce"/"margin" evaluators) and/or "loglik" (+ num_tokens; for a "seq" evaluator).
  prompt_format: "generator" (fine-tuned models) or "few_shot" (4 exemplars, for pretrained checkpoints).
  tokenizer: the checkpoint's own tokenizer is used (its BOS, EOS and ids, as in training); one given here must be
    that same tokenizer, and is required only for params folders written before tokenizers travelled with models.
  """
  if prompt_format not in ("generator", "few_shot"):
    raise ValueError(f"prompt_format must be 'generator' or 'few_shot', got {prompt_format!r}")
  partitioning.maybe_initialize_distributed()  # one shard per host on a multi-host launch
  shard_id = jax.process_index() if shard_id is None else shard_id
  num_shards = jax.process_count() if num_shards is None else num_shards
  if mode not in ("sample", "score"):
    raise ValueError(f"mode must be 'sample' or 'score', got {mode!r}")
  tok = params_io.checkpoint_tokenizer(checkpoint_path, tokenizer)  # before any compute: fails fast
  problem_list = read_problems(problems)
  device_mesh = partitioning.make_mesh(mesh, jax.local_devices()) if mesh is not None else None
  cfg, params = params_io.load_params(checkpoint_path, device_mesh)
  # step stays None for checkpoints without training provenance (e.g. an HF import)
  step = params_io.read_manifest(checkpoint_path).get("provenance", {}).get("step")
  settings = {"mode": mode, "checkpoint_path": os.path.abspath(checkpoint_path), "checkpoint_step": step,
              "problems": problems, "tokenizer": tok.fingerprint, "num_samples": num_samples,
              "temperature": temperature, "top_k": top_k, "top_p": top_p, "max_new_tokens": max_new_tokens,
              "seed": seed, "chunk_size": chunk_size, "batch_size": batch_size, "stop_strings": list(stop_strings),
              "candidates_dir": candidates_dir, "prompt_format": prompt_format}
  if mode == "score":
    if not score_fields or set(score_fields) - set(SCORE_FIELDS):
      raise ValueError(f"score_fields must be a non-empty subset of {SCORE_FIELDS}, got {tuple(score_fields)!r}")
    settings["score_fields"] = sorted(score_fields)
  os.makedirs(os.path.join(output_dir, "chunks"), exist_ok=True)
  _check_manifest(output_dir, settings)
  if mode == "score":
    if not candidates_dir:
      raise ValueError("mode='score' needs candidates_dir (a mode='sample' output_dir)")
    by_id = {p["problem_id"]: p["problem"] for p in problem_list}
    items = read_candidate_chunks(candidates_dir)
    unknown = sorted({c["problem_id"] for c in items} - set(by_id))
    if unknown:
      raise InferenceInputError(f"{candidates_dir}: candidates for unknown problem ids, e.g. {unknown[:3]}")
    score_fns = _score_fns(cfg, device_mesh, tuple(score_fields))
  else:
    items = problem_list
    generate_fns: dict = {}
    settings = {**settings, "device_mesh": device_mesh}
  num_chunks = -(-len(items) // chunk_size)
  written = total_tokens = 0
  start = time.time()
  for c in range(shard_id, num_chunks, num_shards):
    path = os.path.join(output_dir, "chunks", f"chunk-{c:05d}.jsonl")
    if os.path.exists(path):
      continue  # finished by an earlier run
    chunk = items[c * chunk_size:(c + 1) * chunk_size]
    if mode == "sample":
      lines = _sample_chunk(generate_fns, params, cfg, tok, chunk, jax.random.fold_in(jax.random.PRNGKey(seed), c),
                            settings)
    else:
      lines = _score_chunk(score_fns, params, tok, chunk, by_id, batch_size * num_samples)
    _write_atomic(path, lines)
    written += len(lines)
    total_tokens += sum(json.loads(x).get("num_tokens", 0) for x in lines)
    elapsed = time.time() - start
    print(f"chunk {c + 1}/{num_chunks}: {written} records, {written / elapsed:.1f} records/s"
          + (f", {total_tokens / elapsed:.0f} tokens/s" if mode == "sample" else ""), flush=True)
  _write_atomic(os.path.join(output_dir, f"shard-{shard_id}-of-{num_shards}.COMPLETE"), [f"{num_chunks}\n"])
  if jax.process_count() > 1:  # every host returns once all shards are on disk (the next stage reads them all)
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"mathft-infer {output_dir}")
  return written


def main() -> None:
  from mathft_jax import gin_main
  from mathft_jax.inference import infer as infer_module  # the importable module, whatever __main__ is
  gin_main.run(infer_module.infer)


if __name__ == "__main__":
  main()
