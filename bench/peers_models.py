"""peers_models.py - what each part of bench/cpu_peers.py runs on the PyTorch and OpenVINO side, per model family.

One place for a part's modules and inputs, so that PyTorch, the OpenVINO conversion and the FLOP count (meta
device) see the same shapes as streamdiff's bench_cpu:
    unet          one UNet step, batch 1, no CFG, t = 999, random context [1,77,D]; an SDXL ("text_time") UNet
                  also gets a random pooled text embedding [1,P] and the time ids (size, size, 0, 0, size, size)
    cnet1, cnet2  the same UNet step with 1 / 2 ControlNets (ControlNetModel, or diffusers' MultiControlNetModel
                  for 2: each net loaded separately) on a random control image in [0,1], scale 1
    taesd         TAESD / TAESDXL decode of a random [1,4,size/8,size/8] latent
    clip, clip2   the text encoder (SDXL: text_encoder_2 is clip2) on one 77-token prompt
Families: SD1.x / SD2.x, and SDXL (the UNet config's addition_embed_type "text_time": two text encoders, the
penultimate hidden states of both concatenated, the pooled projection of the second).
"""
import json
import os

CNET_PARTS = {'cnet1': 1, 'cnet2': 2}
UNET_PARTS = ('unet',) + tuple(CNET_PARTS)


def _cfg(path):
    with open(os.path.join(path, 'config.json')) as f:
        return json.load(f)


def is_xl(model_dir):
    return _cfg(os.path.join(model_dir, 'unet')).get('addition_embed_type') == 'text_time'


def time_ids(size):
    """SDXL micro-conditioning (original h, w, crop top, left, target h, w), as bench_cpu passes them."""
    return [float(size), float(size), 0.0, 0.0, float(size), float(size)]


def added_dim(ucfg):
    """P, the pooled text embedding width of an SDXL UNet."""
    return ucfg['projection_class_embeddings_input_dim'] - 6 * ucfg['addition_time_embed_dim']


def cnet_factor(cnet_dir):
    """The control image is this many times the latent size."""
    return 2 ** (len(_cfg(cnet_dir).get('conditioning_embedding_out_channels', [16, 32, 96, 256])) - 1)


def _build(torch, cls, path, dt, meta):
    """A diffusers / transformers module from a folder: its weights, or (meta) only its structure."""
    if meta:
        with torch.device('meta'):
            if cls.__module__.startswith('transformers'):
                import transformers
                return cls(transformers.CLIPTextConfig.from_pretrained(path))
            return cls.from_config(cls.load_config(path))
    if cls.__module__.startswith('transformers'):
        return cls.from_pretrained(path, dtype=dt).eval()
    return cls.from_pretrained(path, torch_dtype=dt).eval()


def _rand(torch, meta, seed):
    """Random inputs: randn (or, uniform=True, rand) from one generator; on the meta device empty tensors."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, uniform=False):
        if meta:
            return torch.empty(*shape)
        return (torch.rand if uniform else torch.randn)(*shape, generator=gen)
    return r


def unet_inputs(torch, ucfg, size, dt, cl=None, meta=False, seed=0):
    """The UNet call's keyword arguments (SDXL: with added_cond_kwargs)."""
    r = _rand(torch, meta, seed)
    h = size // 8
    cl = cl or torch.contiguous_format
    kw = {'sample': r(1, ucfg['in_channels'], h, h).to(dt).to(memory_format=cl), 'timestep': torch.tensor([999.0]),
          'encoder_hidden_states': r(1, 77, ucfg['cross_attention_dim']).to(dt)}
    if ucfg.get('addition_embed_type') == 'text_time':
        kw['added_cond_kwargs'] = {'text_embeds': r(1, added_dim(ucfg)).to(dt),
                                   'time_ids': torch.tensor([time_ids(size)]).to(dt)}
    return kw


