"""Grading: extraction, normalization, equivalence, clustering, hostile input, batch grading."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from mathft_jax.grading import answer_key, cluster, extract_answer, extract_answers, grade, is_equivalent
from mathft_jax.grading.batch import CandidateFileError, grade_file, grade_problem, grade_problems

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "math")

# Rewritten-but-equal answers: (model answer, reference), each judged equivalent.
EQUAL = [
    (r"\frac34", "0.75"), (r"\dfrac34", r"\frac{3}{4}"), (r"\tfrac{3}{4}", r"\frac34"), ("0.5", r"\frac12"),
    (r"\left( 1, 2 \right)", "(1,2)"), (r"2\sqrt{2}", r"\sqrt{8}"), ("x = 5", "5"), (r"10\%", "10"),
    (r"\$1,000", "1000"), ("1{,}000", "1000"), (r"2\frac12", r"\frac52"), (r"-2\frac{1}{2}", "-2.5"),
    (r"\{1,2\}", r"\{2,1\}"), ("1, 2", "2,1"), ("x^2+2x+1", "(x+1)^2"), (r"90^\circ", "90"), (r"90^{\circ}", "90"),
    (r"5\text{ cm}", "5"), (r"12 \mbox{ inches}", "12"), ("12 inches", "12"), (r"\text{Monday}", "monday"),
    ("5.", "5"), ("-3", "- 3"), (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt3"), (".5", r"\frac{1}{2}"),
    (r"(-\infty, 3) \cup (3, \infty)", r"(-\infty,3)\cup(3,\infty)"), ("y=2x+3", "2x+3"), (r"\pi", r"\pi"),
    (r"\frac{\pi}{2}", r"\frac12\pi"), (r"\begin{pmatrix} 2 \\ 4 \end{pmatrix}", r"\begin{pmatrix}2\\2+2\end{pmatrix}"),
    (r"\text{(C)}", "C"), ("−7", "-7"), (r"\sqrt2/2", r"\frac{\sqrt{2}}{2}"), ("2^{10}", "1024"),
    ("3x+2y=6", "6-2y-3x=0"),
    ("x^{4}+4x^{3}+6x^{2}+4x+1+y^{4}+4y^{3}+6y^{2}+4y+1+z^{4}+4z^{3}+6z^{2}+4z+1", "(x+1)^4+(y+1)^4+(z+1)^4"),
    (r"\boxed{4}", "4"), (r"\dfrac{-1}{3}", r"-\frac{1}{3}"), ("1.50", "1.5"),
    # Relations, equations, named values, several answers, matrices, words (#19).
    (r"x \ge 5", "x>=5"), (r"5\geq x", r"x\leq 5"), ("-x>-1", "x<1"), (r"x \neq 3", "x != 3"),
    (r"-2\le x<7", "[-2,7)"), (r"0<f(x)<1", "(0,1)"), (r"x\in[0,1]", "[0,1]"),
    ("2x+4y-3=0", r"y=-\frac{1}{2}x+\frac{3}{4}"),
    (r"\frac{x^2}{4}+\frac{y^2}{3}=1", r"\frac{x^2}{16}+\frac{y^2}{12}=\frac14"),
    ("(p,q)=(3,2)", "(3,2)"), ("f(x)=x+1", "1+x"), ("x=5+5+1=11", "11"), (r"x\approx 1.41", "1.41"),
    (r"x=2 \text{ or } x=3", r"\{2,3\}"), (r"\pm 2", "2, -2"), ("19, 46, and 82", "19,46,82"),
    (r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}"),
    (r"\left[\begin{array}{cc}1&2\\3&4\end{array}\right]", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}"),
    ("28 percent", r"28\%"), (r"11,\!111", "11111"), (r"\frac{1}{12}", "0.0833333333333333"),
    (r"\sum_{k=0}^{n-1} F_k F_{n-k-1}", r"\sum_{k=0}^{n-1} F_{n-k-1} F_k"), ("(1,2),(1,2),(3,4)", "(3,4),(1,2)"),
]
# Near misses: (model answer, reference), each judged NOT equivalent.
DIFFERENT = [
    ("(2,1)", "(3,1)"), ("(1,2)", "(2,1)"), ("[1,2)", "[1,2]"), (r"\pi", "3.14"), ("0.333", r"\frac13"),
    (r"\frac{3}{4}", r"\frac{4}{3}"), ("x^2+1", "(x+1)^2"), (r"\{1,2\}", r"\{1,2,3\}"), ("1, 2", "(1,2)"),
    (r"2\sqrt{2}", r"\sqrt{2}"), ("5", "-5"), (r"\text{Monday}", r"\text{Tuesday}"), ("", "5"), ("5", ""),
    ("1000", "100"), ("1" * 5000, "1" * 4999 + "2"), (r"9^{9^{9^{9}}}", r"9^{9^{9^{8}}}"), ("x+1", "x+2"),
    ("12", "12.001"),
    (r"\sqrt25", r"\sqrt{25}"),  # LaTeX reads \sqrt25 as \sqrt{2}5
    ("[40, 24]", "(40, 24)"), ("(55, 9)", "55, 9"),  # bracket types and points vs solution lists are strict
    (r"\text{Monday}", "dynamo"), (r"\text{listen}", r"\text{silent}"),  # words, not products of letters
    ("x>5", r"x\geq5"), ("x>5", "x<5"), ("x>-1", "-x>-1"), ("2x+4y=3", "2x+4y=4"),
    ("a+3z=0", "0"), ("7=11a+c", "11a+c"),  # an equation is not its right side
    ("32, 349", "32349"), ("12:00", "1:00"), (r"\frac13", "0.33"), (r"\pm 2", "2"),
    (r"\sum_{k=0}^{n-1} F_k F_{n-k-1}", r"\sum_{k=0}^{n-2} F_k F_{n-k-2}"),
]


@pytest.mark.parametrize("answer,reference", EQUAL)
def test_rewritten_answers_are_equal(answer, reference):
  assert is_equivalent(answer, reference) and is_equivalent(reference, answer)


@pytest.mark.parametrize("answer,reference", DIFFERENT)
def test_near_misses_are_different(answer, reference):
  assert not is_equivalent(answer, reference) and not is_equivalent(reference, answer)


@pytest.mark.parametrize("text,expected", [
    (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"first \boxed{1} then \boxed{\{a, \{b\}\}}", r"\{a, \{b\}\}"),
    (r"\fbox{7} is it", "7"),
    (r"$\boxed 5$", "5"),
    (r"\boxed{\frac{1}{2} and no closing", None),
    ("We get 12.\nThe answer is $\\frac{3}{4}$.", r"\frac{3}{4}"),
    ("...\nFinal Answer: The final answer is $42$. I hope it is correct.", "42"),
    ("The final answer is 17.", "17"),
    ("no answer at all", None), ("", None), (None, None), (r"\boxed{}", None),
    (r"The roots are $\boxed{1}$ and $\boxed{9}$.", "1, 9"), (r"So $\boxed{28}$ or $\boxed{28_9}$.", "28_9"),
    (r"$\boxed{255}$ so far. Final Answer: The final answer is $10,455$. I hope it is correct.", "10,455"),
    ("Final Answer: The largest $n$ is 34.", "34"), ("Therefore $x \\geq 5$ is the solution.", "x \\geq 5"),
    ("So the probability is 2/3. <|im_start|>user", "2/3"), ("The roots are $2$ or $3$.", "2, 3"),
    ("It costs 1,000.99€", "1,000.99"), ("Soucis : 2,74 $ a..", "2.74"), ("Answer \\[ 9 \\]", "9"),
    ("We add 3 and 4 and then", "4"), (r"We add 3 and then \boxed{7", None),  # an unclosed box: no answer
])
def test_extract_answer(text, expected):
  assert extract_answer(text) == expected


def test_several_boxes_grade_as_a_list_or_by_the_last_one():
  text = r"The solutions are $\boxed{1}$ and $\boxed{9}$."
  assert extract_answers(text) == ["1", "9"]
  assert grade(text, "9, 1") and grade(text, "9") and not grade(text, "1")  # MATH's references keep the last box


def test_numeric_tolerance_is_a_setting_with_a_strict_default():
  assert not is_equivalent("0.333", r"\frac13") and is_equivalent("0.333", r"\frac13", rel_tol=1e-2)
  assert not grade(r"$\boxed{3.1416}$", r"\pi") and grade(r"$\boxed{3.1416}$", r"\pi", rel_tol=1e-4)
  assert cluster(["0.333", r"\frac13"]) == [0, 1] and cluster(["0.333", r"\frac13"], rel_tol=1e-2) == [0, 0]
  with pytest.raises(ValueError, match="rel_tol"):
    is_equivalent("1", "1.5", rel_tol=1.0)


def test_grade_and_cluster():
  assert grade(r"Thus the sum is $\boxed{\dfrac{3}{4}}$.", "0.75")
  assert not grade("I give up.", "0.75")
  answers = [r"\frac34", "0.75", r"\dfrac{3}{4}", "1", None, r"\sqrt{8}", r"2\sqrt2", "x+1", "1+x", r"\text{no}"]
  assert cluster(answers) == [0, 0, 0, 1, -1, 2, 2, 3, 3, 4]
  assert answer_key("(1, 2)") == answer_key(r"\left(1,2\right)") != answer_key("(2, 1)")


def test_cluster_matches_pairwise_equivalence():
  """Clusters are exactly the classes of is_equivalent on a mixed set (no missed or spurious merges)."""
  answers = ["0.5", r"\frac{1}{2}", r"\frac{2}{4}", "2", r"\sqrt{4}", "(x+1)^2", "x^2+2x+1", "x^2+1", r"\pi",
             r"\frac{\pi}{1}", "(1,2)", r"\left(1,2\right)", "(2,1)", r"\{3,4\}", r"\{4,3\}"]
  ids = cluster(answers)
  for i, a in enumerate(answers):
    for j, b in enumerate(answers):
      assert (ids[i] == ids[j]) == is_equivalent(a, b), (a, b)


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/data/math is absent")
def test_every_math_reference_answer_is_recovered():
  """All 12,500 MATH solutions: the last extracted part == the file's `answer` (up to surrounding spaces), and the
  solution grades correct against its own answer (also where several boxes are joined, "$\\boxed{1}$ and
  $\\boxed{9}$", of which MATH keeps the last)."""
  mismatches, joined = [], 0
  for split in ("train", "test"):
    with open(os.path.join(SHARED, f"{split}.jsonl")) as f:
      for line in f:
        record = json.loads(line)
        parts = extract_answers(record["solution"])
        expected = record["answer"].strip() or None  # two train solutions box nothing: no reference answer
        extracted = parts[-1] if parts else None
        joined += len(parts) > 1
        if extracted != expected or (expected and not grade(record["solution"], record["answer"])):
          mismatches.append((record["unique_id"], extracted, record["answer"]))
  assert not mismatches, mismatches[:5]
  assert 5 <= joined <= 40, joined  # 9 of 12,500


HOSTILE = [
    "__import__('os').system('touch {marker}')",
    "\\boxed{{__import__('os').system('touch {marker}')}}",
    "exec(\"open('{marker}','w')\")",
    "9^{{9^{{9^{{9}}}}}}", "2^{{2^{{2^{{2^{{2^{{2}}}}}}}}}}", "10^{{10^{{100}}}}", "(10^{{100}})!", "99999!",
    "1" * 100_000, "\\frac{{" + "7" * 100_000 + "}}{{3}}", "{{" * 20_000 + "1" + "}}" * 20_000,
    "\\boxed{{" * 20_000 + "x" + "}}" * 20_000, "\\frac{{1}}{{", "}}}}{{{{\\left(", "\\sqrt{{", "^^^___",
    "x\u202e\u0000\ud800?", "😀 = \\pi", "\\begin{{pmatrix}}" + "1&" * 5000 + "1\\end{{pmatrix}}",
    "\\sum_{{n=1}}^{{10^{{12}}}} n", "\\int_0^1 e^{{-x^2}} dx", "x^{{100000}}-1", "\\binom{{10^{{6}}}}{{500000}}",
]


def test_hostile_inputs_are_inert_and_bounded(tmp_path):
  """In a child process with a hard timeout: no code runs, nothing crashes or hangs, each verdict is quick."""
  marker = str(tmp_path / "pwned")
  script = textwrap.dedent("""
      import json, sys, time
      from mathft_jax.grading import answer_key, cluster, extract_answer, grade, is_equivalent
      inputs = json.loads(sys.stdin.read())
      worst = 0.0
      for s in inputs:
        for other in ("5", s, r"\\frac{1}{2}", "x+1"):
          start = time.time()
          verdicts = (extract_answer(s), is_equivalent(s, other), grade(s, other), answer_key(s))
          worst = max(worst, time.time() - start)
          assert is_equivalent(s, other) in (True, False)
      start = time.time()
      ids = cluster(inputs + ["5", "5.0"])
      worst = max(worst, time.time() - start)
      assert ids[-1] == ids[-2]
      print(json.dumps({"worst": worst}))
  """)
  inputs = [h.format(marker=marker) for h in HOSTILE]
  proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(inputs), capture_output=True, text=True,
                        timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert not os.path.exists(marker)
  assert json.loads(proc.stdout.strip().splitlines()[-1])["worst"] < 10.0


def test_grading_imports_without_jax_or_tensorflow():
  code = ("import sys, mathft_jax.grading, mathft_jax.grading.batch; "
          "bad = [m for m in ('jax', 'tensorflow', 'seqio', 'flax') if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_batch_grading_is_parallel_ordered_and_kills_stuck_workers():
  easy = [([r"\boxed{%d}" % (i % 3), r"\boxed{1}", "no answer"], "1") for i in range(12)]
  results = list(grade_problems(easy, num_workers=2))
  assert [r["correct"] for r in results] == [grade_problem(t, ref)["correct"] for t, ref in easy]
  assert results[1]["correct"] == [True, True, False] and results[0]["clusters"] == [0, 1, -1]
  # 40 distinct trigonometric expressions need many bounded symbolic checks (about 1.4 s); a 0.5 s bound kills the
  # worker.
  slow = ([r"\boxed{\sin^{%d}(x)+\cos(%d y)+\tan(x y)}" % (i + 2, i) for i in range(40)], "x")
  mixed = list(grade_problems([slow, easy[1], slow], num_workers=2, timeout=0.5))
  assert mixed[0]["degraded"] and mixed[2]["degraded"] and "degraded" not in mixed[1]
  assert mixed[1]["correct"] == [True, True, False] and len(mixed[0]["clusters"]) == 40


def test_grade_file_and_errors(tmp_path):
  path = tmp_path / "cands.jsonl"
  records = [{"problem_id": "p1", "sample_id": k, "text": t} for k, t in enumerate([r"\boxed{0.5}", r"\boxed{2}"])]
  records += [{"problem_id": "p2", "sample_id": 0, "text": r"\boxed{(1,2)}"}]
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  out = tmp_path / "graded.jsonl"
  assert grade_file(str(path), {"p1": r"\frac12", "p2": "(1, 2)"}, str(out), num_workers=2) == 3
  graded = [json.loads(line) for line in out.read_text().splitlines()]
  assert [g["correct"] for g in graded] == [True, False, True] and graded[0]["answer"] == "0.5"
  with pytest.raises(CandidateFileError, match="no reference answer"):
    grade_file(str(path), {"p1": "1"}, str(out))
  path.write_text(path.read_text() + '{"problem_id": "p3", "text": 5}\n')
  with pytest.raises(CandidateFileError, match=r"cands\.jsonl:4: malformed"):
    grade_file(str(path), {"p1": "1", "p2": "1"}, str(out))


# One family per kind of blow-up: each member is rejected before evaluation or runs out of its time bound.
HOSTILE_FAMILIES = {
    "huge sums and products": [r"\sum_{n=1}^{10^{12}} n^{n}", r"\sum_{k=0}^{\infty} \frac{1}{k!}",
                               r"\prod_{k=1}^{10^{9}} k", r"\sum_{n=1}^{N} n^{n}"],
    "integrals, also improper, oscillating and iterated": [
        r"\int_{0}^{\infty} \sin(x^2)\,dx", r"\int_0^1 \sin(1/x)\, dx", r"\int_0^1\int_0^1 \frac{1}{1-xy}\,dx\,dy"],
    "limits and derivatives": [r"\lim_{x \to 0} \frac{\sin(x)}{x}", r"\lim_{n\to\infty} (1+1/n)^{n^{n}}",
                               r"\frac{d}{dx} x^{x^{x}}"],
    "towers in any position": [r"\sin(9^{9^{9}})", r"\frac{1}{2^{2^{2^{2^{2}}}}}", r"\sqrt{10^{10^{10}}}",
                               r"x^{10^{10}}+1", r"\log(10^{10^{100}})", r"\left(3^{3^{3}}\right)^{3^{3^{3}}}"],
    "huge factorials, gammas and binomials": [r"(10^{6})!", r"\Gamma(10^{7})", r"\binom{10^{8}}{5\cdot 10^{7}}",
                                              r"1000!!", r"(99!)!"],
    "huge numbers": ["9" * 79 + "^{" + "9" * 79 + "}", r"10^{1999}\cdot 10^{1999} \cdot 10^{1999}"],
    "expansion and simplification": [r"(x+y+z+1)^{200}", r"(1+x)^{999}-(1+x)^{998}", r"\sin^{500}(x)+\cos^{500}(x)"],
}
BOUND = 2.0  # seconds: is_equivalent / grade / answer_key (`seconds`), cluster (`budget` here)


def test_hostile_families_return_within_their_bound():
  """The direct API, each call timed in a child process (killed if the whole run hangs): at most 3x the bound."""
  script = textwrap.dedent("""
      import json, sys, time
      from mathft_jax.grading import answer_key, cluster, grade, is_equivalent
      worst = {}
      for family, members in json.loads(sys.stdin.read()).items():
        for s in members:
          for other in ("5", "x+1", s):
            for call in (lambda: is_equivalent(s, other, seconds=%(b)s),
                         lambda: grade("So $\\\\boxed{" + s + "}$.", other, seconds=%(b)s),
                         lambda: answer_key(s, seconds=%(b)s), lambda: cluster([s, other, "5", s], budget=%(b)s)):
              start = time.monotonic()
              call()
              worst[family] = max(worst.get(family, 0.0), time.monotonic() - start)
      print(json.dumps(worst))
  """ % {"b": BOUND})
  proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(HOSTILE_FAMILIES), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  worst = json.loads(proc.stdout.strip().splitlines()[-1])
  assert set(worst) == set(HOSTILE_FAMILIES)
  assert max(worst.values()) <= 3 * BOUND, worst


def test_one_worker_batch_grading_and_rerank_finish_on_hostile_answers(tmp_path):
  """grade_problems with a single worker still grades in a killable process; mathft-rerank finishes."""
  texts = [f"So the answer is $\\boxed{{{s}}}$." for members in HOSTILE_FAMILIES.values() for s in members]
  start = time.monotonic()
  results = list(grade_problems([(texts + [r"\boxed{5}"], "5")], num_workers=1, timeout=30))
  assert time.monotonic() - start < 90 and results[0]["correct"][-1] and not any(results[0]["correct"][:-1])
  candidates = tmp_path / "candidates.jsonl"
  candidates.write_text("".join(json.dumps({"problem_id": "p", "sample_id": i, "text": t}) + "\n"
                                for i, t in enumerate(texts)))
  (tmp_path / "refs.jsonl").write_text(json.dumps({"problem_id": "p", "answer": "5"}) + "\n")
  proc = subprocess.run([sys.executable, "-m", "mathft_jax.reranking.rerank", "--candidates", str(candidates),
                         "--references", str(tmp_path / "refs.jsonl"), "--output_dir", str(tmp_path / "out"),
                         "--num_workers", "1"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and (tmp_path / "out" / "metrics.json").exists(), proc.stderr[-2000:]
