"""Run files on Cloud Storage, against a real Cloud Storage API on localhost (the gcp-storage-emulator package):
atomic writes leave no temp objects, a tokenizer folder lives in a bucket, and `mathft-infer` into gs:// killed with
SIGKILL and restarted ends with exactly the records of an uninterrupted local run; `mathft-rerank` reads them back
from the bucket. (Orbax itself writes params to this emulator through tensorstore, but about one save in six fails
there with "Malformed StorageGeneration" on OCDBT's manifest, so the params folder of these tests is local:
docs/benchmarks.md, "Cloud Storage".)"""
import filecmp
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import jax
import pytest

pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("gcsfs")

from mathft_jax import run_io  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bucket():
  """gs://bucket on an emulator; the environment points gcsfs and tensorstore (orbax) at it."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  server = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port",
                             str(port), "--in-memory"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  for _ in range(200):
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b?project=test")
      break
    except OSError:
      time.sleep(0.05)
  request = urllib.request.Request(f"{url}/storage/v1/b?project=test", data=json.dumps({"name": "bucket"}).encode(),
                                   headers={"Content-Type": "application/json"}, method="POST")
  urllib.request.urlopen(request).read()
  env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
         "GOOGLE_CLOUD_PROJECT": "test"}
  before = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield "gs://bucket"
  finally:
    server.kill()
    for k, v in before.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def _objects(prefix: str) -> list[str]:
  import fsspec
  return sorted(f"gs://{o}" for o in fsspec.filesystem("gcs").find(prefix))


def test_atomic_writes_and_chunked_output(bucket):
  run_io.write_atomic(f"{bucket}/a/b.txt", "one")
  run_io.write_atomic(f"{bucket}/a/b.txt", "two")
  run_io.write_atomic(f"{bucket}/a/c.png", b"\x89PNG")
  assert run_io.path(f"{bucket}/a/b.txt").read_text() == "two" and _objects(f"{bucket}/a") == [
      f"{bucket}/a/b.txt", f"{bucket}/a/c.png"]  # no temp objects
  out = run_io.ChunkedOutput(f"{bucket}/out")
  out.claim({"seed": 1})
  with pytest.raises(run_io.RunFileError, match=r"out/manifest.json belongs to a different run"):
    out.claim({"seed": 2})
  out.write_chunk(1, ['{"problem_id": "b", "sample_id": 0, "text": "y"}\n'])
  out.write_chunk(0, ['{"problem_id": "a", "sample_id": 0, "text": "x"}\n'])
  out.mark_shard_complete(0, 1, 2)
  assert out.complete(1) and not out.complete(2)
  assert [r["problem_id"] for r in out.records()] == ["a", "b"]
  run_io.write_atomic(f"{bucket}/bad.jsonl", '{"a": 1}\nnot json\n')
  with pytest.raises(run_io.RunFileError, match=r"bad.jsonl:2: not JSON"):
    run_io.read_jsonl(f"{bucket}/bad.jsonl")


def _infer_command(checkpoint: str, out: str) -> list[str]:
  return [sys.executable, "-m", "mathft_jax.inference.infer", "--gin_file=runs/infer.gin",
          f"--gin.OUTPUT_DIR='{out}'", f"--gin.CHECKPOINT_PATH='{checkpoint}'", "--gin.PROBLEMS='synthetic:test:24'",
          "--gin.NUM_SAMPLES=4", "--gin.MAX_NEW_TOKENS=24", "--gin.infer.SamplingConfig.chunk_size=2",
          "--gin.infer.SamplingConfig.batch_size=1"]


def test_infer_into_a_bucket_killed_and_restarted_then_reranked(bucket, tmp_path):
  from mathft_jax.models import init_params, preset
  from mathft_jax.models.params_io import save_params
  from mathft_jax.reranking.rerank import rerank
  from mathft_jax.text.tokenizer import BYTE
  cfg = preset("tiny", {"num_layers": 2})
  checkpoint = save_params(init_params(cfg, jax.random.PRNGKey(0)), cfg, str(tmp_path / "ckpt"), BYTE)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  out = f"{bucket}/run/samples"
  proc = subprocess.Popen(_infer_command(checkpoint, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  chunks = run_io.path(out) / "chunks"
  deadline = time.time() + 300
  while not (chunks.exists() and len(list(chunks.iterdir())) >= 2) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = len(list(chunks.iterdir()))
  assert 2 <= done < 12, done  # killed midway
  subprocess.run(_infer_command(checkpoint, out), cwd=REPO, env=env, check=True, capture_output=True)
  assert len(run_io.ChunkedOutput(out).records()) == 24 * 4
  assert not [o for o in _objects(f"{bucket}/run") if ".tmp" in o]
  local = str(tmp_path / "local")  # the same run on a local disk, uninterrupted: the same files
  subprocess.run(_infer_command(checkpoint, local), cwd=REPO, env=env, check=True, capture_output=True)
  (tmp_path / "from_bucket").mkdir()
  for f in run_io.ChunkedOutput(out).chunk_files():
    (tmp_path / "from_bucket" / f.name).write_text(f.read_text())
  cmp = filecmp.dircmp(tmp_path / "from_bucket", os.path.join(local, "chunks"))
  assert len(cmp.same_files) == 12 and not cmp.diff_files and not cmp.left_only and not cmp.right_only
  metrics = rerank(candidates=out, references="synthetic:test:24", output_dir=f"{bucket}/run/report",
                   num_workers=1, bootstrap=10, num_subsets=4)
  assert metrics["provenance"]["num_problems"] == 24 and metrics["provenance"]["candidates"] == out
  assert run_io.read_json(f"{bucket}/run/report/metrics.json")["provenance"]["samples_per_problem"] == 4
  assert {os.path.basename(o) for o in _objects(f"{bucket}/run/report")} == {
      "metrics.json", "report.md", "accuracy_vs_n.png", "graded.jsonl"}


def test_a_tokenizer_folder_in_a_bucket(bucket, tmp_path):
  import hf_fixtures

  from mathft_jax.text.tokenizer import BYTE, load_tokenizer
  hf_fixtures.save_tokenizer("llama", str(tmp_path / "hf"))
  local = load_tokenizer(str(tmp_path / "hf"))
  local.save(f"{bucket}/tok")
  remote = load_tokenizer(f"{bucket}/tok")
  assert remote == local and remote.source == f"{bucket}/tok" and remote.prompt_ids("1+1") == local.prompt_ids("1+1")
  BYTE.save(f"{bucket}/byte")
  assert load_tokenizer(f"{bucket}/byte") is BYTE and BYTE.source == "byte"