def torch_part(torch, part, model_dir, taesd_dir, size, dt, cnet_dir=None, meta=False):
    """(callable, modules) of one part in dtype dt (bf16: channels-last UNet / ControlNets / TAESD)."""
    from diffusers import AutoencoderTiny, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
    cl = torch.channels_last if dt == torch.bfloat16 and not meta else torch.contiguous_format
    h = size // 8
    if part in UNET_PARTS:
        unet = _build(torch, UNet2DConditionModel, os.path.join(model_dir, 'unet'), dt, meta).to(memory_format=cl)
        kw = unet_inputs(torch, dict(unet.config), size, dt, cl, meta)
        n = CNET_PARTS.get(part, 0)
        if not n:
            return (lambda: unet(**kw).sample), [unet]
        if not cnet_dir:
            raise SystemExit(f'{part}: no ControlNet for {model_dir}')
        nets = [_build(torch, ControlNetModel, cnet_dir, dt, meta).to(memory_format=cl) for _ in range(n)]
        f = cnet_factor(cnet_dir)
        cond = _rand(torch, meta, 1)(1, 3, h * f, h * f, uniform=True).to(dt).to(memory_format=cl)
        if n == 1:  # as StableDiffusionControlNetPipeline: one ControlNetModel, or a MultiControlNetModel of several
            net, conds, scales = nets[0], cond, 1.0
        else:
            from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
            net, conds, scales = MultiControlNetModel(nets), [cond] * n, [1.0] * n

        def run():
            down, mid = net(kw['sample'], kw['timestep'], encoder_hidden_states=kw['encoder_hidden_states'],
                            controlnet_cond=conds, conditioning_scale=scales,
                            added_cond_kwargs=kw.get('added_cond_kwargs'), return_dict=False)
            return unet(**kw, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        return run, [unet] + nets
    if part == 'taesd':
        taesd = _build(torch, AutoencoderTiny, taesd_dir, dt, meta).to(memory_format=cl)
        z = _rand(torch, meta, 0)(1, 4, h, h).to(dt).to(memory_format=cl)
        return (lambda: taesd.decode(z).sample), [taesd]
    if part in ('clip', 'clip2'):
        two = part == 'clip2'
        te = _build(torch, CLIPTextModelWithProjection if two else CLIPTextModel,
                    os.path.join(model_dir, 'text_encoder_2' if two else 'text_encoder'), dt, meta)
        ids = torch.tensor([[49406] + [320 + i * 37 for i in range(1, 16)] + [49407] * 61])
        return (lambda: te(ids)[0]), [te]
    raise SystemExit('unknown part ' + part)


def torch_txt2img(torch, model_dir, taesd_dir, size, dt, prompt):
    """A 1-step txt2img pipeline (Euler, no CFG, TAESD decode): StableDiffusion(XL)Pipeline."""
    from diffusers import AutoencoderTiny, EulerDiscreteScheduler
    cl = torch.channels_last if dt == torch.bfloat16 else torch.contiguous_format
    if is_xl(model_dir):  # sdxl-turbo's way: trailing timesteps (t = 999 at 1 step)
        from diffusers import StableDiffusionXLPipeline
        pipe = StableDiffusionXLPipeline.from_pretrained(model_dir, torch_dtype=dt, add_watermarker=False)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing='trailing')
    else:
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=dt, safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.vae = AutoencoderTiny.from_pretrained(taesd_dir, torch_dtype=dt).to(memory_format=cl)
    pipe.unet = pipe.unet.to(memory_format=cl)
    pipe.set_progress_bar_config(disable=True)
    return lambda: pipe(prompt, num_inference_steps=1, guidance_scale=0.0, height=size, width=size, output_type='np',
                        generator=torch.Generator().manual_seed(42)).images


def count(part, model_dir, taesd_dir, size, cnet_dir=None):
    """(GFLOP, GB moved, weight MiB in F32) of one part, on the meta device (cpu_vs_torch.count_call)."""
    import torch
    import cpu_vs_torch
    with torch.device('meta'):
        fn, mods = torch_part(torch, part, model_dir, taesd_dir, size, torch.float32, cnet_dir, meta=True)
    return cpu_vs_torch.count_call(fn, mods)


# ----------------------------------------------------------------------------- OpenVINO

def ov_components(part, xl):
    return {'unet': ['unet'], 'taesd': ['taesd'], 'clip': ['text_encoder'], 'clip2': ['text_encoder_2'],
            'txt2img': ['text_encoder'] + (['text_encoder_2'] if xl else []) + ['unet', 'taesd']}.get(part)


def ov_weights_file(comp, model_dir, taesd_dir):
    if comp == 'taesd':
        return os.path.join(taesd_dir, 'diffusion_pytorch_model.safetensors')
    name = 'model.safetensors' if comp.startswith('text_encoder') else 'diffusion_pytorch_model.safetensors'
    return os.path.join(model_dir, comp, name)


def ov_source(comp, model_dir, taesd_dir):
    """'fp32', or 'f16' where the component's fp32 copy would not fit beside its conversion (F16 file > 2 GB:
    the SDXL UNet). The F16 files hold every weight exactly, and the CPU plugin runs an f16 graph at the
    inference precision it is given (f32 included), so both IRs compute the same."""
    try:
        big = os.path.getsize(ov_weights_file(comp, model_dir, taesd_dir)) > 2e9
    except OSError:
        big = False
    return 'f16' if big else 'fp32'


