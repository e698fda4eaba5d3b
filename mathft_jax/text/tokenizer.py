"""The tokenizer that travels with a model: one object for training, sampling, scoring and export (no TensorFlow).

Kinds: "byte" (UTF-8 bytes + 3; pad 0, EOS 1, unk 2: the embedded default, for models created here from
scratch), "sentencepiece" (a `tokenizer.model`, e.g. Gemma, Llama-2) and "hf" (a `tokenizer.json` of the
`tokenizers` library, e.g. Llama-3, Qwen2, Gemma).

A tokenizer folder holds the tokenizer's own files, copied unchanged, and `mathft_tokenizer.json`, its spec: the
kind, each file's sha256, the start id, EOS and pad ids, the vocabulary size and the evaluator label ids. Every
params folder this project writes carries one as `tokenizer/`. Two tokenizers are the same when their fingerprints
(kind, file hashes and special ids) are equal.

The sequence a model sees is what its tokenizer produces for the text with its special tokens (Hugging Face
`add_special_tokens=True`), then EOS:
- a training example (prompt P, target T) is `start + ids(P + T) + [EOS]`, split after the prompt's tokens
  (`example_ids`); the model reads seq[:-1] and is trained on the target tokens of seq[1:];
- a prompt at sampling or scoring time is `start + ids(P)` (`prompt_ids`), the prefix of that sequence.
`start` is the tokenizer's BOS when its post-processor adds one (`tokenizer.json`: Llama-3, Gemma) or when
`tokenizer_config.json` says `add_bos_token` (default true for a `tokenizer.model` with a BOS piece); nothing for
tokenizers without a BOS (Qwen2). Tokens a post-processor appends (an EOS) are not part of prompts. The byte
vocabulary starts every sequence with id 0, what seqio's decoder feature converters always put first, so byte
models trained before keep their inputs. EOS is `eos_token` of `tokenizer_config.json` (else of
`special_tokens_map.json`, else the model's own EOS piece): fine-tuning appends it and sampling stops at it.
A `tokenizer.json` is read as the `tokenizers` library reads it (transformers' own classes agree on the published
files: some, like Qwen2Tokenizer, rebuild the normalizer and pre-tokenizer that those files already hold).
"""
import dataclasses
import hashlib
import json
import os
import tempfile
from typing import Optional, Sequence

from mathft_jax import run_io

SPEC_FILE = "mathft_tokenizer.json"
BYTE_OFFSET = 3
# Files of a Hugging Face tokenizer that a tokenizer folder keeps (the first two hold the vocabulary itself).
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                      "added_tokens.json", "chat_template.jinja", "chat_template.json")
_KNOWN_EOS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


class TokenizerError(ValueError):
  """A missing, mismatched or unreadable tokenizer; the message names the file and the fix."""


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


