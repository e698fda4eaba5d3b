"""The batched inference binary `mathft-infer` (no TensorFlow): sample N solutions per problem, or score samples.

mode="sample": problems (a JSONL file, "math:<manual_dir>:<split>" or "synthetic:<split>:<count>") ->
  one JSON line per sample: problem_id, sample_id, text, num_tokens, logprob, finish_reason (eos/stop/length).
mode="score": the samples of `candidates_dir` -> problem_id, sample_id and the `score_fields` (`scoring`).
Output (`run_io.ChunkedOutput`, local or gs://): OUTPUT_DIR/manifest.json (checkpoint, step, tokenizer, sampling
settings, seed) and OUTPUT_DIR/chunks/chunk-<c>.jsonl, each written atomically; chunk c holds problems [c*K,
(c+1)*K) (in score mode, their K*N candidates) and uses RNG fold_in(seed, c), so a restarted or differently
sharded run writes the same files; shard s of S does the chunks with c % S == s and then writes
shard-<s>-of-<S>.COMPLETE.
"""
import dataclasses
import json
import time
import zlib
from typing import Optional, Sequence

import jax
import numpy as np

from mathft_jax import partitioning, run_io
from mathft_jax.inference import decoding, engines, scoring
from mathft_jax.models import params_io
from mathft_jax.partitioning import MeshConfig
from mathft_jax.text import prompts as prompt_lib
from mathft_jax.text.problems import load_problems
from mathft_jax.text.tokenizer import Tokenizer

PROMPT_FORMATS = ("generator", "few_shot")


