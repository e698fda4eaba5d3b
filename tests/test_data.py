"""Data layer: MATH and PRM800K readers and TFDS builders, synthetic domain, prompts, vocabularies, tasks."""
import collections
import json
import os
import re
import shutil
import tarfile

import numpy as np
import pytest
import sympy

from mathft_jax.data import math_dataset, prm800k, synthetic
from mathft_jax.grading import extract_answer, is_equivalent
from mathft_jax.grading.symbolic import parse_latex
from mathft_jax.text import prompts

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/data is absent")


@needs_shared
def test_math_splits_and_answers_from_shared_files():
  data = math_dataset.read_math(os.path.join(SHARED, "math"))
  splits = math_dataset.math_splits(data)
  assert {k: len(v) for k, v in splits.items()} == {"train": 7500, "test": 5000, "test500": 500, "train_prm": 12000}
  assert not {r["unique_id"] for r in splits["test500"]} & {r["unique_id"] for r in splits["train_prm"]}
  originals = {}
  for split in ("train", "test"):
    with open(os.path.join(SHARED, "math", f"{split}.jsonl")) as f:
      originals.update({r["unique_id"]: r for r in map(json.loads, f)})
  mismatches = [r["unique_id"] for r in data["train"] + data["test"]
                if r["answer"] != originals[r["unique_id"]]["answer"].strip()]
  assert not mismatches  # equal up to surrounding whitespace, for all 12,500
  levels = {r["level"] for r in data["train"]}
  assert levels == {0, 1, 2, 3, 4, 5}  # the two "Level ?" items are kept as 0


def _write_original_layout(root, n=3):
  for split in ("train", "test"):
    for subject in ("algebra", "geometry"):
      os.makedirs(os.path.join(root, "MATH", split, subject))
      for i in range(1, n + 1):
        with open(os.path.join(root, "MATH", split, subject, f"{i}.json"), "w") as f:
          json.dump({"problem": f"{split} {subject} {i}", "level": f"Level {i}", "type": subject.title(),
                     "solution": f"So $\\boxed{{\\frac{{{i}}}{{2}}}}$ and \\fbox{{{i}}}."}, f)


def test_math_original_layout_tarball_and_errors(tmp_path):
  _write_original_layout(tmp_path)
  data = math_dataset.read_math(str(tmp_path))
  assert len(data["train"]) == 6 and data["train"][0]["unique_id"] == "train/algebra/1.json"
  assert data["test"][2]["answer"] == "3" and data["test"][2]["level"] == 3  # the last box (\fbox) wins
  with tarfile.open(tmp_path / "MATH.tar.gz", "w:gz") as tar:
    tar.add(tmp_path / "MATH", arcname="MATH")
  shutil.rmtree(tmp_path / "MATH")
  from_tar = math_dataset.read_math(str(tmp_path))
  assert sorted(r["unique_id"] for r in from_tar["test"]) == sorted(r["unique_id"] for r in data["test"])
  with pytest.raises(math_dataset.MathDataError, match="MATH500 ids are absent"):
    math_dataset.math_splits(from_tar)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(math_dataset.MathDataError, match=r"(?s)MATH not found in .*train\.jsonl and test\.jsonl"):
    math_dataset.read_math(str(empty))
  (empty / "train.jsonl").write_text('{"unique_id": "a", "problem": "p", "level": "Level 1", "type": "x", '
                                     '"solution": "s"}\nnot json\n')
  (empty / "test.jsonl").write_text("")
  with pytest.raises(math_dataset.MathDataError, match=r"train\.jsonl:2: not JSON"):
    math_dataset.read_math(str(empty))


@needs_shared
def test_math_tfds_builder_prepares_offline(tmp_path):
  builder = math_dataset.prepare(os.path.join(SHARED, "math"), str(tmp_path))
  sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
  assert sizes == {"train": 7500, "test": 5000, "test500": 500, "train_prm": 12000}
  first = next(iter(builder.as_dataset(split="test500").take(1)))
  assert first["unique_id"].numpy().decode() in set(math_dataset.math500_ids())


@needs_shared
def test_prm800k_keeps_only_complete_correct_solutions(tmp_path):
  math = math_dataset.read_math(os.path.join(SHARED, "math"))
  ids = prm800k.math_id_index(math["train"] + math["test"])
  examples, outcomes = prm800k.read_prm800k([os.path.join(SHARED, "prm800k", "sample.jsonl")], ids)
  assert outcomes == {"kept": 3, "not_solution": 2, "no_reference": 1}
  for e in examples:
    assert not e["unique_id"].startswith("prm800k/")  # matched to MATH
    assert "# Answer" not in e["solution"] and is_equivalent(extract_answer(e["solution"]), e["ground_truth_answer"])
  (tmp_path / "prm800k").mkdir()
  shutil.copy(os.path.join(SHARED, "prm800k", "sample.jsonl"), tmp_path / "prm800k" / "phase2_train.jsonl")
  builder = prm800k.prepare(str(tmp_path), str(tmp_path / "tfds"))
  assert builder.info.splits["train"].num_examples == 3
  bad = tmp_path / "bad_train.jsonl"
  bad.write_text('{"label": {}}\n')
  with pytest.raises(prm800k.Prm800kDataError, match=r"bad_train\.jsonl:1: malformed"):
    prm800k.read_prm800k([str(bad)])