class _ByteBackend:
  size = 256 + BYTE_OFFSET

  def encode(self, text: str) -> list[int]:
    return [b + BYTE_OFFSET for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    data = bytes(i - BYTE_OFFSET for i in ids if BYTE_OFFSET <= i < 256 + BYTE_OFFSET)
    return data.decode("utf-8", errors="ignore")


class _SentencePieceBackend:

  def __init__(self, path: str):
    import sentencepiece
    self.sp = sentencepiece.SentencePieceProcessor(model_file=path)
    self.size = self.sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    return self.sp.decode([int(i) for i in ids])

  def token_id(self, token: str) -> Optional[int]:
    i = self.sp.piece_to_id(token)
    return None if i == self.sp.unk_id() and token != self.sp.id_to_piece(i) else i


class _TokenizersBackend:

  def __init__(self, path: str):
    import tokenizers
    self.tok = tokenizers.Tokenizer.from_file(path)
    self.size = self.tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    return self.tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def token_id(self, token: str) -> Optional[int]:
    return self.tok.token_to_id(token)

  def added_prefix(self) -> list[int]:
    """The ids the post-processor puts before a text (e.g. Llama-3's <|begin_of_text|>)."""
    probe = "Problem: 1 + 1"
    bare = self.tok.encode(probe, add_special_tokens=False).ids
    full = self.tok.encode(probe, add_special_tokens=True).ids
    for i in range(len(full) - len(bare) + 1):
      if full[i:i + len(bare)] == bare:
        return full[:i]
    return []


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
  """What `mathft_tokenizer.json` records. start_id: the id before every sequence (None: nothing)."""
  kind: str
  files: dict
  start_id: Optional[int]
  eos_id: int
  pad_id: int
  vocab_size: int

  def fingerprint(self) -> str:
    keys = {"kind": self.kind, "files": dict(sorted(self.files.items())), "start_id": self.start_id,
            "eos_id": self.eos_id, "pad_id": self.pad_id}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


class Tokenizer:
  """Text <-> ids with the model's special tokens. Build with `load_tokenizer`."""

  def __init__(self, spec: TokenizerSpec, folder: Optional[str], backend, source: str):
    self.spec, self.folder, self._backend, self.source = spec, folder, backend, source

  kind = property(lambda self: self.spec.kind)
  eos_id = property(lambda self: self.spec.eos_id)
  pad_id = property(lambda self: self.spec.pad_id)
  vocab_size = property(lambda self: self.spec.vocab_size)
  start = property(lambda self: [] if self.spec.start_id is None else [self.spec.start_id])
  fingerprint = property(lambda self: self.spec.fingerprint())

  def __eq__(self, other) -> bool:
    return isinstance(other, Tokenizer) and other.fingerprint == self.fingerprint

  def __hash__(self) -> int:
    return hash(self.fingerprint)

  def __repr__(self) -> str:
    return f"{self.kind} tokenizer from {self.source} (fingerprint {self.fingerprint[:12]})"

  def encode(self, text: str) -> list[int]:
    """Ids of `text` without special tokens."""
    return self._backend.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    return self._backend.decode(ids)

  def prompt_ids(self, prompt: str) -> list[int]:
    """A prompt as the model sees it at sampling and scoring time: start + ids(prompt)."""
    return self.start + self.encode(prompt)

  def example_ids(self, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """(inputs, targets) of a training example, without EOS: inputs = `prompt_ids(prompt)`, and targets the rest
    of start + ids(prompt + target). When the two tokenizations disagree at the seam (a token spanning the end of
    the prompt, which the project's prompts avoid by ending in a newline or a word), targets = ids(target)."""
    inputs = self.prompt_ids(prompt)
    if not target:
      return inputs, []
    full = self.prompt_ids(prompt + target)
    if full[:len(inputs)] == inputs:
      return inputs, full[len(inputs):]
    return inputs, self.encode(target)

  def evaluator_labels(self) -> tuple[list[int], int, int]:
    """(shared prefix ids, correct id, incorrect id): " correct" and " incorrect" as they follow the evaluator
    prompt; the evaluator's score compares the first token where they differ."""
    from mathft_jax.text.prompts import EVALUATOR_LABELS, evaluator_input
    prompt = evaluator_input("What is $1+1$?", "The answer is $\\boxed{2}$.")
    a, b = (self.example_ids(prompt, label)[1] for label in EVALUATOR_LABELS)
    k = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), None)
    if k is None:
      raise TokenizerError(f"{self.source}: {EVALUATOR_LABELS} tokenize to {a} and {b}, which do not differ")
    return a[:k], a[k], b[k]

  def record(self) -> dict:
    """The spec as `mathft_tokenizer.json` and params folder manifests hold it: the fields of TokenizerSpec, the
    fingerprint and the evaluator label ids."""
    prefix, correct, incorrect = self.evaluator_labels()
    return {**dataclasses.asdict(self.spec), "fingerprint": self.fingerprint,
            "evaluator_labels": {"prefix": prefix, "correct": correct, "incorrect": incorrect}}

  def save(self, folder: str) -> None:
    """Copies the tokenizer files into `folder` (local or gs://) and writes its spec, last and atomically."""
    run_io.makedirs(folder)
    if not (self.folder and run_io.absolute(self.folder) == run_io.absolute(folder)):
      for name in self.spec.files:
        run_io.copy_file(os.path.join(self.folder, name), run_io.join(folder, name))
    run_io.write_json(run_io.join(folder, SPEC_FILE), self.record(), indent=2)

BYTE = Tokenizer(TokenizerSpec("byte", {}, 0, 1, 0, _ByteBackend.size), None, _ByteBackend(), "byte")


def _token_name(value) -> Optional[str]:
  """tokenizer_config.json writes a token as a string, as {"content": ...} or as null."""
  if isinstance(value, dict):
    return value.get("content")
  return value if isinstance(value, str) else None


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise TokenizerError(f"{path}: not valid JSON ({e})") from None


