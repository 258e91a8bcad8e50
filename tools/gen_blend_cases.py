#!/usr/bin/env python3
"""gen_blend_cases.py - reference prompt and seed blends for streamdiff's stream blending (tests/test_blend.c).

Writes tests/data/blend/: blend.json (the cases: the weighted prompts or seeds, the mode, whether weights are
normalised, the name of the expected tensor) and blend.safetensors (F32): `embed.<i>` = each prompt's text
encoding [77, 32] by tiny-sd15's CLIPTextModel (transformers, as diffusers' encode_prompt: padded to 77, last
hidden state), `noise.<seed>` = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(seed)) (a 32x32
stream with two denoising steps: batch 2, latent 4x4), and `expected.<case>` = the blend. SDXL cases (`sdxl_*`):
`sdxl.embed.<i>` / `sdxl.pooled.<i>` = tiny-sdxl's prompt embeddings [77, 20] and pooled embeddings [10] from
diffusers' StableDiffusionXLPipeline.encode_prompt (float32), `expected.<case>` / `expected_pooled.<case>` = their
blends (the pooled embeddings blended as their own tensor with the same weights and method).

The blends follow StreamDiffusion forks' StreamParameterUpdater (daydreamlive/StreamDiffusion,
stream_parameter_updater.py; formulas restated in docs/blending.md), written out here in torch float32:
  weights: w / w.sum() when normalised, else w (float32 tensors)
  linear:  combined = zeros; combined += w_i * x_i for each entry in order
  slerp:   two entries only (else linear): t = w[1]; t <= 0 -> x_0; t >= 1 -> x_1; otherwise on the
           flattened tensors, cos = clamp(dot(normalize(x_0), normalize(x_1)), -1, 1), theta = acos(cos),
           |theta| < 1e-6 -> (1-t) x_0 + t x_1, else sin((1-t) theta)/sin(theta) x_0 + sin(t theta)/sin(theta) x_1

Requirements: pip install torch transformers diffusers safetensors (written with torch 2.15, transformers 5.25,
diffusers 0.42.1).
Developer-run, from the repository root: python3 tools/gen_blend_cases.py
"""
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests" / "data" / "models" / "tiny-sd15"
OUT = ROOT / "tests" / "data" / "blend"

PROMPTS = ["a watercolor fox", "an oil painting of a castle at dusk", "neon city at night, rain", ""]
SEEDS = [11, 22, 4000000007]
NOISE_SHAPE = (2, 4, 4, 4)

# name, kind, [(index into PROMPTS or SEEDS, weight)], mode, normalize
CASES = [
    ("prompts_linear_norm3", "prompts", [(0, 2.0), (1, 1.0), (2, 1.0)], "linear", True),
    ("prompts_linear_raw2", "prompts", [(0, 0.7), (1, 0.6)], "linear", False),
    ("prompts_slerp_norm2", "prompts", [(0, 1.0), (1, 3.0)], "slerp", True),
    ("prompts_slerp_raw2", "prompts", [(1, 0.4), (2, 0.35)], "slerp", False),
    ("prompts_slerp_t1", "prompts", [(0, 0.0), (2, 5.0)], "slerp", True),
    ("prompts_slerp_norm3_is_linear", "prompts", [(0, 1.0), (1, 1.0), (3, 2.0)], "slerp", True),
    ("prompts_one", "prompts", [(2, 0.25)], "slerp", True),
    ("seeds_linear_norm2", "seeds", [(0, 1.0), (1, 1.0)], "linear", True),
    ("seeds_slerp_norm2", "seeds", [(0, 0.3), (1, 0.7)], "slerp", True),
    ("seeds_linear_raw3", "seeds", [(0, 0.5), (1, 0.5), (2, 0.5)], "linear", False),
    ("seeds_slerp_raw2", "seeds", [(2, 0.2), (0, 0.9)], "slerp", False),
    ("sdxl_prompts_slerp_norm2", "sdxl", [(0, 1.0), (1, 3.0)], "slerp", True),
    ("sdxl_prompts_linear_norm3", "sdxl", [(0, 2.0), (1, 1.0), (2, 1.0)], "linear", True),
    ("sdxl_prompts_slerp_raw2", "sdxl", [(1, 0.4), (2, 0.35)], "slerp", False),
]
SDXL = ROOT / "tests" / "data" / "models" / "tiny-sdxl"


def sdxl_encodings():
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(str(SDXL), torch_dtype=torch.float32)
    out = []
    for p in PROMPTS:
        e, _, pooled, _ = pipe.encode_prompt(p, device="cpu", num_images_per_prompt=1,
                                             do_classifier_free_guidance=False)
        out.append((e[0].contiguous(), pooled[0].contiguous()))
    return out


