#!/usr/bin/env python3
"""gen_fullsize.py - FULL-SIZE random-weight SD1.5 and SD-turbo (SD2.1 architecture) models + reference cases.

Purpose
    The in-repo test models (tools/gen_testdata.py) are tiny. This script builds the two real Stable Diffusion
    architectures at their real size with random weights, in the two layouts users have, and reference cases
    for them, so that the C loaders and models can be checked at full size (tests/test_fullsize.c, CTest label
    `slow`, and `streamdiff check <out>/cases/<case>`):
      sd15       SD1.5: UNet2DConditionModel (860M params; block_out_channels [320,640,1280,1280], 8 heads,
                 cross_attention_dim 768, conv projections), CLIPTextModel ViT-L/14 text tower (12 layers, hidden
                 768, quick_gelu), AutoencoderKL ([128,256,512,512], 2 layers per block), PNDMScheduler (the
                 runwayml/stable-diffusion-v1-5 scheduler config).
      sd-turbo   SD2.1 / sd-turbo: UNet with use_linear_projection, attention_head_dim [5,10,20,20] (heads per
                 level = channels/64), cross_attention_dim 1024, upcast_attention; CLIPTextModel of the OpenCLIP
                 ViT-H/14 text tower as diffusers ships it (23 layers, hidden 1024, 16 heads, gelu,
                 projection_dim 512); the same AutoencoderKL; EulerDiscreteScheduler (stabilityai/sd-turbo config).
    Weights = library init (seeded) + N(0, 0.02^2) perturbation, then rounded to fp16 and STORED AS F16 (as most
    users' files are); every reference is computed in float32 (and float64 for the tolerances) from those
    fp16-rounded weights, exactly like the F16 test models of tests/data.

Layouts written under --out (default /work/fullsize; keep it OUTSIDE the repository, never commit weights):
    <out>/sd15/, <out>/sd-turbo/       diffusers folders (model_index.json, unet/, text_encoder/, tokenizer/, vae/,
                                       scheduler/), plain file names (diffusion_pytorch_model.safetensors,
                                       model.safetensors) holding F16 tensors
    <out>/sd15.safetensors,            the same weights as single-file original LDM/CompVis checkpoints
    <out>/sd-turbo.safetensors         (mapping: tools/gen_testdata.py unet_key_to_ldm / vae_key_to_ldm /
                                       clip_to_openclip, verified there against diffusers' from_single_file).
                                       Like real files they also carry: schedule buffers (betas, alphas_cumprod,
                                       alphas_cumprod_prev, F32), SD1 `...embeddings.position_ids` (I64), SD2 the
                                       unused 24th OpenCLIP block `transformer.resblocks.23.*`, `text_projection`
                                       [1024,1024] and `logit_scale` (scalar) - random, all ignored by diffusers.
    <out>/cases/full_<model>_{unet,clip,vae}/   cases in the fixture format (manifest.json, inputs.safetensors,
                                       expected.safetensors; model_dir relative to <out>); extra manifest keys
                                       `pipeline_dir`, `single_file`, `component` name the folder / single file the
                                       case also applies to (tests/test_fullsize.c loads the single file with
                                       sd_model_load(file, config_dir=<pipeline_dir>), and without config_dir,
                                       and checks the same tensors).
      unet: forward of sample [2,4,32,32] (a 256x256 image) with timesteps [951, 261] (one per batch row) and
            random encoder_hidden_states [2,77,D]: out_sample + act.* hooks (tools/gen_testdata.py unet_hooks)
      clip: the two real prompts of gen_testdata (PROMPTS), tokenized with the model's tokenizer (sd15: pad
            <|endoftext|>; sd-turbo: pad '!'): last_hidden_state, hidden_states.k, pooler_output, clip_skip_1
      vae:  encode of a 256x256 synthetic image (latent_dist mean/logvar/std/sample) and decode of a random
            [1,4,32,32] latent, decode(mean) round trip, enc/dec activation hooks
    Tolerances: the tests/data rule, recommended_max_abs_err = max(10 x |fp32 - fp64|, 2e-5 x max(1, max|ref|)).
    One deviation from a plain float64 re-run: diffusers computes the timestep sinusoids in float32 whatever the
    model dtype, so the float64 UNet run computes them in float64 (time_proj_f64_), else act.time_proj and
    everything after it would get a bound below the float32 rounding of arguments t*f ~ 1e3 (~5e-5 measured
    between two correct float32 implementations).

Requirements
    pip install torch diffusers transformers safetensors  (written against torch 2.15 CPU, diffusers 0.42.1,
    transformers 5.23). Imports tools/gen_testdata.py (same folder) for its helpers; the tokenizer files are copied
    from tests/data/models/tiny-sd15/tokenizer (sd15) and tests/data/models/tiny-sd2/tokenizer (sd-turbo: the same
    CLIP BPE, padded with '!' like the real SD2 tokenizer).
    Disk: 9.0 GB (sd15 2.1 GB + sd-turbo 2.6 GB, each twice; cases ~0.1 GB). Memory: peak RSS 9.3 GB (one model
    at a time; the float64 UNet reference, 6.9 GB, is the largest item).
    Runtime (2 cores, measured on a shared machine): sd15 6.5 min, sd-turbo 9 min, each including ~1-2 min of
    verification (skip it with --no-verify); --cases-only --cases unet: ~1.5 min per model.

How to run (from the repository root)
    python3 tools/gen_fullsize.py                       # everything into /work/fullsize
    python3 tools/gen_fullsize.py --out DIR --models sd15
    python3 tools/gen_fullsize.py --cases-only --cases unet   # rewrite cases from the stored models
    python3 tools/gen_fullsize.py --verify              # only verify: replay every case from the stored files
                                                        # with diffusers/transformers, and load both single files
                                                        # with diffusers' from_single_file (weights must equal
                                                        # the folders')
    python3 tools/gen_fullsize.py --measure-torch sd-turbo --unet-size 512   # PyTorch RSS / time comparison
    then: ctest --test-dir build -L slow   (SD_FULLSIZE=DIR when not /work/fullsize)

Determinism: fixed seeds (SEED_* below); torch runs with 2 threads, so other machines reproduce the files within
the stored tolerances, not necessarily bit for bit.
"""

