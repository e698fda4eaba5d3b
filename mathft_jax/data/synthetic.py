"""The embedded default domain: seeded multi-step math problems with step-by-step LaTeX solutions.

Five levels: (1) sums of five one-digit numbers (four solution routes), (2) fraction arithmetic, (3) linear
equations, (4) word problems with fractions of a quantity, (5) equations with brackets on both sides. Solutions end in
`\\boxed{}`, and the boxed answer takes one of its equivalent forms (`\\frac{3}{4}`, `\\dfrac{3}{4}`, `\\frac34`,
`0.75` where exact), so that answer clustering is exercised. Records have MATH's fields (unique_id, problem,
solution, answer, level, subject) plus `value`, the exact answer as "p/q", for checking. Train and test are
disjoint by problem text: a problem goes to test iff a hash of its text says so.
"""
import hashlib
import random
from fractions import Fraction
from typing import Iterator

SPLITS = ("train", "test")
# Level-1 solution routes: (name, the order in which the five terms are added).
LEVEL1_ROUTES = (("From left to right", (0, 1, 2, 3, 4)), ("From right to left", (4, 3, 2, 1, 0)),
                 ("From the ends inward", (0, 4, 1, 3, 2)), ("From the middle outward", (2, 1, 3, 0, 4)))
LEVEL1_TERMS = len(LEVEL1_ROUTES[0][1])


def frac_latex(v: Fraction, rng: random.Random = None) -> str:
  """A LaTeX form of v; with `rng`, one of its equivalent forms at random."""
  if v.denominator == 1:
    return str(v.numerator)
  sign = "-" if v < 0 else ""
  p, q = abs(v.numerator), v.denominator
  forms = [f"{sign}\\frac{{{p}}}{{{q}}}"]
  if rng is not None:
    forms.append(f"{sign}\\dfrac{{{p}}}{{{q}}}")
    if p < 10 and q < 10:
      forms.append(f"{sign}\\frac{p}{q}")
    decimal = _terminating_decimal(v)
    if decimal is not None:
      forms.append(decimal)
    return rng.choice(forms)
  return forms[0]


def _terminating_decimal(v: Fraction):
  q = v.denominator
  for prime in (2, 5):
    while q % prime == 0:
      q //= prime
  if q != 1:
    return None
  digits = 0
  while (v * 10 ** digits).denominator != 1:
    digits += 1
  return f"{float(v):.{digits}f}"


def _level1(rng):
  """A sum of five one-digit numbers (few facts, many combinations), added up along one of LEVEL1_ROUTES chosen at
  random. Several routes to one answer are what majority voting feeds on: a slip on one route gives a wrong answer
  that the other routes do not share, whereas with a single route the majority answer tends to the greedy one. The
  number of terms is fixed so that every term sits a fixed distance from the solution's start and no route is
  easier to find. (With 3-7 terms and two routes, the tiny model learned right-to-left first; greedy decoding took
  it every time while half of the samples took the other route; docs/benchmarks.md.)"""
  terms = [rng.randint(1, 9) for _ in range(LEVEL1_TERMS)]
  expr = " + ".join(map(str, terms))
  name, order = LEVEL1_ROUTES[rng.randrange(len(LEVEL1_ROUTES))]
  ordered = [terms[i] for i in order]
  solution = f"{name}: " + _chain(ordered[0], ordered[1:]) + "."
  return "arithmetic", f"Compute ${expr}$.", [solution], Fraction(sum(terms))


def _chain(start: int, values: list) -> str:
  """'$a + b = c$, $c + d = e$, ...': the running sum after each term."""
  steps = []
  for d in values:
    steps.append(f"${start} + {d} = {start + d}$")
    start += d
  return ", ".join(steps)


