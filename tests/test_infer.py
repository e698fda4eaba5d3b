"""mathft-infer: records, idempotent chunked output, sharding, kill + restart, scoring."""
import dataclasses
import filecmp
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mathft_jax.inference.infer import InferenceInputError, SamplingConfig, infer
from mathft_jax.models import Decoder, init_params, preset
from mathft_jax.models.params_io import save_params
from mathft_jax.text import prompts
from mathft_jax.text.tokenizer import BYTE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLING = SamplingConfig(num_samples=3, max_new_tokens=16, chunk_size=2, batch_size=2, temperature=1.0)
SAMPLE = dict(mode="sample", problems="synthetic:test:10", sampling=SAMPLING, seed=5)
SCORING = SamplingConfig(num_samples=2, chunk_size=4, batch_size=2)  # 8 candidates a chunk, 4 a batch


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  cfg = preset("tiny", {"num_layers": 2})
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny")
  save_params(init_params(cfg, jax.random.PRNGKey(0)), cfg, path, BYTE)
  return path


def _records(output_dir):
  chunk_dir = os.path.join(output_dir, "chunks")
  return [json.loads(line) for name in sorted(os.listdir(chunk_dir)) for line in open(os.path.join(chunk_dir, name))]


def test_byte_tokenizer_matches_seqio_byte_vocabulary():
  import seqio
  text = "Solve $\\frac{1}{2}x = 3$ — ünïcode ✓"
  assert BYTE.encode(text) == list(seqio.ByteVocabulary().encode(text))
  assert BYTE.decode(BYTE.encode(text) + [1, 0]) == text


def test_sample_records_idempotence_and_manifest(tmp_path, checkpoint):
  out = str(tmp_path / "s")
  assert infer(output_dir=out, checkpoint_path=checkpoint, **SAMPLE) == 30
  records = _records(out)
  assert len(records) == 30 and len({(r["problem_id"], r["sample_id"]) for r in records}) == 30
  assert {r["finish_reason"] for r in records} <= {"eos", "stop", "length"}
  assert all(r["logprob"] < 0 and 0 < r["num_tokens"] <= 16 for r in records)
  assert infer(output_dir=out, checkpoint_path=checkpoint, **SAMPLE) == 0  # all chunks exist: nothing redone
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert manifest["temperature"] == 1.0 and manifest["seed"] == 5 and manifest["num_samples"] == 3
  assert manifest["checkpoint_path"] == os.path.abspath(checkpoint) and manifest["checkpoint_step"] is None
  assert os.path.exists(os.path.join(out, "shard-0-of-1.COMPLETE"))
  with pytest.raises(InferenceInputError, match="different run"):
    infer(output_dir=out, checkpoint_path=checkpoint,
          **{**SAMPLE, "sampling": dataclasses.replace(SAMPLING, temperature=0.5)})
  greedy = {**SAMPLE, "sampling": dataclasses.replace(SAMPLING, num_samples=1, temperature=0.0)}
  infer(output_dir=str(tmp_path / "g1"), checkpoint_path=checkpoint, **greedy)
  infer(output_dir=str(tmp_path / "g2"), checkpoint_path=checkpoint, **{**greedy, "seed": 9})
  assert [r["text"] for r in _records(str(tmp_path / "g1"))] == [r["text"] for r in _records(str(tmp_path / "g2"))]


def test_shards_union_equals_single_run(tmp_path, checkpoint):
  infer(output_dir=str(tmp_path / "one"), checkpoint_path=checkpoint, **SAMPLE)
  for shard in (1, 0):
    infer(output_dir=str(tmp_path / "two"), checkpoint_path=checkpoint, shard_id=shard, num_shards=2, **SAMPLE)
  cmp = filecmp.dircmp(tmp_path / "one" / "chunks", tmp_path / "two" / "chunks")
  assert not cmp.left_only and not cmp.right_only and not cmp.diff_files and len(cmp.same_files) == 5
  # Decoding sharded over a (data 2, tensor 4) mesh of the 8 local devices gives the same samples; log-probs
  # agree to float32 rounding (tensor-parallel sums add in another order).
  from mathft_jax.partitioning import MeshConfig
  infer(output_dir=str(tmp_path / "mesh"), checkpoint_path=checkpoint,
        **{**SAMPLE, "sampling": dataclasses.replace(SAMPLING, mesh=MeshConfig(2, 1, 4))})
  single, sharded = _records(str(tmp_path / "one")), _records(str(tmp_path / "mesh"))
  assert len(single) == len(sharded) == 30
  for a, b in zip(single, sharded):
    assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-3)
    assert {k: v for k, v in a.items() if k != "logprob"} == {k: v for k, v in b.items() if k != "logprob"}