import argparse
import gc
import math
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_testdata as G  # noqa: E402  (sets the offline/verbosity environment, installs the noise tap)

import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import AttnProcessor  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = G.REPO
TOK_SRC = {"sd15": REPO / "tests/data/models/tiny-sd15/tokenizer", "sd-turbo": REPO / "tests/data/models/tiny-sd2/tokenizer"}

SEED_UNET = {"sd15": 9101, "sd-turbo": 9102}
SEED_TE = {"sd15": 9201, "sd-turbo": 9202}
SEED_VAE = {"sd15": 9301, "sd-turbo": 9302}
SEED_EXTRA = {"sd15": 9401, "sd-turbo": 9402}  # single-file extras (unused 24th block, text_projection)
SEED_CASE = {"sd15": 9500, "sd-turbo": 9600}

UNET_COMMON = dict(
    in_channels=4, out_channels=4, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    downsample_padding=1, mid_block_scale_factor=1, sample_size=64,
)
UNET_CFG = {
    "sd15": dict(UNET_COMMON, cross_attention_dim=768, attention_head_dim=8),
    "sd-turbo": dict(UNET_COMMON, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                     use_linear_projection=True, upcast_attention=True),
}
TE_CFG = {  # runwayml/stable-diffusion-v1-5 and stabilityai/sd-turbo text_encoder/config.json values
    "sd15": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                 vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                 bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=768),
    "sd-turbo": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                     vocab_size=49408, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
                     bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=512),
}
VAE_CFG = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
               up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
               act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)
SCHED = {"sd15": (PNDMScheduler, G.SD15_PNDM_SCHEDULER), "sd-turbo": (EulerDiscreteScheduler, G.SD_TURBO_EULER)}

log = G.log


def free():
    gc.collect()


