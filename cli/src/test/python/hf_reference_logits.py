#!/usr/bin/python3
"""Load a Hugging Face Llama export with the PyTorch reference model and print its logits.

Usage: hf_reference_logits.py PEER EXPORT_DIR IDS_JSON
  PEER        path to ../shared/peers/torch_llama.py (HF LlamaForCausalLM semantics, plain PyTorch)
  EXPORT_DIR  a directory written by `crucible export --format hf --dtype f32` (config.json + *.safetensors)
  IDS_JSON    token ids, e.g. "[1, 2, 3]"
Prints the logits (T x V) as a JSON array. The Java test ExportTorchTest compares them with Crucible's: an export
means the same thing to PyTorch as it does to Crucible. Only what the export's config.json says is used.
"""
import glob
import importlib.util
import json
import os
import sys

import torch

peer, export_dir, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
spec = importlib.util.spec_from_file_location("torch_llama", peer)
tl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tl)

c = json.load(open(os.path.join(export_dir, "config.json")))
assert c["architectures"] == ["LlamaForCausalLM"], c["architectures"]
heads = c["num_attention_heads"]
cfg = dict(dim=c["hidden_size"], layers=c["num_hidden_layers"], heads=heads,
           kv_heads=c.get("num_key_value_heads", heads), ffn=c["intermediate_size"], vocab=c["vocab_size"],
           T=len(ids), B=1, rms_eps=c["rms_norm_eps"], rope_theta=c.get("rope_theta", 10000.0),
           tied=bool(c.get("tie_word_embeddings", False)))
cfg["head_dim"] = cfg["dim"] // heads
model = tl.LlamaForCausalLM(cfg)

state = {}
for f in sorted(glob.glob(os.path.join(export_dir, "*.safetensors"))):
    tensors, _ = tl.read_safetensors(f)
    state.update({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
if cfg["tied"]:
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
missing, unexpected = model.load_state_dict(state, strict=False)
assert not missing and not unexpected, (missing, unexpected)

with torch.no_grad():
    logits, _ = model(torch.tensor([ids]))
print(json.dumps(logits[0].tolist()))