def test_shared_engine_samples_depend_on_problem_and_sample_only(tmp_path, checkpoint):
  """The shared-prompt engine: other batch and chunk sizes, shards, and the slot-refill engine with any slot count
  (changed between the shards of one run) give the same samples; greedy equals the classic engine's."""
  shared = dataclasses.replace(SAMPLING, engine="shared")
  infer(output_dir=str(tmp_path / "a"), checkpoint_path=checkpoint, **{**SAMPLE, "sampling": shared})
  for shard, slots, lane in ((1, 2, 1), (0, 4, 2)):
    other = dataclasses.replace(shared, engine="refill", batch_size=3, chunk_size=3, slots=slots, lane=lane)
    infer(output_dir=str(tmp_path / "b"), checkpoint_path=checkpoint, shard_id=shard, num_shards=2,
          **{**SAMPLE, "sampling": other})
  a, b = _records(str(tmp_path / "a")), _records(str(tmp_path / "b"))
  key = lambda r: (r["problem_id"], r["sample_id"])  # noqa: E731
  assert len(a) == len(b) == 30
  for x, y in zip(sorted(a, key=key), sorted(b, key=key)):  # log-probs to float32 rounding (other batch shapes)
    assert x["logprob"] == pytest.approx(y["logprob"], abs=1e-3)
    assert {k: v for k, v in x.items() if k != "logprob"} == {k: v for k, v in y.items() if k != "logprob"}
  assert json.load(open(os.path.join(str(tmp_path / "a"), "manifest.json")))["engine"] == "shared"
  greedy = {**SAMPLE, "sampling": dataclasses.replace(SAMPLING, num_samples=1, temperature=0.0)}
  infer(output_dir=str(tmp_path / "g1"), checkpoint_path=checkpoint, **greedy)
  infer(output_dir=str(tmp_path / "g2"), checkpoint_path=checkpoint,
        **{**greedy, "sampling": dataclasses.replace(greedy["sampling"], engine="shared")})
  assert [r["text"] for r in _records(str(tmp_path / "g1"))] == [r["text"] for r in _records(str(tmp_path / "g2"))]
  assert "engine" not in json.load(open(os.path.join(str(tmp_path / "g1"), "manifest.json")))


def test_score_mode_scores_and_logliks(tmp_path, checkpoint):
  samples = str(tmp_path / "s")
  infer(output_dir=samples, checkpoint_path=checkpoint, **SAMPLE)
  scores = str(tmp_path / "scores")
  n = infer(output_dir=scores, checkpoint_path=checkpoint, mode="score", problems=SAMPLE["problems"],
            candidates_dir=samples, sampling=SCORING)
  records = _records(scores)
  assert n == 30 and all(0 < r["score"] < 1 for r in records)
  # loglik equals an independent forward pass over generator prompt + text, summing the text tokens' log-probs.
  from mathft_jax.inference.infer import read_problems
  from mathft_jax.models.params_io import load_params
  cfg, params = load_params(checkpoint)
  problem = {p["problem_id"]: p["problem"] for p in read_problems(SAMPLE["problems"])}
  sample = _records(samples)[4]
  prompt = [0] + BYTE.encode(prompts.generator_input(problem[sample["problem_id"]]))  # the byte start id
  seq = prompt + BYTE.encode(sample["text"])
  logits, _ = Decoder(cfg).apply({"params": params}, jnp.asarray([seq[:-1]]))
  logp = jax.nn.log_softmax(logits[0])[jnp.arange(len(prompt) - 1, len(seq) - 1), jnp.asarray(seq[len(prompt):])]
  scored = next(r for r in records if (r["problem_id"], r["sample_id"]) == (sample["problem_id"],
                                                                           sample["sample_id"]))
  assert scored["loglik"] == pytest.approx(float(logp.sum()), abs=1e-3)


def test_score_mode_computes_only_the_fields_asked_for(tmp_path, checkpoint):
  samples = str(tmp_path / "s")
  infer(output_dir=samples, checkpoint_path=checkpoint, **SAMPLE)
  infer(output_dir=str(tmp_path / "both"), checkpoint_path=checkpoint, mode="score", problems=SAMPLE["problems"],
        candidates_dir=samples, sampling=SCORING)
  both = _records(str(tmp_path / "both"))
  for fields in (("loglik",), ("score",)):
    out = str(tmp_path / fields[0])
    infer(output_dir=out, checkpoint_path=checkpoint, mode="score", problems=SAMPLE["problems"],
          candidates_dir=samples, sampling=SCORING, score_fields=fields)
    for one, full in zip(_records(out), both):
      keep = {"problem_id", "sample_id", *fields} | ({"num_tokens"} if "loglik" in fields else set())
      assert set(one) == keep
      assert {k: pytest.approx(v, abs=1e-4) for k, v in one.items()} == {k: full[k] for k in keep}
  with pytest.raises(ValueError, match="score_fields"):
    infer(output_dir=str(tmp_path / "bad"), checkpoint_path=checkpoint, mode="score", problems=SAMPLE["problems"],
          candidates_dir=samples, score_fields=("logprob",))
  # On a (data 2, tensor 4) mesh of the 8 local devices, each field alone and both together match one device.
  from mathft_jax.partitioning import MeshConfig
  for fields in (("score",), ("loglik",), ("loglik", "score")):
    out = str(tmp_path / ("mesh_" + "_".join(fields)))
    infer(output_dir=out, checkpoint_path=checkpoint, mode="score", problems=SAMPLE["problems"],
          candidates_dir=samples, sampling=dataclasses.replace(SCORING, mesh=MeshConfig(2, 1, 4)),
          score_fields=fields)
    sharded = _records(out)
    assert len(sharded) == len(both) == 30
    for one, full in zip(sharded, both):
      assert set(one) == {"problem_id", "sample_id", *fields} | ({"num_tokens"} if "loglik" in fields else set())
      assert {k: pytest.approx(v, abs=1e-3) for k, v in one.items()} == {k: full[k] for k in one}