def rss_gb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1048576
    except OSError:
        pass
    return 0.0


# ----------------------------------------------------------------------------------------------------------
# models
def build_models(out, name):
    root = out / name
    for sub in ("unet", "text_encoder", "vae", "scheduler", "tokenizer"):
        shutil.rmtree(root / sub, ignore_errors=True)
    t0 = time.time()
    torch.manual_seed(SEED_UNET[name])
    unet = UNet2DConditionModel(**UNET_CFG[name])
    G.perturb_(unet, SEED_UNET[name] + G.SEED_PERTURB)
    G.fp16_round_(unet)
    G.save_diffusers_model(unet, root / "unet", torch.float16)
    n_unet = sum(p.numel() for p in unet.parameters())
    del unet
    free()
    log(f"  {name}/unet: {n_unet / 1e6:.1f}M params written ({time.time() - t0:.0f} s, rss {rss_gb():.1f} GB)")

    t0 = time.time()
    torch.manual_seed(SEED_TE[name])
    te = CLIPTextModel._from_config(CLIPTextConfig(**TE_CFG[name]), attn_implementation="eager")
    G.perturb_(te, SEED_TE[name] + G.SEED_PERTURB)
    G.fp16_round_(te)
    G.save_clip(te, root / "text_encoder", torch.float16, "CLIPTextModel")
    n_te = sum(p.numel() for p in te.parameters())
    del te
    free()
    log(f"  {name}/text_encoder: {n_te / 1e6:.1f}M params written ({time.time() - t0:.0f} s)")

    t0 = time.time()
    torch.manual_seed(SEED_VAE[name])
    vae = AutoencoderKL(**VAE_CFG)
    G.perturb_(vae, SEED_VAE[name] + G.SEED_PERTURB)
    G.fp16_round_(vae)
    G.save_diffusers_model(vae, root / "vae", torch.float16)
    n_vae = sum(p.numel() for p in vae.parameters())
    del vae
    free()
    log(f"  {name}/vae: {n_vae / 1e6:.1f}M params written ({time.time() - t0:.0f} s)")

    cls, base = SCHED[name]
    cls.from_config(base).save_config(str(root / "scheduler"))
    scfg = G.read_json(root / "scheduler" / "scheduler_config.json")
    G.write_json(root / "scheduler" / "scheduler_config.json", dict(sorted(scfg.items())))
    (root / "tokenizer").mkdir(parents=True, exist_ok=True)
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(TOK_SRC[name] / f, root / "tokenizer" / f)
    G.write_json(root / "model_index.json", {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": G.diffusers.__version__,
        "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", cls.__name__],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    })


def load_unet_lean(d, dt):
    """UNet from the stored F16 file without a throw-away random init: modules on the meta device, then the
    converted state dict assigned (peak = the file + one converted copy)."""
    cfg = G.read_json(Path(d) / "config.json")
    with torch.device("meta"):
        m = UNet2DConditionModel.from_config(cfg)
    sd = load_file(str(Path(d) / "diffusion_pytorch_model.safetensors"))
    sd = {k: v.to(dt) for k, v in sd.items()}  # fresh, aligned tensors
    missing, unexpected = m.load_state_dict(sd, strict=True, assign=True)
    if missing or unexpected:
        raise RuntimeError(f"{d}: missing {missing[:3]} unexpected {unexpected[:3]}")
    del sd
    if any(p.is_meta for p in m.parameters()) or any(b.is_meta for b in m.buffers()):
        raise RuntimeError(f"{d}: tensors left on the meta device")
    m.set_attn_processor(AttnProcessor())
    return m.eval()


