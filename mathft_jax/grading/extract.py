"""Final-answer extraction from a model-written (untrusted) solution.

Order of preference, the answer stated last winning:
1. Boxes: the last well-formed `\\boxed{...}` / `\\fbox{...}` (brace-matched, any depth; `\\boxed 5` braceless),
   with the boxes just before it that only separators keep apart (`\\boxed{1}, \\boxed{2}`,
   `\\boxed{1} \\quad\\text{and}\\quad \\boxed{2}`; no word but "and", no digit): parts "1", "2". Alternatives
   ("\\boxed{28} or \\boxed{28_9}") are not joined: the last one is the answer, as in MATH's references.
2. An answer phrase after the last box ("Final Answer: ...", "The (final) answer is ..."), when its sentence holds
   math: the last math of that sentence (below).
3. Nothing boxed (and no box left unclosed, e.g. a sample cut at its length): free text. The answer sentence is the
   last sentence holding math; its last math span (`$..$`, `$$..$$`, `\\(..\\)`, `\\[..\\]`; inline ones within a
   line), with the spans before it joined like boxes ("or" too), or else its last plain number ("2/3", "1,000.99",
   "2,74"). A short text with no words is an answer as a whole ("W(x)=1 or W(x)=-1", "1 000").
`extract_answers` gives the parts, `extract_answer` the parts joined as a list ("1, 2"), None when nothing is found.
Scanning is iterative and linear in the text length.
"""
import re
from typing import Optional

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_PHRASE = re.compile(r"final answer\s*(?:is)?\s*[:：]?|the (?:final )?answer is\s*[:：]?", re.IGNORECASE)
# What may stand between joined boxes or spans: spacing, punctuation, math delimiters, `\\text{ and }` and the words
# that `_join_trailing` allows.
_FILLER = re.compile(r"(?:\s|[,;&]|\$|\\[\[\]()]|\\q?quad\b|\\[,;: !]|\\text\{\s*[A-Za-z ,]*\}|[A-Za-z]+)*")
_MAX_FILLER = 40
# Display math may span lines; inline math ($..$, \\(..\\)) may not.
_SPAN = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\(([^\n]+?)\\\)|(?<![\\$])\$((?:\\\$|[^$\n])+?)(?<!\\)\$",
                   re.DOTALL)
# A plain number: thousands groups or a decimal comma, decimals, a fraction a/b.
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[ ,]\d{3}(?!\d))*(?:[.,]\d+)?(?:/\d+)?(?!\d)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\\$])|\n\s*\n|<\|")


def _braces(text: str, start: int = 0):
  """Yields (index, +1 for `{` / -1 for `}`) from `start` on; escaped braces `\\{` `\\}` do not count."""
  i, n = start, len(text)
  while i < n:
    c = text[i]
    if c == "\\":
      i += 2
      continue
    if c in "{}":
      yield i, 1 if c == "{" else -1
    i += 1


def matching_brace(text: str, open_index: int) -> Optional[int]:
  """Index of the `}` closing the `{` at `open_index`, or None (stops there: linear in the group's length)."""
  depth = 0
  for i, step in _braces(text, open_index):
    depth += step
    if depth == 0:
      return i
  return None


def brace_pairs(text: str) -> dict[int, int]:
  """Index of each `{` -> index of its `}`, in one pass."""
  pairs, stack = {}, []
  for i, step in _braces(text):
    if step > 0:
      stack.append(i)
    elif stack:
      pairs[stack.pop()] = i
  return pairs


def _boxes(text: str) -> tuple[list[tuple[int, int, str]], bool]:
  """(start, end, content) of every outermost well-formed box in order, and whether a box was left malformed."""
  found, malformed, pairs = [], False, None
  for match in re.finditer(r"\\(?:boxed|fbox)(?![A-Za-z])", text):
    if found and match.start() < found[-1][1]:
      continue  # inside the box before
    j = match.end()
    while j < len(text) and text[j] == " ":
      j += 1
    if j < len(text) and text[j] == "{":
      pairs = brace_pairs(text) if pairs is None else pairs
      if j not in pairs:
        malformed = True
        continue
      found.append((match.start(), pairs[j] + 1, text[j + 1:pairs[j]]))
    else:
      braceless = re.match(r"[^\s$]+", text[j:]) if j > match.end() else None
      if braceless:
        found.append((match.start(), j + braceless.end(), braceless.group(0)))
      else:
        malformed = True
  return found, malformed


