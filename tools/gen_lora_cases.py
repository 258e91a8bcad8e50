#!/usr/bin/env python3
"""gen_lora_cases.py - LoRA reference data for tests/test_lora.c and tests/cli_lora.sh (developer-run).

Writes tests/data/lora/:
    style_kohya.safetensors   kohya/A1111 format (lora_unet_* / lora_te_*, .lora_down/.lora_up/.alpha, F16):
                              attention, feed-forward, time_emb_proj, a 1x1 conv (proj_in, "1x1 both"), a LoCon
                              3x3 conv (resnets conv1: down [r,C,3,3], up [O,r,1,1]), a 1x1 conv_shortcut and two
                              text-encoder mlp layers; alphas and ranks differ per layer (alpha/rank 0.5..2).
    lcm_peft.safetensors      diffusers/PEFT format as diffusers' save_lora_weights writes it (unet.*.lora_A /
                              lora_B, text_encoder.*, F32) with the lora_adapter_metadata (unet r 4 / lora_alpha 8
                              and an alpha_pattern entry; text_encoder r 2 / lora_alpha 3); targets every
                              attention / feed-forward / proj / resnet conv / time_emb_proj layer, like an
                              LCM-LoRA.
    peft_adapter/             a PEFT adapter of the UNet (PeftModel.save_pretrained: adapter_model.safetensors
                              with base_model.model.* keys + adapter_config.json with lora_alpha 6, r 3).
    expected.safetensors      inputs and references (float32):
        latents, noise.000     x_T [1,4,8,8] and the one noise draw of the LCM step (LCMScheduler.step, i=0)
        <S>.final_latents      final latents of a 2-step LCM txt2img (tiny-sd15, 16x16 pixels = 8x8 latents with its 2x VAE,
                               guidance 1.0, PROMPT),
                               diffusers StableDiffusionPipeline with load_lora_weights + set_adapters + fuse_lora
        <S>.w.<weight name>    fused weights of some layers after fuse_lora
      scenarios <S> (one pipeline, in this order, as an application would switch them):
        base    no LoRA
        style   style_kohya @ 0.8
        lcm     lcm_peft @ 1.0
        both    style_kohya @ 0.6 + lcm_peft @ 1.0
        change  unfuse, then style_kohya @ 1.2 + lcm_peft @ 0.5
        unfused unfuse + unload (diffusers subtracts the deltas again: close to base, not bit-exact)
        peft    peft_adapter @ 1.0: fused weights from PEFT's own merge_and_unload (no pipeline run)

Every diffusers fused weight is also checked here against an independent float64 evaluation of
W + sum scale * alpha/rank * up @ down (max abs difference printed; must be < 1e-5), and all weights the
LoRAs do not target must be unchanged, so the reference is known to consume every key.

Run from the repository root:  python3 tools/gen_lora_cases.py   (needs torch, diffusers, transformers, peft)
Deterministic (fixed seeds, single thread, PYTHONHASHSEED=0, canonical safetensors headers): a rerun reproduces
every file bit for bit.
"""

import json
import os
import re
import shutil
import struct
import sys
from pathlib import Path

if os.environ.get("PYTHONHASHSEED") != "0":  # set orders (PEFT target_modules) must not vary between runs
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import gen_testdata as G  # noqa: E402  (model loading helpers, noise tap)

from peft import LoraConfig, get_peft_model, get_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402

torch.set_num_threads(1)
MODEL = ROOT / "tests/data/models/tiny-sd15"
OUT = ROOT / "tests/data/lora"
PROMPT = "a watercolor fox in a forest"
SEED_LATENTS, SEED_NOISE, SEED_STYLE, SEED_LCM, SEED_PEFT = 9101, 9102, 9103, 9104, 9105

# layers whose fused weights are stored for every scenario
CHECK_UNET = [
    "down_blocks.0.resnets.0.conv1.weight",                                   # LoCon 3x3 (style) / peft conv
    "down_blocks.0.attentions.0.proj_in.weight",                              # 1x1 conv, both LoRAs
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",      # linear, both
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",      # cross-attention K
    "up_blocks.1.resnets.0.conv_shortcut.weight",                             # 1x1 conv shortcut
    "down_blocks.1.resnets.0.time_emb_proj.weight",
]
CHECK_TE = [
    "text_model.encoder.layers.0.self_attn.q_proj.weight",  # lcm_peft only
    "text_model.encoder.layers.1.mlp.fc1.weight",           # both
    "text_model.encoder.layers.0.mlp.fc2.weight",
]

