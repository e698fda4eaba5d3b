"""TensorFlow-free text <-> ids codecs with the same ids as the data layer's seqio vocabularies.

The inference binary runs on machines with JAX alone, so it encodes prompts and decodes samples here:
"byte" (ids = UTF-8 byte + 3; pad 0, eos 1, unk 2, as `seqio.ByteVocabulary`), "sentencepiece:<path>" and
"hf:<path to tokenizer.json>".
"""
import dataclasses
from typing import Sequence

BYTE_OFFSET = 3
# seqio's decoder feature converters shift the sequence right with id 0, so a model fine-tuned here always saw
# id 0 before the first prompt token; inference prepends the same id (see `mathft_jax.infer`, `bos_id`).
DECODER_START_ID = 0


@dataclasses.dataclass(frozen=True)
class ByteCodec:
  eos_id: int = 1
  pad_id: int = 0

  def encode(self, text: str) -> list[int]:
    return [b + BYTE_OFFSET for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    data = bytes(i - BYTE_OFFSET for i in ids if BYTE_OFFSET <= i < 256 + BYTE_OFFSET)
    return data.decode("utf-8", errors="ignore")


class SentencePieceCodec:

  def __init__(self, path: str):
    import sentencepiece
    self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
    self.eos_id, self.pad_id = self._sp.eos_id(), max(self._sp.pad_id(), 0)

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids])


class HfCodec:

  def __init__(self, path: str):
    import tokenizers
    self._tok = tokenizers.Tokenizer.from_file(path)
    vocab = self._tok.get_vocab(with_added_tokens=True)
    eos = next((t for t in ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>") if t in vocab), None)
    if eos is None:
      raise ValueError(f"{path}: no EOS token among <|endoftext|>, <|end_of_text|>, </s>, <eos>")
    self.eos_id = self.pad_id = vocab[eos]

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


def get_codec(spec: str = "byte"):
  if spec == "byte":
    return ByteCodec()
  kind, _, path = spec.partition(":")
  if kind == "sentencepiece" and path:
    return SentencePieceCodec(path)
  if kind == "hf" and path:
    return HfCodec(path)
  raise ValueError(f"unknown vocabulary {spec!r}: expected 'byte', 'sentencepiece:<path>' or 'hf:<path>'")


def evaluator_label_ids(codec) -> tuple[int, int, int]:
  """(shared prefix length, correct id, incorrect id): " correct" and " incorrect" share their first tokens
  (e.g. the space byte); the evaluator's score compares the first token where they differ."""
  from mathft_jax.data.prompts import EVALUATOR_LABELS
  a, b = (codec.encode(x) for x in EVALUATOR_LABELS)
  k = next(i for i in range(min(len(a), len(b))) if a[i] != b[i])
  return k, a[k], b[k]
