"""Launch scripts: --dry-run prints the exact commands (nothing runs)."""
import os
import shlex
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dry(script, *args):
  proc = subprocess.run([os.path.join(REPO, "launch", script), "--dry-run", *args], capture_output=True, text=True,
                        timeout=60, cwd=REPO)
  assert proc.returncode == 0, proc.stderr
  return [shlex.split(line) for line in proc.stdout.splitlines()]


def test_v4_32_ssft_run_commands():
  zone = ["--name", "ssft", "--zone", "us-central2-b", "--accelerator", "v4-32", "--project", "my-proj"]
  assert _dry("tpu_vm.sh", "create", *zone) == [[
      "gcloud", "compute", "tpus", "tpu-vm", "create", "ssft", "--zone=us-central2-b", "--accelerator-type=v4-32",
      "--version=tpu-ubuntu2204-base", "--project=my-proj"]]
  assert _dry("tpu_vm.sh", "create", *zone, "--queued")[0][:6] == [
      "gcloud", "compute", "tpus", "queued-resources", "create", "ssft"]
  setup = _dry("tpu_vm.sh", "setup", *zone, "--repo", "https://example.org/mathft.git")[0]
  assert setup[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "ssft", "--zone=us-central2-b"]
  assert "--worker=all" in setup and "git clone --branch main https://example.org/mathft.git" in setup[-1]
  train_args = ["--gin_file=models/gemma_2b.gin", "--gin_file=runs/train.gin", "--gin.MODEL_DIR='gs://b/ssft'",
                "--gin.MIXTURE_OR_TASK_NAME='ssft_math'", "--gin.TRAIN_STEPS=3000"]
  (train,) = _dry("tpu_vm.sh", "train", *zone, "--", *train_args)
  assert train[:-1] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "ssft", "--zone=us-central2-b",
                        "--project=my-proj", "--worker=all"]
  remote = train[-1]
  assert remote.startswith("--command=cd ~/mathft-jax && MATHFT_DISTRIBUTED=1 .venv/bin/mathft-train ")
  # The remote shell receives the binary's arguments intact, and each worker logs to its own file.
  remote_argv = shlex.split(remote[len("--command="):].split(" 2>&1")[0])
  assert remote_argv[-len(train_args):] == train_args
  assert remote.endswith("| tee ~/logs/train-$(hostname).log")
  assert _dry("tpu_vm.sh", "delete", *zone)[0][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "ssft"]
  recipe_args = ["--gin_file=recipes/scale/llama3_8b_v4_32.gin", "--gin.RUN_DIR='/gcs/b/run'"]
  (recipe,) = _dry("tpu_vm.sh", "recipe", *zone, "--", *recipe_args)
  assert recipe[-1].startswith("--command=cd ~/mathft-jax && MATHFT_DISTRIBUTED=1 .venv/bin/mathft-recipe ")
  assert shlex.split(recipe[-1][len("--command="):].split(" 2>&1")[0])[-2:] == recipe_args


def test_gpu_host_and_bad_usage():
  assert _dry("gpu_host.sh", "infer", "--gin_file=runs/infer.gin") == [[
      "env", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.95", ".venv/bin/mathft-infer", "--gin_file=runs/infer.gin"]]
  proc = subprocess.run([os.path.join(REPO, "launch", "tpu_vm.sh"), "--dry-run", "train"], capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 2 and "--name and --zone are required" in proc.stderr
