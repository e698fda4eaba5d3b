"""Problem sets by name for the inference and re-ranking binaries (no TensorFlow)."""
import os
import subprocess
import sys

import pytest

from mathft_jax.text.problems import ProblemSetError, load_problems

SHARED_MATH = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "math")


def test_synthetic_and_jsonl(tmp_path):
  synthetic = load_problems("synthetic:test:5")
  assert len(synthetic) == 5 and {"problem_id", "problem", "answer", "level", "subject"} <= set(synthetic[0])
  path = tmp_path / "p.jsonl"
  path.write_text('{"unique_id": "x/1", "problem": "What?", "answer": "2"}\n\n{"problem_id": 7, "answer": "3"}\n')
  assert load_problems(str(path)) == [{"problem_id": "x/1", "problem": "What?", "answer": "2"},
                                      {"problem_id": "7", "answer": "3"}]
  path.write_text('{"problem": "no id"}\n')
  with pytest.raises(ProblemSetError, match=r"p\.jsonl:1"):
    load_problems(str(path))


@pytest.mark.skipif(not os.path.isdir(SHARED_MATH), reason="../shared/data/math is absent")
def test_math_split_without_tensorflow():
  code = ("import sys; from mathft_jax.text.problems import load_problems; "
          f"r = load_problems('math:{SHARED_MATH}:test500'); assert len(r) == 500, len(r); "
          "assert r[0]['answer'] and r[0]['problem']; "
          "bad = [m for m in ('tensorflow', 'seqio') if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
  with pytest.raises(ProblemSetError, match="unknown MATH split 'dev'"):
    load_problems(f"math:{SHARED_MATH}:dev")
