#!/usr/bin/env python3
"""gen_lora_sdxl_cases.py - SDXL LoRA reference data for tests/test_lora_sdxl.c (developer-run).

Writes tests/data/lora/:
    xl_style_kohya.safetensors  kohya format as kohya's sd-scripts write SDXL LoRAs: the UNet under its LDM / SGM
                                names (lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q, ..._0_in_layers_2,
                                ..._emb_layers_1; names made with gen_testdata.unet_key_to_ldm), lora_te1_ / lora_te2_
                                for the two text encoders, .lora_down/.lora_up/.alpha, F16: attention, proj_in,
                                feed-forward, a LoCon 3x3 resnet conv, time_emb_proj, conv_shortcut, and mlp layers of
                                both text encoders.
    xl_lcm_peft.safetensors     diffusers/PEFT format as StableDiffusionXLPipeline.save_lora_weights writes it (unet.*,
                                text_encoder.*, text_encoder_2.* lora_A / lora_B, F32) with its lora_adapter_metadata
                                (unet r 4 / alpha 8; text encoders r 2 / alpha 3): every attention / feed-forward / proj
                                / resnet conv / time_emb_proj layer of the UNet (and its add_embedding), like
                                LCM-LoRA-SDXL, and the text encoders' attention and mlp layers.
    xl_expected.safetensors     references (float32):
        latents                  x_T [1,4,8,8] (tiny-sdxl, 16x16 pixels; its VAE downsamples by 2)
        <S>.final_latents        final latents of a 2-step txt2img with tiny-sdxl's EulerDiscreteScheduler, guidance
                                 1.0 (no CFG), PROMPT: diffusers StableDiffusionXLPipeline + load_lora_weights +
                                 set_adapters + fuse_lora
        <S>.w.<component>.<name> fused weights of some layers of unet / text_encoder / text_encoder_2 after fuse_lora
      scenarios <S>: base (no LoRA), style (xl_style_kohya @ 0.8), lcm (xl_lcm_peft @ 1.0), both (style @ 0.6 +
      lcm @ 1.0).

Every diffusers fused weight is also checked here against an independent float64 W + sum scale * alpha/r * up @ down
(< 1e-5), and every LoRA layer must have changed its weight, so the reference consumes every key.

Run from the repository root:  /work/venv-bench/bin/python tools/gen_lora_sdxl_cases.py   (torch, diffusers, peft)
Deterministic (fixed seeds, one thread, PYTHONHASHSEED=0, canonical safetensors headers).
"""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# first: it re-executes this script with PYTHONHASHSEED=0 (PEFT's target set order) and runs torch on one thread;
# its ROOT, OUT, PROMPT, weights(), rand(), randomize_lora(), canonical_header() serve here too
import gen_lora_cases as L  # noqa: E402
import gen_testdata as G  # noqa: E402
import torch  # noqa: E402
from diffusers import StableDiffusionXLPipeline  # noqa: E402
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

ROOT, OUT, PROMPT = L.ROOT, L.OUT, L.PROMPT
MODEL = ROOT / "tests/data/models/tiny-sdxl"
SEED_LATENTS, SEED_STYLE, SEED_LCM = 9201, 9203, 9204
COMPS = ("unet", "text_encoder", "text_encoder_2")