def weights(ws, normalize):
    t = torch.tensor(ws, dtype=torch.float32)
    return t / t.sum() if normalize else t


def slerp(a, b, t):
    if t <= 0:
        return a
    if t >= 1:
        return b
    fa, fb = a.reshape(-1), b.reshape(-1)
    cos = torch.clamp(torch.dot(F.normalize(fa, dim=0), F.normalize(fb, dim=0)), -1.0, 1.0)
    theta = torch.acos(cos)
    if theta.abs() < 1e-6:
        out = (1 - t) * fa + t * fb
    else:
        s = torch.sin(theta)
        out = torch.sin((1 - t) * theta) / s * fa + torch.sin(t * theta) / s * fb
    return out.reshape(a.shape)


def blend(xs, ws, mode, normalize):
    w = weights(ws, normalize)
    if mode == "slerp" and len(xs) == 2:
        return slerp(xs[0], xs[1], w[1].item())
    out = torch.zeros_like(xs[0])
    for x, wi in zip(xs, w):
        out += wi * x
    return out


def encoder():
    d = MODEL / "text_encoder"
    m = CLIPTextModel._from_config(CLIPTextConfig.from_pretrained(str(d)), attn_implementation="eager")
    sd = {k: v.to(torch.float32) for k, v in load_file(str(d / "model.safetensors")).items()}
    if not hasattr(m, "text_model"):
        sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}
    m.to(torch.float32)  # the config says float16: compute in float32 from the stored (rounded) weights
    missing, unexpected = m.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"{d}: missing {missing[:5]} unexpected {unexpected[:5]}")
    return m.eval(), CLIPTokenizer.from_pretrained(str(MODEL / "tokenizer"))


@torch.no_grad()
def main():
    torch.set_num_threads(1)
    te, tok = encoder()
    embeds = []
    for p in PROMPTS:
        ids = tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        embeds.append(te(ids)[0][0].to(torch.float32).contiguous())
    noises = {}
    for s in SEEDS:
        noises[s] = torch.randn(NOISE_SHAPE, generator=torch.Generator().manual_seed(s), dtype=torch.float32)
    tensors = {f"embed.{i}": e for i, e in enumerate(embeds)}
    tensors.update({f"noise.{s}": n for s, n in noises.items()})
    sdxl = sdxl_encodings()
    for i, (e, p) in enumerate(sdxl):
        tensors[f"sdxl.embed.{i}"], tensors[f"sdxl.pooled.{i}"] = e, p
    cases = []
    for name, kind, entries, mode, normalize in CASES:
        ws = [w for _, w in entries]
        if kind == "sdxl":
            tensors[f"expected.{name}"] = blend([sdxl[i][0] for i, _ in entries], ws, mode, normalize).clone()
            tensors[f"expected_pooled.{name}"] = blend([sdxl[i][1] for i, _ in entries], ws, mode, normalize).clone()
            cases.append({"name": name, "kind": "prompts", "model": "models/tiny-sdxl",
                          "entries": [[PROMPTS[i], w] for i, w in entries], "mode": mode, "normalize": normalize,
                          "expected": f"expected.{name}", "expected_pooled": f"expected_pooled.{name}"})
            continue
        if kind == "prompts":
            xs = [embeds[i] for i, _ in entries]
            items = [[PROMPTS[i], w] for i, w in entries]
        else:
            xs = [noises[SEEDS[i]] for i, _ in entries]
            items = [[SEEDS[i], w] for i, w in entries]
        tensors[f"expected.{name}"] = blend(xs, [w for _, w in entries], mode, normalize).clone().contiguous()
        cases.append({"name": name, "kind": kind, "model": "models/tiny-sd15", "entries": items, "mode": mode,
                      "normalize": normalize, "expected": f"expected.{name}"})
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / "blend.safetensors"))
    meta = {"description": "prompt / seed blends (tools/gen_blend_cases.py): tiny-sd15 text encodings [77, 32] (tiny-sdxl: [77, 20] + pooled [10]), "
            "torch CPU noise (2, 4, 4, 4) per seed, blended as StreamDiffusion forks' StreamParameterUpdater",
            "model": "models/tiny-sd15", "stream": {"width": 32, "height": 32, "t_index_list": [20, 40]},
            "prompts": PROMPTS, "seeds": SEEDS, "noise_shape": list(NOISE_SHAPE), "cases": cases,
            "versions": {"torch": torch.__version__}}
    (OUT / "blend.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
