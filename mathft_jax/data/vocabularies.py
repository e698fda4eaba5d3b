"""The model's tokenizer (`mathft_jax.text.tokenizer.Tokenizer`) as a `seqio.Vocabulary`, for tasks' output features.

Tasks do not tokenize through it: their sources hold ids made by `Tokenizer.example_ids` (`mathft_jax.data.tasks`),
the very function sampling and scoring build prompts with, so training and inference cannot disagree on a token.
"""
import functools
from typing import Optional, Sequence

from mathft_jax.data.quiet_tf import seqio, tf
from mathft_jax.text.tokenizer import Tokenizer


class TokenizerVocabulary(seqio.Vocabulary):
  """A Tokenizer as a seqio vocabulary (EOS and pad ids from the tokenizer; no extra ids)."""

  def __init__(self, tokenizer: Tokenizer):
    self.tokenizer = tokenizer
    super().__init__(extra_ids=0)

  @property
  def eos_id(self) -> int:
    return self.tokenizer.eos_id

  @property
  def pad_id(self) -> int:
    return self.tokenizer.pad_id

  @property
  def unk_id(self) -> Optional[int]:
    return None

  @property
  def _base_vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s)

  def _decode(self, ids) -> str:
    return self.tokenizer.decode([int(i) for i in ids])

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    ids = tf.py_function(lambda x: tf.constant(self._encode(x.numpy().decode("utf-8")), tf.int32), [s], tf.int32)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    out = tf.py_function(lambda x: tf.constant(self._decode(x.numpy().tolist())), [ids], tf.string)
    out.set_shape([])
    return out

  def __eq__(self, other) -> bool:
    return isinstance(other, TokenizerVocabulary) and other.tokenizer == self.tokenizer


@functools.lru_cache(maxsize=16)
def vocabulary(tokenizer: Tokenizer) -> TokenizerVocabulary:
  return TokenizerVocabulary(tokenizer)


def output_features(tokenizer: Tokenizer, keys: Sequence[str] = ("inputs", "targets")) -> dict:
  """seqio features over `keys`; those named targets* get EOS (appended after trimming)."""
  vocab = vocabulary(tokenizer)
  return {k: seqio.Feature(vocab, add_eos=k.startswith("targets")) for k in keys}