# ----------------------------------------------------------------------------------------------------------
# cases
def write_case(out, name, manifest, inputs, expected, tols):
    d = out / "cases" / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    inputs = {k: G.to32(v) for k, v in inputs.items()}
    expected = {k: G.to32(v) for k, v in expected.items()}
    G.st_save(d / "inputs.safetensors", inputs)
    G.st_save(d / "expected.safetensors", expected)
    man = dict(manifest)
    man["files"] = {
        "inputs.safetensors": {k: {"dtype": G.DT_NAME[v.dtype], "shape": list(v.shape)} for k, v in inputs.items()},
        "expected.safetensors": {k: {"dtype": G.DT_NAME[v.dtype], "shape": list(v.shape)}
                                 for k, v in expected.items()},
    }
    man["tolerances"] = tols
    man["generator"] = dict(G.GEN_INFO, **{"tools/gen_fullsize.py": True})
    G.write_json(d / "manifest.json", man, indent=1)
    worst = max((t["fp32_vs_fp64_max_abs"] for t in tols.values()), default=0.0)
    log(f"  cases/{name}: {len(inputs)} inputs, {len(expected)} expected (max |fp32-fp64| {worst:.2e})")


def common_keys(name, component):
    return {"pipeline_dir": name, "single_file": f"{name}.safetensors", "component": component}


def time_proj_f64_(unet):
    """diffusers' get_timestep_embedding works in float32 whatever the model dtype, so a float64 re-run would
    share its rounding (arguments t*f up to ~1e3: ~1e-4 absolute in sin/cos) and give act.time_proj (and
    everything after it) a tolerance below the float32 noise of any other implementation. For the float64
    reference the sinusoids are computed in float64 instead (same formula)."""
    tp = unet.time_proj
    half = tp.num_channels // 2

    def fwd(timesteps):
        ex = -math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - tp.downscale_freq_shift)
        arg = timesteps.to(torch.float64)[:, None] * torch.exp(ex)[None, :] * tp.scale
        emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)
        if tp.flip_sin_to_cos:
            emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
        if tp.num_channels % 2:
            emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
        return emb

    tp.forward = fwd


def run_unet_lean(d, inp, dt, hooks, model=None):
    unet = model if model is not None else load_unet_lean(d, torch.float32)
    if dt != torch.float32:
        unet.to(dt)
        time_proj_f64_(unet)
    acts = {}
    hs = G._hook_outputs(unet, hooks, "act.", acts)
    with torch.no_grad():
        y = unet(inp["sample"].to(dt), inp["timestep"], encoder_hidden_states=inp["encoder_hidden_states"].to(dt),
                 return_dict=False)[0]
    for h in hs:
        h.remove()
    res = {"out_sample": y}
    res.update(acts)
    return res, unet


def gen_unet_case(out, name):
    cfg = UNET_CFG[name]
    s = SEED_CASE[name]
    m = {"name": f"full_{name}_unet",
         "description": f"FULL-SIZE {name} UNet2DConditionModel (random weights stored F16), batch 2 with one "
                        f"timestep per row, 32x32 latent (256x256 image)",
         "model_dir": f"{name}/unet",
         "weights_file": "diffusion_pytorch_model.safetensors (F16); loaded with torch_dtype=float32",
         "config": {k: cfg[k] for k in ("sample_size", "block_out_channels", "layers_per_block", "down_block_types",
                                         "up_block_types", "cross_attention_dim", "attention_head_dim",
                                         "norm_num_groups", "use_linear_projection", "upcast_attention") if k in cfg},
         "call": "UNet2DConditionModel.forward(sample, timestep (int64 [B], one per batch element), "
                 "encoder_hidden_states, return_dict=False)[0]",
         "activation_semantics": G.UNET_ACT_SEMANTICS, **common_keys(name, "unet")}
    inp = {"sample": G.randn((2, 4, 32, 32), s), "timestep": torch.tensor([951, 261], dtype=torch.int64),
           "encoder_hidden_states": G.randn((2, 77, cfg["cross_attention_dim"]), s + 1)}
    hooks = G.unet_hooks(cfg)
    t0 = time.time()
    e32, unet = run_unet_lean(out / m["model_dir"], inp, torch.float32, hooks)
    e32 = {k: v.clone() for k, v in e32.items()}
    t1 = time.time()
    e64, unet = run_unet_lean(None, inp, torch.float64, hooks, model=unet)  # same weights, converted in place
    del unet
    free()
    log(f"  unet reference: fp32 {t1 - t0:.0f} s, fp64 {time.time() - t1:.0f} s")
    write_case(out, m["name"], m, inp, e32, G.net_tols(e32, e64))