def test_prompts_start_with_the_id_training_examples_start_with(tmp_path):
  """Byte-level training examples start with id 0, as seqio's converters always had them; inference prepends it."""
  from mathft_jax.data.seqio_source import SeqioSource
  path = tmp_path / "t.jsonl"
  path.write_text(json.dumps({"inputs": "Problem:\n1+1\n\nSolution:\n", "targets": "2"}) + "\n")
  batch = next(SeqioSource(f"jsonl:{path}", {"inputs": 32, "targets": 8}, 1, shuffle=False).host_batches())
  tokens = batch["decoder_input_tokens"][0]
  assert tokens[0] == 0 and tokens[1] == BYTE.encode("P")[0] and BYTE.prompt_ids("P") == [0, tokens[1]]


def _command(out, checkpoint):
  return [sys.executable, "-m", "mathft_jax.inference.infer", "--gin_file=runs/infer.gin", f"--gin.OUTPUT_DIR='{out}'",
          f"--gin.CHECKPOINT_PATH='{checkpoint}'", "--gin.PROBLEMS='synthetic:test:24'", "--gin.NUM_SAMPLES=4",
          "--gin.MAX_NEW_TOKENS=24", "--gin.infer.SamplingConfig.chunk_size=2",
          "--gin.infer.SamplingConfig.batch_size=1"]


def test_kill_then_restart_writes_exactly_the_uninterrupted_output(tmp_path, checkpoint):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", PYTHONUNBUFFERED="1")
  subprocess.run(_command(tmp_path / "full", checkpoint), cwd=REPO, env=env, check=True, capture_output=True,
                 timeout=300)
  out = tmp_path / "killed"
  proc = subprocess.Popen(_command(out, checkpoint), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not (out / "chunks" / "chunk-00002.jsonl").exists():
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (out / "shard-0-of-1.COMPLETE").exists()
  subprocess.run(_command(out, checkpoint), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
  records = _records(str(out))
  assert len(records) == 24 * 4 and len({(r["problem_id"], r["sample_id"]) for r in records}) == 96
  cmp = filecmp.dircmp(tmp_path / "full" / "chunks", out / "chunks")
  assert not cmp.left_only and not cmp.right_only and not cmp.diff_files  # no stray temp files either
  assert np.isfinite([r["logprob"] for r in records]).all()


def test_two_processes_write_their_shards_and_the_union_equals_one_process(tmp_path, checkpoint):
  """`mathft-infer` on 2 hosts (jax.distributed on 127.0.0.1): each host writes its own shard of the chunks."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]

  def command(out):
    return [sys.executable, "-m", "mathft_jax.inference.infer", "--gin_file=runs/infer.gin",
            f"--gin.OUTPUT_DIR='{out}'", f"--gin.CHECKPOINT_PATH='{checkpoint}'", "--gin.PROBLEMS='synthetic:test:10'",
            "--gin.NUM_SAMPLES=3", "--gin.MAX_NEW_TOKENS=16", "--gin.infer.SamplingConfig.chunk_size=2",
            "--gin.infer.SamplingConfig.batch_size=2"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  subprocess.run(command(tmp_path / "one"), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
  procs = [subprocess.Popen(command(tmp_path / "two"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(env, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                                JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
           for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
  for i, out in enumerate(outs):  # host i wrote chunks i, i+2, ...: 3 and 2 of the 5
    assert f"chunk {i + 1}/5" in out and f"chunk {i + 3}/5" in out and f"chunk {2 - i}/5" not in out
  assert {n for n in os.listdir(tmp_path / "two") if n.endswith(".COMPLETE")} == {
      "shard-0-of-2.COMPLETE", "shard-1-of-2.COMPLETE"}
  cmp = filecmp.dircmp(tmp_path / "one" / "chunks", tmp_path / "two" / "chunks")
  assert not cmp.left_only and not cmp.right_only and not cmp.diff_files and len(cmp.same_files) == 5


def test_text_is_cut_at_a_stop_string_the_tokens_did_not_catch():
  from mathft_jax.inference.infer import cut_at_stop
  stops = ("\n\nProblem:", "###")
  assert cut_at_stop("So $\\boxed{2}$.\n\nProblem: next", stops, "length") == ("So $\\boxed{2}$.", "stop")
  assert cut_at_stop("a ### b\n\nProblem:", stops, "stop") == ("a ", "stop")
  assert cut_at_stop("no stop here", stops, "eos") == ("no stop here", "eos")
  assert cut_at_stop("anything", (), "length") == ("anything", "length")
