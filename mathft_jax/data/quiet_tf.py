"""TensorFlow and seqio, imported once and quietly: data modules take `tf` and `seqio` from here.

On a CPU-only host, TensorFlow's libraries log while they load and on first use (oneDNN notices, missing CUDA
drivers, a failed cuInit), before any logging setting applies; none of it is actionable for a user of this
project. This import sends those lines to /dev/null (the process's stderr is restored right after, so later errors
show as usual) and sets TF_CPP_MIN_LOG_LEVEL=3 unless the user set it. Python exceptions are not affected."""
import os
import sys


def _import_quietly():
  if "seqio" in sys.modules:
    return sys.modules["tensorflow"], sys.modules["seqio"]
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    import seqio
    import tensorflow
    list(tensorflow.data.Dataset.range(1).as_numpy_iterator())  # loads the remaining libraries, inits devices
    return tensorflow, seqio
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


tf, seqio = _import_quietly()