# module -> (rank, alpha); attention layers share one alpha (diffusers' kohya conversion keeps only the most common
# alpha of attention layers), the text encoders one alpha each and only mlp layers (see gen_lora_cases.py)
STYLE = {
    "unet": {
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": (4, 4.0),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": (2, 4.0),
        "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_out.0": (4, 4.0),
        "down_blocks.1.attentions.0.proj_in": (4, 3.0),
        "down_blocks.0.resnets.0.conv1": (4, 2.0),
        "down_blocks.1.resnets.0.time_emb_proj": (2, 1.0),
        "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj": (4, 4.0),
        "up_blocks.0.attentions.1.transformer_blocks.1.ff.net.2": (4, 4.0),
        "up_blocks.2.resnets.0.conv_shortcut": (2, 2.0),
    },
    "text_encoder": {"text_model.encoder.layers.1.mlp.fc1": (4, 2.0), "text_model.encoder.layers.0.mlp.fc2": (2, 2.0)},
    "text_encoder_2": {"text_model.encoder.layers.2.mlp.fc1": (2, 1.0), "text_model.encoder.layers.0.mlp.fc2": (2, 1.0)},
}
KOHYA = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
CHECK = {
    "unet": ["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight", "down_blocks.0.resnets.0.conv1.weight",
             "down_blocks.1.attentions.0.proj_in.weight", "up_blocks.2.resnets.0.conv_shortcut.weight",
             "add_embedding.linear_1.weight", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"],
    "text_encoder": ["text_model.encoder.layers.1.mlp.fc1.weight", "text_model.encoder.layers.0.self_attn.q_proj.weight"],
    "text_encoder_2": ["text_model.encoder.layers.2.mlp.fc1.weight",
                       "text_model.encoder.layers.1.self_attn.v_proj.weight"],
}
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "time_emb_proj", "linear_1", "linear_2"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def build_pipe():
    return G.build_pipe_xl("StableDiffusionXLPipeline", MODEL, G.read_json(MODEL / "scheduler/scheduler_config.json"),
                           torch.float32)


def make_style(base, ucfg):
    g = torch.Generator().manual_seed(SEED_STYLE)
    out, layers = {}, []
    for comp in COMPS:
        for mod, (r, alpha) in STYLE[comp].items():
            w = base[comp][mod + ".weight"]
            o, rest = w.shape[0], tuple(w.shape[1:])
            ldm = G.unet_key_to_ldm(mod + ".weight", ucfg)[: -len(".weight")] if comp == "unet" else mod
            name = KOHYA[comp] + ldm.replace(".", "_")
            down = L.rand((r,) + rest, g, 0.3).to(torch.float16)
            up = L.rand((o, r) + ((1, 1) if len(rest) == 3 else ()), g, 0.1).to(torch.float16)
            out[name + ".lora_down.weight"], out[name + ".lora_up.weight"] = down, up
            out[name + ".alpha"] = torch.tensor(alpha, dtype=torch.float16)
            layers.append((comp, mod, down.double(), up.double(), alpha / r))
    save_file(out, str(OUT / "xl_style_kohya.safetensors"), metadata={"ss_network_module": "networks.lora",
                                                                      "ss_base_model_version": "sdxl_base_v1-0"})
    return layers


def make_lcm():
    pipe = build_pipe()  # scratch: adapters injected for saving only
    ucfg = LoraConfig(r=4, lora_alpha=8, target_modules=UNET_TARGETS, init_lora_weights=False)
    tcfg = LoraConfig(r=2, lora_alpha=3, target_modules=TE_TARGETS, init_lora_weights=False)
    for i, comp in enumerate(COMPS):
        if comp == "unet":
            pipe.unet.add_adapter(ucfg, adapter_name="gen")
        else:  # peft's own injection (transformers' add_adapter insists on a newer peft than PyPI has)
            inject_adapter_in_model(tcfg, getattr(pipe, comp), adapter_name="gen")
        L.randomize_lora(getattr(pipe, comp), SEED_LCM + i)
    sds = {c: get_peft_model_state_dict(getattr(pipe, c), adapter_name="gen") for c in COMPS}
    tmp = OUT / "_xl_lcm"
    StableDiffusionXLPipeline.save_lora_weights(
        str(tmp), unet_lora_layers=sds["unet"], text_encoder_lora_layers=sds["text_encoder"],
        text_encoder_2_lora_layers=sds["text_encoder_2"], safe_serialization=True,
        unet_lora_adapter_metadata=ucfg.to_dict(), text_encoder_lora_adapter_metadata=tcfg.to_dict(),
        text_encoder_2_lora_adapter_metadata=tcfg.to_dict())
    shutil.move(str(tmp / "pytorch_lora_weights.safetensors"), str(OUT / "xl_lcm_peft.safetensors"))
    shutil.rmtree(tmp)
    path = OUT / "xl_lcm_peft.safetensors"
    sd = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})["lora_adapter_metadata"])
    layers = []
    for k, v in sd.items():
        if k.endswith(".lora_A.weight"):
            full = k[: -len(".lora_A.weight")]
            comp, mod = full.split(".", 1)
            if comp != "unet" and not mod.startswith("text_model."):
                mod = "text_model." + mod
            layers.append((comp, mod, v.double(), sd[full + ".lora_B.weight"].double(),
                           meta[f"{comp}.lora_alpha"] / v.shape[0]))
    return layers


