"""Vocabularies implementing `seqio.Vocabulary`: byte-level (embedded default), SentencePiece (Gemma, Llama-2),
and an adapter for Hugging Face `tokenizer.json` files (Llama-3, Qwen2) through the `tokenizers` package.

`get_vocabulary("byte" | "sentencepiece:/path/tokenizer.model" | "hf:/path/tokenizer.json")` picks one by name
(a gin-friendly string). No hub access: files are local.
"""
import functools
from typing import Optional, Sequence

import seqio
import tensorflow as tf


class HfTokenizerVocabulary(seqio.Vocabulary):
  """A `tokenizer.json` (HF `tokenizers`) as a seqio vocabulary.

  eos/pad/unk ids come from the named special tokens (pad falls back to eos, as Llama-3 and Qwen2 have no pad);
  no BOS is added here: prompts are built as text and the model sees what the tokenizer's post-processor adds
  only when `add_special_tokens` is True.
  """

  def __init__(self, path: str, eos_token: Optional[str] = None, pad_token: Optional[str] = None,
               unk_token: Optional[str] = None, add_special_tokens: bool = False):
    import tokenizers
    self.path = path
    self._tokenizer = tokenizers.Tokenizer.from_file(path)
    self._add_special = add_special_tokens
    vocab = self._tokenizer.get_vocab(with_added_tokens=True)
    eos_token = eos_token or next((t for t in ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>") if t in vocab),
                                  None)
    if eos_token is None or eos_token not in vocab:
      raise ValueError(f"{path}: no EOS token found; pass eos_token= one of its special tokens")
    self._eos = vocab[eos_token]
    self._pad = vocab[pad_token] if pad_token else self._eos
    self._unk = vocab.get(unk_token or "<unk>")
    super().__init__(extra_ids=0)

  @property
  def eos_id(self) -> int:
    return self._eos

  @property
  def pad_id(self) -> int:
    return self._pad

  @property
  def unk_id(self) -> Optional[int]:
    return self._unk

  @property
  def _base_vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s: str) -> Sequence[int]:
    return self._tokenizer.encode(s, add_special_tokens=self._add_special).ids

  def _decode(self, ids) -> str:
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    def encode(x):
      return tf.constant(self._encode(x.numpy().decode("utf-8")), tf.int32)
    ids = tf.py_function(encode, [s], tf.int32)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode(x):
      return tf.constant(self._decode(x.numpy().tolist()))
    out = tf.py_function(decode, [ids], tf.string)
    out.set_shape([])
    return out

  def __eq__(self, other) -> bool:
    return isinstance(other, HfTokenizerVocabulary) and other.path == self.path


@functools.lru_cache(maxsize=16)
def get_vocabulary(spec: str = "byte") -> seqio.Vocabulary:
  """"byte", "sentencepiece:<path to .model>" or "hf:<path to tokenizer.json>"."""
  if spec == "byte":
    return seqio.ByteVocabulary()
  kind, _, path = spec.partition(":")
  if kind == "sentencepiece" and path:
    return seqio.SentencePieceVocabulary(path)
  if kind == "hf" and path:
    return HfTokenizerVocabulary(path)
  raise ValueError(f"unknown vocabulary {spec!r}: expected 'byte', 'sentencepiece:<path>' or 'hf:<path>'")
