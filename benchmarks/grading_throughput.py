"""Grading + clustering throughput on a large synthetic candidates set, next to Math-Verify's `verify`.

    .venv/bin/python benchmarks/grading_throughput.py --problems 5000 --samples 64 --peer_problems 300 \
        [--math_verify_tests /tmp/Math-Verify/tests]

Builds problems whose reference answers come from answer families of MATH and of model outputs (integers,
fractions, decimals, radicals, pi multiples, polynomials, points, intervals, lists, words, inequalities, equations,
matrices, percents, several boxed answers, "x = a or x = b") and N solution texts per problem: the right answer in
a random equivalent form (~45%), a near miss or other wrong answer, or no answer; a third of the answers are
written in free text ("Thus $x \\geq 5$ is the solution.") instead of a box. Prints answers/s of `grade_problems`
(extraction + clustering + grading, all workers), then one process each: this project's `grade_problem` and
Math-Verify's parse+verify on the same (solution, reference) pairs of the first `--peer_problems` problems, their
ratio, the agreement overall and by family (with the families where the project differs on purpose), and, given a
Math-Verify checkout's tests/, the agreement with its test suite (benchmarks/math_verify_suite.py).
"""
import argparse
import collections
import random
import time

from mathft_jax.grading.batch import grade_problem, grade_problems

# Families where this project's verdicts differ from Math-Verify's on purpose (see mathft_jax/grading/__init__.py).
DELIBERATE = {
    "point": "(a, b) is an ordered pair: the list 'a, b' and the interval '[a, b]' are not it",
    "interval": "interval brackets are part of the answer ([a, b) is not (a, b)), and a <= x < b is [a, b)",
    "list": "a list of solutions 'a, b' is not the point (a, b)",
}