def _from_hf_folder(folder: str) -> Tokenizer:
  """A Hugging Face tokenizer folder: tokenizer.json (preferred, what `AutoTokenizer` reads) or tokenizer.model."""
  config = {**_read_json(os.path.join(folder, "special_tokens_map.json")),
            **_read_json(os.path.join(folder, "tokenizer_config.json"))}
  if os.path.exists(os.path.join(folder, "tokenizer.json")):
    kind, backend = "hf", _TokenizersBackend(os.path.join(folder, "tokenizer.json"))
  elif os.path.exists(os.path.join(folder, "tokenizer.model")):
    kind, backend = "sentencepiece", _SentencePieceBackend(os.path.join(folder, "tokenizer.model"))
  else:
    raise TokenizerError(f"{folder}: no tokenizer.json or tokenizer.model; pass the folder that holds the model's "
                         f"tokenizer (mathft-import-hf --tokenizer_dir DIR)")

  def token_id(key: str) -> Optional[int]:
    name = _token_name(config.get(key))
    if name is None:
      return None
    i = backend.token_id(name)
    if i is None:
      raise TokenizerError(f"{folder}/tokenizer_config.json: {key} {name!r} is not a token of the vocabulary")
    return i

  eos = token_id("eos_token")
  if kind == "sentencepiece":
    eos = eos if eos is not None else (backend.sp.eos_id() if backend.sp.eos_id() >= 0 else None)
    bos = token_id("bos_token")
    bos = bos if bos is not None else (backend.sp.bos_id() if backend.sp.bos_id() >= 0 else None)
    start = bos if config.get("add_bos_token", True) else None
    pad = token_id("pad_token")
    pad = pad if pad is not None else (backend.sp.pad_id() if backend.sp.pad_id() >= 0 else None)
  else:
    eos = eos if eos is not None else next((backend.token_id(t) for t in _KNOWN_EOS if backend.token_id(t) is not None),
                                           None)
    prefix = backend.added_prefix()
    if len(prefix) > 1:
      raise TokenizerError(f"{folder}/tokenizer.json: its post-processor puts {len(prefix)} tokens before a text "
                           f"({prefix}); only a single BOS is supported")
    start = prefix[0] if prefix else None
    pad = token_id("pad_token")
  if eos is None:
    raise TokenizerError(f"{folder}: no EOS token; set eos_token in {folder}/tokenizer_config.json")
  files = {name: _sha256(os.path.join(folder, name)) for name in HF_TOKENIZER_FILES
           if os.path.exists(os.path.join(folder, name))}
  spec = TokenizerSpec(kind, files, start, eos, eos if pad is None else pad, backend.size)
  return Tokenizer(spec, folder, backend, folder)


def _from_spec_folder(folder: str) -> Tokenizer:
  path = os.path.join(folder, SPEC_FILE)
  record = _read_json(path)
  try:
    spec = TokenizerSpec(**{f.name: record[f.name] for f in dataclasses.fields(TokenizerSpec)})
  except KeyError as e:
    raise TokenizerError(f"{path}: missing field {e}; rewrite the folder with mathft-import-hf") from None
  if spec.kind == "byte":
    return BYTE
  for name, digest in spec.files.items():
    file = os.path.join(folder, name)
    if not os.path.exists(file) or _sha256(file) != digest:
      raise TokenizerError(f"{file}: {'missing' if not os.path.exists(file) else 'changed'}; {path} records the "
                           f"tokenizer this model was made with (restore the file or re-import the model)")
  backend = (_TokenizersBackend(os.path.join(folder, "tokenizer.json")) if spec.kind == "hf"
             else _SentencePieceBackend(os.path.join(folder, "tokenizer.model")))
  return Tokenizer(spec, folder, backend, folder)


_LOCAL_COPIES: dict = {}


def _local_copy(folder: str) -> str:
  """A local folder holding the tokenizer files of a gs:// folder (the libraries read local files; once a process)."""
  if folder not in _LOCAL_COPIES:
    local = tempfile.mkdtemp(prefix="mathft-tokenizer-")
    for name in (SPEC_FILE, *HF_TOKENIZER_FILES):
      if run_io.exists(run_io.join(folder, name)):
        run_io.copy_file(run_io.join(folder, name), os.path.join(local, name))
    _LOCAL_COPIES[folder] = local
  return _LOCAL_COPIES[folder]


def load_tokenizer(source: str) -> Tokenizer:
  """"byte"; a tokenizer folder (with mathft_tokenizer.json); a params folder (its tokenizer/); or a Hugging Face
  folder with tokenizer.json or tokenizer.model (a model folder as downloaded). Folders may be gs:// URIs."""
  if source == "byte":
    return BYTE
  if not run_io.is_local(source):
    folder = run_io.join(source, "tokenizer") if run_io.exists(run_io.join(source, "tokenizer", SPEC_FILE)) else source
    local = load_tokenizer(_local_copy(folder))
    return local if local.kind == "byte" else Tokenizer(local.spec, local.folder, local._backend, folder)
  if not os.path.isdir(source):
    raise TokenizerError(f"{source}: not 'byte' nor a folder (a params folder, a tokenizer folder or a Hugging Face "
                         f"folder with tokenizer.json or tokenizer.model)")
  if os.path.exists(os.path.join(source, SPEC_FILE)):
    return _from_spec_folder(source)
  if os.path.exists(os.path.join(source, "tokenizer", SPEC_FILE)):
    return _from_spec_folder(os.path.join(source, "tokenizer"))
  return _from_hf_folder(source)