def _last_box(text: str) -> Optional[str]:
  boxes, _ = _boxes(text)
  return boxes[-1][2] if boxes else None


def last_boxed(text: str) -> str:
  """The content of the last `\\boxed{}`/`\\fbox{}` (brace-matched, stripped), '' if none: MATH's reference answer."""
  boxed = _last_box(text or "")
  return boxed.strip() if boxed else ""


def _is_filler(between: str, words_allowed: frozenset) -> bool:
  if len(between) > _MAX_FILLER or re.search(r"\d|\.\s|[=<>]", between):
    return False
  words = re.findall(r"(?<![\\A-Za-z])[A-Za-z]+", between)  # not command names
  return _FILLER.fullmatch(between) is not None and set(words) <= words_allowed


def _join_trailing(pieces: list[tuple[int, int, str]], text: str, words_allowed=frozenset({"and"})) -> list[str]:
  """The last piece, with the pieces before it that only separators (and `words_allowed`) keep apart."""
  joined = [pieces[-1][2].strip()]
  for (_, end, content), (start, _, _) in zip(reversed(pieces[:-1]), reversed(pieces[1:])):
    if not _is_filler(text[end:start], words_allowed):
      break
    joined.append(content.strip())
  return [c for c in reversed(joined) if c]


def _decimal_commas(number: str) -> str:
  """Free-text numbers: "2,74" and "0,111" are decimals (a comma that is not a thousands separator)."""
  if "," in number and not re.fullmatch(r"-?[1-9]\d{0,2}(,\d{3})+(\.\d+)?", number):
    head, _, tail = number.rpartition(",")
    if "," not in head and "." not in tail:
      return head + "." + tail
  return number


def _last_math(text: str) -> list[str]:
  """The last math of the last sentence that holds any (see the module doc)."""
  for sentence in reversed([s for s in _SENTENCE_END.split(text) if s and s.strip()]):
    spans = [(m.start(), m.end(), next(g for g in m.groups() if g is not None)) for m in _SPAN.finditer(sentence)]
    spans = [s for s in spans if s[2].strip()]
    outside = _SPAN.sub(lambda m: " " * (m.end() - m.start()), sentence)
    numbers = [(m.start(), m.end(), _decimal_commas(m.group(0))) for m in _NUMBER.finditer(outside)]
    if numbers and (not spans or numbers[-1][0] > spans[-1][1]):
      return [numbers[-1][2]]
    if spans:  # "$x = 2$ or $x = 3$": both solutions
      return _join_trailing(spans, sentence, frozenset({"and", "or"}))
  return []


def _answer_sentence(rest: str) -> str:
  """The sentence that an answer phrase starts."""
  parts = _SENTENCE_END.split(rest.lstrip(), maxsplit=1)
  return parts[0].split("\n")[0] if parts[0].strip() else rest


def extract_answers(text: Optional[str]) -> list[str]:
  """The final answer of a solution as its parts: one LaTeX string, or several ("\\boxed{1} and \\boxed{2}");
  [] if it has none."""
  if not text:
    return []
  boxes, malformed = _boxes(text)
  phrases = list(_PHRASE.finditer(text))
  if phrases and (not boxes or phrases[-1].start() > boxes[-1][1]):
    sentence = _answer_sentence(text[phrases[-1].end():])
    answer = _last_math(sentence)
    if answer or not boxes:  # "The answer is Monday.", unless a box says otherwise
      answer = answer or [sentence.strip().rstrip(".").strip()]
      if answer[0]:
        return answer
  if boxes:
    return _join_trailing(boxes, text)
  if malformed or re.search(r"\\(?:boxed|fbox)(?![A-Za-z])", text):
    return []
  stripped = text.strip().rstrip(".").strip()
  words = re.findall(r"(?<![\\A-Za-z])[A-Za-z]{2,}", stripped)
  if len(stripped) <= 60 and not re.search(r"\$|\\[\[(]", stripped) and (not words or " " not in stripped):
    return [_decimal_commas(stripped) if _NUMBER.fullmatch(stripped) else stripped]
  return _last_math(text)


def extract_answer(text: Optional[str]) -> Optional[str]:
  """The final answer of a solution as a LaTeX string (several parts joined as a list, "1, 2"), or None."""
  return ", ".join(extract_answers(text)) or None
