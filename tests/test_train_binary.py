"""The train binary as users run it: kill -9 + resume is exact, SIGTERM saves, 2 processes == 1, gin errors."""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def toy_jsonl(tmp_path_factory):
  path = tmp_path_factory.mktemp("data") / "toy.jsonl"
  rng = random.Random(0)
  with open(path, "w") as f:
    for _ in range(300):
      a, b = rng.randint(1, 99), rng.randint(1, 99)
      f.write(json.dumps({"inputs": f"Problem: {a}+{b}=?\nSolution:", "targets": f" {a}+{b}={a + b}. "
                                                                                 f"\\boxed{{{a + b}}}"}) + "\n")
  return str(path)


def _command(model_dir, data, steps, *extra):
  return [sys.executable, "-m", "mathft_jax.training.train", "--gin_file=models/tiny.gin", "--gin_file=runs/train.gin",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.MIXTURE_OR_TASK_NAME='jsonl:{data}'",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 24}", f"--gin.TRAIN_STEPS={steps}",
          "--gin.BATCH_SIZE=8", "--gin.LEARNING_RATE=3e-3", "--gin.config.preset.overrides={'num_layers': 2}",
          "--gin.train_config.TrainingConfig.log_every=1", *extra]


def _env(devices=8, **extra):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  env.update({k: str(v) for k, v in extra.items()})
  return env


def _run(cmd, env=None, timeout=300):
  proc = subprocess.run(cmd, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


def _fingerprint(stdout):
  return re.search(r"params fingerprint (\w+)", stdout).group(1)


def _losses(stdout):
  return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"\[train\] step (\d+):.* loss=([\d.e+-]+)", stdout)}


def _wait_for_checkpoint(model_dir, step, proc, timeout=240):
  target = os.path.join(model_dir, "checkpoints", str(step))
  deadline = time.time() + timeout
  while not os.path.isdir(target):
    assert proc.poll() is None, "training ended before the checkpoint appeared"
    assert time.time() < deadline, "no checkpoint in time"
    time.sleep(0.02)


def test_kill_9_then_restart_equals_uninterrupted_run(tmp_path, toy_jsonl):
  steps, flags = 40, ["--gin.train_config.TrainingConfig.checkpoint_every=4"]
  reference = _fingerprint(_run(_command(tmp_path / "a", toy_jsonl, steps, *flags)))
  model_dir = str(tmp_path / "b")
  proc = subprocess.Popen(_command(model_dir, toy_jsonl, steps, *flags), cwd=REPO, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  _wait_for_checkpoint(model_dir, 8, proc)
  proc.kill()
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  resumed = _run(_command(model_dir, toy_jsonl, steps, *flags))
  step = int(re.search(r"resumed from .* at step (\d+)", resumed).group(1))
  assert 8 <= step < steps
  assert _fingerprint(resumed) == reference  # bitwise-equal parameters
  assert min(_losses(resumed)) == step + 1  # it did not redo finished steps


def test_sigterm_saves_the_current_step(tmp_path, toy_jsonl):
  model_dir = str(tmp_path / "m")
  command = _command(model_dir, toy_jsonl, 100_000, "--gin.train_config.TrainingConfig.checkpoint_every=1000")
  proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:  # wait for a few train steps, then preempt
    lines.append(line)
    if line.startswith("[train] step 5:"):
      proc.send_signal(signal.SIGTERM)
      break
  out = "".join(lines) + proc.stdout.read()
  assert proc.wait(timeout=120) == 0, out[-3000:]
  saved = int(re.search(r"preempted: saved step (\d+)", out).group(1))
  assert saved >= 5
  steps = sorted(int(d) for d in os.listdir(os.path.join(model_dir, "checkpoints")) if d.isdigit())
  assert steps[-1] == saved  # the latest checkpoint is the step the signal arrived at (orbax also keeps step 1)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path, toy_jsonl):
  mesh = ["--gin.partitioning.MeshConfig.fsdp=2", "--gin.partitioning.MeshConfig.tensor=2",
          "--gin.train.train.num_data_shards=2", "--gin.train_config.TrainingConfig.checkpoint_every=3"]
  single = _losses(_run(_command(tmp_path / "one", toy_jsonl, 6, *mesh)))
  port = _free_port()
  procs = [subprocess.Popen(_command(tmp_path / "two", toy_jsonl, 6, *mesh), cwd=REPO,
                            env=_env(4, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=2,
                                     JAX_PROCESS_ID=i), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
  double = _losses(outs[0])
  assert sorted(single) == sorted(double) == list(range(1, 7))
  for step in single:
    assert abs(single[step] - double[step]) < 1e-5 * max(1.0, single[step]), (step, single[step], double[step])
  assert os.path.isdir(tmp_path / "two" / "checkpoints" / "6")
  assert os.path.isfile(tmp_path / "two" / "export" / "checkpoint.json")  # one host wrote it, no race


def test_missing_required_macro_fails_before_compute(tmp_path, toy_jsonl):
  cmd = [a for a in _command(tmp_path / "m", toy_jsonl, 5) if not a.startswith("--gin.TRAIN_STEPS")]
  proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "TRAIN_STEPS/macro.value set to `%gin.REQUIRED` but not subsequently overridden" in proc.stderr
  assert not os.path.exists(tmp_path / "m")


def test_malformed_gin_file_names_file_and_line(tmp_path, toy_jsonl):
  bad = tmp_path / "bad.gin"
  bad.write_text("BATCH_SIZE = 8\ntrain.train.seed = )\n")
  proc = subprocess.run(_command(tmp_path / "m", toy_jsonl, 5, f"--gin_file={bad}"), cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "bad.gin, line 2" in proc.stderr
  assert not os.path.exists(tmp_path / "m")