class InferenceInputError(ValueError):
  """Bad problems/candidates input or a manifest that does not match this run; names file and line."""


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How `mathft-infer` samples (and, in score mode, batches and chunks candidates); the recipe passes it as is.

  num_samples: samples per problem. temperature: 0 = greedy; top_k (0 = off) / top_p (1 = off) truncate.
  max_new_tokens: the longest sample. batch_size: problems per decoding call (x num_samples rows).
  chunk_size: problems per output chunk (the unit of resume). stop_strings: a sample ends at the first one.
  prompt_format: "generator" (models fine-tuned here) or "few_shot" (4 exemplars, for pretrained checkpoints).
  mesh: decode and score over this host's local devices (params restored straight into their shards; problems
    over data x fsdp, so batch_size must divide evenly); None = one device.
  engine: "classic", "shared" (the prompt's KV held once, live-length attention, finished rows dropped from the
    batch, a random stream per sample: `engines.make_generate_fn`) or "refill" (the shared engine's samples,
    decoded in `slots` rows that take the next sample as one ends); greedy samples are the same for all three,
    sampled ones of "classic" are other draws.
  slots: for engine="refill", the rows decoded at once (0: batch_size*num_samples, nothing to refill): the memory
    knob when a call's samples do not all fit at once. lane: slots per lane (a lane serves one problem at a time;
    its prompt's keys are read once per lane and step).
    Neither decides the samples: they are not in the manifest, and a run may resume with others.
  """
  num_samples: int = 64
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_new_tokens: int = 512
  batch_size: int = 4
  chunk_size: int = 16
  stop_strings: tuple = ()
  prompt_format: str = "generator"
  mesh: Optional[MeshConfig] = None
  engine: str = "classic"
  slots: int = 0
  lane: int = 16

  def settings(self) -> dict:
    """What decides the samples (the mesh does not): the manifest's part. The classic engine is left out, as in
    the manifests written before there was a choice."""
    out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("mesh", "slots", "lane")}
    out["stop_strings"] = list(self.stop_strings)
    if self.engine == "classic":
      del out["engine"]
    return out


def read_problems(spec: str) -> list[dict]:
  """Problems to sample (see `mathft_jax.text.problems`); each needs a problem text."""
  records = load_problems(spec)
  missing = [r["problem_id"] for r in records if "problem" not in r]
  if missing:
    raise InferenceInputError(f"{spec}: {len(missing)} records have no 'problem' text, e.g. {missing[:3]}")
  return records


def _sampler(sampling: SamplingConfig):
  if sampling.temperature == 0:
    return decoding.Greedy()
  if sampling.top_k:
    return decoding.TopK(temperature=sampling.temperature, k=sampling.top_k)
  if sampling.top_p < 1.0:
    return decoding.TopP(temperature=sampling.temperature, p=sampling.top_p)
  return decoding.Temperature(sampling.temperature)


def cut_at_stop(text: str, stops: Sequence[str], finish: str) -> tuple[str, str]:
  """(text up to the first stop string, finish reason). Decoding stops when the new tokens end with a stop string's
  tokens; a subword tokenizer may spell the string with other tokens in context, so the text is also cut wherever
  one appears (then the finish reason is "stop", as if decoding had caught it)."""
  cut = min((text.find(x) for x in stops if x in text), default=-1)
  return (text[:cut], "stop") if cut >= 0 else (text, finish)


class _Sampler:
  """Samples chunks of problems: one compiled decoding function per prompt bucket length."""

  def __init__(self, cfg, params, tokenizer: Tokenizer, sampling: SamplingConfig, mesh):
    self.cfg, self.params, self.tokenizer, self.sampling, self.mesh = cfg, params, tokenizer, sampling, mesh
    self.make_prompt = prompt_lib.few_shot_input if sampling.prompt_format == "few_shot" else prompt_lib.generator_input
    self.fns: dict = {}

  def _fn(self, length: int):
    if length not in self.fns:
      s, tok = self.sampling, self.tokenizer
      self.fns[length] = engines.make_generate_fn(
          self.cfg, num_samples=s.num_samples, max_new_tokens=s.max_new_tokens, sampler=_sampler(s),
          eos_id=tok.eos_id, pad_id=tok.pad_id, stop_sequences=tuple(tuple(tok.encode(x)) for x in s.stop_strings),
          mesh=self.mesh, engine=s.engine, slots=s.slots, lane=s.lane)
    return self.fns[length]

  def chunk(self, problems: list[dict], chunk_rng) -> list[str]:
    lines, n, tok = [], self.sampling.num_samples, self.tokenizer
    for b, real, padded in scoring.padded_batches(problems, self.sampling.batch_size):
      ids = [tok.prompt_ids(self.make_prompt(p["problem"])) for p in padded]
      length = decoding.bucket_length(max(map(len, ids)))
      tokens, mask = decoding.left_pad(ids, length, tok.pad_id)
      if self.sampling.engine in ("shared", "refill"):
        keys = np.asarray([zlib.crc32(p["problem_id"].encode()) & 0x7FFFFFFF for p in padded], np.int32)
        out = jax.device_get(self._fn(length)(self.params, tokens, mask, chunk_rng, keys))
      else:
        out = jax.device_get(self._fn(length)(self.params, tokens, mask, jax.random.fold_in(chunk_rng, b)))
      for i, problem in enumerate(real):
        for s in range(n):
          row = i * n + s
          count = int(out["num_tokens"][row])
          finish = decoding.FINISH_NAMES[int(out["finish"][row])]
          kept = out["tokens"][row, :count - 1 if finish == "eos" else count]
          text, finish = cut_at_stop(tok.decode(kept.tolist()), self.sampling.stop_strings, finish)
          lines.append(json.dumps({"problem_id": problem["problem_id"], "sample_id": s, "text": text,
                                   "num_tokens": count, "logprob": float(out["logprob"][row]),
                                   "finish_reason": finish}) + "\n")
    return lines


def infer(*, mode: str, output_dir: str, checkpoint_path: str, problems: str,
          sampling: SamplingConfig = SamplingConfig(), seed: int = 0, candidates_dir: Optional[str] = None,
          score_fields: Sequence[str] = scoring.SCORE_FIELDS, tokenizer: Optional[str] = None,
          shard_id: Optional[int] = None, num_shards: Optional[int] = None) -> int:
  """Runs `mode` ("sample" or "score") and returns the number of records this call wrote (0 when all existed).

  score_fields: what mode="score" computes, each a forward pass of its own: "score" (the evaluator's label
    probability, for "ce"/"margin" evaluators) and/or "loglik" (+ num_tokens; for a "seq" evaluator).
  tokenizer: the checkpoint's own tokenizer is used (its BOS, EOS and ids, as in training); one given here must be
    that same tokenizer, and is required only for params folders written before tokenizers travelled with models.
  shard_id / num_shards default to this process's index / the process count (one shard per host).
  """
  if sampling.prompt_format not in PROMPT_FORMATS:
    raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {sampling.prompt_format!r}")
  if mode not in ("sample", "score"):
    raise ValueError(f"mode must be 'sample' or 'score', got {mode!r}")
  if mode == "score" and (not score_fields or set(score_fields) - set(scoring.SCORE_FIELDS)):
    raise ValueError(f"score_fields must be a non-empty subset of {scoring.SCORE_FIELDS}, got {tuple(score_fields)!r}")
  if mode == "score" and not candidates_dir:
    raise ValueError("mode='score' needs candidates_dir (a mode='sample' output_dir)")
  partitioning.maybe_initialize_distributed()  # one shard per host on a multi-host launch
  shard_id = jax.process_index() if shard_id is None else shard_id
  num_shards = jax.process_count() if num_shards is None else num_shards
  tok = params_io.checkpoint_tokenizer(checkpoint_path, tokenizer)  # before any compute: fails fast
  problem_list = read_problems(problems)
  settings = {"mode": mode, "checkpoint_path": run_io.absolute(checkpoint_path), "problems": problems,
              # None for checkpoints without training provenance (e.g. an HF import)
              "checkpoint_step": params_io.read_manifest(checkpoint_path).get("provenance", {}).get("step"),
              "tokenizer": tok.fingerprint, "seed": seed, "candidates_dir": candidates_dir, **sampling.settings()}
  if mode == "score":
    settings["score_fields"] = sorted(score_fields)
  output = run_io.ChunkedOutput(output_dir)
  try:
    output.claim(settings, write=jax.process_index() == 0)
  except run_io.RunFileError as e:
    raise InferenceInputError(str(e)) from None
  device_mesh = partitioning.make_mesh(sampling.mesh, jax.local_devices()) if sampling.mesh is not None else None
  cfg, params = params_io.load_params(checkpoint_path, device_mesh)
  if mode == "score":
    by_id = {p["problem_id"]: p["problem"] for p in problem_list}
    items = run_io.ChunkedOutput(candidates_dir).records()
    unknown = sorted({c["problem_id"] for c in items} - set(by_id))
    if unknown:
      raise InferenceInputError(f"{candidates_dir}: candidates for unknown problem ids, e.g. {unknown[:3]}")
    fns = scoring.score_fns(cfg, device_mesh, tuple(score_fields))
    per_chunk = sampling.chunk_size * sampling.num_samples
    run_chunk = lambda chunk, c: scoring.score_chunk(  # noqa: E731
        fns, params, tok, chunk, by_id, sampling.batch_size * sampling.num_samples)
  else:
    items, per_chunk = problem_list, sampling.chunk_size
    sampler = _Sampler(cfg, params, tok, sampling, device_mesh)
    if sampling.engine in ("shared", "refill"):  # a random stream per (problem id, sample): chunks do not matter
      run_chunk = lambda chunk, c: sampler.chunk(chunk, jax.random.PRNGKey(seed))  # noqa: E731
    else:
      run_chunk = lambda chunk, c: sampler.chunk(chunk, jax.random.fold_in(jax.random.PRNGKey(seed), c))  # noqa
  num_chunks = -(-len(items) // per_chunk)
  written = total_tokens = 0
  start = time.time()
  for c in range(shard_id, num_chunks, num_shards):
    if output.has_chunk(c):
      continue  # finished by an earlier run
    lines = run_chunk(items[c * per_chunk:(c + 1) * per_chunk], c)
    output.write_chunk(c, lines)
    written += len(lines)
    total_tokens += sum(json.loads(x).get("num_tokens", 0) for x in lines)
    elapsed = time.time() - start
    print(f"chunk {c + 1}/{num_chunks}: {written} records, {written / elapsed:.1f} records/s"
          + (f", {total_tokens / elapsed:.0f} tokens/s" if mode == "sample" else ""), flush=True)
  output.mark_shard_complete(shard_id, num_shards, num_chunks)
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