def _family(rng: random.Random) -> tuple[str, str, list[str], list[str]]:
  """(family, reference, equivalent rewrites, wrong answers) of one random answer family."""
  a, b = rng.randint(1, 60), rng.randint(2, 30)
  family = rng.choice(["integer", "fraction", "radical", "pi", "polynomial", "point", "interval", "list", "word",
                       "inequality", "equation", "matrix", "percent", "solutions", "boxes"])
  if family == "integer":
    return family, str(a), [str(a), f"{a}.0", f"x = {a}", f"{a}\\text{{ units}}"], [str(a + 1), str(-a), str(a * 10)]
  if family == "fraction":
    a, b = rng.randint(1, 9), rng.choice([2, 4, 5, 8])
    return (family, f"\\frac{{{a}}}{{{b}}}", [f"\\dfrac{{{a}}}{{{b}}}", f"{a / b:g}", f"\\frac{{{2 * a}}}{{{2 * b}}}",
                                              f"\\tfrac{a}{b}"],
            [f"\\frac{{{b}}}{{{a}}}", f"\\frac{{{a + 1}}}{{{b}}}", f"{a / b + 0.1:g}"])
  if family == "radical":
    same = [f"{a}\\sqrt{b}" if b < 10 else f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}", f"{a} \\sqrt{{{b}}}"]
    return family, f"{a}\\sqrt{{{b}}}", same, [f"{a}\\sqrt{{{b + 1}}}", f"\\sqrt{{{a * b}}}", str(a * b)]
  if family == "pi":
    return (family, f"\\frac{{{a}\\pi}}{{{b}}}",
            [f"\\frac{{{a}}}{{{b}}}\\pi", f"{a}\\pi/{b}", f"\\dfrac{{{a}\\pi}}{{{b}}}"],
            [f"\\frac{{{a}}}{{{b}}}", f"\\frac{{{b}\\pi}}{{{a}}}", f"{a}\\pi"])
  if family == "polynomial":
    return (family, f"x^2+{2 * a}x+{a * a}", [f"(x+{a})^2", f"x^{{2}} + {2 * a}x + {a * a}", f"{a * a}+{2 * a}x+x^2"],
            [f"x^2+{a}x+{a * a}", f"(x-{a})^2", f"x^2+{a * a}"])
  if family == "point":
    return (family, f"({a}, {b})", [f"({a},{b})", f"\\left({a}, {b}\\right)", f"({a}, \\frac{{{2 * b}}}{{2}})"],
            [f"({b}, {a})", f"({a}, {b + 1})", f"[{a}, {b}]"])
  if family == "interval":
    return (family, f"[{a}, {a + b})", [f"[{a},{a + b})", f"\\left[{a}, {a + b}\\right)", f"{a} \\le x < {a + b}"],
            [f"({a}, {a + b})", f"[{a}, {a + b}]", f"[{a}, {a + b + 1})"])
  if family == "list":
    return family, f"{a}, {b}", [f"{b}, {a}", f"{a},{b}", f"\\{{{a}, {b}\\}}"], [f"{a}", f"{a}, {b + 1}", f"({a}, {b})"]
  if family == "word":
    day = rng.choice(["Monday", "Tuesday", "Friday"])
    return family, f"\\text{{{day}}}", [day, f"\\textbf{{{day}}}"], ["\\text{Sunday}", "Saturday"]
  if family == "inequality":
    return (family, f"x \\geq {a}", [f"x >= {a}", f"{a} \\leq x", f"x \\ge {a}", f"-x \\leq -{a}"],
            [f"x > {a}", f"x \\leq {a}", f"x \\geq {a + 1}"])
  if family == "equation":
    return (family, f"y = {a}x + {b}", [f"y={a}x+{b}", f"{a}x - y + {b} = 0", f"{2 * a}x + {2 * b} = 2y"],
            [f"y = {b}x + {a}", f"y = {a}x - {b}", f"{a}x + y + {b} = 0"])
  if family == "matrix":
    m = f"{a} & {b} \\\\ {b} & {a}"
    return (family, f"\\begin{{pmatrix}} {m} \\end{{pmatrix}}", [f"\\begin{{bmatrix}} {m} \\end{{bmatrix}}",
                                                                 f"\\begin{{pmatrix}}{a}&{b}\\\\{b}&{a}\\end{{pmatrix}}"],
            [f"\\begin{{pmatrix}} {b} & {a} \\\\ {a} & {b} \\end{{pmatrix}}",
             f"\\begin{{pmatrix}} {a} & {b} \\end{{pmatrix}}"])
  if family == "percent":
    return family, f"{a}\\%", [f"{a}\\%", f"{a} percent", f"{a}%"], [f"{a + 1}\\%", f"{a / 10:g}\\%"]
  if family == "solutions":
    return (family, f"{a}, -{b}", [f"x = {a} \\text{{ or }} x = -{b}", f"-{b}, {a}", f"x \\in \\{{{a}, -{b}\\}}"],
            [f"x = {a}", f"x = {a} \\text{{ or }} x = {b}"])
  return family, f"{a}, {b}", [("boxes", a, b), ("boxes", b, a)], [("boxes", a, b + 1), ("boxes", a, a)]


def _text(answer, free: bool) -> str:
  if isinstance(answer, tuple):  # several boxed answers
    return f"So the solutions are $\\boxed{{{answer[1]}}}$ and $\\boxed{{{answer[2]}}}$."
  if free:
    return f"Step 1 ... step 3. Thus ${answer}$ is the answer."
  return f"Step 1 ... step 3. So the answer is $\\boxed{{{answer}}}$."


def make_problems(num_problems: int, samples: int, seed: int = 0):
  """[(texts, reference)] and the family of each problem."""
  rng = random.Random(seed)
  problems, families = [], []
  for _ in range(num_problems):
    family, reference, good, bad = _family(rng)
    texts = []
    for _ in range(samples):
      u, free = rng.random(), rng.random() < 1 / 3
      if u < 0.45:
        texts.append(_text(rng.choice(good), free))
      elif u < 0.95:
        texts.append(_text(rng.choice(bad), free))
      else:
        texts.append("I could not finish this problem.")
    problems.append((texts, reference))
    families.append(family)
  return problems, families