def gen_clip_case(out, name):
    cfg = TE_CFG[name]
    m = {"name": f"full_{name}_clip",
         "description": f"FULL-SIZE {name} text encoder (CLIPTextModel, {cfg['num_hidden_layers']} layers, hidden "
                        f"{cfg['hidden_size']}, {cfg['hidden_act']}, random weights stored F16) on two real prompts",
         "model_dir": f"{name}/text_encoder", "model_class": "CLIPTextModel",
         "weights_file": "model.safetensors (F16); computed in float32 from the fp16 weights",
         "config": {"hidden": cfg["hidden_size"], "inter": cfg["intermediate_size"], "layers": cfg["num_hidden_layers"],
                    "heads": cfg["num_attention_heads"], "act": cfg["hidden_act"]},
         "prompts": G.PROMPTS, "semantics": G.CLIP_SEMANTICS, **common_keys(name, "clip")}
    inp = {"input_ids": G.tokenize(out / name / "tokenizer", G.PROMPTS)}
    e32 = G.run_clip(m, inp, out, torch.float32)
    free()
    e64 = G.run_clip(m, inp, out, torch.float64)
    free()
    write_case(out, m["name"], m, inp, e32, G.net_tols(e32, e64))


def gen_vae_case(out, name):
    s = SEED_CASE[name] + 10
    m = {"name": f"full_{name}_vae",
         "description": f"FULL-SIZE AutoencoderKL of {name} (random weights stored F16): encode of a 256x256 image "
                        f"-> latent_dist, decode of a 32x32 latent, forward (mode) round trip",
         "model_dir": f"{name}/vae", "config": G.read_json(out / name / "vae" / "config.json"),
         "semantics": {
             "latent_dist.*": "AutoencoderKL.encode(image).latent_dist: moments = quant_conv(encoder(image)); mean, "
                              "logvar = chunk(moments, 2, dim=1); logvar = clamp(logvar, -30, 20); std = exp(0.5*logvar)",
             "latent_dist.sample": "mean + std * sample_noise",
             "decoded": "AutoencoderKL.decode(latent).sample (latent NOT divided by scaling_factor here)",
             "forward_mode_roundtrip": "AutoencoderKL.forward(image, sample_posterior=False) = decode(mean)",
             "enc.act.encoder": "encoder output before quant_conv"},
         **common_keys(name, "vae")}
    inp = {"image": G.synth_image(1, 256, 256, s) * 2 - 1, "latent": G.randn((1, 4, 32, 32), s + 1),
           "sample_noise": G.randn((1, 4, 32, 32), s + 2)}
    t0 = time.time()
    e32 = G.run_vae(m, inp, out, torch.float32)
    t1 = time.time()
    e64 = G.run_vae(m, inp, out, torch.float64)
    free()
    log(f"  vae reference: fp32 {t1 - t0:.0f} s, fp64 {time.time() - t1:.0f} s")
    write_case(out, m["name"], m, inp, e32, G.net_tols(e32, e64))