def _sympy_answer(record) -> sympy.Rational:
  """Solves the problem independently of the generator: sympy on the problem's own expression or equation."""
  problem = record["problem"]
  if record["level"] == 4:
    total = int(re.search(r"has \$(\d+)\$", problem).group(1))
    p, q = map(int, re.search(r"\\frac\{(\d+)\}\{(\d+)\}", problem).groups())
    extra = int(re.search(r"\$(\d+)\$ more", problem).group(1))
    return sympy.Rational(total) - sympy.Rational(total * p, q) + extra
  expr = parse_latex(re.search(r"\$([^$]*)\$\.$", problem).group(1))
  if record["level"] in (3, 5):
    (solution,) = sympy.solve(expr, sympy.Symbol("x"))
    return sympy.Rational(solution)
  return sympy.Rational(sympy.simplify(expr))


def test_synthetic_domain_is_deterministic_disjoint_and_correct():
  train = list(synthetic.generate("train", 300, seed=7))
  assert train == list(synthetic.generate("train", 300, seed=7))
  assert train != list(synthetic.generate("train", 300, seed=8))
  test = list(synthetic.generate("test", 100, seed=7))
  assert not {r["problem"] for r in train} & {r["problem"] for r in list(synthetic.generate("test", 300, seed=3))}
  assert {r["level"] for r in train} == {1, 2, 3, 4, 5}
  forms = set()
  for r in train + test:
    expected = _sympy_answer(r)
    assert sympy.Rational(r["value"]) == expected, r
    assert is_equivalent(extract_answer(r["solution"]), r["value"].replace("/1", "") if r["value"].endswith("/1")
                         else "\\frac{%s}{%s}" % tuple(r["value"].split("/")))
    forms.add("dfrac" if "dfrac" in r["answer"] else "." if "." in r["answer"] else "frac" if "frac" in r["answer"]
              else "int")
  assert forms == {"dfrac", ".", "frac", "int"}  # equivalent forms are all exercised


def test_synthetic_level1_sums_take_every_route():
  records = list(synthetic.generate("train", 400, levels=(1,)))
  orders = dict(synthetic.LEVEL1_ROUTES)
  assert all(sorted(order) == list(range(synthetic.LEVEL1_TERMS)) for order in orders.values())  # each term once
  assert orders["From left to right"] == tuple(range(5)) and orders["From right to left"] == tuple(range(4, -1, -1))
  routes = collections.Counter()
  for r in records:
    terms = [int(t) for t in re.search(r"\$([^$]*)\$\.$", r["problem"]).group(1).split(" + ")]
    route, steps = r["solution"].split(": ", 1)
    routes[route] += 1
    order = [terms[i] for i in orders[route]]
    running, expected = order[0], []
    for d in order[1:]:
      expected.append(f"${running} + {d} = {running + d}$")
      running += d
    assert steps.startswith(", ".join(expected) + ". "), r
    assert r["value"] == f"{sum(terms)}/1" and len(terms) == synthetic.LEVEL1_TERMS
  assert set(routes) == set(orders) and min(routes.values()) > 400 / len(orders) * 0.7


def test_demo_lengths_hold_every_level1_solution():
  # Byte-level: a solution takes len(utf-8) tokens plus end of sequence; one cut in training or sampling would teach
  # or grade a truncated solution (an earlier demo configuration cut 41% of them).
  from mathft_jax import gin_main
  gin_text = open(os.path.join(gin_main.PACKAGE_GIN_DIR, "recipes", "demo.gin")).read()
  targets = int(re.search(r'TASK_FEATURE_LENGTHS = \{"inputs": (\d+), "targets": (\d+)\}', gin_text).group(2))
  max_new = int(re.search(r"infer.SamplingConfig.max_new_tokens = (\d+)", gin_text).group(1))
  longest = max(len(r["solution"].encode()) + 1 for split in synthetic.SPLITS
                for r in synthetic.generate(split, 3000, levels=(1,)))
  assert longest <= min(targets, max_new)