# style_kohya: module -> (rank, alpha). diffusers 0.42.1 (+ transformers 5) mishandles two things of kohya files,
# so the reference LoRA avoids them (streamdiff follows kohya / A1111 there; test_lora.c checks those paths by
# format equivalence instead): (1) attention layers (converted to "attn1.processor.to_q_lora") get a garbage
# alpha_pattern key, so they always use the file's most common alpha -> every attention layer here has alpha 4,
# the most common value; (2) text-encoder self_attn layers (lora_te_..._self_attn_q_proj) are silently dropped
# -> only mlp layers in the text encoder; (3) with transformers 5 (no text_model module) the text encoder's
# alpha_pattern keeps the "text_model." prefix and matches nothing -> one alpha for all text-encoder layers.
STYLE_UNET = {
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": (4, 4.0),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k": (4, 4.0),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v": (4, 4.0),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0": (4, 4.0),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k": (2, 4.0),
    "down_blocks.0.attentions.0.proj_in": (4, 3.0),
    "down_blocks.0.resnets.0.conv1": (4, 2.0),
    "up_blocks.1.resnets.0.conv_shortcut": (2, 2.0),
    "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj": (4, 4.0),
    "down_blocks.1.resnets.0.time_emb_proj": (2, 1.0),
}
STYLE_TE = {
    "text_model.encoder.layers.1.mlp.fc1": (4, 2.0),
    "text_model.encoder.layers.0.mlp.fc2": (2, 2.0),
}


def canonical_header(path):
    """Rewrites a safetensors header with sorted __metadata__ keys (safetensors stores metadata in a hash map,
    so its order - and the file's bytes - would change from run to run)."""
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    if "__metadata__" in head:
        head["__metadata__"] = dict(sorted(head["__metadata__"].items()))
    h = json.dumps(head, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b[8 + n:])


def log(*a):
    print(*a, flush=True)


def build_pipe():
    return G.build_pipe("StableDiffusionPipeline", MODEL, None, G.read_json(MODEL / "scheduler/scheduler_config.json"),
                        torch.float32)


def weights(model):
    """state dict with PEFT wrappers folded away (base_layer = the fused weight after fuse_lora); text-encoder
    keys always with the hub's "text_model." prefix (transformers 5 CLIPTextModel has no text_model module)"""
    te = model.__class__.__name__.startswith("CLIP")
    out = {}
    for k, v in model.state_dict().items():
        if "lora_" in k:
            continue
        k = k.replace(".base_layer.", ".")
        if te and not k.startswith("text_model.") and not k.startswith("text_projection"):
            k = "text_model." + k
        out[k] = v.detach().clone()
    return out


def rand(shape, g, std):
    return torch.randn(shape, generator=g, dtype=torch.float64) * std


# ---------------------------------------------------------------- LoRA files
def make_style(unet_sd, te_sd):
    g = torch.Generator().manual_seed(SEED_STYLE)
    out, meta = {}, {}
    for prefix, table, sd in (("lora_unet_", STYLE_UNET, unet_sd), ("lora_te_", STYLE_TE, te_sd)):
        for mod, (r, alpha) in table.items():
            w = sd[mod + ".weight"]
            o, rest = w.shape[0], tuple(w.shape[1:])
            name = prefix + mod.replace(".", "_")
            down = rand((r,) + rest, g, 0.3)
            up = rand((o, r) + ((1, 1) if len(rest) == 3 else ()), g, 0.1)
            out[name + ".lora_down.weight"] = down.to(torch.float16)
            out[name + ".lora_up.weight"] = up.to(torch.float16)
            out[name + ".alpha"] = torch.tensor(alpha, dtype=torch.float16)
            meta[name] = (mod, r, alpha)
    save_file(out, str(OUT / "style_kohya.safetensors"), metadata={"ss_network_module": "networks.lora"})
    return out


UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "time_emb_proj"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def randomize_lora(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in sorted(model.named_parameters()):
            if "lora_A" in n:
                p.copy_(rand(p.shape, g, 0.3).to(p.dtype))
            elif "lora_B" in n:
                p.copy_(rand(p.shape, g, 0.05).to(p.dtype))


def make_lcm():
    pipe = build_pipe()  # a scratch pipeline: the adapters are injected for saving only
    ucfg = LoraConfig(r=4, lora_alpha=8, target_modules=UNET_TARGETS, init_lora_weights=False,
                      alpha_pattern={"down_blocks.0.attentions.0.proj_in": 2})
    tcfg = LoraConfig(r=2, lora_alpha=3, target_modules=TE_TARGETS, init_lora_weights=False)
    pipe.unet.add_adapter(ucfg, adapter_name="gen")
    pipe.text_encoder.add_adapter(tcfg, adapter_name="gen")
    randomize_lora(pipe.unet, SEED_LCM)
    randomize_lora(pipe.text_encoder, SEED_LCM + 1)
    ul = get_peft_model_state_dict(pipe.unet, adapter_name="gen")
    tl = get_peft_model_state_dict(pipe.text_encoder, adapter_name="gen")
    tmp = OUT / "_lcm"
    StableDiffusionPipeline.save_lora_weights(
        str(tmp), unet_lora_layers=ul, text_encoder_lora_layers=tl, safe_serialization=True,
        unet_lora_adapter_metadata=ucfg.to_dict(), text_encoder_lora_adapter_metadata=tcfg.to_dict())
    shutil.move(str(tmp / "pytorch_lora_weights.safetensors"), str(OUT / "lcm_peft.safetensors"))
    shutil.rmtree(tmp)


def make_peft_adapter(base_unet_sd):
    unet = G.load_unet(MODEL / "unet", torch.float32)
    cfg = LoraConfig(r=3, lora_alpha=6, target_modules=["to_q", "to_v", "proj_out", "conv2"], init_lora_weights=False)
    pm = get_peft_model(unet, cfg)
    randomize_lora(pm, SEED_PEFT)
    d = OUT / "peft_adapter"
    if d.exists():
        shutil.rmtree(d)
    pm.save_pretrained(str(d))
    for f in list(d.iterdir()):
        if f.name not in ("adapter_model.safetensors", "adapter_config.json"):
            f.unlink()
    merged = pm.merge_and_unload()
    return weights(merged)


# ---------------------------------------------------------------- independent fused weights
def lora_layers(path):
    """[(component, module, down, up, coef_without_scale)] from a stored LoRA file (float64)"""
    sd = load_file(str(path))
    meta = {}
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        m = f.metadata() or {}
    if "lora_adapter_metadata" in m:
        meta = json.loads(m["lora_adapter_metadata"])
    res = []
    for k, v in sd.items():
        if k.endswith(".lora_down.weight"):
            name = k[: -len(".lora_down.weight")]
            comp = "unet" if name.startswith("lora_unet_") else "text_encoder"
            table = STYLE_UNET if comp == "unet" else STYLE_TE
            mod = next(m_ for m_ in table if ("lora_unet_" if comp == "unet" else "lora_te_") + m_.replace(".", "_") == name)
            up = sd[name + ".lora_up.weight"].double()
            r = v.shape[0]
            res.append((comp, mod, v.double(), up, float(sd[name + ".alpha"]) / r))
        elif k.endswith(".lora_A.weight"):
            full = k[: -len(".lora_A.weight")]
            comp, mod = full.split(".", 1)
            if comp == "text_encoder" and not mod.startswith("text_model."):
                mod = "text_model." + mod  # transformers 5 module names (no text_model module)
            r = v.shape[0]
            alpha = meta[f"{comp}.lora_alpha"]
            for pat, a in (meta.get(f"{comp}.alpha_pattern") or {}).items():
                if re.match(rf"(.*\.)?({pat})$", mod):
                    alpha = a
            res.append((comp, mod, v.double(), sd[full + ".lora_B.weight"].double(), alpha / r))
    return res


def expect_fused(base, layers_scaled):
    """base: {comp: state dict}; layers_scaled: [(layers, scale)] -> {comp: {name: float64 tensor}}"""
    out = {c: {k: v.double().clone() for k, v in sd.items()} for c, sd in base.items()}
    for layers, scale in layers_scaled:
        for comp, mod, down, up, coef in layers:
            w = out[comp][mod + ".weight"]
            delta = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
            out[comp][mod + ".weight"] = w + scale * coef * delta.reshape(w.shape)
    return out


def check_fused(tag, pipe, exp, base):
    worst, n_changed = 0.0, 0
    for comp, model in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)):
        got = weights(model)
        for k, e in exp[comp].items():
            if k not in got:
                continue
            d = (got[k].double() - e).abs().max().item()
            worst = max(worst, d)
            if not torch.equal(got[k], base[comp][k]):
                n_changed += 1
            if d > 1e-5:
                raise RuntimeError(f"{tag}: diffusers' fused {comp}.{k} differs from W + scale*alpha/r*BA by {d}")
    log(f"  {tag}: diffusers fused weights vs independent float64 formula: max abs diff {worst:.3g}"
        f" ({n_changed} tensors changed)")


