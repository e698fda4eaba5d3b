"""Grading + clustering throughput on a large synthetic candidates set, next to Math-Verify's `verify`.

    .venv/bin/python benchmarks/grading_throughput.py --problems 5000 --samples 64 --peer_problems 300

Builds problems whose reference answers take realistic MATH forms (integers, fractions, decimals, radicals,
pi multiples, polynomials, points, intervals, sets, text) and N solution texts per problem: the right answer
in a random equivalent form (~45%), a near miss or other wrong answer, or no answer. Prints answers/s of
`grade_problems` (extraction + clustering + grading, all workers) and of Math-Verify's parse+verify on the
same (solution, reference) pairs of the first `--peer_problems` problems, with the agreement rate.
"""
import argparse
import random
import time

from mathft_jax.grading.batch import grade_problems


def _forms(rng: random.Random) -> tuple[str, list[str], list[str]]:
  """(reference, equivalent rewrites, wrong answers) for one random answer type."""
  kind = rng.randrange(9)
  a, b = rng.randint(1, 60), rng.randint(2, 30)
  if kind == 0:
    return str(a), [str(a), f"{a}.0", f"{a:,}" if a > 999 else str(a), f"x = {a}", f"{a}\\text{{ units}}"], \
        [str(a + 1), str(a - 1), str(-a), str(a * 10)]
  if kind == 1:
    a, b = rng.randint(1, 9), rng.choice([2, 4, 5, 8])
    return (f"\\frac{{{a}}}{{{b}}}", [f"\\dfrac{{{a}}}{{{b}}}", f"{a / b:g}", f"\\frac{{{2 * a}}}{{{2 * b}}}",
                                      f"\\tfrac{a}{b}" if a < 10 and b < 10 else f"\\frac{{{a}}}{{{b}}}"],
            [f"\\frac{{{b}}}{{{a}}}", f"\\frac{{{a + 1}}}{{{b}}}", f"{a / b + 0.1:g}"])
  if kind == 2:
    same = [f"{a}\\sqrt{b}" if b < 10 else f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}", f"{a} \\sqrt{{{b}}}"]
    return f"{a}\\sqrt{{{b}}}", same, [f"{a}\\sqrt{{{b + 1}}}", f"\\sqrt{{{a * b}}}", str(a * b)]
  if kind == 3:
    return f"\\frac{{{a}\\pi}}{{{b}}}", [f"\\frac{{{a}}}{{{b}}}\\pi", f"{a}\\pi/{b}", f"\\dfrac{{{a}\\pi}}{{{b}}}"], \
        [f"\\frac{{{a}}}{{{b}}}", f"\\frac{{{b}\\pi}}{{{a}}}", f"{a}\\pi"]
  if kind == 4:
    return f"x^2+{2 * a}x+{a * a}", [f"(x+{a})^2", f"x^{{2}} + {2 * a}x + {a * a}", f"{a * a}+{2 * a}x+x^2"], \
        [f"x^2+{a}x+{a * a}", f"(x-{a})^2", f"x^2+{a * a}"]
  if kind == 5:
    return f"({a}, {b})", [f"({a},{b})", f"\\left({a}, {b}\\right)", f"({a}, \\frac{{{2 * b}}}{{2}})"], \
        [f"({b}, {a})", f"({a}, {b + 1})", f"[{a}, {b}]"]
  if kind == 6:
    return f"[{a}, {a + b})", [f"[{a},{a + b})", f"\\left[{a}, {a + b}\\right)"], \
        [f"({a}, {a + b})", f"[{a}, {a + b}]", f"[{a}, {a + b + 1})"]
  if kind == 7:
    return f"{a}, {b}", [f"{b}, {a}", f"{a},{b}", f"\\{{{a}, {b}\\}}"], [f"{a}", f"{a}, {b + 1}", f"({a}, {b})"]
  day = rng.choice(["Monday", "Tuesday", "Friday"])
  return f"\\text{{{day}}}", [day, day.lower(), f"\\textbf{{{day}}}"], ["\\text{Sunday}", "Saturday"]


def make_problems(num_problems: int, samples: int, seed: int = 0):
  rng = random.Random(seed)
  problems = []
  for _ in range(num_problems):
    reference, good, bad = _forms(rng)
    texts = []
    for _ in range(samples):
      u = rng.random()
      if u < 0.45:
        texts.append(f"Step 1 ... step 3. So the answer is $\\boxed{{{rng.choice(good)}}}$.")
      elif u < 0.95:
        texts.append(f"After simplifying, we get $\\boxed{{{rng.choice(bad)}}}$.")
      else:
        texts.append("I could not finish this problem.")
    problems.append((texts, reference))
  return problems


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--problems", type=int, default=5000)
  parser.add_argument("--samples", type=int, default=64)
  parser.add_argument("--peer_problems", type=int, default=300, help="problems also graded by Math-Verify")
  parser.add_argument("--workers", type=int, default=0, help="0: one per CPU")
  args = parser.parse_args()
  problems = make_problems(args.problems, args.samples)
  total = args.problems * args.samples

  start = time.time()
  ours = list(grade_problems(problems, num_workers=args.workers))
  ours_s = time.time() - start
  degraded = sum(bool(r.get("degraded")) for r in ours)
  clusters = sum(max(r["clusters"]) + 1 for r in ours) / len(ours)
  print(f"mathft_jax: {total:,} answers (extract + cluster + grade) in {ours_s:.1f}s = {total / ours_s:,.0f} "
        f"answers/s; {clusters:.1f} clusters/problem; {degraded} problems degraded by the time bound")

  from math_verify import parse, verify  # the peer
  subset = problems[:args.peer_problems]
  start = time.time()
  peer = []
  for texts, reference in subset:
    gold = parse(f"${reference}$")
    peer.append([bool(verify(gold, parse(t))) for t in texts])
  peer_s = time.time() - start
  n_peer = len(subset) * args.samples
  start = time.time()
  ours_subset = list(grade_problems(subset, num_workers=1))
  ours_subset_s = time.time() - start
  agree = sum(a == b for r, p in zip(ours_subset, peer) for a, b in zip(r["correct"], p))
  print(f"Math-Verify parse+verify: {n_peer:,} pairs in {peer_s:.1f}s = {n_peer / peer_s:,.0f} answers/s (1 process)")
  print(f"mathft_jax on the same pairs, 1 process: {n_peer / ours_subset_s:,.0f} answers/s "
        f"(ratio {peer_s / ours_subset_s:.1f}x, and it also clusters)")
  print(f"agreement with Math-Verify on correctness: {agree / n_peer:.2%} of {n_peer:,} pairs")
  disagreements = {}
  for (texts, ref), r, p in zip(subset, ours_subset, peer):
    for k in range(len(texts)):
      if r["correct"][k] != p[k]:
        key = (r["answers"][k], ref, r["correct"][k])
        disagreements[key] = disagreements.get(key, 0) + 1
  for (answer, ref, verdict), count in sorted(disagreements.items(), key=lambda kv: -kv[1])[:12]:
    print(f"  disagree x{count}: ours={verdict} answer={answer!r} reference={ref!r}")


if __name__ == "__main__":
  main()
