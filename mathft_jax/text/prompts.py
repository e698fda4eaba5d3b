"""Every prompt format of the recipe, in one place (pure Python: the inference binary uses these too).

- Generator (solution fine-tuning and sampling): problem -> step-by-step solution ending in \\boxed{}.
- Evaluator (Liu et al. 2023): "Here is a math problem: P Here is a candidate solution: X The above candidate
  solution is" -> " correct" / " incorrect".
- Few-shot generator prompt with 4 MATH-style exemplars (the paper's prompted baseline).
"""

EVALUATOR_LABELS = (" correct", " incorrect")
GENERATOR_PREFIX, GENERATOR_SUFFIX = "Problem:\n", "\n\nSolution:\n"


def generator_input(problem: str) -> str:
  return f"{GENERATOR_PREFIX}{problem.strip()}{GENERATOR_SUFFIX}"


def generator_example(problem: str, solution: str) -> dict:
  return {"inputs": generator_input(problem), "targets": solution.strip()}


def evaluator_input(problem: str, solution: str) -> str:
  return (f"Here is a math problem: {problem.strip()}\nHere is a candidate solution: {solution.strip()}\n"
          f"The above candidate solution is")


def evaluator_example(problem: str, solution: str, correct: bool) -> dict:
  return {"inputs": evaluator_input(problem, solution), "targets": EVALUATOR_LABELS[0 if correct else 1]}


# Four short MATH-style exemplars written for this project (answers checked by the test suite's grader).
FEW_SHOT_EXEMPLARS = (
    ("What is the value of $\\frac{1}{2} + \\frac{1}{3}$?",
     "The common denominator is $6$, so $\\frac{1}{2} + \\frac{1}{3} = \\frac{3}{6} + \\frac{2}{6} = \\frac{5}{6}$. "
     "The answer is $\\boxed{\\frac{5}{6}}$."),
    ("Solve for $x$: $3x - 7 = 11$.",
     "Adding $7$ to both sides gives $3x = 18$, and dividing by $3$ gives $x = 6$. The answer is $\\boxed{6}$."),
    ("How many positive divisors does $12$ have?",
     "Since $12 = 2^2 \\cdot 3$, it has $(2+1)(1+1) = 6$ positive divisors. The answer is $\\boxed{6}$."),
    ("Find the distance between the points $(1, 2)$ and $(4, 6)$.",
     "The distance is $\\sqrt{(4-1)^2 + (6-2)^2} = \\sqrt{9 + 16} = \\sqrt{25} = 5$. The answer is $\\boxed{5}$."),
)


def few_shot_input(problem: str, exemplars=FEW_SHOT_EXEMPLARS) -> str:
  shots = "".join(generator_input(p) + s + "\n\n" for p, s in exemplars)
  return shots + generator_input(problem)
