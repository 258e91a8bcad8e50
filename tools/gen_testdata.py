#!/usr/bin/env python3
"""gen_testdata.py - generates streamdiff's OWN small reference data in tests/data/.

Purpose
    The shared golden fixtures (/work/shared/fixtures, env SD_FIXTURES) are not part of the repository, so a
    fresh clone has no reference data. This script writes a small, self-contained set of random-weight models
    and reference cases into tests/data/ in EXACTLY the fixture layout (models/<name>/..., cases/<name>/
    {manifest.json, inputs.safetensors, expected.safetensors}; same manifest keys, tolerance rule and noise
    conventions as /work/shared/fixtures/README.md), so the C conformance runner (`streamdiff check`,
    src/check/) handles both. The models deliberately use other shapes than the fixtures (per-level head
    lists, 8-group GroupNorm, hidden 16/32 text encoders, non-square latents, batch > 1) to test generality.
    It also writes single-file (original LDM/CompVis key layout) checkpoints of the two tiny pipelines.
    Developer-run only: CI and the C tests never run Python.

Requirements
    pip install torch diffusers transformers safetensors
    (written against torch 2.x CPU, diffusers 0.42, transformers 5.x). The tokenizer files (vocab.json,
    merges.txt, ...) are copied from $SD_FIXTURES/models/tiny-sd{15,2}/tokenizer, or kept from an existing
    tests/data when the fixtures are absent. Stream re-implementation validation and the fixture
    cross-check need the fixtures (they are skipped, with a message, when absent).

How to run (from the repository root)
    python3 tools/gen_testdata.py                  # (re)generate everything, then verify it
    python3 tools/gen_testdata.py --verify         # only verify: replay every stored case from its stored
                                                   # inputs/models, check the single-file checkpoints with
                                                   # diffusers' own loader, validate the stream
                                                   # re-implementation on the fixtures
    python3 tools/gen_testdata.py --only own_sched_tcd_g0.5_vpred_strength0.6_5steps   # regenerate (and
                                                   # verify) just the named scheduler / pipeline cases
    python3 tools/gen_testdata.py --crosscheck     # also replay all supported FIXTURE cases with the
                                                   # installed diffusers/transformers (version drift check)

Determinism
    Every weight, input and noise tensor comes from torch.Generator / torch.manual_seed with fixed seeds
    (see SEED_* below) and torch runs single-threaded, so a rerun in the same environment reproduces the
    files bit for bit; other CPUs/library versions reproduce them within the stored tolerances.

Conventions (see tests/data/README.md): weights = library init + N(0, 0.02^2) perturbation; F16-stored
weights are rounded to fp16 first and every reference is computed in float32 from the rounded weights;
`fp32_vs_fp64_max_abs` comes from re-running the same reference code in float64 with the same inputs and
replayed noise; recommended_max_abs_err = max(10 x fp32_vs_fp64, floor x max(1, max_abs_expected)) with
floor 2e-5 (networks, embeddings), 1e-4 (pipeline/stream latents and images), scheduler tables 1e-7..1e-5
relative. Every random tensor drawn by the reference (diffusers randn_tensor, StreamDiffusion torch.randn)
is intercepted and stored as noise.NNN in draw order.
"""

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    AutoencoderTiny,
    ControlNetModel,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    MultiControlNetModel,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    TCDScheduler,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import AttnProcessor  # noqa: E402
import diffusers.utils.torch_utils as _dtu  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

diffusers.utils.logging.set_verbosity_error()
transformers.utils.logging.set_verbosity_error()
try:
    diffusers.utils.logging.disable_progress_bar()
except Exception:
    pass

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
FIX = Path(os.environ.get("SD_FIXTURES", "/work/shared/fixtures"))

GEN_INFO = {
    "tools/gen_testdata.py": True,
    "diffusers": diffusers.__version__,
    "transformers": transformers.__version__,
    "safetensors": safetensors.__version__,
    "torch": torch.__version__,
}

# ----------------------------------------------------------------------------------------------------------
# seeds (fixed; change only deliberately - every stored file depends on them)
SEED_UNET15, SEED_UNET2 = 7101, 7102
SEED_TE15, SEED_TE2 = 7201, 7202
SEED_VAE15, SEED_VAE2, SEED_TAESD = 7301, 7302, 7303
SEED_PERTURB = 100  # added to the model seed for the N(0, 0.02^2) perturbation
SEED_CASES = 8000
SEED_CONTROLNET = 7400

# ----------------------------------------------------------------------------------------------------------
# model configurations
SD15_PNDM_SCHEDULER = {  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}
SD_TURBO_EULER = {  # stabilityai/sd-turbo scheduler/scheduler_config.json
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "trailing", "timestep_type": "discrete", "trained_betas": None,
    "use_karras_sigmas": False,
}
UNET15_CFG = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=[16, 32], layers_per_block=1,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=32, attention_head_dim=[4, 2], norm_num_groups=8, transformer_layers_per_block=1,
)
UNET2_CFG = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=[8, 16, 24], layers_per_block=1,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=8, attention_head_dim=[1, 2, 2], norm_num_groups=4, transformer_layers_per_block=1,
    use_linear_projection=True, upcast_attention=True,
)
TE15_CFG = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, vocab_size=49408,
                max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=0,
                eos_token_id=2, pad_token_id=1, projection_dim=512)
TE2_CFG = dict(hidden_size=8, intermediate_size=20, num_attention_heads=2, num_hidden_layers=3, vocab_size=49408,
               max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=0,
               eos_token_id=2, pad_token_id=1, projection_dim=6)
VAE_CFG = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
               up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], layers_per_block=1,
               act_fn="silu", latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.18215)
TAESD_CFG = dict(encoder_block_out_channels=[8, 8, 8, 8], decoder_block_out_channels=[8, 8, 8, 8])

EULER_NOISE_NOTE = ("diffusers >= 0.27 EulerDiscreteScheduler.step draws noise only when gamma > 0 (s_churn > 0); "
                    "with s_churn = 0 it draws nothing, so no step noise is recorded here (diffusers 0.26, used for the"
                    " shared fixtures, drew one unused tensor per step). The values are unaffected.")
PROMPTS = ["a red fox in the snow, digital art", "an old lighthouse at sunset"]
NEG_PROMPT = "blurry, low quality"

LAYOUTS = {
    "image_np": "NHWC float32 in [0,1] (output_type='np': (decoded/2+0.5).clamp(0,1), permuted to NHWC)",
    "latents/final_latents/step_latents": "NCHW",
    "image (input)": "NCHW float32 in [0,1] (torch tensor path of VaeImageProcessor.preprocess: x*2-1, no resize)",
}
ROLLOUT = ("x_T = x_T_noise * init_noise_sigma; for i,t in enumerate(timesteps): model_input = scale_model_input(x, t)"
           " (stored when not identity); x = step(model_output.i, t, x, **step_kwargs).prev_sample. model_output.i are"
           " given inputs (precomputed by the generator as the epsilon consistent with a fixed clean target at the"
           " step's noise level plus 0.05*N(0,1); treat them as opaque data). Every random tensor the scheduler drew"
           " inside step() is stored as noise.NNN in draw order.")
UNET_ACT_SEMANTICS = {
    "act.time_proj": "sinusoidal Timesteps(flip_sin_to_cos=True, freq_shift=0) of the timesteps: [cos | sin]",
    "act.time_embedding": "TimestepEmbedding output (linear_1 -> SiLU -> linear_2) = emb fed to every resnet",
    "act.down_blocks.i": "hidden_states returned by down block i; act.down_blocks.i.res_samples.j = its j-th skip tensor",
    "act.up_blocks.i": "output of up block i",
    "act.<attn path>": "forward-hook outputs of submodules of the first Transformer2DModel (see keys)",
}
CLIP_SEMANTICS = {
    "hidden_states.0": "token_embedding(ids) + position_embedding(arange(77)) (embeddings output)",
    "hidden_states.k": "output of encoder layer k (pre-LN transformer layer, causal mask, no padding mask)",
    "last_hidden_state": "final_layer_norm(hidden_states[-1])  (what SD feeds to the UNet)",
    "pooler_output": "last_hidden_state[b, argmax(input_ids[b])]  (eos_token_id==2 legacy rule: position of the first"
                     " occurrence of the largest id, i.e. the first <|endoftext|>)",
    "text_embeds": "text_projection(pooler_output) (Linear, no bias)",
    "clip_skip_1": "final_layer_norm(hidden_states[-2])  (diffusers encode_prompt(clip_skip=1))",
}


# ----------------------------------------------------------------------------------------------------------
# small utilities
def log(*a):
    print(*a, flush=True)


def read_json(p):
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def _json_safe(o):
    if isinstance(o, float):
        if math.isnan(o):
            return "nan"
        if math.isinf(o):
            return "inf" if o > 0 else "-inf"
        return o
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, torch.Tensor):
        return _json_safe(o.tolist())
    return o


def _json_unsafe(o):
    """Inverse of _json_safe for scheduler configs ("-inf" -> -inf)."""
    if isinstance(o, str) and o in ("inf", "-inf", "nan"):
        return float(o)
    if isinstance(o, dict):
        return {k: _json_unsafe(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_json_unsafe(v) for v in o]
    return o


def write_json(p, obj, indent=2):
    Path(p).parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8") as f:
        json.dump(_json_safe(obj), f, indent=indent, ensure_ascii=False)
        f.write("\n")


DT_NAME = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64", torch.float64: "float64"}


def st_save(path, tensors):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o644)


def st_load(path):
    # fresh (aligned) copies: tensors straight from the file mapping can take other SIMD paths and differ in the
    # last bit from the generation run
    return {k: v.clone() for k, v in load_file(str(path)).items()}


def to32(t):
    """Expected/input tensors are stored as float32 (floats) or int64 (ints)."""
    t = t.detach().cpu()
    if t.is_floating_point():
        return t.to(torch.float32).contiguous()
    return t.to(torch.int64).contiguous()


def r3(x):
    return float(f"{x:.3g}")


def tol_entry(e32, e64, floor):
    e = e32.double()
    m = e.abs().max().item() if e.numel() else 0.0
    d = (e - e64.double()).abs().max().item() if e.numel() else 0.0
    rec = r3(max(10.0 * d, floor * max(1.0, m)))
    return {"max_abs_expected": m, "fp32_vs_fp64_max_abs": d, "recommended_max_abs_err": rec,
            "recommended_rel_err": r3(rec / m) if m > 0 else rec}


def tol_sched(e, rel):
    m = e.double().abs().max().item()
    rec = r3(rel * max(1.0, m))
    return {"max_abs_expected": m, "recommended_max_abs_err": rec, "recommended_rel_err": r3(rec / m) if m > 0 else rec}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(shape, seed, scale=1.0):
    return torch.randn(shape, generator=gen(seed)) * scale


def synth_image(b, h, w, seed, phase=0.0):
    """Smooth image batch in [0,1] (NCHW): moving sinusoids + a little noise."""
    g = gen(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = torch.empty(b, 3, h, w)
    for i in range(b):
        for c in range(3):
            f1, f2, ph = (torch.rand(3, generator=g) * torch.tensor([2.5, 2.5, 6.28])).tolist()
            out[i, c] = 0.5 + 0.35 * torch.sin(6.2832 * (f1 * xx + f2 * yy) + ph + phase * (c + 1)) \
                + 0.12 * torch.cos(9.0 * xx * yy + phase)
    out += 0.03 * torch.randn(out.shape, generator=g)
    return out.clamp(0, 1)


# ----------------------------------------------------------------------------------------------------------
# noise interception: every diffusers randn_tensor call goes through TAP
class NoiseTap:
    def __init__(self):
        self.orig = _dtu.randn_tensor
        self.mode = None
        self.log = []
        self.replay = []
        self.pos = 0
        self.lenient = False  # crosscheck: tolerate fewer draws than stored (diffusers version drift)
        self.notes = []

    def install(self):
        for name, mod in list(sys.modules.items()):
            if mod is not None and name.startswith("diffusers") and getattr(mod, "randn_tensor", None) is self.orig:
                setattr(mod, "randn_tensor", self)

    def start(self, mode, replay=None):
        self.mode, self.log, self.replay, self.pos = mode, [], list(replay or []), 0

    def stop(self):
        if self.mode == "replay" and self.pos != len(self.replay):
            if self.lenient:
                self.notes.append(f"consumed {self.pos} of {len(self.replay)} stored noise draws")
                self.mode = None
                return self.log
            raise RuntimeError(f"noise replay: only {self.pos} of {len(self.replay)} stored draws were consumed")
        self.mode = None
        return self.log

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None, **kw):
        f = sys._getframe(1)
        by = f.f_globals.get("__name__", "?") + "." + f.f_code.co_name
        if self.mode == "replay":
            if self.pos >= len(self.replay):
                raise RuntimeError(f"noise replay exhausted at draw {self.pos} ({by})")
            t = self.replay[self.pos]
            self.pos += 1
            if tuple(t.shape) != tuple(shape):
                raise RuntimeError(f"noise replay: draw {self.pos - 1} by {by} has shape {tuple(shape)},"
                                   f" stored {tuple(t.shape)}")
            self.log.append((t, by))
            return t.to(device=device or "cpu", dtype=dtype or torch.float32)
        t = self.orig(shape, generator=generator, device=device, dtype=dtype, layout=layout)
        if self.mode == "record":
            self.log.append((t.detach().float().clone(), by))
        return t


TAP = NoiseTap()
TAP.install()


def noise_inputs(log, offset=0):
    return {f"noise.{offset + i:03d}": to32(t) for i, (t, _) in enumerate(log)}


def noise_manifest(log, offset=0):
    return [{"key": f"noise.{offset + i:03d}", "shape": list(t.shape), "drawn_by": by,
             "via": "diffusers.utils.torch_utils.randn_tensor"} for i, (t, by) in enumerate(log)]


def stored_noise(inp):
    return [inp[k] for k in sorted(k for k in inp if re.fullmatch(r"noise\.\d{3}", k))]


# ----------------------------------------------------------------------------------------------------------
# model construction (generation) and loading (from the stored files, in any dtype)
def perturb_(model, seed, std=0.02):
    g = gen(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def fp16_round_(model):
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(p.half().float())


def save_diffusers_model(model, d, dtype):
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    model.save_config(str(d))
    cfg = read_json(d / "config.json")
    cfg.pop("_name_or_path", None)
    write_json(d / "config.json", dict(sorted(cfg.items())))
    st_save(d / "diffusion_pytorch_model.safetensors", {k: v.to(dtype) for k, v in model.state_dict().items()})


def clip_state_dict_hub(model):
    """transformers 5 flattened CLIPTextModel (no `text_model.` prefix); hub/fixture files use the prefix."""
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("position_ids"):
            continue
        if isinstance(model, CLIPTextModel) and not hasattr(model, "text_model") and not k.startswith("text_model."):
            k = "text_model." + k
        sd[k] = v
    return sd


def save_clip(model, d, dtype, arch):
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(d))
    cfg = read_json(d / "config.json")
    cfg["architectures"] = [arch]
    cfg["torch_dtype"] = DT_NAME[dtype]
    cfg["dtype"] = DT_NAME[dtype]
    write_json(d / "config.json", dict(sorted(cfg.items())))
    st_save(d / "model.safetensors", {k: v.to(dtype) for k, v in clip_state_dict_hub(model).items()})


def _load_weights(model, path, dt, drop=()):
    sd = {k: v.to(torch.float32).to(dt) for k, v in st_load(path).items() if k not in drop}
    model.to(dt)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"{path}: missing {missing[:5]} unexpected {unexpected[:5]}")
    return model.eval()


def load_unet(d, dt, weights="diffusion_pytorch_model.safetensors"):
    d = Path(d)
    m = UNet2DConditionModel.from_config(read_json(d / "config.json"))
    _load_weights(m, d / weights, dt)
    m.set_attn_processor(AttnProcessor())
    return m


def load_controlnet(d, dt):
    d = Path(d)
    m = ControlNetModel.from_config(read_json(d / "config.json"))
    _load_weights(m, d / "diffusion_pytorch_model.safetensors", dt)
    m.set_attn_processor(AttnProcessor())
    return m


def load_vae(d, dt):
    d = Path(d)
    cfg = read_json(d / "config.json")
    cls = {"AutoencoderKL": AutoencoderKL, "AutoencoderTiny": AutoencoderTiny}[cfg["_class_name"]]
    if cls is AutoencoderTiny:
        cfg.pop("block_out_channels", None)  # legacy key in older AutoencoderTiny configs
    m = cls.from_config(cfg)
    _load_weights(m, d / "diffusion_pytorch_model.safetensors", dt)
    if cls is AutoencoderKL:
        m.set_attn_processor(AttnProcessor())
    return m


def load_clip(d, cls, dt):
    d = Path(d)
    cfg = CLIPTextConfig.from_pretrained(str(d))
    m = cls._from_config(cfg, attn_implementation="eager")
    sd = {k: v.to(torch.float32).to(dt) for k, v in st_load(d / "model.safetensors").items()}
    if cls is CLIPTextModel:
        sd.pop("text_projection.weight", None)  # CLIPTextModelWithProjection checkpoint loaded as CLIPTextModel
        if not hasattr(m, "text_model"):
            sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}
    m.to(dt)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"{d}: missing {missing[:5]} unexpected {unexpected[:5]}")
    return m.eval()


def load_tokenizer(d):
    return CLIPTokenizer.from_pretrained(str(d))


def make_scheduler(cfg):
    cfg = _json_unsafe(dict(cfg))
    cls = getattr(diffusers, cfg["_class_name"])
    return cls.from_config(cfg)