# ----------------------------------------------------------------------------------------------------------
# single-file checkpoints
def build_single_file(out, name):
    root = out / name
    ucfg = G.read_json(root / "unet/config.json")
    vcfg = G.read_json(root / "vae/config.json")
    tcfg = G.read_json(root / "text_encoder/config.json")
    ck = {}
    for k, v in load_file(str(root / "unet/diffusion_pytorch_model.safetensors")).items():
        ck["model.diffusion_model." + G.unet_key_to_ldm(k, ucfg)] = v
    n_unet = len(ck)
    for k, v in load_file(str(root / "vae/diffusion_pytorch_model.safetensors")).items():
        lk, conv = G.vae_key_to_ldm(k, vcfg)
        ck["first_stage_model." + lk] = v[:, :, None, None] if conv else v
    n_vae = len(ck) - n_unet
    tsd = load_file(str(root / "text_encoder/model.safetensors"))
    g = G.gen(SEED_EXTRA[name])
    if name == "sd15":
        tout = {"cond_stage_model.transformer." + k: v for k, v in tsd.items()}
        tout["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    else:
        tout = {"cond_stage_model.model." + k: v
                for k, v in G.clip_to_openclip(tsd, tcfg["num_hidden_layers"]).items()}
        # like real SD2 files: the unused last OpenCLIP block (resblocks.23), text_projection and logit_scale
        D, L = tcfg["hidden_size"], tcfg["num_hidden_layers"]
        last = f"cond_stage_model.model.transformer.resblocks.{L - 1}."
        extra = f"cond_stage_model.model.transformer.resblocks.{L}."
        for k in [k for k in tout if k.startswith(last)]:
            v = tout[k]
            tout[extra + k[len(last):]] = (v.float() + 0.02 * torch.randn(v.shape, generator=g)).half()
        tout["cond_stage_model.model.text_projection"] = (torch.randn((D, D), generator=g) * D ** -0.5).half()
        tout["cond_stage_model.model.logit_scale"] = torch.tensor(4.6052, dtype=torch.float32)
    ck.update(tout)
    # schedule buffers of the LDM wrapper (real files carry them; ignored by every loader)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    ck["betas"] = betas.float()
    ck["alphas_cumprod"] = ac.float()
    ck["alphas_cumprod_prev"] = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]]).float()
    path = out / f"{name}.safetensors"
    G.st_save(path, ck)
    log(f"  {path.name}: {len(ck)} tensors ({n_unet} unet, {n_vae} vae, {len(tout)} text, 3 schedule buffers), "
        f"{path.stat().st_size / 1e9:.2f} GB")
    del ck, tsd, tout
    free()


def verify_single_file(out, name):
    """diffusers' own StableDiffusionPipeline.from_single_file(config=<the folder>) must give the folder's weights."""
    root = out / name
    path = out / f"{name}.safetensors"
    t0 = time.time()
    pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(root), local_files_only=True,
                                                    torch_dtype=torch.float32, safety_checker=None,
                                                    requires_safety_checker=False)
    n = bad = 0
    for comp, fn in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                     ("text_encoder", "model.safetensors")):
        ref = load_file(str(root / comp / fn))
        mod = getattr(pipe, comp)
        got = G.clip_state_dict_hub(mod) if comp == "text_encoder" else mod.state_dict()
        n, bad = G.compare_state(f"{name}.safetensors: {comp}", ref, got, n, bad)
        del ref
    del pipe
    free()
    log(f"  {path.name}: StableDiffusionPipeline.from_single_file(config={root}): {n} tensors compared, "
        f"{bad} differ ({time.time() - t0:.0f} s)")
    return bad == 0


def verify_cases(out, names):
    ok = True
    for c in sorted((out / "cases").iterdir()) if (out / "cases").is_dir() else []:
        m = G.read_json(c / "manifest.json")
        if m.get("pipeline_dir") not in names:
            continue
        t0 = time.time()
        r = G.compare_case(c, out)
        free()
        if r is None:
            log(f"  {c.name}: not replayable")
            ok = False
            continue
        kind, n, bad, w = r
        ok &= bad == 0
        log(f"  {c.name:28s} {kind:5s} {n:3d} tensors  {bad} failed  worst err/tol {w:.3g}  ({time.time() - t0:.0f} s)")
    return ok


def proc_status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return -1.0