def test_prompts_follow_the_paper():
  text = prompts.evaluator_input("What is 1+1?", "It is $\\boxed{2}$.")
  assert text.startswith("Here is a math problem: What is 1+1?") and text.endswith("The above candidate solution is")
  assert prompts.evaluator_example("p", "s", True)["targets"] == " correct"
  assert prompts.evaluator_example("p", "s", False)["targets"] == " incorrect"
  few = prompts.few_shot_input("Compute $2+2$.")
  assert few.count("Problem:") == 5 and few.endswith(prompts.generator_input("Compute $2+2$."))
  for _, solution in prompts.FEW_SHOT_EXEMPLARS:
    assert extract_answer(solution) is not None


def test_tokenizers_round_trip_through_seqio(tmp_path):
  import sentencepiece as spm
  import tokenizers

  from mathft_jax.data.vocabularies import TokenizerVocabulary
  from mathft_jax.text.tokenizer import TokenizerError, load_tokenizer
  text = "Solve for $x$: $3x + 2 = \\frac{1}{2}$. The answer is $\\boxed{-\\frac{1}{2}}$. ünïcode ✓"
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join([text] * 20 + [r["solution"] for r in synthetic.generate("train", 200)]))
  (tmp_path / "sp").mkdir()
  spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp" / "tokenizer"), vocab_size=400,
                                 character_coverage=1.0, byte_fallback=True)
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = tokenizers.decoders.ByteLevel()
  bpe.train([str(corpus)], tokenizers.trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
  (tmp_path / "hf").mkdir()
  bpe.save(str(tmp_path / "hf" / "tokenizer.json"))
  for source in ("byte", str(tmp_path / "sp"), str(tmp_path / "hf")):
    vocab = TokenizerVocabulary(load_tokenizer(source))
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text, source
    assert vocab.decode_tf(vocab.encode_tf(text)).numpy().decode() == text, source
    assert 0 < len(ids) and max(ids) < vocab.vocab_size and vocab.eos_id is not None
  assert load_tokenizer(str(tmp_path / "hf")).eos_id == bpe.token_to_id("<|endoftext|>")
  with pytest.raises(TokenizerError, match="no tokenizer.json or tokenizer.model"):
    load_tokenizer(str(tmp_path))


def _check_packed(batch, length):
  assert set(batch) == {"decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
                        "decoder_segment_ids", "decoder_positions"}
  for v in batch.values():
    assert v.shape[1] == length
  w, seg = batch["decoder_loss_weights"], batch["decoder_segment_ids"]
  assert set(np.unique(w)) <= {0, 1} and w.sum() > 0
  assert (w[seg == 0] == 0).all()
  assert (batch["decoder_input_tokens"][:, 1:] == np.where(seg[:, 1:] == seg[:, :-1],
                                                           batch["decoder_target_tokens"][:, :-1],
                                                           batch["decoder_input_tokens"][:, 1:])).all()
  for row in range(len(seg)):  # each packed example starts at position 0 with prompt tokens (weight 0)
    starts = np.flatnonzero(np.diff(np.concatenate([[0], seg[row]])) != 0)
    for s in starts:
      if seg[row, s]:
        assert batch["decoder_positions"][row, s] == 0 and w[row, s] == 0


@needs_shared
def test_every_registered_task_yields_packed_batches(tmp_path, monkeypatch):
  from mathft_jax.data import tasks
  from mathft_jax.data.seqio_source import SeqioSource
  math_dataset.prepare(os.path.join(SHARED, "math"), str(tmp_path))
  (tmp_path / "prm" / "prm800k").mkdir(parents=True)
  shutil.copy(os.path.join(SHARED, "prm800k", "sample.jsonl"), tmp_path / "prm" / "prm800k" / "phase2_train.jsonl")
  prm800k.prepare(str(tmp_path / "prm"), str(tmp_path))
  monkeypatch.setenv("MATHFT_TFDS_DIR", str(tmp_path))
  problems = tmp_path / "problems.jsonl"
  problems.write_text("".join(json.dumps({"problem_id": str(i), "problem": f"What is {i} + {i}?",
                                          "solution": f"It is $\\boxed{{{2 * i}}}$."}) + "\n" for i in range(8)))
  for name in tasks.SSFT_TASKS + tuple(tasks.SSFT_MIXTURES) + (f"problems:{problems}",):
    batch = next(SeqioSource(name, {"inputs": 256, "targets": 256}, batch_size=2, seed=1).host_batches(0))
    _check_packed(batch, 512)
  with pytest.raises(tasks.TaskNameError, match="unknown task 'ssft_nope'"):
    next(SeqioSource("ssft_nope", {"inputs": 8, "targets": 8}, batch_size=2).host_batches(0))


def _graded_file(path):
  """3 problems: p1 has 3 correct + 2 incorrect distinct texts, p2 only correct ones, p3 1 correct + 4 incorrect."""
  rows = []
  for pid, labels in (("p1", [1, 1, 1, 0, 0]), ("p2", [1, 1]), ("p3", [1, 0, 0, 0, 0])):
    for k, ok in enumerate(labels):
      rows.append({"problem_id": pid, "sample_id": k, "problem": f"What is {pid}?", "correct": bool(ok),
                   "text": f"Try {k}: so $\\boxed{{{k if ok else 100 + k}}}$.", "answer": str(k), "cluster": k})
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_evaluator_pairs_are_balanced_and_per_problem(tmp_path):
  from mathft_jax.evaluator import pairs as evaluator_data
  graded = evaluator_data.read_graded(_graded_file(tmp_path / "graded.jsonl"))
  pairs = evaluator_data.build_pairs(graded, per_problem=6, seed=0)
  by_problem = collections.Counter(p["problem_id"] for p in pairs)
  assert by_problem == {"p1": 3, "p3": 3}  # p2 has no incorrect sample; at most per_problem // 2 pairs
  assert all(p["pos"] != p["neg"] and "Try" in p["pos"] for p in pairs)
  ce = evaluator_data.examples(pairs, "ce")
  assert collections.Counter(e["targets"] for e in ce) == {" correct": 6, " incorrect": 6}
  assert len({p["neg"] for p in pairs if p["problem_id"] == "p3"}) == 3  # distinct negatives when available
  (tmp_path / "bad.jsonl").write_text('{"problem_id": 1}\n')
  with pytest.raises(evaluator_data.GradedFileError, match=r"bad\.jsonl:1"):
    evaluator_data.read_graded(str(tmp_path / "bad.jsonl"))


def test_evaluator_tasks_yield_labels_and_pair_structure(tmp_path):
  import seqio

  from mathft_jax.data.seqio_source import SeqioSource
  graded = _graded_file(tmp_path / "graded.jsonl")
  vocab = seqio.ByteVocabulary()
  lengths = {"inputs": 96, "targets": 48}
  ce = next(SeqioSource(f"evaluator_ce:{graded}", lengths, batch_size=14, shuffle=False, pack=False,
                        num_epochs=1).host_batches(0))
  labels = [vocab.decode([t for t, w in zip(row, weights) if w]) for row, weights in
            zip(ce["decoder_target_tokens"], ce["decoder_loss_weights"])]
  assert collections.Counter(labels) == {" correct": 7, " incorrect": 7}  # p1: 3 pairs, p3: 4 pairs
  for kind, first_input in (("margin", "Here is a math problem"), ("seq", "Problem:")):
    lengths = {"inputs": 160, "targets": 48} if kind == "margin" else {"inputs": 96, "targets": 48}
    source = SeqioSource(f"evaluator_{kind}:{graded}", lengths, batch_size=4, seed=3)
    assert source.dataset().options().autotune.enabled is False  # its teardown waited up to 60 s (seqio_source)
    batch = next(source.host_batches(0))
    assert batch["decoder_input_tokens"].shape == (4, 2, sum(lengths.values()))
    for row in range(4):
      pos, neg = (vocab.decode(batch["decoder_target_tokens"][row, i].tolist()) for i in (0, 1))
      assert pos.startswith(first_input) and neg.startswith(first_input)
      assert pos.split("Try")[0] == neg.split("Try")[0]  # the same problem in both members of a pair
      if kind == "margin":
        assert pos.endswith(" correct") and neg.endswith(" incorrect")
      else:
        assert "\\boxed{10" not in pos and "\\boxed{10" in neg  # row 0 holds the correct solution
      assert (batch["decoder_loss_weights"][row].sum(axis=1) > 0).all()


def test_over_long_evaluator_prompts_lose_their_beginning_not_their_question(tmp_path):
  import seqio

  from mathft_jax.data.seqio_source import SeqioSource
  graded = _graded_file(tmp_path / "graded.jsonl")
  vocab = seqio.ByteVocabulary()
  for kind in ("ce", "margin"):
    batch = next(SeqioSource(f"evaluator_{kind}:{graded}", {"inputs": 40, "targets": 16}, batch_size=2,
                             shuffle=False, pack=False, num_epochs=1).host_batches(0))
    rows = batch["decoder_target_tokens"].reshape(-1, batch["decoder_target_tokens"].shape[-1])
    for row in rows:
      text = vocab.decode([t for t in row.tolist() if t])
      prompt, _, label = text.rpartition(" is ")
      # 40 input tokens: the byte start id 0, then the prompt's last 39 bytes
      assert len(vocab.encode(prompt + " is")) == 39 and prompt.endswith("The above candidate solution")
      assert label in ("correct", "incorrect") and not text.startswith("Here is")