def sched_config_dict(s):
    return {k: v for k, v in dict(s.config).items() if not k.startswith("_") or k in ("_class_name", "_diffusers_version")}


def copy_tokenizer(kind, dst):
    dst = Path(dst)
    src = FIX / "models" / kind / "tokenizer"
    files = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(src / f, dst / f)
    elif not all((dst / f).is_file() for f in files):
        raise SystemExit(f"tokenizer files for {kind}: neither {src} nor {dst} has them")


def build_models():
    """Creates tests/data/models/* (random weights, fixed seeds)."""
    M = DATA / "models"
    ver = diffusers.__version__
    for name, ucfg, useed, tcfg, tseed, tcls, vseed, sched, sched_cls in (
        ("tiny-sd15", UNET15_CFG, SEED_UNET15, TE15_CFG, SEED_TE15, CLIPTextModel, SEED_VAE15,
         LCMScheduler.from_config(SD15_PNDM_SCHEDULER), "LCMScheduler"),
        ("tiny-sd2", UNET2_CFG, SEED_UNET2, TE2_CFG, SEED_TE2, CLIPTextModelWithProjection, SEED_VAE2,
         EulerDiscreteScheduler.from_config(SD_TURBO_EULER), "EulerDiscreteScheduler"),
    ):
        root = M / name
        if root.exists():
            shutil.rmtree(root / "unet", ignore_errors=True)
            shutil.rmtree(root / "text_encoder", ignore_errors=True)
            shutil.rmtree(root / "vae", ignore_errors=True)
            shutil.rmtree(root / "scheduler", ignore_errors=True)
        torch.manual_seed(useed)
        unet = UNet2DConditionModel(**ucfg)
        perturb_(unet, useed + SEED_PERTURB)
        fp16_round_(unet)
        save_diffusers_model(unet, root / "unet", torch.float16)

        torch.manual_seed(tseed)
        te = tcls._from_config(CLIPTextConfig(**tcfg), attn_implementation="eager")
        perturb_(te, tseed + SEED_PERTURB)
        fp16_round_(te)
        save_clip(te, root / "text_encoder", torch.float16, tcls.__name__)

        torch.manual_seed(vseed)
        vae = AutoencoderKL(**VAE_CFG)
        perturb_(vae, vseed + SEED_PERTURB)
        save_diffusers_model(vae, root / "vae", torch.float32)

        sched.save_config(str(root / "scheduler"))
        scfg = read_json(root / "scheduler" / "scheduler_config.json")
        write_json(root / "scheduler" / "scheduler_config.json", dict(sorted(scfg.items())))
        copy_tokenizer(name, root / "tokenizer")
        write_json(root / "model_index.json", {
            "_class_name": "StableDiffusionPipeline", "_diffusers_version": ver,
            "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
            "safety_checker": [None, None], "scheduler": ["diffusers", sched_cls],
            # SD2 pipelines load the text encoder as CLIPTextModel (text_projection.weight unused)
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        })
        log(f"  models/{name}: written")

    # TAESD-architecture AutoencoderTiny, small channels, F16
    torch.manual_seed(SEED_TAESD)
    taesd = AutoencoderTiny(**TAESD_CFG)
    with torch.no_grad():
        for mod in taesd.modules():
            if isinstance(mod, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                mod.weight.mul_(0.75)
    perturb_(taesd, SEED_TAESD + SEED_PERTURB)
    fp16_round_(taesd)
    shutil.rmtree(M / "taesd-tiny", ignore_errors=True)
    save_diffusers_model(taesd, M / "taesd-tiny", torch.float16)
    log("  models/taesd-tiny: written")


# ----------------------------------------------------------------------------------------------------------
# reference runners: replay a case from (manifest, inputs) with the models under `root`, in dtype dt
def _hook_outputs(model, names, prefix, store):
    """Registers forward hooks; returns the handles. Down blocks also give res_samples.j; only the first
    call of each module is kept."""
    mods = dict(model.named_modules())
    handles = []
    for n in names:
        def h(mod, args, out, n=n):
            key = prefix + n
            if key in store:
                return
            if isinstance(out, tuple):
                store[key] = out[0]
                if re.fullmatch(r"down_blocks\.\d+", n) and len(out) > 1:
                    for j, r in enumerate(out[1]):
                        store[f"{key}.res_samples.{j}"] = r
            elif hasattr(out, "sample"):
                store[key] = out.sample
            else:
                store[key] = out
        handles.append(mods[n].register_forward_hook(h))
    return handles


def run_unet(m, inp, root, dt, hooks=None):
    weights = m.get("weights_file", "diffusion_pytorch_model.safetensors").split()[0]
    unet = load_unet(root / m["model_dir"], dt, weights)
    if hooks is None:
        hooks = sorted({k[4:].split(".res_samples")[0] for k in m["files"]["expected.safetensors"]
                        if k.startswith("act.")})
    acts = {}
    hs = _hook_outputs(unet, hooks, "act.", acts)
    kw = {}
    if "timestep_cond" in inp:
        kw["timestep_cond"] = inp["timestep_cond"].to(dt)
    if "text_embeds" in inp:  # SDXL added conditioning
        kw["added_cond_kwargs"] = {"text_embeds": inp["text_embeds"].to(dt), "time_ids": inp["time_ids"].to(dt)}
    with torch.no_grad():
        out = unet(inp["sample"].to(dt), inp["timestep"], encoder_hidden_states=inp["encoder_hidden_states"].to(dt),
                   return_dict=False, **kw)[0]
    for h in hs:
        h.remove()
    res = {"out_sample": out}
    res.update(acts)
    return res


def run_clip(m, inp, root, dt):
    cls = {"CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection}[m["model_class"]]
    model = load_clip(root / m["model_dir"], cls, dt)
    ids = inp["input_ids"]
    with torch.no_grad():
        tm = model.text_model if hasattr(model, "text_model") else model
        o = tm(input_ids=ids, output_hidden_states=True)
        res = {"last_hidden_state": o.last_hidden_state}
        for k, h in enumerate(o.hidden_states):
            res[f"hidden_states.{k}"] = h
        if cls is CLIPTextModelWithProjection:
            res["text_embeds"] = model(input_ids=ids).text_embeds
        res["pooler_output"] = o.pooler_output
        res["clip_skip_1"] = tm.final_layer_norm(o.hidden_states[-2])
        res["penultimate_hidden_state"] = o.hidden_states[-2]  # SDXL: no final_layer_norm
    return res


def run_vae(m, inp, root, dt):
    vae = load_vae(root / m["model_dir"], dt)
    res = {}
    with torch.no_grad():
        if isinstance(vae, AutoencoderKL):
            acts = {}
            hs = _hook_outputs(vae, ["encoder", "quant_conv"], "enc.act.", acts)
            dist = vae.encode(inp["image"].to(dt)).latent_dist
            for h in hs:
                h.remove()
            res["latent_dist.mean"], res["latent_dist.logvar"], res["latent_dist.std"] = dist.mean, dist.logvar, dist.std
            res.update(acts)
            TAP.start("replay", [inp["sample_noise"]])
            res["latent_dist.sample"] = dist.sample()
            TAP.stop()
            acts = {}
            hs = _hook_outputs(vae, ["post_quant_conv", "decoder.conv_in", "decoder.mid_block"], "dec.act.", acts)
            res["decoded"] = vae.decode(inp["latent"].to(dt)).sample
            for h in hs:
                h.remove()
            res.update(acts)
            res["forward_mode_roundtrip"] = vae(inp["image"].to(dt), sample_posterior=False).sample
        else:
            want = m["files"]["expected.safetensors"] if "files" in m else m["_want"]
            enc_l = [k[len("enc.act."):] for k in want if k.startswith("enc.act.")]
            dec_l = [k[len("dec.act."):] for k in want if k.startswith("dec.act.")]
            acts = {}
            hs = _hook_outputs(vae, enc_l, "enc.act.", acts)
            lat = vae.encode(inp["image"].to(dt)).latents
            for h in hs:
                h.remove()
            res["latents"] = lat
            res.update(acts)
            acts = {}
            hs = _hook_outputs(vae, dec_l, "dec.act.", acts)
            res["decoded"] = vae.decode(inp["latent"].to(dt)).sample
            for h in hs:
                h.remove()
            res.update(acts)
            res["roundtrip_decoded"] = vae.decode(lat).sample
            res["scale_latents"] = vae.scale_latents(lat)
    return res


def run_sched(m, inp, root, dt, make_output=None):
    """Scheduler rollout. With make_output(i, t, x, sched) the model outputs are generated (and recorded in
    `inp`) and the noise is drawn from a seeded generator and recorded; otherwise both are replayed."""
    s = make_scheduler(m["scheduler_config"])
    s.set_timesteps(**m["set_timesteps"])
    step_kwargs = dict(m.get("step_kwargs", {}))
    res = {"timesteps": s.timesteps.clone()}
    if hasattr(s, "sigmas") and s.sigmas is not None and isinstance(s, (EulerDiscreteScheduler,
                                                                         EulerAncestralDiscreteScheduler,
                                                                         DPMSolverMultistepScheduler)):
        res["sigmas"] = s.sigmas.clone()
    res["alphas_cumprod"] = s.alphas_cumprod.clone()
    res["betas"] = s.betas.clone()
    x = inp["x_T_noise"].to(dt) * s.init_noise_sigma
    res["x_T"] = x
    g = gen(m.get("_noise_seed", 0))
    if make_output is None:
        TAP.start("replay", stored_noise(inp))
    else:
        TAP.start("record")
    steps = []
    for i, t in enumerate(s.timesteps):
        n0 = len(TAP.log)
        mi = s.scale_model_input(x, t)
        if make_output is not None:
            inp[f"model_output.{i:03d}"] = to32(make_output(i, t, x, s))
        mo = inp[f"model_output.{i:03d}"].to(dt)
        out = s.step(mo, t, x, generator=g, **step_kwargs)
        st = {"i": i, "t": t.item(), "model_output": f"model_output.{i:03d}"}
        if mi is x:
            st["model_input"] = "identity"
        else:
            st["model_input"] = f"model_input.{i:03d}"
            res[f"model_input.{i:03d}"] = mi
        x = out.prev_sample
        res[f"prev_sample.{i:03d}"] = x
        st["prev_sample"] = f"prev_sample.{i:03d}"
        for extra in ("denoised", "pred_original_sample", "pred_noised_sample"):
            v = getattr(out, extra, None)
            if v is not None:
                res[f"{extra}.{i:03d}"] = v
                st[extra] = f"{extra}.{i:03d}"
        st["noise_drawn"] = [f"noise.{j:03d}" for j in range(n0, len(TAP.log))]
        steps.append(st)
    log_ = TAP.stop()
    res["_steps"], res["_noise_log"], res["_init_noise_sigma"] = steps, log_, float(s.init_noise_sigma)
    return res


def build_pipe(cls_name, model_dir, unet_dir, sched_cfg, dt, controlnet_dirs=None):
    te_cls = CLIPTextModel
    pipe_cls = {"StableDiffusionPipeline": StableDiffusionPipeline,
                "StableDiffusionImg2ImgPipeline": StableDiffusionImg2ImgPipeline,
                "LatentConsistencyModelPipeline": LatentConsistencyModelPipeline,
                "StableDiffusionControlNetPipeline": StableDiffusionControlNetPipeline,
                "StableDiffusionControlNetImg2ImgPipeline": StableDiffusionControlNetImg2ImgPipeline}[cls_name]
    comps = dict(vae=load_vae(model_dir / "vae", dt), text_encoder=load_clip(model_dir / "text_encoder", te_cls, dt),
                 tokenizer=load_tokenizer(model_dir / "tokenizer"),
                 unet=load_unet(unet_dir or (model_dir / "unet"), dt), scheduler=make_scheduler(sched_cfg),
                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if controlnet_dirs:
        nets = [load_controlnet(d, dt) for d in controlnet_dirs]
        comps["controlnet"] = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
    pipe = pipe_cls(**comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _controlnet_taps(pipe, res):
    """ControlNet pipelines: records per UNet call step.III.unet_sample / unet_timestep / unet_out, the residuals fed
    to the UNet at step 0 (step.000.down_block_additional_residuals.JJJ / mid_block_additional_residual) and what
    each net received first (controlnet_cond.NNN)."""
    calls = [0]
    handles = []

    def pre(mod, args, kwargs):
        i = calls[0]
        x = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        res[f"step.{i:03d}.unet_sample"] = x.clone()
        res[f"step.{i:03d}.unet_timestep"] = torch.as_tensor(t).reshape(1).clone()
        if i == 0:
            for j, r in enumerate(kwargs["down_block_additional_residuals"]):
                res[f"step.000.down_block_additional_residuals.{j:03d}"] = r.clone()
            res["step.000.mid_block_additional_residual"] = kwargs["mid_block_additional_residual"].clone()

    def post(mod, args, kwargs, out):
        res[f"step.{calls[0]:03d}.unet_out"] = (out[0] if isinstance(out, tuple) else out.sample).clone()
        calls[0] += 1

    handles.append(pipe.unet.register_forward_pre_hook(pre, with_kwargs=True))
    handles.append(pipe.unet.register_forward_hook(post, with_kwargs=True))
    nets = pipe.controlnet.nets if isinstance(pipe.controlnet, MultiControlNetModel) else [pipe.controlnet]
    for j, net in enumerate(nets):
        def cpre(mod, args, kwargs, j=j):
            key = f"controlnet_cond.{j:03d}"
            if key not in res:
                res[key] = (args[3] if len(args) > 3 else kwargs["controlnet_cond"]).clone()
        handles.append(net.register_forward_pre_hook(cpre, with_kwargs=True))
    return handles


def run_pipe(m, inp, root, dt, record=False):
    if m["pipeline"].startswith("StableDiffusionXL"):
        return run_pipe_xl(m, inp, root, dt, record)
    pipe = build_pipe(m["pipeline"], root / m["model_dir"], root / m["unet_dir"] if "unet_dir" in m else None,
                      m["scheduler_config"], dt, [root / d for d in m.get("controlnet_dirs", [])])
    kw = dict(m["call_kwargs"])
    res = {}
    steps = []
    taps = _controlnet_taps(pipe, res) if "controlnet_dirs" in m else []
    with torch.no_grad():
        if m["pipeline"] == "LatentConsistencyModelPipeline":
            pe = pipe.encode_prompt(kw["prompt"], "cpu", 1, False)[0]
        else:
            pe, ne = pipe.encode_prompt(kw["prompt"], "cpu", 1, kw.get("guidance_scale", 1.0) > 1.0,
                                        kw.get("negative_prompt"))
        res["prompt_embeds"] = pe
        if kw.get("guidance_scale", 1.0) > 1.0 and m["pipeline"] != "LatentConsistencyModelPipeline":
            res["negative_prompt_embeds"] = ne
        if "tensor_call_kwargs" in m:  # call argument -> input name (or list of names)
            for arg, names in m["tensor_call_kwargs"].items():
                kw[arg] = [inp[n].to(dt) for n in names] if isinstance(names, list) else inp[names].to(dt)
        else:
            if "latents" in inp:
                kw["latents"] = inp["latents"].to(dt)
            if "image" in inp:
                kw["image"] = inp["image"].to(dt)
        want_denoised = any(k.startswith("step_denoised") for k in m.get("files", {}).get("expected.safetensors", {}))
        tensor_inputs = ["latents", "denoised"] if want_denoised else ["latents"]

        def cb(p, i, t, d):
            res[f"step_latents.{i:03d}"] = d["latents"].clone()
            if "denoised" in d:
                res[f"step_denoised.{i:03d}"] = d["denoised"].clone()
            steps.append({"i": i, "t": t.item(), "latents_after_step": f"step_latents.{i:03d}"})
            return {}

        TAP.start("record" if record else "replay", None if record else stored_noise(inp))
        out = pipe(**kw, output_type="np", generator=gen(m.get("generator_seed", 0)), callback_on_step_end=cb,
                   callback_on_step_end_tensor_inputs=tensor_inputs)
        nlog = TAP.stop()
    for h in taps:
        h.remove()
    res["image_np"] = torch.from_numpy(out.images.copy())
    res["final_latents"] = res[f"step_latents.{len(steps) - 1:03d}"]
    res["timesteps"] = pipe.scheduler.timesteps.clone()  # the full schedule (img2img runs only its tail)
    res["_steps"], res["_noise_log"] = steps, nlog
    return res


# ---- StreamDiffusion re-implementation --------------------------------------------------------------------
class StreamRef:
    """Python re-implementation of StreamDiffusion's stream step (cumulo-autumn/StreamDiffusion @ b623251,
    src/streamdiffusion/pipeline.py: prepare / __call__ / txt2img / predict_x0_batch / unet_step /
    scheduler_step_batch / encode_image / decode_image) for use_denoising_batch=True, frame_buffer_size=1,
    using the diffusers UNet, AutoencoderTiny, LCMScheduler and StableDiffusionPipeline.encode_prompt.

    SDXL (a pipe_dir with text_encoder_2/), as StreamDiffusion's SDXL forks do it (e.g. the Daydream fork's
    prepare / unet_step): StableDiffusionXLPipeline.encode_prompt (prompt_2 = prompt, the negative prompt
    encoded as given), added_cond_kwargs text_embeds = the pooled embedding per UNet row (the negative's on
    the uncond rows, in the order of the prompt embedding rows: [uncond x U, cond x n]) and time_ids =
    (H, W, 0, 0, H, W) (original size = target size = the stream's, no crop) on every row. (That fork
    tiles [neg, pos] for cfg 'full', which misaligns with its own prompt rows when n > 1; not copied.)"""

    def __init__(self, pipe_dir, vae_dir, t_index_list, width, height, cfg_type, dt, do_add_noise=True):
        self.dt = dt
        te = load_clip(pipe_dir / "text_encoder", CLIPTextModel, dt)
        self.unet = load_unet(pipe_dir / "unet", dt)
        self.vae = load_vae(vae_dir, dt)
        sched = LCMScheduler.from_config(read_json(pipe_dir / "scheduler" / "scheduler_config.json"))
        self.sdxl = (pipe_dir / "text_encoder_2").is_dir()
        if self.sdxl:
            te2 = load_clip(pipe_dir / "text_encoder_2", CLIPTextModelWithProjection, dt)
            self.pipe = StableDiffusionXLPipeline(vae=self.vae, text_encoder=te, text_encoder_2=te2,
                                                  tokenizer=load_tokenizer(pipe_dir / "tokenizer"),
                                                  tokenizer_2=load_tokenizer(pipe_dir / "tokenizer_2"),
                                                  unet=self.unet, scheduler=sched)
        else:
            self.pipe = StableDiffusionPipeline(vae=self.vae, text_encoder=te, tokenizer=load_tokenizer(pipe_dir / "tokenizer"),
                                                unet=self.unet, scheduler=sched, safety_checker=None,
                                                feature_extractor=None, requires_safety_checker=False)
        self.width, self.height = width, height
        self.scheduler = LCMScheduler.from_config(self.pipe.scheduler.config)
        self.t_list = list(t_index_list)
        self.n = len(self.t_list)
        self.cfg_type = cfg_type
        self.lh, self.lw = height // 8, width // 8  # StreamDiffusion: latent = image // 8
        self.do_add_noise = do_add_noise

    def prepare(self, prompt, negative_prompt, guidance_scale, delta, init_noise):
        n, dt = self.n, self.dt
        self.x_t_latent_buffer = torch.zeros((n - 1, 4, self.lh, self.lw), dtype=dt) if n > 1 else None
        self.guidance_scale = 1.0 if self.cfg_type == "none" else guidance_scale
        self.delta = delta
        do_cfg = self.guidance_scale > 1.0
        with torch.no_grad():
            enc = self.pipe.encode_prompt(prompt=prompt, device="cpu", num_images_per_prompt=1,
                                          do_classifier_free_guidance=do_cfg, negative_prompt=negative_prompt)
        self.prompt_embeds = enc[0].repeat(n, 1, 1)
        uncond = None
        u = 0
        if self.cfg_type == "full":
            uncond = enc[1].repeat(n, 1, 1) if enc[1] is not None else None
            u = n
        elif self.cfg_type == "initialize":
            uncond = enc[1].repeat(1, 1, 1) if enc[1] is not None else None
            u = 1
        if self.guidance_scale > 1.0 and self.cfg_type in ("initialize", "full"):
            self.prompt_embeds = torch.cat([uncond, self.prompt_embeds], dim=0)
        else:
            u = 0
        self.added = None
        if self.sdxl:  # enc = (prompt_embeds, negative_prompt_embeds, pooled, negative_pooled)
            te = torch.cat([enc[3].repeat(u, 1), enc[2].repeat(n, 1)], 0) if u else enc[2].repeat(n, 1)
            ids = torch.tensor([[self.height, self.width, 0, 0, self.height, self.width]], dtype=dt).repeat(u + n, 1)
            self.added = {"text_embeds": te, "time_ids": ids}
        self.scheduler.set_timesteps(50, "cpu")
        self.timesteps = self.scheduler.timesteps
        self.sub_timesteps = [self.timesteps[t] for t in self.t_list]
        self.sub_timesteps_tensor = torch.tensor(self.sub_timesteps, dtype=torch.long)
        self.init_noise = init_noise.to(dt)
        self.stock_noise = torch.zeros_like(self.init_noise)
        cs, co = zip(*[self.scheduler.get_scalings_for_boundary_condition_discrete(t) for t in self.sub_timesteps])
        self.c_skip = torch.stack(list(cs)).view(n, 1, 1, 1).to(dt)
        self.c_out = torch.stack(list(co)).view(n, 1, 1, 1).to(dt)
        ac = self.scheduler.alphas_cumprod
        self.alpha_prod_t_sqrt = torch.stack([ac[t].sqrt() for t in self.sub_timesteps]).view(n, 1, 1, 1).to(dt)
        self.beta_prod_t_sqrt = torch.stack([(1 - ac[t]).sqrt() for t in self.sub_timesteps]).view(n, 1, 1, 1).to(dt)
        res = {"init_noise": self.init_noise, "prompt_embeds": self.prompt_embeds, "c_skip": self.c_skip,
               "c_out": self.c_out, "alpha_prod_t_sqrt": self.alpha_prod_t_sqrt,
               "beta_prod_t_sqrt": self.beta_prod_t_sqrt, "sub_timesteps_tensor": self.sub_timesteps_tensor,
               "timesteps_50": self.timesteps.clone()}
        if self.added:
            res["add_text_embeds"], res["add_time_ids"] = self.added["text_embeds"], self.added["time_ids"]
        return res

    def _step_batch(self, model_pred, x):
        F = (x - self.beta_prod_t_sqrt * model_pred) / self.alpha_prod_t_sqrt
        return self.c_out * F + self.c_skip * x

    def _call(self, x_t_latent, rec):
        g = self.guidance_scale
        t_list = self.sub_timesteps_tensor
        if self.n > 1:
            x_t_latent = torch.cat((x_t_latent, self.x_t_latent_buffer), dim=0)
            self.stock_noise = torch.cat((self.init_noise[0:1], self.stock_noise[:-1]), dim=0)
        rec["unet_x_t_latent"], rec["unet_t_list"], rec["stock_noise_before"] = x_t_latent, t_list, self.stock_noise
        if g > 1.0 and self.cfg_type == "initialize":
            xin, tin = torch.cat([x_t_latent[0:1], x_t_latent], 0), torch.cat([t_list[0:1], t_list], 0)
        elif g > 1.0 and self.cfg_type == "full":
            xin, tin = torch.cat([x_t_latent, x_t_latent], 0), torch.cat([t_list, t_list], 0)
        else:
            xin, tin = x_t_latent, t_list
        rec["unet_call_sample"], rec["unet_call_timestep"] = xin, tin
        out = self.unet(xin, tin, encoder_hidden_states=self.prompt_embeds, added_cond_kwargs=self.added,
                        return_dict=False)[0]
        rec["unet_call_out"] = out
        if g > 1.0 and self.cfg_type == "initialize":
            text = out[1:]
            self.stock_noise = torch.cat([out[0:1], self.stock_noise[1:]], 0)
        elif g > 1.0 and self.cfg_type == "full":
            uncond, text = out.chunk(2)
        else:
            text = out
        if g > 1.0 and self.cfg_type in ("self", "initialize"):
            uncond = self.stock_noise * self.delta
        model_pred = uncond + g * (text - uncond) if (g > 1.0 and self.cfg_type != "none") else text
        x0 = self._step_batch(model_pred, x_t_latent)
        if self.cfg_type in ("self", "initialize"):
            dx = self._step_batch(model_pred, self.beta_prod_t_sqrt * self.stock_noise)
            alpha_next = torch.cat([self.alpha_prod_t_sqrt[1:], torch.ones_like(self.alpha_prod_t_sqrt[0:1])], 0)
            beta_next = torch.cat([self.beta_prod_t_sqrt[1:], torch.ones_like(self.beta_prod_t_sqrt[0:1])], 0)
            dx = alpha_next * dx / beta_next
            self.stock_noise = torch.cat([self.init_noise[1:], self.init_noise[0:1]], 0) + dx
        rec["x_0_pred_batch"], rec["model_pred"], rec["stock_noise_after"] = x0, model_pred, self.stock_noise
        if self.n > 1:
            x0_out = x0[-1].unsqueeze(0)
            if self.do_add_noise:
                self.x_t_latent_buffer = self.alpha_prod_t_sqrt[1:] * x0[:-1] + self.beta_prod_t_sqrt[1:] * self.init_noise[1:]
            else:
                self.x_t_latent_buffer = self.alpha_prod_t_sqrt[1:] * x0[:-1]
        else:
            x0_out = x0
        rec["x_0_pred_out"] = x0_out
        rec["output"] = self.vae.decode(x0_out / self.vae.config.scaling_factor, return_dict=False)[0]
        rec["x_t_latent_buffer_after"] = self.x_t_latent_buffer
        return rec

    @torch.no_grad()
    def img2img(self, frame):
        x = frame.to(self.dt) * 2 - 1  # VaeImageProcessor.preprocess of a [0,1] tensor (same size: no resize)
        lat = self.vae.encode(x).latents * self.vae.config.scaling_factor
        x_t = self.alpha_prod_t_sqrt[0] * lat + self.beta_prod_t_sqrt[0] * self.init_noise[0]
        return self._call(x_t, {"x_t_latent_new": x_t})

    @torch.no_grad()
    def txt2img(self, noise):
        return self._call(noise.to(self.dt), {})


CALL_KEYS = ["x_t_latent_new", "unet_x_t_latent", "unet_t_list", "stock_noise_before", "unet_call_sample",
             "unet_call_timestep", "unet_call_out", "x_0_pred_batch", "model_pred", "stock_noise_after",
             "x_0_pred_out", "output", "x_t_latent_buffer_after"]
STREAM_PREP_KEYS = ["init_noise", "prompt_embeds", "c_skip", "c_out", "alpha_prod_t_sqrt", "beta_prod_t_sqrt",
                    "sub_timesteps_tensor", "timesteps_50", "add_text_embeds", "add_time_ids"]


def _component_dir(root, s):
    return root / s.split()[0]


def run_stream(m, inp, root, dt):
    sc, pk = m["stream_constructor"], m["prepare_kwargs"]
    if not sc.get("use_denoising_batch", True) or sc.get("frame_buffer_size", 1) != 1:
        raise NotImplementedError("StreamRef covers use_denoising_batch=True, frame_buffer_size=1")
    s = StreamRef(_component_dir(root, m["components"]["pipe_dir"]), _component_dir(root, m["components"]["vae"]),
                  sc["t_index_list"], sc["width"], sc["height"], sc["cfg_type"], dt, sc.get("do_add_noise", True))
    noise = stored_noise(inp)
    res = dict(s.prepare(pk["prompt"], pk.get("negative_prompt", ""), pk["guidance_scale"], pk["delta"], noise[0]))
    for c in range(m["n_calls"]):
        rec = s.img2img(inp[f"frame.{c:03d}"]) if m["mode"] == "img2img" else s.txt2img(noise[1 + c])
        for k in CALL_KEYS:
            if k in rec and rec[k] is not None:
                res[f"call.{c:03d}.{k}"] = rec[k]
    return res


def case_kind(m):
    if "scheduler_class" in m:
        return "sched"
    if "stream_constructor" in m:
        return "stream"
    if "pipeline" in m:
        return "pipe"
    if "prompts_file" in m:
        return "tokenizer"
    if "embedding_dim" in m and "model_dir" not in m:
        return "guidance-embedding"
    return None


def model_kind(m, root):
    if "model_dir" not in m:
        return None
    cls = m.get("model_class")
    if not cls:
        p = root / m["model_dir"] / "config.json"
        cls = read_json(p).get("_class_name") if p.is_file() else None
    if cls == "UNet2DConditionModel":
        return "unet"
    if cls and cls.startswith("CLIPTextModel"):
        return "clip"
    if cls in ("AutoencoderKL", "AutoencoderTiny"):
        return "vae"
    if cls == "ControlNetModel":
        return "controlnet"
    return None


def run_controlnet(m, inp, root, dt, hooks=None):
    """down, mid = ControlNetModel(sample, t, ehs, controlnet_cond, conditioning_scale); the UNet of unet_dir with
    and without those residuals; act.* = forward hooks on the ControlNet."""
    cn = load_controlnet(root / m["model_dir"], dt)
    unet = load_unet(root / m["unet_dir"], dt)
    if hooks is None:
        hooks = sorted({k[4:].split(".res_samples")[0] for k in m["files"]["expected.safetensors"]
                        if k.startswith("act.")})
    acts = {}
    hs = _hook_outputs(cn, hooks, "act.", acts)
    x, t, ehs = inp["sample"].to(dt), inp["timestep"], inp["encoder_hidden_states"].to(dt)
    scale = float(inp["conditioning_scale"].reshape(-1)[0])
    kw = {}
    if "text_embeds" in inp:  # SDXL added_cond_kwargs, to the ControlNet and the UNet
        kw["added_cond_kwargs"] = {"text_embeds": inp["text_embeds"].to(dt), "time_ids": inp["time_ids"].to(dt)}
    with torch.no_grad():
        down, mid = cn(x, t, encoder_hidden_states=ehs, controlnet_cond=inp["controlnet_cond"].to(dt),
                       conditioning_scale=scale, guess_mode=False, return_dict=False, **kw)
        for h in hs:
            h.remove()
        out = unet(x, t, encoder_hidden_states=ehs, down_block_additional_residuals=down,
                   mid_block_additional_residual=mid, return_dict=False, **kw)[0]
        out0 = unet(x, t, encoder_hidden_states=ehs, return_dict=False, **kw)[0]
    res = {f"down_block_res_samples.{j:03d}": r for j, r in enumerate(down)}
    res.update({"mid_block_res_sample": mid, "unet_out_sample": out, "unet_out_sample_without_control": out0})
    res.update(acts)
    return res


RUNNERS = {"unet": run_unet, "clip": run_clip, "vae": run_vae, "sched": run_sched, "pipe": run_pipe,
           "stream": run_stream, "controlnet": run_controlnet}


def replay_case(case_dir, root, dt=torch.float32):
    m = read_json(case_dir / "manifest.json")
    kind = case_kind(m) or model_kind(m, root)
    if kind not in RUNNERS:
        return m, kind, None
    inp = st_load(case_dir / "inputs.safetensors") if (case_dir / "inputs.safetensors").is_file() else {}
    return m, kind, RUNNERS[kind](m, inp, root, dt)


def compare_case(case_dir, root, verbose=False):
    """Replays a stored case and compares every expected tensor with its stored tolerance.
    Returns (kind, n_checked, n_failed, worst err/tol) or None when the kind is not replayable here."""
    m, kind, got = replay_case(case_dir, root)
    if got is None:
        return None
    exp = st_load(case_dir / "expected.safetensors")
    tols = m.get("tolerances", {})
    n = bad = 0
    worst = 0.0
    for k, e in exp.items():
        n += 1
        if k not in got:
            bad += 1
            log(f"    {m['name']}: {k} not produced by the replay")
            continue
        g = got[k].detach().cpu()
        if tuple(g.shape) != tuple(e.shape):
            bad += 1
            log(f"    {m['name']}: {k} shape {tuple(g.shape)} != stored {tuple(e.shape)}")
            continue
        if not e.is_floating_point():
            if not torch.equal(g.to(torch.int64), e):
                bad += 1
                log(f"    {m['name']}: {k} integer mismatch")
            continue
        err = (g.double() - e.double()).abs().max().item() if e.numel() else 0.0
        tol = tols.get(k, {}).get("recommended_max_abs_err")
        if tol is None:
            tol = 1e-4 * max(1.0, e.double().abs().max().item())
        r = err / tol if tol > 0 else (0 if err == 0 else float("inf"))
        if not math.isfinite(err) or r > 1:
            bad += 1
            log(f"    {m['name']}: {k} FAIL err {err:.3e} tol {tol:.3e}")
        worst = max(worst, r if math.isfinite(r) else float("inf"))
        if verbose:
            log(f"      {k:50s} err {err:.3e} tol {tol:.3e}")
    return kind, n, bad, worst


# ----------------------------------------------------------------------------------------------------------
# case generation
def write_case(name, manifest, inputs, expected, tols):
    d = DATA / "cases" / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    inputs = {k: to32(v) for k, v in inputs.items()}
    expected = {k: to32(v) for k, v in expected.items()}
    st_save(d / "inputs.safetensors", inputs)
    st_save(d / "expected.safetensors", expected)
    man = dict(manifest)
    gen_field = dict(GEN_INFO)
    gen_field.update(man.pop("_generator_extra", {}))
    man["files"] = {
        "inputs.safetensors": {k: {"dtype": DT_NAME[v.dtype], "shape": list(v.shape)} for k, v in inputs.items()},
        "expected.safetensors": {k: {"dtype": DT_NAME[v.dtype], "shape": list(v.shape)} for k, v in expected.items()},
    }
    man["tolerances"] = tols
    man["generator"] = gen_field
    write_json(d / "manifest.json", man, indent=1)
    log(f"  cases/{name}: {len(inputs)} inputs, {len(expected)} expected")


def net_tols(e32, e64, floor=2e-5, floors=None):
    tols = {}
    for k, v in e32.items():
        if v.is_floating_point() and k != "timesteps":
            f = (floors or {}).get(k, floor)
            tols[k] = tol_entry(v, e64[k], f)
    return tols


def unet_hooks(cfg):
    h = ["time_proj", "time_embedding", "conv_in", "down_blocks.0.resnets.0"]
    a = "down_blocks.0.attentions.0"
    h += [f"{a}.norm", f"{a}.proj_in", f"{a}.transformer_blocks.0.norm1", f"{a}.transformer_blocks.0.attn1",
          f"{a}.transformer_blocks.0.attn2", f"{a}.transformer_blocks.0.ff", f"{a}.transformer_blocks.0",
          f"{a}.proj_out", a]
    nb = len(cfg["block_out_channels"])
    h += [f"down_blocks.{i}" for i in range(nb)] + ["mid_block"] + [f"up_blocks.{i}" for i in range(nb)]
    h += ["conv_norm_out", "conv_out"]
    return h


def gen_unet_case(name, desc, model, cfg, sample_shape, timesteps, seed):
    root = DATA
    m = {"name": name, "description": desc, "model_dir": f"models/{model}/unet",
         "weights_file": "diffusion_pytorch_model.safetensors (F16); loaded with torch_dtype=float32",
         "config": {k: cfg[k] for k in ("sample_size", "in_channels", "out_channels", "block_out_channels",
                                         "layers_per_block", "down_block_types", "up_block_types",
                                         "cross_attention_dim", "attention_head_dim", "norm_num_groups")
                    if k in cfg},
         "call": "UNet2DConditionModel.forward(sample, timestep (int64 [B], one per batch element), "
                 "encoder_hidden_states, return_dict=False)[0]",
         "activation_semantics": UNET_ACT_SEMANTICS}
    for k in ("use_linear_projection", "upcast_attention"):
        if k in cfg:
            m["config"][k] = cfg[k]
    B = sample_shape[0]
    inp = {"sample": randn(sample_shape, seed), "timestep": torch.tensor(timesteps, dtype=torch.int64),
           "encoder_hidden_states": randn((B, 77, cfg["cross_attention_dim"]), seed + 1)}
    hooks = unet_hooks(cfg)
    e32 = run_unet(m, inp, root, torch.float32, hooks)
    e64 = run_unet(m, inp, root, torch.float64, hooks)
    write_case(name, m, inp, e32, net_tols(e32, e64))


def tokenize(tok_dir, prompts):
    tok = load_tokenizer(tok_dir)
    return tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def gen_clip_case(name, desc, model, cls_name, cfg):
    m = {"name": name, "description": desc, "model_dir": f"models/{model}/text_encoder", "model_class": cls_name,
         "weights_file": "model.safetensors (F16); computed in float32 from the fp16 weights",
         "config": {"hidden": cfg["hidden_size"], "inter": cfg["intermediate_size"], "layers": cfg["num_hidden_layers"],
                    "heads": cfg["num_attention_heads"], "act": cfg["hidden_act"],
                    **({"proj": cfg["projection_dim"], "with_projection": True}
                       if cls_name == "CLIPTextModelWithProjection" else {})},
         "prompts": PROMPTS,
         "semantics": CLIP_SEMANTICS}
    inp = {"input_ids": tokenize(DATA / "models" / model / "tokenizer", PROMPTS)}
    e32 = run_clip(m, inp, DATA, torch.float32)
    e64 = run_clip(m, inp, DATA, torch.float64)
    write_case(name, m, inp, e32, net_tols(e32, e64))


def gen_vae_cases():
    cfg = read_json(DATA / "models/tiny-sd15/vae/config.json")
    m = {"name": "own_vae_kl", "description": "Tiny AutoencoderKL (8/16 channels, 4 groups): encode -> latent_dist "
                                             "(mean/logvar/std), decode, forward; batch 2, non-square",
         "model_dir": "models/tiny-sd15/vae", "config": cfg,
         "semantics": {
             "latent_dist.*": "AutoencoderKL.encode(image).latent_dist (DiagonalGaussianDistribution): moments = "
                              "quant_conv(encoder(image)); mean, logvar = chunk(moments, 2, dim=1); logvar = clamp("
                              "logvar, -30, 20); std = exp(0.5*logvar)",
             "latent_dist.sample": "mean + std * sample_noise (what .sample(generator) computes; pipelines then "
                                   "multiply by scaling_factor)",
             "decoded": "AutoencoderKL.decode(latent).sample  (latent is NOT divided by scaling_factor here)",
             "forward_mode_roundtrip": "AutoencoderKL.forward(image, sample_posterior=False) = decode(mode()) with mode()=mean",
             "enc.act.encoder": "encoder output before quant_conv (2*latent_channels channels)"}}
    s = SEED_CASES + 300
    inp = {"image": synth_image(2, 24, 32, s) * 2 - 1, "latent": randn((2, 4, 12, 16), s + 1),
           "sample_noise": randn((2, 4, 12, 16), s + 2)}
    e32 = run_vae(m, inp, DATA, torch.float32)
    e64 = run_vae(m, inp, DATA, torch.float64)
    write_case("own_vae_kl", m, inp, e32, net_tols(e32, e64))

    cfg = read_json(DATA / "models/taesd-tiny/config.json")
    want = ["latents", "enc.act.encoder.layers.2", "enc.act.encoder.layers.6", "decoded", "dec.act.decoder.layers.0",
            "dec.act.decoder.layers.2", "dec.act.decoder.layers.5", "roundtrip_decoded", "scale_latents"]
    m = {"name": "own_vae_tiny", "description": "AutoencoderTiny (TAESD architecture, 8 channels) with random weights "
                                               "stored as F16: encode, decode; batch 2, non-square",
         "model_dir": "models/taesd-tiny", "config": cfg, "_want": want,
         "semantics": {
             "latents": "AutoencoderTiny.encode(image).latents = EncoderTiny.layers((image+1)/2); image in [-1,1]. "
                        "Already in 'scaled' SD latent units (config.scaling_factor = 1.0)",
             "decoded": "AutoencoderTiny.decode(latent).sample = DecoderTiny.layers(tanh(latent/3)*3) * 2 - 1",
             "roundtrip_decoded": "decode(encode(image).latents)",
             "scale_latents": "AutoencoderTiny.scale_latents(latents) = (latents/(2*latent_magnitude) + latent_shift)"
                              ".clamp(0,1) (preview helper, not used by pipelines)",
             "enc.act.encoder.layers.k": "forward-hook output of EncoderTiny.layers[k] (nn.Sequential index)",
             "dec.act.decoder.layers.k": "forward-hook output of DecoderTiny.layers[k] (nn.Sequential index)"}}
    inp = {"image": synth_image(2, 32, 48, s + 3) * 2 - 1, "latent": randn((2, 4, 4, 6), s + 4)}
    e32 = run_vae(m, inp, DATA, torch.float32)
    e64 = run_vae(m, inp, DATA, torch.float64)
    e32 = {k: e32[k] for k in want}
    m.pop("_want")
    write_case("own_vae_tiny", m, inp, e32, net_tols(e32, e64))


# --only NAME...: regenerate just these cases (the other generators return at once); None = all
ONLY = None
SEEN = []


def wanted(name):
    SEEN.append(name)
    return ONLY is None or name in ONLY


def gen_sched_case(name, desc, cls, base_cfg, overrides, n_steps, shape, seed, step_kwargs=None, strength=None):
    if not wanted(name):
        return
    s = cls.from_config(base_cfg, **overrides)
    m = {"name": name, "description": desc, "scheduler_class": cls.__name__, "scheduler_config": sched_config_dict(s),
         "set_timesteps": {"num_inference_steps": n_steps}}
    if strength is not None:
        m["set_timesteps"]["strength"] = strength
    if step_kwargs:
        m["step_kwargs"] = step_kwargs
    if cls is EulerDiscreteScheduler:
        m["notes"] = EULER_NOISE_NOTE
    x0 = randn(shape, seed + 1, 0.9)
    inp = {"x_T_noise": randn(shape, seed)}
    is_sigma = cls in (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler)

    def make_output(i, t, x, sch):
        e = randn(shape, seed + 10 + i, 0.05)
        if is_sigma:
            sigma = sch.sigmas[i]
            return (x - x0) / sigma + e
        ab = sch.alphas_cumprod[int(t)]
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt() + e

    m["_noise_seed"] = seed + 5
    res = run_sched(m, inp, DATA, torch.float32, make_output)
    m.pop("_noise_seed")
    m["init_noise_sigma"] = res.pop("_init_noise_sigma")
    m["steps"] = res.pop("_steps")
    nlog = res.pop("_noise_log")
    m["noise_draws"] = noise_manifest(nlog)
    m["rollout"] = ROLLOUT
    inp.update(noise_inputs(nlog))
    # order inputs like the fixtures: x_T_noise, model_output.*, noise.*
    inp = {k: inp[k] for k in ["x_T_noise"] + sorted(k for k in inp if k.startswith("model_output"))
           + sorted(k for k in inp if k.startswith("noise."))}
    tols = {}
    for k, v in res.items():
        if not v.is_floating_point() or k == "timesteps":
            continue
        if k in ("alphas_cumprod", "betas"):
            rel = 1e-7
        elif k in ("sigmas", "x_T"):
            rel = 1e-6
        else:
            rel = 1e-5
        tols[k] = tol_sched(v, rel)
    write_case(name, m, inp, res, tols)


def gen_sched_cases():
    s = SEED_CASES + 400
    shp = (2, 4, 6, 6)
    gen_sched_case("own_sched_lcm_4steps", "LCMScheduler (from SD1.5 config), set_timesteps(4); noise drawn between "
                   "steps recorded; batch 2", LCMScheduler, SD15_PNDM_SCHEDULER, {}, 4, shp, s)
    gen_sched_case("own_sched_dpmpp_2m_karras_8steps", "DPMSolverMultistepScheduler dpmsolver++ order 2 karras=True "
                   "8 steps (from SD1.5 config)", DPMSolverMultistepScheduler, SD15_PNDM_SCHEDULER,
                   {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, 8, shp, s + 100)
    gen_sched_case("own_sched_euler_turbo_1step", "EulerDiscreteScheduler with the stabilityai/sd-turbo config "
                   "(trailing), 1 step", EulerDiscreteScheduler, SD_TURBO_EULER, {}, 1, shp, s + 200)
    gen_sched_case("own_sched_euler_a_6steps", "EulerAncestralDiscreteScheduler (from SD1.5 config, linspace "
                   "spacing), 6 steps; noise recorded", EulerAncestralDiscreteScheduler, SD15_PNDM_SCHEDULER,
                   {"timestep_spacing": "linspace"}, 6, shp, s + 300)
    gen_sched_case("own_sched_ddim_eta0.5_6steps", "DDIMScheduler (from SD1.5 config) eta=0.5 (step_kwargs), 6 steps;"
                   " variance noise recorded", DDIMScheduler, SD15_PNDM_SCHEDULER, {}, 6, shp, s + 400,
                   step_kwargs={"eta": 0.5})
    gen_sched_case("own_sched_tcd_g0.5_vpred_strength0.6_5steps", "TCDScheduler (from SD1.5 config, prediction_type "
                   "v_prediction), set_timesteps(5, strength=0.6) (int(50*0.6) = 30 origin steps), gamma 0.5 "
                   "(step_kwargs eta); noise drawn inside step() recorded (every step but the last); batch 2, 6x6",
                   TCDScheduler, SD15_PNDM_SCHEDULER, {"prediction_type": "v_prediction"}, 5, shp, s + 500,
                   step_kwargs={"eta": 0.5}, strength=0.6)


def gen_pipe_case(name, desc, pipeline, model, sched_cfg, call_kwargs, seed, latents_shape=None, image=None):
    if not wanted(name):
        return
    m = {"name": name, "description": desc, "call_kwargs": call_kwargs, "generator_seed": seed,
         "scheduler_config": sched_cfg, "pipeline": pipeline, "model_dir": f"models/{model}"}
    inp = {}
    if latents_shape:
        inp["latents"] = randn(latents_shape, seed)
    if image is not None:
        inp["image"] = image
    r32 = run_pipe(m, inp, DATA, torch.float32, record=True)
    nlog = r32.pop("_noise_log")
    inp.update(noise_inputs(nlog))
    r64 = run_pipe(m, inp, DATA, torch.float64)
    r64.pop("_noise_log")
    r64.pop("_steps")
    m["steps"] = r32.pop("_steps")
    m["noise_draws"] = noise_manifest(nlog)
    m["layouts"] = LAYOUTS
    order = ["image_np", "final_latents", "prompt_embeds", "negative_prompt_embeds"]
    keys = [k for k in order if k in r32] + sorted(k for k in r32 if k.startswith("step_")) + ["timesteps"]
    e32 = {k: r32[k] for k in keys}
    floors = {k: (2e-5 if k.endswith("prompt_embeds") else 1e-4) for k in e32}
    # manifest key order as in the fixtures
    notes = []
    if sched_cfg.get("_class_name") == "EulerDiscreteScheduler":
        notes.append(EULER_NOISE_NOTE)
    if pipeline == "StableDiffusionImg2ImgPipeline":
        notes.append("timesteps = the scheduler's full schedule after set_timesteps(num_inference_steps) (as in the "
                     "fixtures); img2img runs only its tail, the steps actually run are steps[i].t")
    if notes:
        m["notes"] = " ".join(notes)
    man = {k: m[k] for k in ("name", "description", "call_kwargs", "generator_seed", "scheduler_config", "steps",
                             "noise_draws", "layouts", "pipeline", "model_dir", "notes") if k in m}
    write_case(name, man, inp, e32, net_tols(e32, r64, floors=floors))


def gen_pipe_cases():
    s = SEED_CASES + 500
    lcm_cfg = read_json(DATA / "models/tiny-sd15/scheduler/scheduler_config.json")
    gen_pipe_case("own_pipe_txt2img_lcm_2steps", "StableDiffusionPipeline + LCMScheduler, 2 steps, guidance 1.0 "
                  "(no CFG), 24x32 (non-square)", "StableDiffusionPipeline", "tiny-sd15", lcm_cfg,
                  {"prompt": PROMPTS[0], "num_inference_steps": 2, "guidance_scale": 1.0, "height": 24, "width": 32},
                  s + 1, latents_shape=(1, 4, 12, 16))
    dpm = DPMSolverMultistepScheduler.from_config(SD15_PNDM_SCHEDULER, algorithm_type="dpmsolver++", solver_order=2)
    gen_pipe_case("own_pipe_txt2img_dpmpp_cfg_3steps", "StableDiffusionPipeline + DPMSolverMultistepScheduler("
                  "dpmsolver++, order 2), 3 steps, CFG 7.5, negative prompt, 32x24", "StableDiffusionPipeline",
                  "tiny-sd15", sched_config_dict(dpm),
                  {"prompt": PROMPTS[1], "negative_prompt": NEG_PROMPT, "num_inference_steps": 3,
                   "guidance_scale": 7.5, "height": 32, "width": 24}, s + 2, latents_shape=(1, 4, 16, 12))
    eul_cfg = read_json(DATA / "models/tiny-sd2/scheduler/scheduler_config.json")
    gen_pipe_case("own_pipe_img2img_euler_strength0.6", "StableDiffusionImg2ImgPipeline on tiny-sd2 (SD2-style UNet, "
                  "gelu CLIP, pad '!') + EulerDiscreteScheduler (sd-turbo config), num_inference_steps 5, strength "
                  "0.6, guidance 0.0, 24x32 image", "StableDiffusionImg2ImgPipeline", "tiny-sd2", eul_cfg,
                  {"prompt": PROMPTS[0], "num_inference_steps": 5, "strength": 0.6, "guidance_scale": 0.0},
                  s + 3, image=synth_image(1, 24, 32, s + 4))
    tcd = TCDScheduler.from_config(SD15_PNDM_SCHEDULER)
    gen_pipe_case("own_pipe_img2img_tcd_strength0.6", "StableDiffusionImg2ImgPipeline on tiny-sd15 + TCDScheduler "
                  "(from SD1.5 config), num_inference_steps 4, strength 0.6 (runs t = 499, 259), eta (gamma) 0.3, "
                  "guidance 1.0 (no CFG), 32x24 image", "StableDiffusionImg2ImgPipeline", "tiny-sd15",
                  sched_config_dict(tcd),
                  {"prompt": PROMPTS[1], "num_inference_steps": 4, "strength": 0.6, "guidance_scale": 1.0,
                   "eta": 0.3}, s + 5, image=synth_image(1, 32, 24, s + 6))


# ---- ControlNet (models/controlnet-*, cases own_controlnet_* / own_pipe_controlnet_*) ---------------------------
# name: (base model folder, seed offset, ControlNetModel.from_unet arguments)
CONTROLNETS = {
    "controlnet-tiny-sd15": ("tiny-sd15", 1, dict(conditioning_embedding_out_channels=(4, 8))),
    "controlnet-tiny-sd15-bgr": ("tiny-sd15", 2, dict(conditioning_embedding_out_channels=(8, 8),
                                                      controlnet_conditioning_channel_order="bgr")),
    "controlnet-tiny-sd2": ("tiny-sd2", 3, dict(conditioning_embedding_out_channels=(4, 8))),
    "controlnet-tiny-sdxl": ("tiny-sdxl", 4, dict(conditioning_embedding_out_channels=(4, 8))),
}
CN_ACT_SEMANTICS = {
    "act.time_embedding": "the ControlNet's own TimestepEmbedding output",
    "act.conv_in": "conv_in(sample), before the conditioning embedding is added",
    "act.controlnet_cond_embedding": "ControlNetConditioningEmbedding(controlnet_cond) (bgr nets: channels flipped first)",
    "act.down_blocks.i": "down block i output; .res_samples.j its j-th skip tensor (before controlnet_down_blocks)",
    "act.mid_block": "mid block output (before controlnet_mid_block)",
}


def build_controlnets():
    """ControlNetModel.from_unet of the tiny UNets (weights copied from the UNet), the zero-initialised convs given
    PyTorch's default conv init (so the residuals are not 0), then the N(0, 0.02^2) perturbation; F32 (the SDXL
    one F16)."""
    for name, (base, off, kw) in CONTROLNETS.items():
        unet = load_unet(DATA / "models" / base / "unet", torch.float32)
        seed = SEED_CONTROLNET + off
        torch.manual_seed(seed)
        cn = ControlNetModel.from_unet(unet, **kw)
        with torch.no_grad():
            for mod in [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]:
                mod.reset_parameters()
        perturb_(cn, seed + SEED_PERTURB)
        f16 = name.endswith("sdxl")  # stored F16 (rounded first: the references use the rounded weights)
        if f16:
            fp16_round_(cn)
        shutil.rmtree(DATA / "models" / name, ignore_errors=True)
        save_diffusers_model(cn, DATA / "models" / name, torch.float16 if f16 else torch.float32)
        log(f"  models/{name}: written")


def controlnet_key_to_ldm(k, cfg):
    """diffusers ControlNetModel key -> lllyasviel ControlNet v1.x (cldm) key without control_model."""
    n = len(cfg["conditioning_embedding_out_channels"])
    r = re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(.+)", k)
    if r:
        return f"input_hint_block.0.{r[1]}"
    r = re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", k)
    if r:
        return f"input_hint_block.{2 * (int(r[1]) + 1)}.{r[2]}"
    r = re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(.+)", k)
    if r:
        return f"input_hint_block.{2 * (2 * (n - 1) + 1)}.{r[1]}"
    r = re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", k)
    if r:
        return f"zero_convs.{r[1]}.0.{r[2]}"
    r = re.fullmatch(r"controlnet_mid_block\.(.+)", k)
    if r:
        return f"middle_block_out.0.{r[1]}"
    return unet_key_to_ldm(k, cfg)


def build_controlnet_single_file(name="controlnet-tiny-sd15"):
    root = DATA / "models" / name
    cfg = read_json(root / "config.json")
    sd = st_load(root / "diffusion_pytorch_model.safetensors")
    out = {"control_model." + controlnet_key_to_ldm(k, cfg): v for k, v in sd.items()}
    if len(out) != len(sd):
        raise RuntimeError(f"{name}: single-file key collision")
    path = DATA / "models" / f"{name}-single.safetensors"
    st_save(path, out)
    log(f"  models/{path.name}: {len(out)} tensors")


def verify_controlnet_single_file(name="controlnet-tiny-sd15"):
    """diffusers' own ControlNetModel.from_single_file(path, config=<the folder>) must give the folder's weights."""
    path = DATA / "models" / f"{name}-single.safetensors"
    try:
        cn = ControlNetModel.from_single_file(str(path), config=str(DATA / "models" / name), local_files_only=True)
    except Exception as e:  # noqa: BLE001
        log(f"  {path.name}: diffusers from_single_file FAILED: {type(e).__name__}: {e}")
        return False
    ref = st_load(DATA / "models" / name / "diffusion_pytorch_model.safetensors")
    got = cn.state_dict()
    bad = [k for k in ref if k not in got or not torch.equal(got[k].float(), ref[k].float())]
    # diffusers' convert_controlnet_checkpoint hard-codes conv_out = input_hint_block.14 (the 4-level embedding of
    # the real nets); this 2-level net has it at input_hint_block.6, which diffusers leaves unloaded
    known = {"controlnet_cond_embedding.conv_out.weight", "controlnet_cond_embedding.conv_out.bias"}
    log(f"  {path.name}: diffusers from_single_file: {len(ref) - len(bad)}/{len(ref)} tensors equal the folder's"
        + (" (all but conv_out: diffusers reads it only from input_hint_block.14, the 4-level layout)"
           if set(bad) == known else ""))
    return not bad or set(bad) == known


def edge_image(b, h, w, seed):
    """A synthetic control image in [0,1] (NCHW): thin bright lines (a rectangle outline and a diagonal) on a dark
    background with a little colour noise, like an edge map."""
    g = gen(seed)
    out = 0.05 * torch.rand(b, 3, h, w, generator=g)
    for i in range(b):
        y0, x0 = h // 4 + i, w // 5
        out[i, :, y0, x0:w - x0] = 1.0
        out[i, :, h - y0, x0:w - x0] = 1.0
        out[i, :, y0:h - y0 + 1, x0] = 1.0
        out[i, :, y0:h - y0 + 1, w - x0 - 1] = 1.0
        for k in range(min(h, w)):
            out[i, k % 3, k, (k * w) // h] = 0.9
    return out.clamp(0, 1)


def gen_controlnet_case(name, desc, net, base, sample_shape, timesteps, scale, seed, time_ids=None):
    if not wanted(name):
        return
    cfg = read_json(DATA / "models" / net / "config.json")
    ucfg = read_json(DATA / "models" / base / "unet" / "config.json")
    f = 2 ** (len(cfg["conditioning_embedding_out_channels"]) - 1)
    B, _, h, w = sample_shape
    m = {"name": name, "description": desc, "model_dir": f"models/{net}", "unet_dir": f"models/{base}/unet",
         "call": "down, mid = ControlNetModel.forward(sample, timestep (int64 [B]), encoder_hidden_states, "
                 "controlnet_cond, conditioning_scale, guess_mode=False, return_dict=False); unet_out_sample = "
                 "UNet2DConditionModel(unet_dir).forward(sample, timestep, encoder_hidden_states, "
                 "down_block_additional_residuals=down, mid_block_additional_residual=mid)",
         "conditioning_scale": scale,
         "config": {k: cfg[k] for k in ("block_out_channels", "layers_per_block", "down_block_types",
                                         "cross_attention_dim", "attention_head_dim", "norm_num_groups",
                                         "use_linear_projection", "conditioning_embedding_out_channels",
                                         "controlnet_conditioning_channel_order") if k in cfg},
         "activation_semantics": CN_ACT_SEMANTICS}
    inp = {"sample": randn(sample_shape, seed), "timestep": torch.tensor(timesteps, dtype=torch.int64),
           "encoder_hidden_states": randn((B, 77, ucfg["cross_attention_dim"]), seed + 1),
           "controlnet_cond": edge_image(B, h * f, w * f, seed + 2),
           "conditioning_scale": torch.tensor([scale], dtype=torch.float32)}
    if time_ids is not None:  # SDXL: pooled text embedding + micro-conditioning time ids
        P = ucfg["projection_class_embeddings_input_dim"] - 6 * ucfg["addition_time_embed_dim"]
        inp["text_embeds"] = randn((B, P), seed + 3)
        inp["time_ids"] = torch.tensor(time_ids, dtype=torch.float32)
        m["call"] += " (SDXL: added_cond_kwargs={text_embeds, time_ids} to both)"
    nb = len(cfg["block_out_channels"])
    hooks = ["time_embedding", "conv_in", "controlnet_cond_embedding"] + [f"down_blocks.{i}" for i in range(nb)] + \
        ["mid_block"]
    e32 = run_controlnet(m, inp, DATA, torch.float32, hooks)
    e64 = run_controlnet(m, inp, DATA, torch.float64, hooks)
    write_case(name, m, inp, e32, net_tols(e32, e64))


def gen_controlnet_pipe_case(name, desc, pipeline, model, nets, sched_cfg, call_kwargs, seed, latents_shape=None,
                             image=None, control_seed=0):
    if not wanted(name):
        return
    H, W = call_kwargs["height"], call_kwargs["width"]
    m = {"name": name, "description": desc, "pipeline": pipeline, "model_dir": f"models/{model}",
         "controlnet_dirs": [f"models/{n}" for n in nets], "call_kwargs": call_kwargs, "generator_seed": seed,
         "scheduler_config": sched_cfg}
    inp, tk = {}, {}
    if latents_shape:
        inp["latents"] = randn(latents_shape, seed)
        tk["latents"] = "latents"
    if image is not None:
        inp["image"] = image
        tk["image"] = "image"
    names = [f"control_image.{j:03d}" for j in range(len(nets))]
    for j, n in enumerate(names):
        inp[n] = edge_image(1, H, W, control_seed + j) if j % 2 == 0 else synth_image(1, H, W, control_seed + j)
    arg = "control_image" if "Img2Img" in pipeline else "image"
    tk[arg] = names if len(nets) > 1 else names[0]
    m["tensor_call_kwargs"] = tk
    r32 = run_pipe(m, inp, DATA, torch.float32, record=True)
    nlog = r32.pop("_noise_log")
    inp.update(noise_inputs(nlog))
    r64 = run_pipe(m, inp, DATA, torch.float64)
    r64.pop("_noise_log")
    r64.pop("_steps")
    m["steps"] = r32.pop("_steps")
    m["noise_draws"] = noise_manifest(nlog)
    m["layouts"] = dict(LAYOUTS, **{"control_image*": "NCHW float32 in [0,1], passed unchanged (same size) = "
                                                     "controlnet_cond.NNN (CFG: cat([img, img]))"})
    order = ["image_np", "final_latents", "prompt_embeds", "negative_prompt_embeds"]
    keys = [k for k in order if k in r32] + sorted(k for k in r32 if k.startswith("step")) + \
        sorted(k for k in r32 if k.startswith("controlnet_cond")) + ["timesteps"]
    e32 = {k: r32[k] for k in keys}
    floors = {k: (2e-5 if k.endswith("prompt_embeds") or k.startswith("controlnet_cond") else 1e-4) for k in e32}
    m["semantics"] = {
        "controlnet": "per step i of N (steps run) and net j: scale_j = controlnet_conditioning_scale_j * keep_j(i), "
                      "keep = 1 - float(i/N < control_guidance_start_j or (i+1)/N > control_guidance_end_j); the "
                      "residuals of all nets are summed (step.000.*additional_residual* = the sums fed to the UNet at "
                      "step 0) and added to the UNet skips / mid output",
        "step.i.unet_sample / unet_timestep / unet_out": "the UNet call of step i (CFG-duplicated, scaled input; raw "
                                                         "output before guidance)"}
    man = {k: m[k] for k in ("name", "description", "pipeline", "model_dir", "controlnet_dirs", "call_kwargs",
                             "tensor_call_kwargs", "generator_seed", "scheduler_config", "steps", "noise_draws",
                             "layouts", "semantics") if k in m}
    write_case(name, man, inp, e32, net_tols(e32, r64, floors=floors))


def gen_controlnet_cases():
    s = SEED_CASES + 700
    gen_controlnet_case("own_controlnet_sd15", "ControlNetModel.from_unet(tiny-sd15 UNet), conditioning embedding "
                        "[4, 8], batch 2 with timesteps [901, 37], non-square 8x12 latents (16x24 control image), "
                        "conditioning_scale 0.5; residuals and the UNet with them", "controlnet-tiny-sd15", "tiny-sd15",
                        (2, 4, 8, 12), [901, 37], 0.5, s + 1)
    gen_controlnet_case("own_controlnet_sd15_bgr", "ControlNetModel (tiny-sd15), controlnet_conditioning_channel_order"
                        " 'bgr' (control image channels flipped), conditioning embedding [8, 8], batch 1, scale 1.0",
                        "controlnet-tiny-sd15-bgr", "tiny-sd15", (1, 4, 12, 8), [500], 1.0, s + 2)
    gen_controlnet_case("own_controlnet_sd2", "ControlNetModel.from_unet(tiny-sd2 UNet: linear projection, upcast "
                        "attention, 3 levels, heads [1,2,2]), batch 3, timesteps [999, 400, 1], scale 1.3",
                        "controlnet-tiny-sd2", "tiny-sd2", (3, 4, 8, 16), [999, 400, 1], 1.3, s + 3)
    gen_controlnet_case("own_controlnet_sdxl", "SDXL ControlNetModel.from_unet(tiny-sdxl's UNet: text_time added "
                        "conditioning, transformer depth [1, 3, 2], linear projection, 3 levels), conditioning "
                        "embedding [4, 8], batch 2 with text_embeds and time ids, scale 0.75", "controlnet-tiny-sdxl",
                        "tiny-sdxl", (2, 4, 8, 12), [700, 20], 0.75, s + 4,
                        time_ids=[[16, 24, 0, 0, 16, 24], [64, 48, 4, 2, 16, 24]])
    lcm_cfg = read_json(DATA / "models/tiny-sd15/scheduler/scheduler_config.json")
    gen_controlnet_pipe_case("own_pipe_controlnet_txt2img_lcm", "StableDiffusionControlNetPipeline (tiny-sd15 + "
                             "controlnet-tiny-sd15) + LCMScheduler, 2 steps, guidance 1.0 (no CFG), scale 0.8, "
                             "24x32", "StableDiffusionControlNetPipeline", "tiny-sd15", ["controlnet-tiny-sd15"],
                             lcm_cfg, {"prompt": PROMPTS[0], "num_inference_steps": 2, "guidance_scale": 1.0,
                                       "controlnet_conditioning_scale": 0.8, "height": 24, "width": 32},
                             s + 10, latents_shape=(1, 4, 12, 16), control_seed=s + 11)
    ddim = DDIMScheduler.from_config(SD15_PNDM_SCHEDULER)
    gen_controlnet_pipe_case("own_pipe_controlnet_img2img_multi", "StableDiffusionControlNetImg2ImgPipeline (tiny-sd15"
                             " + MultiControlNetModel [controlnet-tiny-sd15, controlnet-tiny-sd15-bgr]) + DDIMScheduler"
                             " (eta 0), num_inference_steps 4, strength 0.75 (3 steps run), CFG 4.0 with negative "
                             "prompt, scales [0.9, 0.6], guidance start [0.0, 0.34], end [0.67, 1.0], 32x24",
                             "StableDiffusionControlNetImg2ImgPipeline", "tiny-sd15",
                             ["controlnet-tiny-sd15", "controlnet-tiny-sd15-bgr"], sched_config_dict(ddim),
                             {"prompt": PROMPTS[1], "negative_prompt": NEG_PROMPT, "num_inference_steps": 4,
                              "strength": 0.75, "guidance_scale": 4.0, "controlnet_conditioning_scale": [0.9, 0.6],
                              "control_guidance_start": [0.0, 0.34], "control_guidance_end": [0.67, 1.0],
                              "height": 32, "width": 24},
                             s + 20, image=synth_image(1, 32, 24, s + 21), control_seed=s + 22)
    if wanted("own_sdxl_pipe_controlnet_cfg"):
        gen_sdxl_pipe_case("own_sdxl_pipe_controlnet_cfg", "StableDiffusionXLControlNetPipeline (tiny-sdxl + "
                           "controlnet-tiny-sdxl) + EulerDiscreteScheduler (SDXL base config), 3 steps, CFG 3.0 with "
                           "negative prompt, scale 0.8, control_guidance_end 0.7 (off at the last step), 16x24",
                           "StableDiffusionXLControlNetPipeline", SDXL_BASE_EULER,
                           {"prompt": PROMPTS[0], "negative_prompt": NEG_PROMPT, "num_inference_steps": 3,
                            "guidance_scale": 3.0, "controlnet_conditioning_scale": 0.8, "control_guidance_end": 0.7,
                            "height": 16, "width": 24}, s + 40, latents_shape=(1, 4, 8, 12),
                           controlnets=["controlnet-tiny-sdxl"], control_image=edge_image(1, 16, 24, s + 41))
    eul_cfg = read_json(DATA / "models/tiny-sd2/scheduler/scheduler_config.json")
    gen_controlnet_pipe_case("own_pipe_controlnet_sd2_euler", "StableDiffusionControlNetPipeline (tiny-sd2 + "
                             "controlnet-tiny-sd2) + EulerDiscreteScheduler (sd-turbo config), 2 steps, guidance 0, "
                             "scale 1.1, 16x32", "StableDiffusionControlNetPipeline", "tiny-sd2",
                             ["controlnet-tiny-sd2"], eul_cfg,
                             {"prompt": PROMPTS[1], "num_inference_steps": 2, "guidance_scale": 0.0,
                              "controlnet_conditioning_scale": 1.1, "height": 16, "width": 32},
                             s + 30, latents_shape=(1, 4, 8, 16), control_seed=s + 31)


def gen_stream_case(validated_note, name="own_stream_img2img_self", model="tiny-sd15", t_index_list=(20, 40),
                    cfg_type="self", guidance=1.2, delta=0.8, seed=SEED_CASES + 601, n_calls=6, W=32, H=32,
                    mode="img2img", prompt="a watercolor painting of a lighthouse", negative="ugly, blurry"):
    t_index_list = list(t_index_list)
    sc = {"t_index_list": t_index_list, "use_denoising_batch": True, "frame_buffer_size": 1, "cfg_type": cfg_type,
          "width": W, "height": H, "torch_dtype": "float32", "do_add_noise": True}
    pk = {"prompt": prompt, "negative_prompt": negative,
          "num_inference_steps": 50, "guidance_scale": guidance, "delta": delta, "seed": seed,
          "generator": "torch.Generator() (seeded by prepare via seed=)"}
    n = len(t_index_list)
    ub = n + (n if cfg_type == "full" else 1 if cfg_type == "initialize" else 0) if guidance > 1 else n
    sdxl = model == "tiny-sdxl"
    m = {"name": name, "description": f"StreamDiffusion {mode}, t_index_list {t_index_list}, cfg_type '{cfg_type}', "
                                      f"guidance {guidance}, delta {delta}, {W}x{H} ({W // 8}x{H // 8} latents), "
                                      f"{model} + taesd-tiny"
                                      + (" (SDXL: added_cond_kwargs per UNet row, StreamRef's docstring)" if sdxl else ""),
         "stream_constructor": sc, "prepare_kwargs": pk, "effective_guidance_scale": guidance, "batch_size": n,
         "unet_batch_size": ub, "mode": mode, "n_calls": n_calls, "pipeline_latency_calls": n - 1,
         "calls": [{"call": c, **{k: f"call.{c:03d}.{k}" for k in CALL_KEYS}} for c in range(n_calls)],
         "noise_draws": [{"key": "noise.000", "shape": [n, 4, H // 8, W // 8], "drawn_by": "streamdiffusion.pipeline.prepare",
                          "via": "torch.randn"}],
         "components": {"pipe_dir": f"models/{model} (text_encoder{', text_encoder_2' if sdxl else ''}, tokenizer"
                                    f"{', tokenizer_2' if sdxl else ''}, unet)",
                        "vae": "models/taesd-tiny (AutoencoderTiny, TAESD architecture with 8 channels, random F16 weights)",
                        "scheduler": "LCMScheduler.from_config(pipe.scheduler.config); set_timesteps(50)"},
         "_generator_extra": {"stream_reference": validated_note}}
    inp = {}
    if mode == "img2img":
        inp = {f"frame.{c:03d}": synth_image(1, H, W, seed + 1, phase=0.35 * c) for c in range(n_calls)}
    inp["noise.000"] = torch.randn((n, 4, H // 8, W // 8), generator=gen(seed))
    if mode == "txt2img":  # the latent noise of each call (StreamDiffusion.txt2img: torch.randn per call)
        for c in range(n_calls):
            inp[f"noise.{c + 1:03d}"] = torch.randn((1, 4, H // 8, W // 8), generator=gen(seed + 10 + c))
        m["noise_draws"] += [{"key": f"noise.{c + 1:03d}", "shape": [1, 4, H // 8, W // 8],
                              "drawn_by": "streamdiffusion.pipeline.txt2img", "via": "torch.randn"}
                             for c in range(n_calls)]
    e32 = run_stream(m, inp, DATA, torch.float32)
    e64 = run_stream(m, inp, DATA, torch.float64)
    floors = {k: (2e-5 if k in STREAM_PREP_KEYS else 1e-4) for k in e32}
    write_case(name, m, inp, e32, net_tols(e32, e64, floors=floors))


# ----------------------------------------------------------------------------------------------------------
# stream re-implementation validation on the fixtures
def validate_stream_on_fixtures(names=None):
    cases = sorted((FIX / "cases").glob("stream_*")) if (FIX / "cases").is_dir() else []
    if names:
        cases = [c for c in cases if c.name in names]
    if not cases:
        log(f"  stream validation SKIPPED: no fixture stream cases under {FIX}")
        return None
    worst = {}
    ok = True
    for c in cases:
        kind, n, bad, w = compare_case(c, FIX)
        worst[c.name] = w
        ok &= bad == 0
        log(f"  fixture {c.name}: {n} tensors, {bad} out of tolerance, worst err/tol {w:.3f}")
    return ok, worst


# ----------------------------------------------------------------------------------------------------------
# single-file (original LDM / CompVis) checkpoints
RESNET_LDM = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
              ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def unet_key_to_ldm(k, cfg):
    """diffusers UNet2DConditionModel key -> original LDM openaimodel key (without model.diffusion_model.)."""
    L = cfg["layers_per_block"]
    simple = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
              "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    mod, p = k.rsplit(".", 1)
    if mod in simple:
        return f"{simple[mod]}.{p}"

    def res(rest):
        for a, b in RESNET_LDM:
            if rest.startswith(a + "."):
                return b + rest[len(a):]
        raise KeyError(k)

    r = re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k)
    if r:
        b, j = int(r[1]), int(r[2])
        return f"input_blocks.{1 + b * (L + 1) + j}.0.{res(r[3])}"
    r = re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", k)
    if r:
        b, j = int(r[1]), int(r[2])
        return f"input_blocks.{1 + b * (L + 1) + j}.1.{r[3]}"
    r = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k)
    if r:
        return f"input_blocks.{(int(r[1]) + 1) * (L + 1)}.0.op.{r[2]}"
    r = re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", k)
    if r:
        return f"middle_block.{0 if r[1] == '0' else 2}.{res(r[2])}"
    r = re.fullmatch(r"mid_block\.attentions\.0\.(.+)", k)
    if r:
        return f"middle_block.1.{r[1]}"
    r = re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k)
    if r:
        b, j = int(r[1]), int(r[2])
        return f"output_blocks.{b * (L + 1) + j}.0.{res(r[3])}"
    r = re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", k)
    if r:
        b, j = int(r[1]), int(r[2])
        return f"output_blocks.{b * (L + 1) + j}.1.{r[3]}"
    r = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k)
    if r:
        b = int(r[1])
        has_attn = cfg["up_block_types"][b].startswith("CrossAttn")
        return f"output_blocks.{b * (L + 1) + L}.{2 if has_attn else 1}.conv.{r[2]}"
    raise KeyError(k)


def vae_key_to_ldm(k, cfg):
    """diffusers AutoencoderKL key -> original LDM autoencoder key (without first_stage_model.); the second value
    says whether the tensor must be reshaped from Linear [C,C] to 1x1 conv [C,C,1,1]."""
    n = len(cfg["block_out_channels"])
    simple = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
    mod, p = k.rsplit(".", 1)
    if mod in simple:
        return f"{simple[mod]}.{p}", False
    if mod in ("encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out", "quant_conv",
               "post_quant_conv"):
        return k, False

    def res(rest):
        return rest.replace("conv_shortcut", "nin_shortcut")

    r = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k)
    if r:
        return f"encoder.down.{r[1]}.block.{r[2]}.{res(r[3])}", False
    r = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k)
    if r:
        return f"encoder.down.{r[1]}.downsample.conv.{r[2]}", False
    r = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", k)
    if r:
        return f"decoder.up.{n - 1 - int(r[1])}.block.{r[2]}.{res(r[3])}", False
    r = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k)
    if r:
        return f"decoder.up.{n - 1 - int(r[1])}.upsample.conv.{r[2]}", False
    r = re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", k)
    if r:
        return f"{r[1]}.mid.block_{int(r[2]) + 1}.{res(r[3])}", False
    r = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", k)
    if r:
        sub = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}[r[2]]
        return f"{r[1]}.mid.attn_1.{sub}.{r[3]}", r[2] != "group_norm" and r[3] == "weight"
    raise KeyError(k)


def clip_to_openclip(sd, n_layers):
    """transformers CLIPTextModel(WithProjection) hub keys -> OpenCLIP keys (without cond_stage_model.model.)."""
    out = {"token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": sd["text_model.final_layer_norm.weight"],
           "ln_final.bias": sd["text_model.final_layer_norm.bias"]}
    if "text_projection.weight" in sd:
        out["text_projection"] = sd["text_projection.weight"].t().contiguous()  # OpenCLIP: x @ text_projection
    for i in range(n_layers):
        a, b = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        out[b + "ln_1.weight"], out[b + "ln_1.bias"] = sd[a + "layer_norm1.weight"], sd[a + "layer_norm1.bias"]
        out[b + "ln_2.weight"], out[b + "ln_2.bias"] = sd[a + "layer_norm2.weight"], sd[a + "layer_norm2.bias"]
        out[b + "attn.in_proj_weight"] = torch.cat([sd[a + f"self_attn.{q}_proj.weight"] for q in "qkv"], 0)
        out[b + "attn.in_proj_bias"] = torch.cat([sd[a + f"self_attn.{q}_proj.bias"] for q in "qkv"], 0)
        out[b + "attn.out_proj.weight"] = sd[a + "self_attn.out_proj.weight"]
        out[b + "attn.out_proj.bias"] = sd[a + "self_attn.out_proj.bias"]
        out[b + "mlp.c_fc.weight"], out[b + "mlp.c_fc.bias"] = sd[a + "mlp.fc1.weight"], sd[a + "mlp.fc1.bias"]
        out[b + "mlp.c_proj.weight"], out[b + "mlp.c_proj.bias"] = sd[a + "mlp.fc2.weight"], sd[a + "mlp.fc2.bias"]
    used = 4 + ("text_projection.weight" in sd) + 16 * n_layers
    if used != len(sd):
        raise RuntimeError(f"OpenCLIP mapping used {used} of {len(sd)} text encoder tensors")
    return out


def ldm_unet_vae(root):
    """A diffusers folder's unet/ and vae/ under their single-file names (model.diffusion_model.*,
    first_stage_model.*) and the two tensor counts."""
    ucfg = read_json(root / "unet/config.json")
    vcfg = read_json(root / "vae/config.json")
    out = {}
    usd = st_load(root / "unet/diffusion_pytorch_model.safetensors")
    for k, v in usd.items():
        out["model.diffusion_model." + unet_key_to_ldm(k, ucfg)] = v
    vsd = st_load(root / "vae/diffusion_pytorch_model.safetensors")
    for k, v in vsd.items():
        lk, conv = vae_key_to_ldm(k, vcfg)
        out["first_stage_model." + lk] = v[:, :, None, None] if conv else v
    return out, len(usd), len(vsd)


def build_single_file(model):
    root = DATA / "models" / model
    tcfg = read_json(root / "text_encoder/config.json")
    out, n_unet, n_vae = ldm_unet_vae(root)
    tsd = st_load(root / "text_encoder/model.safetensors")
    if model == "tiny-sd15":
        tout = {"cond_stage_model.transformer." + k: v for k, v in tsd.items()}
    else:
        tout = {"cond_stage_model.model." + k: v for k, v in clip_to_openclip(tsd, tcfg["num_hidden_layers"]).items()}
    out.update(tout)
    if len(out) != n_unet + n_vae + len(tout):
        raise RuntimeError(f"{model}: single-file key collision ({len(out)} keys)")
    path = DATA / "models" / f"{model}-single.safetensors"
    st_save(path, out)
    log(f"  models/{path.name}: {len(out)} tensors")


def compare_state(label, ref, got, n, bad):
    """Every tensor of ref equal in got (name, shape, values) and nothing more in got: the running counts."""
    for k, v in ref.items():
        n += 1
        if k not in got or tuple(got[k].shape) != tuple(v.shape) or not torch.equal(got[k].float(), v.float()):
            bad += 1
            if bad < 5:
                log(f"    {label}.{k} differs")
    extra = set(got) - set(ref)
    if extra:
        bad += len(extra)
        log(f"    {label} has unexpected {sorted(extra)[:3]}")
    return n, bad


def verify_single_file(model):
    """Loads the single-file checkpoint with diffusers' own from_single_file (config = the tiny diffusers folder,
    offline) and checks every weight against the folder's files. text_projection (SD2, dropped by diffusers'
    OpenCLIP converter) is checked with the inverse of our mapping."""
    root = DATA / "models" / model
    path = DATA / "models" / f"{model}-single.safetensors"
    pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(root), local_files_only=True,
                                                    torch_dtype=torch.float32, safety_checker=None,
                                                    requires_safety_checker=False)
    n = bad = 0
    for comp, fn in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                     ("text_encoder", "model.safetensors")):
        ref = st_load(root / comp / fn)
        got = clip_state_dict_hub(getattr(pipe, comp)) if comp == "text_encoder" else getattr(pipe, comp).state_dict()
        if "text_projection.weight" not in got:
            ref.pop("text_projection.weight", None)
        n, bad = compare_state(f"{model}-single: {comp}", ref, got, n, bad)
    # negative control: the weights really come from the single file (not from the config folder's files)
    ck = st_load(path)
    probe = {"unet": ("model.diffusion_model.out.2.bias", "conv_out.bias"),
             "vae": ("first_stage_model.decoder.conv_out.bias", "decoder.conv_out.bias"),
             "text_encoder": (("cond_stage_model.transformer.text_model.final_layer_norm.bias"
                               if model == "tiny-sd15" else "cond_stage_model.model.ln_final.bias"),
                              "final_layer_norm.bias")}
    tmp = DATA / "models" / f".{model}-probe.safetensors"
    mod = dict(ck)
    for lk, _ in probe.values():
        mod[lk] = ck[lk] + 1.0
    st_save(tmp, mod)
    try:
        p2 = StableDiffusionPipeline.from_single_file(str(tmp), config=str(root), local_files_only=True,
                                                      torch_dtype=torch.float32, safety_checker=None,
                                                      requires_safety_checker=False)
        for comp, (lk, dk) in probe.items():
            sd = getattr(p2, comp).state_dict()
            dk = next(k for k in sd if k.endswith(dk))
            n += 1
            if not torch.equal(sd[dk], mod[lk].float()):
                bad += 1
                log(f"    {model}-single: negative control failed for {comp} ({dk} not taken from the file)")
    finally:
        tmp.unlink()
    if model == "tiny-sd2":
        ref = st_load(root / "text_encoder/model.safetensors")["text_projection.weight"]
        n += 1
        if not torch.equal(ck["cond_stage_model.model.text_projection"].t(), ref):
            bad += 1
            log(f"    {model}-single: text_projection differs")
    log(f"  {path.name}: StableDiffusionPipeline.from_single_file(config={root.relative_to(REPO)}): "
        f"{n} tensors compared, {bad} differ")
    return bad == 0


def sdxl_asym_folder(tmp):
    """A diffusers folder view of tiny-sdxl with the distilled (SSD-1B / Vega-like) unet-sdxl-asym as its UNet."""
    root = DATA / "models" / "tiny-sdxl"
    for e in root.iterdir():
        (tmp / e.name).symlink_to(DATA / "models" / "unet-sdxl-asym" if e.name == "unet" else e)
    return tmp


def build_sdxl_single_file(model="tiny-sdxl", root=None):
    """The SDXL single file of the original SGM layout (sd_xl_base_1.0.safetensors): conditioner.embedders.0.transformer.
    text_model.* (CLIP ViT-L, transformers names), conditioner.embedders.1.model.* (OpenCLIP ViT-bigG: fused in_proj,
    text_projection [D,P]), model.diffusion_model.* (label_emb.0.{0,2} = add_embedding), first_stage_model.*."""
    root = root or DATA / "models" / model
    t2cfg = read_json(root / "text_encoder_2/config.json")
    out, n_unet, n_vae = ldm_unet_vae(root)
    t1 = st_load(root / "text_encoder/model.safetensors")  # flat (transformers 5): the file gets text_model.
    t1 = {("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in t1.items()}
    t1["text_model.embeddings.position_ids"] = torch.arange(t1["text_model.embeddings.position_embedding.weight"]
                                                            .shape[0]).unsqueeze(0)  # a buffer real files carry
    for k, v in t1.items():
        out["conditioner.embedders.0.transformer." + k] = v
    t2 = st_load(root / "text_encoder_2/model.safetensors")
    t2o = clip_to_openclip(t2, t2cfg["num_hidden_layers"])
    t2o["logit_scale"] = torch.tensor(4.6052)  # OpenCLIP's, unused by SDXL
    for k, v in t2o.items():
        out["conditioner.embedders.1.model." + k] = v
    if len(out) != n_unet + n_vae + len(t1) + len(t2o):
        raise RuntimeError(f"{model}: single-file key collision ({len(out)} keys)")
    path = DATA / "models" / f"{model}-single.safetensors"
    st_save(path, out)
    log(f"  models/{path.name}: {len(out)} tensors")


def verify_sdxl_single_file(model="tiny-sdxl", root=None):
    """diffusers' own StableDiffusionXLPipeline.from_single_file(config=<the folder>, offline) gives every weight of
    the folder (so the file has the real SGM key layout, text_projection transposed included)."""
    root = root or DATA / "models" / model
    path = DATA / "models" / f"{model}-single.safetensors"
    pipe = StableDiffusionXLPipeline.from_single_file(str(path), config=str(root), local_files_only=True,
                                                      torch_dtype=torch.float32, add_watermarker=False)
    n = bad = 0
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
        fn = "model.safetensors" if comp.startswith("text") else "diffusion_pytorch_model.safetensors"
        ref = {k[len("text_model."):] if k.startswith("text_model.") else k: v
               for k, v in st_load(root / comp / fn).items()}
        got = {k[len("text_model."):] if k.startswith("text_model.") else k: v
               for k, v in getattr(pipe, comp).state_dict().items() if not k.endswith("position_ids")}
        n, bad = compare_state(f"{model}-single: {comp}", ref, got, n, bad)
    log(f"  {path.name}: StableDiffusionXLPipeline.from_single_file(config={root.name}): "
        f"{n} tensors compared, {bad} differ")
    return bad == 0


def build_verify_sdxl_single_files(build=True):
    """tiny-sdxl-single (tiny-sdxl) and tiny-sdxl-asym-single (tiny-sdxl with the distilled unet-sdxl-asym)."""
    ok = True
    with tempfile.TemporaryDirectory() as td:
        asym = sdxl_asym_folder(Path(td))
        for model, root in (("tiny-sdxl", None), ("tiny-sdxl-asym", asym)):
            if build:
                build_sdxl_single_file(model, root)
            ok &= verify_sdxl_single_file(model, root)
    return ok


def verify_folder_loads(model):
    """The diffusers folder loads with diffusers' own from_pretrained (offline) and gives the same weights."""
    root = DATA / "models" / model
    pipe = StableDiffusionPipeline.from_pretrained(str(root), local_files_only=True, torch_dtype=torch.float32,
                                                   safety_checker=None)
    bad = 0
    for comp, fn in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                     ("text_encoder", "model.safetensors")):
        ref = st_load(root / comp / fn)
        got = clip_state_dict_hub(getattr(pipe, comp)) if comp == "text_encoder" else getattr(pipe, comp).state_dict()
        for k, v in ref.items():
            if k == "text_projection.weight":
                continue
            if k not in got or not torch.equal(got[k].float(), v.float()):
                bad += 1
    log(f"  models/{model}: StableDiffusionPipeline.from_pretrained OK ({type(pipe.scheduler).__name__}), "
        f"{bad} weight differences")
    return bad == 0


def verify_sdxl_folder_loads():
    """tiny-sdxl loads with diffusers' own StableDiffusionXLPipeline.from_pretrained (offline), every component
    with the stored weights (text_encoder/ has no text_model. prefix, as transformers 5 saves it)."""
    root = DATA / "models" / "tiny-sdxl"
    pipe = StableDiffusionXLPipeline.from_pretrained(str(root), local_files_only=True, torch_dtype=torch.float32,
                                                     add_watermarker=False)
    bad = 0
    for comp, fn in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                     ("text_encoder", "model.safetensors"), ("text_encoder_2", "model.safetensors")):
        ref = st_load(root / comp / fn)
        sd = getattr(pipe, comp).state_dict()
        got = {}
        for k, v in sd.items():  # compare without the text_model. prefix on both sides
            got[k[len("text_model."):] if k.startswith("text_model.") else k] = v
        for k, v in ref.items():
            k2 = k[len("text_model."):] if k.startswith("text_model.") else k
            if k2 not in got or not torch.equal(got[k2].float(), v.float()):
                bad += 1
    ok = bad == 0 and pipe.config.force_zeros_for_empty_prompt and type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    log(f"  models/tiny-sdxl: StableDiffusionXLPipeline.from_pretrained OK ({type(pipe.scheduler).__name__}), "
        f"{bad} weight differences")
    return ok


# ----------------------------------------------------------------------------------------------------------
# independent tokenizer check: transformers 5's CLIPTokenizer (tokenizers backend) differs from the slow Python
# tokenizer used for the fixtures on some exotic inputs, so every prompt used here is also tokenized with a
# minimal re-implementation of openai/CLIP simple_tokenizer BPE (ASCII prompts; no ftfy needed for them)
def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def simple_bpe_ids(text, tok_dir):
    if not text.isascii():
        raise ValueError("simple_bpe_ids handles ASCII prompts only")
    vocab = read_json(Path(tok_dir) / "vocab.json")
    merges = Path(tok_dir, "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    ranks = {tuple(m.split()): i for i, m in enumerate(merges) if m.strip()}
    be = _bytes_to_unicode()
    text = re.sub(r"\s+", " ", text).strip().lower()
    pat = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")
    ids = [vocab["<|startoftext|>"]]
    for tok in pat.findall(text):
        u = "".join(be[b] for b in tok.encode("utf-8"))
        word = tuple(u[:-1]) + (u[-1] + "</w>",)
        while len(word) > 1:
            best = min(zip(word, word[1:]), key=lambda pr: ranks.get(pr, float("inf")))
            if best not in ranks:
                break
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = tuple(out)
        ids += [vocab[w] for w in word]
    return ids + [vocab["<|endoftext|>"]]


def check_prompt_ids():
    prompts = set(PROMPTS) | {NEG_PROMPT}
    for c in (DATA / "cases").glob("own_*"):
        m = read_json(c / "manifest.json")
        for d in (m.get("call_kwargs", {}), m.get("prepare_kwargs", {})):
            prompts |= {d[k] for k in ("prompt", "negative_prompt") if d.get(k)}
    bad = 0
    for model in ("tiny-sd15", "tiny-sd2"):
        tdir = DATA / "models" / model / "tokenizer"
        tok = load_tokenizer(tdir)
        for p in sorted(prompts):
            a = tok(p, truncation=True, max_length=77).input_ids
            b = simple_bpe_ids(p, tdir)
            if a != b:
                bad += 1
                log(f"    tokenizer mismatch ({model}) for {p!r}: {a} vs {b}")
    log(f"  prompts: {len(prompts)} prompts x 2 tokenizers, transformers CLIPTokenizer == simple BPE: "
        f"{'yes' if not bad else f'{bad} mismatches'}")
    return bad == 0


def du(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def verify_all(crosscheck=False):
    ok = True
    log("verify: replaying every own case from its stored inputs/models")
    for c in sorted((DATA / "cases").iterdir()):
        r = compare_case(c, DATA)
        if r is None:
            log(f"  {c.name}: not replayable")
            ok = False
            continue
        kind, n, bad, w = r
        ok &= bad == 0
        log(f"  {c.name:40s} {kind:6s} {n:4d} tensors  {bad} failed  worst err/tol {w:.3g}")
    ok &= check_prompt_ids()
    log("verify: diffusers folder loading and single-file checkpoints")
    for mdl in ("tiny-sd15", "tiny-sd2"):
        ok &= verify_folder_loads(mdl)
        ok &= verify_single_file(mdl)
    ok &= verify_sdxl_folder_loads()
    ok &= build_verify_sdxl_single_files(build=False)
    ok &= verify_controlnet_single_file()
    log("verify: StreamDiffusion re-implementation vs the fixture stream cases")
    r = validate_stream_on_fixtures()
    if r is not None:
        ok &= r[0]
    if crosscheck:
        ok &= crosscheck_fixtures()
    log(f"tests/data size: {du(DATA) / 1e6:.2f} MB")
    return ok


def crosscheck_fixtures():
    """Replays every supported fixture case with the installed library versions (diffusers/transformers drift)."""
    if not (FIX / "cases").is_dir():
        log(f"crosscheck SKIPPED: no fixtures at {FIX}")
        return True
    log(f"crosscheck: replaying fixture cases ({FIX}) with diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}")
    ok = True
    TAP.lenient = True
    for c in sorted((FIX / "cases").iterdir()):
        TAP.notes = []
        try:
            r = compare_case(c, FIX)
        except Exception as e:  # report and continue
            log(f"  {c.name}: ERROR {type(e).__name__}: {e}")
            ok = False
            continue
        if r is None:
            log(f"  {c.name}: (kind not replayed here)")
            continue
        kind, n, bad, w = r
        ok &= bad == 0
        note = ("  NOTE: " + "; ".join(TAP.notes)) if TAP.notes else ""
        log(f"  {c.name:45s} {kind:6s} {n:4d} tensors  {bad} failed  worst err/tol {w:.3g}{note}")
    TAP.lenient = False
    return ok



# ---- SDXL (issue #17) -------------------------------------------------------------------------------------
SEED_XL_UNET, SEED_XL_TE1, SEED_XL_TE2, SEED_XL_VAE = 7401, 7402, 7403, 7404
SDXL_BASE_EULER = {  # stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
}
SDXL_TURBO_EULER_A = {  # stabilityai/sdxl-turbo scheduler/scheduler_config.json
    "_class_name": "EulerAncestralDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "trailing", "trained_betas": None,
}
# shapes differ from the fixture's tiny-sdxl on purpose: 3 levels of 8/16/24 channels, 4 GroupNorm groups,
# transformer depth [1, 3, 2] (not monotonic: the up path must use the reversed list), heads [1, 2, 4],
# text widths 8 + 12 = 20, addition_time_embed_dim 4, pooled width 10 -> 10 + 6 * 4 = 34
XL_UNET_CFG = dict(
    sample_size=16, in_channels=4, out_channels=4, block_out_channels=[8, 16, 24], layers_per_block=1,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 3, 2], attention_head_dim=[1, 2, 4], cross_attention_dim=20,
    norm_num_groups=4, use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=4,
    projection_class_embeddings_input_dim=34,
)
XL_TE1_CFG = dict(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=3, vocab_size=49408,
                  max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=0,
                  eos_token_id=2, pad_token_id=1, projection_dim=8)
XL_TE2_CFG = dict(hidden_size=12, intermediate_size=24, num_attention_heads=3, num_hidden_layers=3, vocab_size=49408,
                  max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=0,
                  eos_token_id=2, pad_token_id=1, projection_dim=10)
XL_VAE_CFG = dict(VAE_CFG, scaling_factor=0.13025, force_upcast=True)
XL_TIME_IDS = ("time ids per row: (original_height, original_width, crop_top, crop_left, target_height, "
               "target_width)")


def save_clip_flat(model, d, dtype, arch):
    """As transformers 5 save_pretrained writes a CLIPTextModel: no `text_model.` prefix (the loader must map it)."""
    save_clip(model, d, dtype, arch)
    sd = {k: v.to(dtype) for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}
    st_save(Path(d) / "model.safetensors", sd)


def build_sdxl_model():
    root = DATA / "models" / "tiny-sdxl"
    shutil.rmtree(root, ignore_errors=True)
    torch.manual_seed(SEED_XL_UNET)
    unet = UNet2DConditionModel(**XL_UNET_CFG)
    perturb_(unet, SEED_XL_UNET + SEED_PERTURB)
    fp16_round_(unet)
    save_diffusers_model(unet, root / "unet", torch.float16)
    for sub, cfg, seed, cls in (("text_encoder", XL_TE1_CFG, SEED_XL_TE1, CLIPTextModel),
                                ("text_encoder_2", XL_TE2_CFG, SEED_XL_TE2, CLIPTextModelWithProjection)):
        torch.manual_seed(seed)
        te = cls._from_config(CLIPTextConfig(**cfg), attn_implementation="eager")
        perturb_(te, seed + SEED_PERTURB)
        fp16_round_(te)
        (save_clip_flat if cls is CLIPTextModel else save_clip)(te, root / sub, torch.float16, cls.__name__)
    torch.manual_seed(SEED_XL_VAE)
    vae = AutoencoderKL(**XL_VAE_CFG)
    perturb_(vae, SEED_XL_VAE + SEED_PERTURB)
    save_diffusers_model(vae, root / "vae", torch.float32)
    sched = EulerDiscreteScheduler.from_config(SDXL_BASE_EULER)
    sched.save_config(str(root / "scheduler"))
    scfg = read_json(root / "scheduler" / "scheduler_config.json")
    write_json(root / "scheduler" / "scheduler_config.json", dict(sorted(scfg.items())))
    # tokenizer/ as SD1.5's (pad <|endoftext|>), tokenizer_2/ as SD2's (pad "!"), from the project's own copies
    for sub, src in (("tokenizer", "tiny-sd15"), ("tokenizer_2", "tiny-sd2")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copyfile(DATA / "models" / src / "tokenizer" / f, root / sub / f)
    write_json(root / "model_index.json", {
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "force_zeros_for_empty_prompt": True, "image_encoder": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    })
    log("  models/tiny-sdxl: written")


def build_pipe_xl(cls_name, model_dir, sched_cfg, dt, controlnet_dirs=None):
    cls = {"StableDiffusionXLPipeline": StableDiffusionXLPipeline,
           "StableDiffusionXLImg2ImgPipeline": StableDiffusionXLImg2ImgPipeline,
           "StableDiffusionXLControlNetPipeline": StableDiffusionXLControlNetPipeline}[cls_name]
    comps = dict(vae=load_vae(model_dir / "vae", dt),
                 text_encoder=load_clip(model_dir / "text_encoder", CLIPTextModel, dt),
                 text_encoder_2=load_clip(model_dir / "text_encoder_2", CLIPTextModelWithProjection, dt),
                 tokenizer=load_tokenizer(model_dir / "tokenizer"), tokenizer_2=load_tokenizer(model_dir / "tokenizer_2"),
                 unet=load_unet(model_dir / "unet", dt), scheduler=make_scheduler(sched_cfg))
    extra = {"requires_aesthetics_score": False} if cls is StableDiffusionXLImg2ImgPipeline else {}
    if controlnet_dirs:
        nets = [load_controlnet(d, dt) for d in controlnet_dirs]
        extra["controlnet"] = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
    pipe = cls(**comps, add_watermarker=False, force_zeros_for_empty_prompt=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    if dt == torch.float64:  # else diffusers encodes img2img images in float32 (force_upcast) in the float64 run
        pipe.vae.register_to_config(force_upcast=False)
    return pipe


XL_PAIRS = ("original_size", "crops_coords_top_left", "target_size", "negative_original_size",
            "negative_crops_coords_top_left", "negative_target_size")


def run_pipe_xl(m, inp, root, dt, record=False):
    pipe = build_pipe_xl(m["pipeline"], root / m["model_dir"], m["scheduler_config"], dt,
                         [root / d for d in m.get("controlnet_dirs", [])])
    kw = dict(m["call_kwargs"])
    for k in XL_PAIRS:
        if k in kw:
            kw[k] = tuple(kw[k])
    cfg = kw.get("guidance_scale", 5.0) > 1.0
    res, steps, calls = {}, [], []
    with torch.no_grad():
        pe, npe, ppe, nppe = pipe.encode_prompt(kw["prompt"], prompt_2=kw.get("prompt_2"), device="cpu",
                                                num_images_per_prompt=1, do_classifier_free_guidance=cfg,
                                                negative_prompt=kw.get("negative_prompt"),
                                                negative_prompt_2=kw.get("negative_prompt_2"))
        res["prompt_embeds"], res["pooled_prompt_embeds"] = pe, ppe
        if cfg:
            res["negative_prompt_embeds"], res["negative_pooled_prompt_embeds"] = npe, nppe
        for tk, tok in (("tokenizer", pipe.tokenizer), ("tokenizer_2", pipe.tokenizer_2)):
            ids = lambda p: tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True,
                                return_tensors="pt").input_ids
            two = tk == "tokenizer_2"
            res[f"input_ids.{tk}"] = ids((two and kw.get("prompt_2")) or kw["prompt"])
            if cfg and kw.get("negative_prompt"):
                res[f"negative_input_ids.{tk}"] = ids((two and kw.get("negative_prompt_2")) or kw["negative_prompt"])
        if "tensor_call_kwargs" in m:  # call argument -> input name (or list of names)
            for arg, names in m["tensor_call_kwargs"].items():
                kw[arg] = [inp[n].to(dt) for n in names] if isinstance(names, list) else inp[names].to(dt)
        else:
            if "latents" in inp:
                kw["latents"] = inp["latents"].to(dt)
            if "image" in inp:
                kw["image"] = inp["image"].to(dt)
        taps = _controlnet_taps(pipe, res) if "controlnet_dirs" in m else []

        def unet_hook(mod, args, kwargs, out):
            calls.append((args[0].clone(), args[1].clone() if torch.is_tensor(args[1]) else torch.tensor(args[1]),
                          out[0].clone(), kwargs["added_cond_kwargs"]))
        h = pipe.unet.register_forward_hook(unet_hook, with_kwargs=True)
        add_noise = pipe.scheduler.add_noise

        def rec_add_noise(original, noise, t):
            r = add_noise(original, noise, t)
            res["init_latents"], res["noisy_latents"] = original.clone(), r.clone()
            return r
        pipe.scheduler.add_noise = rec_add_noise

        def cb(p, i, t, d):
            res[f"step_latents.{i:03d}"] = d["latents"].clone()
            steps.append({"i": i, "t": t.item(), "latents_after_step": f"step_latents.{i:03d}"})
            return {}

        TAP.start("record" if record else "replay", None if record else stored_noise(inp))
        out = pipe(**kw, output_type="np", generator=gen(m.get("generator_seed", 0)), callback_on_step_end=cb,
                   callback_on_step_end_tensor_inputs=["latents"])
        nlog = TAP.stop()
        h.remove()
        for th in taps:
            th.remove()
    for i, (x, t, o, add) in enumerate(calls):
        res[f"step.{i:03d}.unet_sample"], res[f"step.{i:03d}.unet_timestep"] = x, t.reshape(1).float()
        res[f"step.{i:03d}.unet_out"] = o
    res["add_text_embeds"], res["add_time_ids"] = calls[0][3]["text_embeds"], calls[0][3]["time_ids"]
    res["image_np"] = torch.from_numpy(out.images.copy())
    res["final_latents"] = res[f"step_latents.{len(steps) - 1:03d}"]
    res["timesteps"] = pipe.scheduler.timesteps.clone().float()
    res["_steps"], res["_noise_log"] = steps, nlog
    return res


def gen_sdxl_pipe_case(name, desc, pipeline, sched_cfg, call_kwargs, seed, latents_shape=None, image=None,
                       controlnets=None, control_image=None):
    m = {"name": name, "description": desc, "call_kwargs": call_kwargs, "generator_seed": seed,
         "scheduler_config": sched_cfg, "pipeline": pipeline, "model_dir": "models/tiny-sdxl"}
    inp = {}
    if latents_shape:
        inp["latents"] = randn(latents_shape, seed)
    if image is not None:
        inp["image"] = image
    if controlnets:  # the control image is the `image` argument of StableDiffusionXLControlNetPipeline
        m["controlnet_dirs"] = [f"models/{n}" for n in controlnets]
        inp["control_image.000"] = control_image
        m["tensor_call_kwargs"] = {"image": "control_image.000"}
        if latents_shape:
            m["tensor_call_kwargs"]["latents"] = "latents"
    r32 = run_pipe_xl(m, inp, DATA, torch.float32, record=True)
    nlog = r32.pop("_noise_log")
    inp.update(noise_inputs(nlog))
    r64 = run_pipe_xl(m, inp, DATA, torch.float64)
    r64.pop("_noise_log")
    r64.pop("_steps")
    m["steps"] = r32.pop("_steps")
    m["noise_draws"] = noise_manifest(nlog)
    m["layouts"] = dict(LAYOUTS, add_time_ids=XL_TIME_IDS)
    m["semantics"] = {
        "prompt_embeds": "cat([text_encoder.hidden_states[-2], text_encoder_2.hidden_states[-2]], -1) (no "
                         "final_layer_norm)",
        "pooled_prompt_embeds": "text_encoder_2 text_embeds (text_projection of the final-layer-norm eos row)",
        "negative_*": "with CFG: the negative prompt encoded the same way, or zeros without one "
                      "(force_zeros_for_empty_prompt)",
        "add_text_embeds / add_time_ids": "the UNet's added_cond_kwargs as fed (one row per UNet batch row)",
        "step.i.unet_sample / unet_timestep / unet_out": "the UNet call of step i (after scale_model_input and the CFG "
                                                         "duplication; raw output before guidance)",
        "init_latents / noisy_latents": "img2img: vae.encode(2x-1).sample(noise.000) * 0.13025; add_noise of it",
    }
    order = ["image_np", "final_latents", "prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
             "negative_pooled_prompt_embeds", "add_text_embeds", "add_time_ids", "init_latents", "noisy_latents"]
    keys = [k for k in order if k in r32] + sorted(k for k in r32 if k.startswith("input_ids") or
                                                   k.startswith("negative_input_ids"))
    keys += sorted(k for k in r32 if k.startswith("step")) + sorted(k for k in r32 if k.startswith("controlnet_cond"))
    keys += ["timesteps"]
    e32 = {k: r32[k] for k in keys}
    floors = {k: (2e-5 if "embeds" in k or k.startswith("controlnet_cond") else 1e-4) for k in e32}
    if controlnets:
        m["semantics"]["controlnet"] = ("StableDiffusionXLControlNetPipeline: the nets get the UNet's input rows, "
                                        "prompt embeddings and added_cond_kwargs; per step scale x keep (guidance "
                                        "window), residuals summed (step.000.*additional_residual*), "
                                        "controlnet_cond.NNN = what net NNN received (CFG: cat([img, img]))")
    man = {k: m[k] for k in ("name", "description", "call_kwargs", "generator_seed", "scheduler_config", "steps",
                             "noise_draws", "layouts", "semantics", "pipeline", "model_dir", "controlnet_dirs",
                             "tensor_call_kwargs") if k in m}
    tols = net_tols(e32, r64, floors=floors)
    for k in list(tols):
        if k.endswith("unet_timestep"):
            del tols[k]  # exact
    write_case(name, man, inp, e32, tols)


def gen_sdxl():
    build_sdxl_model()
    s = SEED_CASES + 700
    # UNet with added conditioning, batch 2, non-square, different time ids per row
    m = {"name": "own_sdxl_unet", "description": "SDXL-like tiny UNet (text_time added conditioning, transformer depth "
         "[1,3,2], heads [1,2,4], linear projection, F16 weights), one timestep per row, non-square",
         "model_dir": "models/tiny-sdxl/unet",
         "weights_file": "diffusion_pytorch_model.safetensors (F16); loaded with torch_dtype=float32",
         "config": {k: v for k, v in XL_UNET_CFG.items()},
         "call": "UNet2DConditionModel.forward(sample, timestep, encoder_hidden_states, added_cond_kwargs="
                 "{'text_embeds', 'time_ids'}, return_dict=False)[0]",
         "activation_semantics": dict(UNET_ACT_SEMANTICS, **{
             "act.add_time_proj": "Timesteps(addition_time_embed_dim) of time_ids.flatten(): [B*6, D]",
             "act.add_embedding": "add_embedding(cat([text_embeds, add_time_proj.reshape(B, 6*D)], -1))"})}
    inp = {"sample": randn((2, 4, 8, 12), s + 1), "timestep": torch.tensor([999, 257], dtype=torch.int64),
           "encoder_hidden_states": randn((2, 77, 20), s + 2), "text_embeds": randn((2, 10), s + 3),
           "time_ids": torch.tensor([[64.0, 96.0, 0.0, 0.0, 64.0, 96.0], [1024.0, 768.0, 16.0, 8.0, 512.0, 640.0]])}
    a = "down_blocks.1.attentions.0"
    hooks = ["time_proj", "time_embedding", "add_time_proj", "add_embedding", "conv_in", "down_blocks.0.resnets.0",
             f"{a}.norm", f"{a}.proj_in", f"{a}.transformer_blocks.0", f"{a}.transformer_blocks.2", f"{a}.proj_out", a]
    hooks += [f"down_blocks.{i}" for i in range(3)] + ["mid_block"] + [f"up_blocks.{i}" for i in range(3)]
    hooks += ["conv_norm_out", "conv_out"]
    e32 = run_unet(m, inp, DATA, torch.float32, hooks)
    e64 = run_unet(m, inp, DATA, torch.float64, hooks)
    write_case("own_sdxl_unet", m, inp, e32, net_tols(e32, e64))
    # a distilled, asymmetric SDXL UNet as SSD-1B / Segmind Vega configure theirs: per-layer transformer depth with
    # reverse_transformer_layers_per_block for the up path (diffusers "asymmetrical U-Net"), no mid block
    torch.manual_seed(SEED_XL_UNET + 1)
    ucfg = dict(XL_UNET_CFG, layers_per_block=2, transformer_layers_per_block=[1, [1, 2], [2, 1]],
                reverse_transformer_layers_per_block=[[1, 2, 1], [2, 1, 1], 1], mid_block_type=None)
    unet = UNet2DConditionModel(**ucfg)
    perturb_(unet, SEED_XL_UNET + 1 + SEED_PERTURB)
    shutil.rmtree(DATA / "models" / "unet-sdxl-asym", ignore_errors=True)
    save_diffusers_model(unet, DATA / "models" / "unet-sdxl-asym", torch.float32)
    m = {"name": "own_sdxl_unet_asymmetric", "description": "distilled SDXL-like UNet as SSD-1B / Vega configure "
         "theirs: transformer_layers_per_block [1, [1, 2], [2, 1]] (per layer), reverse_transformer_layers_per_block "
         "[[1, 2, 1], [2, 1, 1], 1] for the up path, layers_per_block 2, no mid block, text_time, F32",
         "model_dir": "models/unet-sdxl-asym", "config": {k: v for k, v in ucfg.items()},
         "call": "UNet2DConditionModel.forward(sample, timestep, encoder_hidden_states, added_cond_kwargs="
                 "{'text_embeds', 'time_ids'}, return_dict=False)[0]",
         "activation_semantics": UNET_ACT_SEMANTICS}
    inp = {"sample": randn((1, 4, 8, 8), s + 5), "timestep": torch.tensor([601], dtype=torch.int64),
           "encoder_hidden_states": randn((1, 77, 20), s + 6), "text_embeds": randn((1, 10), s + 7),
           "time_ids": torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]])}
    hooks = ["add_embedding", "down_blocks.1.attentions.1.transformer_blocks.1", "down_blocks.2.attentions.0"]
    hooks += [f"down_blocks.{i}" for i in range(3)] + [f"up_blocks.{i}" for i in range(3)]
    hooks += ["up_blocks.0.attentions.1.transformer_blocks.1", "up_blocks.1.attentions.0.transformer_blocks.1"]
    e32 = run_unet(m, inp, DATA, torch.float32, hooks)
    e64 = run_unet(m, inp, DATA, torch.float64, hooks)
    write_case("own_sdxl_unet_asymmetric", m, inp, e32, net_tols(e32, e64))
    # the two text encoders, on their own tokenizers
    for name, sub, tsub, cls_name, cfg, desc in (
            ("own_sdxl_clip_te1", "text_encoder", "tokenizer", "CLIPTextModel", XL_TE1_CFG,
             "SDXL text_encoder (CLIPTextModel, quick_gelu, hidden 8, 3 layers, F16, saved by transformers 5 WITHOUT "
             "the text_model. prefix), ids from tokenizer/ (pad <|endoftext|>)"),
            ("own_sdxl_clip_te2", "text_encoder_2", "tokenizer_2", "CLIPTextModelWithProjection", XL_TE2_CFG,
             "SDXL text_encoder_2 (CLIPTextModelWithProjection, gelu, hidden 12, 3 layers, projection 10, F16), ids "
             "from tokenizer_2/ (pad '!')")):
        mc = {"name": name, "description": desc, "model_dir": f"models/tiny-sdxl/{sub}", "model_class": cls_name,
              "tokenizer_dir": f"models/tiny-sdxl/{tsub}", "prompts": PROMPTS + [""],
              "config": {"hidden": cfg["hidden_size"], "layers": cfg["num_hidden_layers"], "act": cfg["hidden_act"]},
              "semantics": dict(CLIP_SEMANTICS, penultimate_hidden_state="hidden_states[-2] WITHOUT final_layer_norm "
                                "(what the SDXL pipelines feed the UNet)")}
        ci = {"input_ids": tokenize(DATA / "models" / "tiny-sdxl" / tsub, PROMPTS + [""])}
        e32 = run_clip(mc, ci, DATA, torch.float32)
        e64 = run_clip(mc, ci, DATA, torch.float64)
        write_case(name, mc, ci, e32, net_tols(e32, e64))
    # pipelines
    dpm = DPMSolverMultistepScheduler.from_config(SDXL_BASE_EULER, algorithm_type="dpmsolver++", solver_order=2)
    gen_sdxl_pipe_case("own_sdxl_pipe_dpmpp_cfg_microcond", "StableDiffusionXLPipeline + DPMSolverMultistepScheduler "
                       "(dpmsolver++, SDXL base config), 3 steps, CFG 5 with a negative prompt, prompt_2 and "
                       "negative_prompt_2 for text encoder 2, 24x32, non-default "
                       "micro-conditioning incl. negative sizes (own negative time ids)", "StableDiffusionXLPipeline",
                       sched_config_dict(dpm),
                       {"prompt": PROMPTS[0], "negative_prompt": NEG_PROMPT, "num_inference_steps": 3,
                        "guidance_scale": 5.0, "height": 24, "width": 32, "prompt_2": "an oil painting, thick brush "
                        "strokes", "negative_prompt_2": "photo, noise", "original_size": [48, 40],
                        "crops_coords_top_left": [4, 2], "target_size": [24, 32], "negative_original_size": [16, 16],
                        "negative_target_size": [32, 32]}, s + 10, latents_shape=(1, 4, 12, 16))
    gen_sdxl_pipe_case("own_sdxl_pipe_batch2_negsizes", "StableDiffusionXLPipeline + EulerDiscreteScheduler (SDXL "
                       "base config, leading), 2 steps, num_images_per_prompt 2, CFG 4 with a negative prompt and "
                       "negative sizes: the UNet's 4 rows take the embeddings as [neg, neg, pos, pos] but the time ids "
                       "as cat([neg, pos]).repeat(2, 1) = [neg, pos, neg, pos] (diffusers' order, kept)",
                       "StableDiffusionXLPipeline", SDXL_BASE_EULER,
                       {"prompt": PROMPTS[1], "negative_prompt": NEG_PROMPT, "num_inference_steps": 2,
                        "guidance_scale": 4.0, "height": 16, "width": 16, "num_images_per_prompt": 2,
                        "negative_original_size": [8, 8], "negative_target_size": [64, 48]},
                       s + 30, latents_shape=(2, 4, 8, 8))
    gen_sdxl_stream_cases()
    gen_sdxl_pipe_case("own_sdxl_pipe_img2img_turbo_zeros", "StableDiffusionXLImg2ImgPipeline + "
                       "EulerAncestralDiscreteScheduler (sdxl-turbo config, trailing), 4 steps, strength 0.5, CFG 2 "
                       "WITHOUT a negative prompt (force_zeros_for_empty_prompt: zero negatives), 32x24 image",
                       "StableDiffusionXLImg2ImgPipeline", SDXL_TURBO_EULER_A,
                       {"prompt": PROMPTS[1], "num_inference_steps": 4, "strength": 0.5, "guidance_scale": 2.0},
                       s + 20, image=synth_image(1, 32, 24, s + 21))
    build_verify_sdxl_single_files()


def gen_sdxl_stream_cases():
    """StreamDiffusion on tiny-sdxl (StreamRef's SDXL semantics): img2img with cfg 'full' and a negative prompt
    (uncond rows carry the negative pooled embedding), non-square (time ids (H, W, 0, 0, H, W)); txt2img with
    cfg 'initialize'."""
    note = "StreamRef (tools/gen_testdata.py) with SDXL added conditions; the SD1 path validated on the fixtures"
    gen_stream_case(note, name="own_sdxl_stream_img2img_full", model="tiny-sdxl", t_index_list=(18, 36),
                    cfg_type="full", guidance=1.8, delta=1.0, seed=SEED_CASES + 720, n_calls=4, W=64, H=32,
                    prompt="a neon city at night, rain", negative="blurry, washed out")
    gen_stream_case(note, name="own_sdxl_stream_txt2img_initialize", model="tiny-sdxl", t_index_list=(10, 25, 40),
                    cfg_type="initialize", guidance=1.5, delta=0.7, seed=SEED_CASES + 730, n_calls=4, W=32, H=32,
                    mode="txt2img", prompt="a red fox in the snow", negative="")


def generate_controlnet():
    """The ControlNet models (built on the stored tiny UNets), their single file and cases."""
    log("building ControlNets ...")
    build_controlnets()
    build_controlnet_single_file()
    log("building ControlNet cases ...")
    gen_controlnet_cases()


def generate(sdxl_only=False):
    t0 = time.time()
    if sdxl_only:
        log("building the SDXL model and cases only ...")
        gen_sdxl()
        log(f"generation done in {time.time() - t0:.1f} s")
        return
    log("validating the StreamDiffusion re-implementation on the fixture stream cases ...")
    r = validate_stream_on_fixtures()
    if r is None:
        note = ("Python re-implementation of StreamDiffusion's stream step (tools/gen_testdata.py StreamRef); NOT "
                "validated in this run (fixtures absent)")
    else:
        if not r[0]:
            raise SystemExit("stream re-implementation does not reproduce the fixture stream cases")
        note = ("Python re-implementation of StreamDiffusion's stream step (cumulo-autumn/StreamDiffusion @ b623251 "
                "semantics, tools/gen_testdata.py StreamRef, diffusers UNet2DConditionModel/AutoencoderTiny/"
                "LCMScheduler), validated by replaying the shared fixture cases from their stored inputs with "
                "their models: every tensor within tolerance (worst err/tol: "
                + ", ".join(f"{k} {v:.3g}" for k, v in r[1].items()) + ")")
    log("building models ...")
    build_models()
    log("building cases ...")
    gen_unet_case("own_unet_sd15", "SD1.5-like tiny UNet (16/32 channels, 1 layer per block, heads [4,2] per level, "
                  "8 GroupNorm groups, cross_attention_dim 32, F16 weights), one timestep per batch element, non-square", "tiny-sd15",
                  UNET15_CFG, (3, 4, 8, 12), [981, 537, 12], SEED_CASES + 100)
    gen_unet_case("own_unet_sd2", "SD2-like tiny UNet (use_linear_projection, upcast_attention, heads [1,2,2] per "
                  "level, 8/16/24 channels, 4 GroupNorm groups, cross_attention_dim 8, F16 weights), non-square", "tiny-sd2", UNET2_CFG,
                  (3, 4, 8, 16), [999, 401, 33], SEED_CASES + 200)
    gen_clip_case("own_clip_text_quickgelu", "CLIPTextModel, quick_gelu (SD1.5 style), hidden 32, 2 heads, 2 layers,"
                  " F16 weights, ids padded with <|endoftext|>", "tiny-sd15", "CLIPTextModel", TE15_CFG)
    gen_clip_case("own_clip_text_gelu_projection", "CLIPTextModelWithProjection, gelu (SD2 / OpenCLIP style), hidden "
                  "8, 2 heads, 3 layers, projection 6, F16 weights, ids padded with '!' (id 0)", "tiny-sd2",
                  "CLIPTextModelWithProjection", TE2_CFG)
    gen_vae_cases()
    gen_sched_cases()
    gen_pipe_cases()
    gen_stream_case(note)
    gen_sdxl()
    generate_controlnet()
    log("building single-file checkpoints ...")
    build_single_file("tiny-sd15")
    build_single_file("tiny-sd2")
    log(f"generation done in {time.time() - t0:.1f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verify", action="store_true", help="only verify the stored data (no writing)")
    ap.add_argument("--crosscheck", action="store_true", help="also replay the supported fixture cases")
    ap.add_argument("--no-verify", action="store_true", help="generate without the verification pass")
    ap.add_argument("--controlnet", action="store_true",
                    help="(re)generate only the ControlNet models, single file and cases (the tiny models must exist), "
                         "then verify everything")
    ap.add_argument("--only", nargs="+", metavar="CASE",
                    help="regenerate only these scheduler / pipeline cases (the models must exist), then verify them")
    ap.add_argument("--sdxl-only", action="store_true", help="(re)generate only the SDXL model and cases")
    ap.add_argument("--sdxl-single", action="store_true",
                    help="(re)write only the SDXL single-file checkpoint from models/tiny-sdxl and verify it")
    a = ap.parse_args()
    if a.only:
        global ONLY
        ONLY = set(a.only)
        gen_sched_cases()
        gen_pipe_cases()
        gen_controlnet_cases()
        unknown = ONLY - set(SEEN)
        if unknown:
            log(f"--only: no such scheduler / pipeline case: {', '.join(sorted(unknown))} (known: {', '.join(SEEN)})")
            return 2
        ok = True
        for name in sorted(ONLY):
            kind, n, bad, w = compare_case(DATA / "cases" / name, DATA)
            ok &= bad == 0
            log(f"  {name:40s} {kind:6s} {n:4d} tensors  {bad} failed  worst err/tol {w:.3g}")
        log("VERIFY: " + ("all OK" if ok else "FAILURES (see above)"))
        return 0 if ok else 1
    if a.sdxl_single:
        ok = build_verify_sdxl_single_files()
        log("VERIFY: " + ("all OK" if ok else "FAILURES (see above)"))
        return 0 if ok else 1
    if a.controlnet:
        generate_controlnet()
    elif not a.verify:
        generate(sdxl_only=a.sdxl_only)
        if a.no_verify:
            return 0
    ok = verify_all(crosscheck=a.crosscheck)
    log("VERIFY: " + ("all OK" if ok else "FAILURES (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