def measure_torch(out, name, size, runs):
    """PyTorch comparison for BENCHMARKS.md: peak RSS of diffusers loading the folder (torch_dtype float32) and
    of UNet forwards at size x size (batch 1, default attention processor), in this (fresh) process."""
    def rep(when):
        log(f"  {when:22s} VmHWM {proc_status_mb('VmHWM'):7.0f} MiB  VmRSS {proc_status_mb('VmRSS'):7.0f} MiB  "
            f"RssAnon {proc_status_mb('RssAnon'):7.0f} MiB  RssFile {proc_status_mb('RssFile'):7.0f} MiB")
    log(f"torch {torch.__version__}, diffusers {G.diffusers.__version__}, {torch.get_num_threads()} threads")
    rep("after imports")
    t0 = time.time()
    pipe = StableDiffusionPipeline.from_pretrained(str(out / name), torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    log(f"  from_pretrained({out / name}, torch_dtype=float32): {time.time() - t0:.2f} s")
    rep("after load")
    if size:
        u = pipe.unet
        g = G.gen(1)
        x = torch.randn((1, 4, size // 8, size // 8), generator=g)
        c = torch.randn((1, 77, u.config.cross_attention_dim), generator=g)
        with torch.no_grad():
            for r in range(runs):
                t0, c0 = time.time(), time.process_time()
                u(x, torch.tensor([500]), encoder_hidden_states=c)
                log(f"  UNet {size}x{size} batch 1 forward {r + 1}: {time.time() - t0:.2f} s wall, "
                    f"{time.process_time() - c0:.2f} s CPU (all threads)")
        rep("after UNet forwards")


def write_readme(out):
    (out / "README.txt").write_text(
        "Full-size random-weight Stable Diffusion models for streamdiff (NOT real models: random weights).\n"
        "Written by tools/gen_fullsize.py of the streamdiff repository; see its header for the layout, the\n"
        "weights convention and the cases. Checked by tests/test_fullsize.c (ctest -L slow; env SD_FULLSIZE)\n"
        "and by `streamdiff check <this folder>/cases/<case>`.\n", encoding="utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("SD_FULLSIZE", "/work/fullsize"))
    ap.add_argument("--models", default="sd15,sd-turbo", help="comma-separated subset of sd15,sd-turbo")
    ap.add_argument("--verify", action="store_true", help="only verify what is stored")
    ap.add_argument("--no-verify", action="store_true", help="generate without the verification pass")
    ap.add_argument("--cases-only", action="store_true", help="rewrite only the cases, from the stored models")
    ap.add_argument("--cases", default="unet,clip,vae", help="which cases to write (comma-separated)")
    ap.add_argument("--measure-torch", metavar="MODEL", help="only measure diffusers' load RSS (and --unet-size "
                    "forward time) of <out>/MODEL in this process (BENCHMARKS.md comparison)")
    ap.add_argument("--unet-size", type=int, default=0, help="with --measure-torch: UNet forward image size")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    if str(out).startswith(str(REPO) + os.sep):
        raise SystemExit(f"{out} is inside the repository: full-size weights must not be committed")
    names = [n for n in a.models.split(",") if n]
    for n in names:
        if n not in UNET_CFG:
            raise SystemExit(f"unknown model {n!r} (sd15, sd-turbo)")
    if a.measure_torch:
        measure_torch(out, a.measure_torch, a.unet_size, 3)
        return 0
    t_all = time.time()
    if not a.verify:
        out.mkdir(parents=True, exist_ok=True)
        write_readme(out)
        for n in names:
            t0 = time.time()
            if not a.cases_only:
                log(f"{n}: building the models ...")
                build_models(out, n)
            log(f"{n}: reference cases ...")
            for comp, fn in (("unet", gen_unet_case), ("clip", gen_clip_case), ("vae", gen_vae_case)):
                if comp in a.cases.split(","):
                    fn(out, n)
            if not a.cases_only:
                log(f"{n}: single-file checkpoint ...")
                build_single_file(out, n)
            log(f"{n}: done in {time.time() - t0:.0f} s")
        if a.no_verify:
            log(f"generation done in {time.time() - t_all:.0f} s")
            return 0
    ok = True
    log("verify: replaying the cases from the stored files")
    ok &= verify_cases(out, names)
    log("verify: single-file checkpoints through diffusers' from_single_file")
    for n in names:
        ok &= verify_single_file(out, n)
    log(f"total {time.time() - t_all:.0f} s; VERIFY: " + ("all OK" if ok else "FAILURES (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