def check_fused(tag, pipe, base, layers_scaled):
    n = 0
    for comp in COMPS:
        got = L.weights(getattr(pipe, comp))
        exp = {k: v.double().clone() for k, v in base[comp].items()}
        touched = set()
        for layers, scale in layers_scaled:
            for c, mod, down, up, coef in layers:
                if c != comp:
                    continue
                w = exp[mod + ".weight"]
                delta = (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(w.shape)
                exp[mod + ".weight"] = w + scale * coef * delta
                touched.add(mod + ".weight")
        for k, e in exp.items():
            d = (got[k].double() - e).abs().max().item()
            if d > 1e-5:
                raise RuntimeError(f"{tag}: diffusers' fused {comp}.{k} differs from W + scale*alpha/r*BA by {d}")
        for k in touched:
            if torch.equal(got[k], base[comp][k]):
                raise RuntimeError(f"{tag}: {comp}.{k} is a LoRA layer but diffusers left it unchanged")
        n += len(touched)
    L.log(f"  {tag}: diffusers' fused weights == independent float64 formula (< 1e-5), {n} layers changed")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    pipe = build_pipe()
    base = {c: L.weights(getattr(pipe, c)) for c in COMPS}
    style = make_style(base, G.read_json(MODEL / "unet/config.json"))
    lcm = make_lcm()
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED_LATENTS))
    exp = {"latents": latents}

    def record(tag, with_weights=True):
        G.TAP.start("record")
        with torch.no_grad():
            out = pipe(PROMPT, num_inference_steps=2, guidance_scale=1.0, height=16, width=16,
                       latents=latents.clone(), output_type="latent")
        if G.TAP.stop():
            raise RuntimeError(f"{tag}: the Euler run drew noise")
        exp[f"{tag}.final_latents"] = out.images.detach().clone()
        if with_weights:
            for comp in COMPS:
                w = L.weights(getattr(pipe, comp))
                for n in CHECK[comp]:
                    exp[f"{tag}.w.{comp}.{n}"] = w[n]
        L.log(f"  {tag}: final latents max |x| {out.images.abs().max().item():.4f}")

    record("base", with_weights=False)
    pipe.load_lora_weights(str(OUT / "xl_style_kohya.safetensors"), adapter_name="style")
    pipe.load_lora_weights(str(OUT / "xl_lcm_peft.safetensors"), adapter_name="lcm")
    for tag, scales in (("style", {"style": 0.8}), ("lcm", {"lcm": 1.0}), ("both", {"style": 0.6, "lcm": 1.0})):
        pipe.set_adapters(list(scales), adapter_weights=list(scales.values()))
        pipe.fuse_lora(components=list(COMPS), adapter_names=list(scales), lora_scale=1.0)
        check_fused(tag, pipe, base, [(style if a == "style" else lcm, s) for a, s in scales.items()])
        record(tag)
        pipe.unfuse_lora(components=list(COMPS))
    run_meta = dict(prompt=PROMPT, steps="2", guidance_scale="1.0", width="16", height="16", model="models/tiny-sdxl",
                    generator="tools/gen_lora_sdxl_cases.py", diffusers=G.diffusers.__version__,
                    peft=__import__("peft").__version__, torch=torch.__version__)
    save_file({k: v.float().contiguous() for k, v in exp.items()}, str(OUT / "xl_expected.safetensors"), run_meta)
    written = sorted(OUT.glob("xl_*.safetensors"))
    for f in written:  # reproducible bytes, readable by all
        L.canonical_header(f)
        f.chmod(0o644)
    L.log(f"wrote {', '.join(f.name for f in written)}")


if __name__ == "__main__":
    main()
