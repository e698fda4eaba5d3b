"""Tiny Hugging Face model folders as a user downloads them, made here without a hub: random weights
(`save_pretrained`) and a tokenizer trained on MATH text (`../shared/data/math`, else the synthetic domain's).

- qwen2: byte-level BPE `tokenizer.json` (Qwen2Tokenizer), no BOS, EOS <|endoftext|>, tied embeddings, q/k/v biases;
- llama: Llama-3 style, byte-level BPE whose post-processor puts <|begin_of_text|> first, EOS <|end_of_text|>,
  `llama3` RoPE scaling;
- gemma: a SentencePiece `tokenizer.model` (pad 0, EOS 1, BOS 2, unk 3, byte fallback) with tokenizer_config.json,
  as older Gemma and Llama-2 folders ship it.
Special tokens of the BPE tokenizers come after the learned vocabulary, as in the real ones.

    python tests/hf_fixtures.py --family qwen2 --out_dir /tmp/tiny_qwen2     # for the README walkthrough
"""
import argparse
import json
import os
from typing import Optional

FAMILIES = ("qwen2", "llama", "gemma")
SHARED_MATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                           "math", "train.jsonl")
VOCAB = 512


def corpus(limit: int = 1500) -> list[str]:
  """Problem and solution texts to train tokenizers on."""
  if os.path.exists(SHARED_MATH):
    texts = []
    with open(SHARED_MATH) as f:
      for line in f:
        record = json.loads(line)
        texts += [record["problem"], record["solution"]]
        if len(texts) >= limit:
          break
    return texts
  from mathft_jax.data import synthetic
  return [t for r in synthetic.generate("train", limit // 2) for t in (r["problem"], r["solution"])]


def _byte_level_bpe(texts: list[str], specials: list[str], qwen2: bool = False):
  """Qwen2's pipeline (NFC, its split pattern: one digit a token) or GPT-2's byte-level one (Llama-3 style).
  transformers' Qwen2Tokenizer rebuilds that pipeline around the vocabulary whatever tokenizer.json says, so the
  file must say the same, as real Qwen2 files do."""
  import tokenizers
  from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if qwen2:
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=VOCAB - len(specials), special_tokens=[],
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.add_special_tokens(specials)
  return tok


def save_tokenizer(family: str, out_dir: str) -> dict:
  """Trains and saves the family's tokenizer into out_dir; returns its special ids for config.json."""
  import transformers
  texts = corpus()
  os.makedirs(out_dir, exist_ok=True)
  if family == "qwen2":
    tok = _byte_level_bpe(texts, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], qwen2=True)
    hf = transformers.Qwen2Tokenizer(tokenizer_object=tok)
  elif family == "llama":
    from tokenizers import processors
    tok = _byte_level_bpe(texts, ["<|begin_of_text|>", "<|end_of_text|>"])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                              eos_token="<|end_of_text|>")
  elif family == "gemma":
    import sentencepiece as spm
    text_file = os.path.join(out_dir, "corpus.txt.tmp")
    with open(text_file, "w") as f:
      f.write("\n".join(texts))
    spm.SentencePieceTrainer.train(
        input=text_file, model_prefix=os.path.join(out_dir, "tokenizer"), vocab_size=VOCAB, model_type="bpe",
        byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", add_dummy_prefix=False, split_digits=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2)
    os.remove(text_file)
    os.remove(os.path.join(out_dir, "tokenizer.vocab"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
      json.dump({"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
                 "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}, f)
    return {"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0}
  else:
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
  hf.save_pretrained(out_dir)
  return {"bos_token_id": hf.bos_token_id, "eos_token_id": hf.eos_token_id, "pad_token_id": hf.pad_token_id}


def model_config(family: str, special_ids: dict, **overrides):
  import transformers
  common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=2048, **special_ids)
  if family == "qwen2":
    return transformers.Qwen2Config(**{**common, "tie_word_embeddings": True,
                                       "rope_parameters": {"rope_type": "default", "rope_theta": 100_000.0},
                                       **overrides})
  if family == "llama":
    return transformers.LlamaConfig(**{**common, "rms_norm_eps": 1e-5, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 5000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}, **overrides})
  return transformers.GemmaConfig(**{**common, "hidden_size": 48, "num_key_value_heads": 1, "head_dim": 32,
                                     "hidden_activation": "gelu_pytorch_tanh", **overrides})


def build(family: str, out_dir: str, torch_dtype: Optional[str] = None, seed: int = 0,
          save_kwargs: Optional[dict] = None, **overrides):
  """A tiny random model of `family` with its tokenizer, saved as Hugging Face does; returns the torch model.
  Every parameter is perturbed, so that zero-initialised biases and norms matter in comparisons."""
  import torch
  import transformers
  special = save_tokenizer(family, out_dir)
  config = model_config(family, special, **overrides)
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  if torch_dtype:
    model = model.to(getattr(torch, torch_dtype))
  model.save_pretrained(out_dir, **(save_kwargs or {}))
  return model


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--family", required=True, choices=FAMILIES)
  parser.add_argument("--out_dir", required=True)
  args = parser.parse_args()
  build(args.family, args.out_dir)
  print(f"wrote a tiny {args.family} model and its tokenizer to {args.out_dir}")


if __name__ == "__main__":
  main()