def _level2(rng):
  b, d = rng.choice([2, 3, 4, 5, 6, 8]), rng.choice([2, 3, 4, 5, 6, 8])
  a, c = rng.randint(1, b * 2), rng.randint(1, d * 2)
  op = rng.choice(["+", "-"])
  x, y = Fraction(a, b), Fraction(c, d)
  answer = x + y if op == "+" else x - y
  lcd = b * d // _gcd(b, d)
  na, nc = a * (lcd // b), c * (lcd // d)
  raw = na + nc if op == "+" else na - nc
  problem = f"Compute $\\frac{{{a}}}{{{b}}} {op} \\frac{{{c}}}{{{d}}}$."
  steps = [f"The common denominator is ${lcd}$.",
           f"So $\\frac{{{a}}}{{{b}}} {op} \\frac{{{c}}}{{{d}}} = \\frac{{{na}}}{{{lcd}}} {op} \\frac{{{nc}}}{{{lcd}}}"
           f" = \\frac{{{raw}}}{{{lcd}}}$.",
           f"Simplifying, we get ${frac_latex(answer)}$."]
  return "fractions", problem, steps, answer


def _level3(rng):
  a = rng.choice([2, 3, 4, 5, 6, 7, 8, 9])
  b, c = rng.randint(-20, 20), rng.randint(-20, 30)
  answer = Fraction(c - b, a)
  bs = f"+ {b}" if b >= 0 else f"- {-b}"
  problem = f"Solve for $x$: ${a}x {bs} = {c}$."
  move = f"Subtract ${b}$ from both sides" if b >= 0 else f"Add ${-b}$ to both sides"
  steps = [f"{move}: ${a}x = {c - b}$.",
           f"Divide both sides by ${a}$: $x = {frac_latex(Fraction(c - b, a))}$."]
  return "linear equations", problem, steps, answer


_ITEMS = ("apples", "marbles", "stickers", "cookies", "pencils", "books")
_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay")


def _level4(rng):
  name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
  q = rng.choice([2, 3, 4, 5, 6])
  p = rng.choice([v for v in range(1, q) if _gcd(v, q) == 1])
  total = q * rng.randint(2, 12)
  extra = rng.randint(1, 20)
  given = total * p // q
  left = total - given
  answer = Fraction(left + extra)
  problem = (f"{name} has ${total}$ {item}. {name} gives away $\\frac{{{p}}}{{{q}}}$ of them and then buys "
             f"${extra}$ more. How many {item} does {name} have now?")
  steps = [f"{name} gives away $\\frac{{{p}}}{{{q}}} \\cdot {total} = {given}$ {item}.",
           f"That leaves ${total} - {given} = {left}$.",
           f"After buying ${extra}$ more, {name} has ${left} + {extra} = {left + extra}$."]
  return "word problems", problem, steps, answer


def _level5(rng):
  a, c = rng.randint(2, 9), rng.randint(1, 9)
  while c == a:
    c = rng.randint(1, 9)
  b, d = rng.randint(1, 12), rng.choice([v for v in range(-15, 16) if v])
  answer = Fraction(d - a * b, a - c)
  ds = f"+ {d}" if d >= 0 else f"- {-d}"
  problem = f"Solve for $x$: ${a}(x + {b}) = {c}x {ds}$."
  steps = [f"Expand the left side: ${a}x + {a * b} = {c}x {ds}$.",
           f"Collect the $x$ terms: ${a - c}x = {d - a * b}$.",
           f"So $x = {frac_latex(answer)}$."]
  return "linear equations", problem, steps, answer


_GENERATORS = (_level1, _level2, _level3, _level4, _level5)


def _gcd(a: int, b: int) -> int:
  while b:
    a, b = b, a % b
  return a


def split_of(problem: str, test_fraction: float = 0.1) -> str:
  h = int(hashlib.sha1(problem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
  return "test" if h < test_fraction else "train"


def generate(split: str, num: int, seed: int = 0, levels=(1, 2, 3, 4, 5)) -> Iterator[dict]:
  """`num` distinct problems of `split`, round-robin over `levels`; the same (split, num, seed) -> same records."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  rng = random.Random(f"{seed}")
  seen = set()
  count = attempts = 0
  while count < num:
    attempts += 1
    if attempts > 200 * num + 1000:
      raise ValueError(f"could not find {num} distinct {split} problems at levels {levels}")
    level = levels[attempts % len(levels)]
    subject, problem, steps, answer = _GENERATORS[level - 1](rng)
    if problem in seen or split_of(problem) != split:
      continue
    seen.add(problem)
    shown = frac_latex(answer, rng)
    solution = " ".join(steps) + f" The answer is $\\boxed{{{shown}}}$."
    yield {"unique_id": f"synthetic/{split}/{count}", "problem": problem, "solution": solution, "answer": shown,
           "level": level, "subject": subject, "value": f"{answer.numerator}/{answer.denominator}"}
    count += 1