def run(pipe, latents):
    G.TAP.start("record")
    with torch.no_grad():
        out = pipe(PROMPT, num_inference_steps=2, guidance_scale=1.0, height=16, width=16, latents=latents.clone(),
                   generator=torch.Generator().manual_seed(SEED_NOISE), output_type="latent")
    noise = G.TAP.stop()
    return out.images.detach().clone(), noise


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    pipe = build_pipe()
    base = {"unet": weights(pipe.unet), "text_encoder": weights(pipe.text_encoder)}
    make_style(base["unet"], base["text_encoder"])
    make_lcm()
    peft_merged = make_peft_adapter(base["unet"])

    style_l = lora_layers(OUT / "style_kohya.safetensors")
    lcm_l = lora_layers(OUT / "lcm_peft.safetensors")
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED_LATENTS))
    exp = {"latents": latents}

    def record(tag, with_weights=True):
        lat, noise = run(pipe, latents)
        if len(noise) != 1:
            raise RuntimeError(f"{tag}: {len(noise)} noise draws, expected 1")
        if "noise.000" in exp and not torch.equal(exp["noise.000"], noise[0][0]):
            raise RuntimeError("noise differs between runs")
        exp["noise.000"] = noise[0][0]
        exp[f"{tag}.final_latents"] = lat
        if with_weights:
            for comp, model, names in (("unet", pipe.unet, CHECK_UNET), ("text_encoder", pipe.text_encoder, CHECK_TE)):
                w = weights(model)
                for n in names:
                    exp[f"{tag}.w.{n}"] = w[n]
        log(f"  {tag}: final latents max |x| {lat.abs().max().item():.4f}")
        return lat

    base_lat = record("base", with_weights=False)
    pipe.load_lora_weights(str(OUT / "style_kohya.safetensors"), adapter_name="style")
    pipe.load_lora_weights(str(OUT / "lcm_peft.safetensors"), adapter_name="lcm")

    def scenario(tag, scales):
        pipe.set_adapters(list(scales), adapter_weights=list(scales.values()))
        pipe.fuse_lora(adapter_names=list(scales), lora_scale=1.0)
        check_fused(tag, pipe, expect_fused(base, [(style_l if a == "style" else lcm_l, s) for a, s in scales.items()]),
                    base)
        lat = record(tag)
        pipe.unfuse_lora()
        return lat

    scenario("style", {"style": 0.8})
    scenario("lcm", {"lcm": 1.0})
    scenario("both", {"style": 0.6, "lcm": 1.0})
    scenario("change", {"style": 1.2, "lcm": 0.5})
    pipe.unload_lora_weights()
    # diffusers unfuses by subtracting the delta again: not bit-exact (streamdiff restores the stored weights)
    drift = max((v.double() - base[c][k].double()).abs().max().item()
                for c, m in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)) for k, v in weights(m).items())
    lat = record("unfused", with_weights=False)
    log(f"  unfused: diffusers' weights after unfuse differ from the base by up to {drift:.3g}; latents by "
        f"{(lat - base_lat).abs().max().item():.3g}")
    for n in CHECK_UNET:
        exp[f"peft.w.{n}"] = peft_merged[n]
    peft_changed = sum(not torch.equal(v, base["unet"][k]) for k, v in peft_merged.items())
    log(f"  peft: merge_and_unload changed {peft_changed} UNet tensors")

    save_file({k: v.float().contiguous() for k, v in exp.items()}, str(OUT / "expected.safetensors"),
              metadata={"prompt": PROMPT, "steps": "2", "guidance_scale": "1.0", "width": "16", "height": "16",
                        "model": "models/tiny-sd15", "generator": "tools/gen_lora_cases.py",
                        "diffusers": G.diffusers.__version__, "peft": __import__("peft").__version__,
                        "torch": torch.__version__})
    for f in OUT.rglob("*"):
        if f.suffix == ".safetensors":
            canonical_header(f)
        os.chmod(f, 0o755 if f.is_dir() else 0o644)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    log(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
