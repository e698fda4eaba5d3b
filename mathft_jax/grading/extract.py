"""Final-answer extraction from a model-written (untrusted) solution.

Order of preference: the last `\\boxed{...}` / `\\fbox{...}` (brace-matched, any nesting depth), `\\boxed 5`
(a braceless box), then "Final Answer: ..." / "The (final) answer is ..." lines. None when nothing is found.
Scanning is iterative and linear in the text length, so deep nesting or huge inputs cannot crash it.
"""
import re
from typing import Optional

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_FALLBACKS = (
    re.compile(r"final answer\s*(?:is)?\s*[:：]?\s*(.+)", re.IGNORECASE),
    re.compile(r"the (?:final )?answer is\s*[:：]?\s*(.+)", re.IGNORECASE),
)


def matching_brace(text: str, open_index: int) -> Optional[int]:
  """Index of the `}` closing the `{` at `open_index` (escaped braces `\\{` `\\}` do not count), or None."""
  depth = 0
  i = open_index
  n = len(text)
  while i < n:
    c = text[i]
    if c == "\\":
      i += 2
      continue
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return i
    i += 1
  return None


def _last_box(text: str) -> Optional[str]:
  starts = [(text.rfind(cmd), cmd) for cmd in _BOX_COMMANDS]
  # Walk backwards over box commands until one is well formed.
  while True:
    start, cmd = max(starts)
    if start < 0:
      return None
    rest = start + len(cmd)
    j = rest
    while j < len(text) and text[j] == " ":
      j += 1
    if j < len(text) and text[j] == "{":
      end = matching_brace(text, j)
      if end is not None:
        return text[j + 1:end]
    elif j > rest and j < len(text):  # `\boxed 5`: up to the next space, `$` or end of line
      match = re.match(r"[^\s$]+", text[j:])
      if match:
        return match.group(0)
    starts = [(text.rfind(c, 0, start) if c == cmd else s, c) for s, c in starts]


def last_boxed(text: str) -> str:
  """The content of the last `\\boxed{}`/`\\fbox{}` (brace-matched, stripped), '' if none: MATH's reference answer."""
  boxed = _last_box(text or "")
  return boxed.strip() if boxed else ""


def _strip_answer(answer: str) -> str:
  answer = answer.strip()
  if len(answer) >= 2 and answer[0] == "$" and answer.count("$") == 2 and answer.endswith("$"):
    answer = answer[1:-1]
  elif "$" in answer:  # "The answer is $5$ dollars." -> the first math span
    spans = re.findall(r"\$([^$]+)\$", answer)
    if spans:
      answer = spans[0]
  return answer.strip().rstrip(".").strip()


def extract_answer(text: Optional[str]) -> Optional[str]:
  """The final answer of a solution as a LaTeX string, or None if it has none."""
  if not text:
    return None
  boxed = _last_box(text)
  if boxed is not None:
    boxed = boxed.strip()
    return boxed or None
  for pattern in _FALLBACKS:
    matches = list(pattern.finditer(text))
    if matches:
      line = matches[-1].group(1).splitlines()[0] if matches[-1].group(1).strip() else ""
      answer = _strip_answer(line)
      if answer:
        return answer
  return None
