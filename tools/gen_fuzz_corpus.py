#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets: fuzz/corpus/<target>/.

Developer-run (needs Pillow and numpy); the files are committed, CI never runs
this. Seeds are small valid inputs plus a few classic broken ones: the fuzzer
mutates them, so they only need to reach the interesting code paths.

    python3 tools/gen_fuzz_corpus.py
"""
import io
import json
import os
import struct

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
MODELS = os.path.join(ROOT, "tests", "data", "models")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


DT = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": (None, 2), "I64": ("<i8", 8), "I32": ("<i4", 4),
      "U8": ("u1", 1), "BOOL": ("?", 1)}


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def arr(dt, shape, seed=0):
    n = int(np.prod(shape)) if shape else 1
    rng = np.random.default_rng(seed)
    if dt == "BF16":
        return (rng.standard_normal(n).astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    code, _ = DT[dt]
    if dt in ("I64", "I32", "U8"):
        return rng.integers(0, 100, n).astype(code).tobytes()
    if dt == "BOOL":
        return rng.integers(0, 2, n).astype(code).tobytes()
    return rng.standard_normal(n).astype(code).tobytes()


def gen_safetensors():
    t = "safetensors"
    write(t, "all_dtypes", safetensors([(f"t_{dt.lower()}", dt, [2, 3], arr(dt, [2, 3], i))
                                        for i, dt in enumerate(DT)], {"format": "pt", "note": "seed"}))
    write(t, "scalar_and_empty", safetensors([("scalar", "F32", [], arr("F32", [])),
                                              ("empty", "F16", [0, 4], b""),
                                              ("vec", "I64", [3], arr("I64", [3]))]))
    write(t, "empty_header", safetensors([]))
    write(t, "nested_names", safetensors([("a.b.c.weight", "F32", [1, 1, 1, 2], arr("F32", [2])),
                                          ("a.b.c.bias", "BF16", [2], arr("BF16", [2]))]))
    good = safetensors([("x", "F32", [2, 2], arr("F32", [2, 2]))])
    write(t, "truncated_data", good[:-3])
    write(t, "truncated_header", good[:12])
    bad = b'{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}'
    write(t, "size_mismatch", struct.pack("<Q", len(bad)) + bad + b"\0" * 4)
    ov = b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}'
    write(t, "overlap", struct.pack("<Q", len(ov)) + ov + b"\1" * 4)
    big = b'{"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}'
    write(t, "shape_overflow", struct.pack("<Q", len(big)) + big + b"\0" * 16)


def gen_config():
    t = "config"
    for rel in ["tiny-sd15/unet/config.json", "tiny-sd15/text_encoder/config.json", "tiny-sd15/vae/config.json",
                "tiny-sd15/scheduler/scheduler_config.json", "tiny-sd2/unet/config.json",
                "tiny-sd2/text_encoder/config.json", "tiny-sd2/scheduler/scheduler_config.json",
                "taesd-tiny/config.json", "tiny-sd15/model_index.json"]:
        with open(os.path.join(MODELS, rel), "rb") as f:
            j = json.load(f)
        write(t, rel.replace("/", "_").replace(".json", ""), json.dumps(j, separators=(",", ":")))
    write(t, "dpm_karras", json.dumps({"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": True,
                                       "algorithm_type": "sde-dpmsolver++", "solver_order": 2,
                                       "final_sigmas_type": "zero", "lambda_min_clipped": "-inf"}))
    write(t, "ddim_v", json.dumps({"_class_name": "DDIMScheduler", "prediction_type": "v_prediction",
                                   "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
                                   "beta_schedule": "squaredcos_cap_v2", "clip_sample": True}))
    write(t, "euler_a", json.dumps({"_class_name": "EulerAncestralDiscreteScheduler", "num_train_timesteps": 1000,
                                    "beta_schedule": "linear", "trained_betas": [0.001, 0.002, 0.003, 0.004]}))
    write(t, "clip_full", json.dumps({"architectures": ["CLIPModel"], "text_config": {
        "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1,
        "hidden_act": "gelu", "vocab_size": 100, "max_position_embeddings": 8}}))
    write(t, "unet_lists", json.dumps({"block_out_channels": [32, 64, 64], "layers_per_block": [1, 2, 1],
                                       "num_attention_heads": [1, 2, 4], "transformer_layers_per_block": [1, 1, 2],
                                       "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                            "DownBlock2D"],
                                       "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D",
                                                          "CrossAttnUpBlock2D"],
                                       "cross_attention_dim": [8, 8, 8], "time_cond_proj_dim": 16,
                                       "norm_num_groups": 8, "mid_block_type": None}))
    write(t, "not_object", "[1,2,3]")
    write(t, "nan_strings", '{"beta_start":"nan","beta_end":"inf","sigma_min":"-inf","num_train_timesteps":-5}')


def gen_tokenizer():
    t = "tokenizer"
    texts = {
        "ascii": "a photo of an astronaut riding a horse on mars, trending on artstation, 4k",
        "special": "<|startoftext|>hello<|endoftext|> world!! it's they've I'm",
        "unicode": "Ünïcödé naïve café — ﬁne “quotes” ＦＵＬＬ　ｗｉｄｔｈ 日本語のテキスト 🙂🚀 İstanbul ΟΔΟΣ",
        "html": "fish &amp; chips &lt;3 &#x1F600; &nbsp;&copy; <b>bold</b> &unknown;",
        "controls": "line\nbreak\r\ntab\tand\x1b[31mansi\x1b[0m and \x00 nul and \x85 nel",
        "numbers": "1234567890 3.14159 1e-10 ½ ⅓ ① 𝟘",
        "long": "masterpiece, best quality, " * 40,
        "empty": "",
        "spaces": "   \u3000\u2003  ",
    }
    for k, v in texts.items():
        write(t, k, v)
    write(t, "invalid_utf8", b"caf\xc3 \xff\xfe\x80abc\xed\xa0\x80\xf4\x90\x80\x80 \xe2\x82 \xc0\xaf end")
    write(t, "cp1252_mojibake", "cafÃ© naÃ¯ve â€œquotedâ€\x9d".encode("utf-8"))


def png(img, **kw):
    b = io.BytesIO()
    img.save(b, format="PNG", **kw)
    return b.getvalue()


def jpeg(img, **kw):
    b = io.BytesIO()
    img.save(b, format="JPEG", **kw)
    return b.getvalue()


def gen_image():
    t = "image"
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), "RGB")
    write(t, "rgb.png", png(rgb))
    write(t, "rgba.png", png(rgb.convert("RGBA")))
    write(t, "gray.png", png(rgb.convert("L")))
    write(t, "gray_alpha.png", png(rgb.convert("LA")))
    write(t, "palette.png", png(rgb.convert("P")))
    write(t, "mono.png", png(rgb.convert("1")))
    g16 = Image.fromarray((rng.integers(0, 65536, (4, 3))).astype(np.uint16))
    write(t, "gray16.png", png(g16))
    write(t, "text_chunk.png", png(rgb, pnginfo=_pnginfo()))
    write(t, "baseline.jpg", jpeg(rgb, quality=80))
    write(t, "progressive.jpg", jpeg(rgb, quality=60, progressive=True))
    write(t, "gray.jpg", jpeg(rgb.convert("L"), quality=70))
    write(t, "cmyk.jpg", jpeg(rgb.convert("CMYK"), quality=70))
    write(t, "subsampled.jpg", jpeg(rgb.resize((17, 9)), quality=50, subsampling=2))
    write(t, "truncated.png", png(rgb)[:40])
    write(t, "truncated.jpg", jpeg(rgb)[:100])


def _pnginfo():
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 4, Sampler: lcm")
    return info


def header_of(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def compact(h):
    return json.dumps(h, separators=(",", ":"))


def gen_checkpoint():
    """Inputs are safetensors JSON headers (the target appends zero data)."""
    t = "checkpoint"
    for name in ["tiny-sd15-single", "tiny-sd2-single"]:
        h = header_of(os.path.join(MODELS, name + ".safetensors"))
        write(t, name, compact(h))
        # the UNet alone (detection from the cross-attention width), and the text encoder alone
        for comp, pre in [("unet", "model.diffusion_model."), ("text", "cond_stage_model.")]:
            sub, off = {}, 0
            for k, v in h.items():
                if k.startswith(pre):
                    n = v["data_offsets"][1] - v["data_offsets"][0]
                    sub[k] = dict(v, data_offsets=[off, off + n])
                    off += n
            write(t, f"{name}-{comp}", compact(sub))

    def hdr(entries):
        out, off = {}, 0
        for k, dt, shape in entries:
            n = int(np.prod(shape)) * DT[dt][1] if shape else DT[dt][1]
            out[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
            off += n
        return compact(out)

    write(t, "sdxl_keys", hdr([("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", "F16", [8]),
                               ("model.diffusion_model.input_blocks.0.0.weight", "F16", [4, 4, 3, 3]),
                               ("model.diffusion_model.label_emb.0.0.weight", "F16", [8, 16])]))
    write(t, "not_sd", hdr([("encoder.layer.0.weight", "F32", [2, 2]), ("lm_head.weight", "F32", [3, 2])]))
    write(t, "ema_and_buffers", hdr([("model_ema.decay", "F32", []), ("betas", "F32", [4]),
                                     ("alphas_cumprod", "F32", [4]),
                                     ("model.diffusion_model.out.2.weight", "F32", [4, 8, 3, 3]),
                                     ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k"
                                      ".weight", "F32", [8, 768])]))


def gen_lora():
    """LoRA files for tests/data/models/tiny-sd15 (the lora target applies them to it)."""
    t = "lora"
    lora = os.path.join(ROOT, "tests", "data", "lora")
    with open(os.path.join(lora, "style_kohya.safetensors"), "rb") as f:
        write(t, "style_kohya", f.read())
    with open(os.path.join(lora, "peft_adapter", "adapter_model.safetensors"), "rb") as f:
        write(t, "peft_adapter", f.read())
    h = header_of(os.path.join(lora, "style_kohya.safetensors"))
    # one kohya layer (down/up/alpha) in F32, and variants around it
    names = sorted(k for k in h if k != "__metadata__")
    base = names[0].rsplit(".", 2)[0] if names[0].endswith(".weight") else names[0].rsplit(".", 1)[0]
    layer = [k for k in names if k.startswith(base + ".")]
    ent = []
    for k in layer:
        shape = h[k]["shape"]
        ent.append((k, "F32", shape, arr("F32", shape, len(ent))))
    write(t, "one_layer_f32", safetensors(ent))
    down = [e for e in ent if e[0].endswith("lora_down.weight")]
    if down:
        d = down[0]
        bad = [e for e in ent if e is not d] + [(d[0], "F32", [d[2][0] + 1] + d[2][1:],
                                                 arr("F32", [d[2][0] + 1] + d[2][1:]))]
        write(t, "rank_mismatch", safetensors(bad))
    write(t, "loha_variant", safetensors([(base + ".hada_w1_a", "F32", [4, 2], arr("F32", [4, 2])),
                                          (base + ".hada_w1_b", "F32", [2, 4], arr("F32", [2, 4]))]))
    write(t, "unmatched_key", safetensors([("lora_unet_no_such_layer.lora_down.weight", "F32", [2, 4],
                                            arr("F32", [2, 4])),
                                           ("lora_unet_no_such_layer.lora_up.weight", "F32", [4, 2],
                                            arr("F32", [4, 2]))]))
    meta = {"lora_adapter_metadata": json.dumps({"unet.lora_alpha": 8, "unet.r": 4,
                                                 "unet.alpha_pattern": {"conv_in": 2}})}
    write(t, "diffusers_metadata", safetensors([("unet.conv_in.lora_A.weight", "F32", [2, 4, 3, 3],
                                                 arr("F32", [2, 4, 3, 3])),
                                                ("unet.conv_in.lora_B.weight", "F32", [16, 2, 1, 1],
                                                 arr("F32", [16, 2, 1, 1]))], meta))
    write(t, "empty", safetensors([]))


def gen_server():
    t = "server_message"
    msgs = {
        "config": {"type": "config", "prompt": "a watercolor portrait, soft light", "guidance_scale": 1.4,
                   "t_index_list": [28, 45]},
        "config_all": {"type": "config", "mode": "txt2img", "prompt": "x", "negative_prompt": "blurry",
                       "guidance_scale": 2, "delta": 0.5, "t_index_list": [10, 20, 30, 40], "seed": 123,
                       "similarity_threshold": 0.98, "max_skip_frames": 5, "width": 512, "height": 384,
                       "cfg_type": "initialize", "jpeg_quality": 85},
        "ping": {"type": "ping", "id": 7},
        "ping_bare": {"type": "ping"},
        "bad_field": {"type": "config", "promt": "typo"},
        "bad_value": {"type": "config", "t_index_list": [45, 28]},
        "unicode": {"type": "config", "prompt": "日本語 🙂 \u0000 end"},
        "blend": {"type": "config", "prompts": [{"prompt": "a fox", "weight": 0.7}, {"prompt": "a castle", "weight": 0.3}],
                  "prompt_blend": "slerp", "seeds": [{"seed": 1, "weight": 1}, {"seed": 2, "weight": 3}],
                  "seed_blend": "linear", "raw_weights": False},
        "blend_zero": {"type": "config", "prompts": [{"prompt": "a", "weight": 0}, {"prompt": "b", "weight": 0}]},
    }
    for k, v in msgs.items():
        write(t, k, json.dumps(v, ensure_ascii=False))
    write(t, "duplicate", '{"type":"config","prompt":"a","prompt":"b"}')
    write(t, "trailing", '{"type":"ping"} {"type":"ping"}')
    write(t, "bad_utf8", b'{"type":"config","prompt":"caf\xc3"}')
    write(t, "deep", "[" * 200 + "]" * 200)
    t = "server_frame"
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), "RGB")
    write(t, "frame.jpg", jpeg(img, quality=75))
    write(t, "frame_progressive.jpg", jpeg(img, quality=75, progressive=True))
    write(t, "frame.png", png(img))
    write(t, "frame_gray.jpg", jpeg(img.convert("L")))
    j = jpeg(img)
    write(t, "exif_then_sof.jpg", j[:2] + b"\xff\xe1\x00\x10Exif\x00\x00\xff\xc0\x00\x11\x08\x7f\xff" + j[2:])
    write(t, "not_image", b"GIF89a" + b"\0" * 30)


def main():
    gen_safetensors()
    gen_config()
    gen_tokenizer()
    gen_image()
    gen_checkpoint()
    gen_lora()
    gen_server()
    for t in sorted(os.listdir(CORPUS)):
        d = os.path.join(CORPUS, t)
        files = os.listdir(d)
        print(f"{t}: {len(files)} files, {sum(os.path.getsize(os.path.join(d, f)) for f in files)} bytes")


if __name__ == "__main__":
    main()