def ov_inputs(comp, size, model_dir, seed=0):
    """The inputs of one OpenVINO component (numpy), in the order of ov_module's wrapper."""
    import numpy as np
    rng = np.random.default_rng(seed)
    h = size // 8
    if comp == 'unet':
        u = _cfg(os.path.join(model_dir, 'unet'))
        x = [rng.standard_normal((1, u['in_channels'], h, h), dtype=np.float32), np.array([999.0], np.float32),
             rng.standard_normal((1, 77, u['cross_attention_dim']), dtype=np.float32)]
        if u.get('addition_embed_type') == 'text_time':
            x += [rng.standard_normal((1, added_dim(u)), dtype=np.float32), np.array([time_ids(size)], np.float32)]
        return x
    if comp == 'taesd':
        return [rng.standard_normal((1, 4, h, h), dtype=np.float32)]
    return [np.array([[49406] + [int(v) for v in rng.integers(300, 49000, 15)] + [49407] * 61], dtype=np.int64)]


def ov_module(torch, ov, comp, model_dir, taesd_dir, dt):
    """(wrapper module, example inputs, input shapes) for ov.convert_model: the latent's spatial size dynamic.
    Text encoders: SD -> last_hidden_state; SDXL -> the penultimate hidden state (and, text_encoder_2, the
    pooled projection), as the pipelines use them."""
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
    xl = comp != 'taesd' and is_xl(model_dir)

    class W(torch.nn.Module):
        def __init__(self, m, fn):
            super().__init__()
            self.m, self.fn = m, fn

        def forward(self, *x):
            return self.fn(self.m, *x)
    ex = [torch.from_numpy(x) for x in ov_inputs(comp, 256, model_dir)]
    if comp == 'unet':
        u = _build(torch, UNet2DConditionModel, os.path.join(model_dir, 'unet'), dt, False)
        c = dict(u.config)

        def fn(m, sample, t, ctx, *add):  # inputs fp32; the module's own dtype inside (f16 source)
            kw = {'text_embeds': add[0].to(m.dtype), 'time_ids': add[1].to(m.dtype)} if add else None
            return m(sample.to(m.dtype), t, encoder_hidden_states=ctx.to(m.dtype), added_cond_kwargs=kw,
                     return_dict=False)[0].float()
        shapes = [ov.PartialShape([1, c['in_channels'], -1, -1]), ov.PartialShape([1]),
                  ov.PartialShape([1, 77, c['cross_attention_dim']])]
        if xl:
            shapes += [ov.PartialShape([1, added_dim(c)]), ov.PartialShape([1, 6])]
        return W(u, fn), ex, shapes
    if comp == 'taesd':
        m = _build(torch, AutoencoderTiny, taesd_dir, dt, False)
        return W(m, lambda m, z: m.decode(z.to(m.dtype), return_dict=False)[0].float()), ex, \
            [ov.PartialShape([1, 4, -1, -1])]
    two = comp == 'text_encoder_2'
    te = _build(torch, CLIPTextModelWithProjection if two else CLIPTextModel, os.path.join(model_dir, comp), dt,
                False)

    def enc(m, ids):
        if not xl:
            return m(ids).last_hidden_state.float()
        o = m(ids, output_hidden_states=True)
        return (o.hidden_states[-2].float(), o.text_embeds.float()) if two else o.hidden_states[-2].float()
    return W(te, enc), ex, [ov.PartialShape([1, 77])]


def ov_txt2img(np, req, model_dir, size, sigma, prompt):
    """The 1-step txt2img on compiled OpenVINO components: tokenize, text encoder(s), one Euler step from
    sigma(t=999) (no CFG), TAESD decode. SDXL: both encoders, penultimate states concatenated, pooled
    projection + time ids to the UNet."""
    from transformers import CLIPTokenizer
    xl = 'text_encoder_2' in req
    toks = [CLIPTokenizer.from_pretrained(os.path.join(model_dir, t)) for t in
            (('tokenizer', 'tokenizer_2') if xl else ('tokenizer',))]
    h = size // 8
    k = np.float32((sigma ** 2 + 1) ** 0.5)

    def ids(tok):
        return tok(prompt, padding='max_length', max_length=77, truncation=True,
                   return_tensors='np').input_ids.astype(np.int64)

    def run():
        ctx = req['text_encoder'].infer([ids(toks[0])])[0]
        extra = []
        if xl:
            o = req['text_encoder_2'].infer([ids(toks[1])])
            ctx = np.concatenate([ctx, o[0]], axis=-1)
            extra = [o[1], np.array([time_ids(size)], np.float32)]
        lat = np.random.default_rng(42).standard_normal((1, 4, h, h), dtype=np.float32) * k
        eps = req['unet'].infer([lat / k, np.array([999.0], np.float32), ctx] + extra)[0]
        img = req['taesd'].infer([lat - np.float32(sigma) * eps])[0]
        return (np.clip(img / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8)
    return run