def _peer(problems) -> tuple[list[list[bool]], float]:
  from math_verify import parse, verify
  start = time.time()
  verdicts = []
  for texts, reference in problems:
    gold = parse(f"${reference}$")
    verdicts.append([bool(verify(gold, parse(t))) for t in texts])
  return verdicts, time.time() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--problems", type=int, default=5000)
  parser.add_argument("--samples", type=int, default=64)
  parser.add_argument("--peer_problems", type=int, default=300, help="problems also graded by Math-Verify")
  parser.add_argument("--workers", type=int, default=0, help="0: one per CPU")
  parser.add_argument("--math_verify_tests", help="a Math-Verify checkout's tests/: also report its suite")
  args = parser.parse_args()
  problems, families = make_problems(args.problems, args.samples)
  total = args.problems * args.samples

  start = time.time()
  ours = list(grade_problems(problems, num_workers=args.workers))
  ours_s = time.time() - start
  degraded = sum(bool(r.get("degraded")) for r in ours)
  clusters = sum(max(r["clusters"]) + 1 for r in ours) / len(ours)
  print(f"mathft_jax: {total:,} answers (extract + cluster + grade) in {ours_s:.1f}s = {total / ours_s:,.0f} "
        f"answers/s with {args.workers or 'all'} workers; {clusters:.1f} clusters/problem; {degraded} problems "
        "degraded by the time bound")

  subset = problems[:args.peer_problems]
  _peer(problems[-1:])  # both warmed up on one problem outside the subset (lazy imports, parsers)
  grade_problem(*problems[-1])
  peer, peer_s = _peer(subset)
  start = time.time()
  ours_subset = [grade_problem(texts, reference) for texts, reference in subset]
  ours_subset_s = time.time() - start
  n_peer = len(subset) * args.samples
  print(f"one process each, the same {n_peer:,} (solution, reference) pairs:")
  print(f"  Math-Verify parse+verify: {peer_s:.1f}s = {n_peer / peer_s:,.0f} answers/s")
  print(f"  mathft_jax grade_problem: {ours_subset_s:.1f}s = {n_peer / ours_subset_s:,.0f} answers/s "
        f"(ratio {peer_s / ours_subset_s:.1f}x, and it also clusters)")
  by_family = collections.defaultdict(lambda: [0, 0])
  disagreements = collections.Counter()
  for family, (texts, ref), r, p in zip(families, subset, ours_subset, peer):
    for k in range(len(texts)):
      by_family[family][r["correct"][k] == p[k]] += 1
      if r["correct"][k] != p[k]:
        disagreements[(family, r["answers"][k], ref, r["correct"][k])] += 1
  agree = sum(good for _, good in by_family.values())
  print(f"agreement with Math-Verify on correctness: {agree / n_peer:.2%} of {n_peer:,} pairs; by family:")
  for family, (bad, good) in sorted(by_family.items()):
    note = f"  (deliberate: {DELIBERATE[family]})" if family in DELIBERATE and bad else ""
    print(f"  {family:11s} {good / (good + bad):7.2%} of {good + bad:5d}{note}")
  deliberate = sum(bad for family, (bad, _) in by_family.items() if family in DELIBERATE)
  print(f"apart from the deliberate families' differences: {agree / (n_peer - deliberate):.2%}")
  for (family, answer, ref, verdict), count in disagreements.most_common(12):
    print(f"  disagree x{count} [{family}]: ours={verdict} answer={answer!r} reference={ref!r}")
  if args.math_verify_tests:
    import pathlib

    import math_verify_suite
    cases = math_verify_suite.load_cases(pathlib.Path(args.math_verify_tests))
    results = math_verify_suite.grade_cases(cases)
    print(math_verify_suite.summary(results))


if __name__ == "__main__":
  main()
