#!/usr/bin/env python3
"""arch_tensors.py - writes the tensors.txt lists of an architecture folder (bench/arch/<model>) from its configs.

For architectures whose weights files we do not have (and do not download): every folder of ARCH_DIR with a
config.json of a known class gets a tensors.txt with one "name F16 d0,d1,..." line per tensor of the state
dict that diffusers / transformers build from that config (on the meta device: no memory, no weights). These
are the names and shapes that save_pretrained writes, i.e. the headers of the published files.
bench_gen_arch then writes random F16 weights of them.

    python3 bench/arch_tensors.py bench/arch/sdxs-512 --components unet   # writes unet/tensors.txt
    python3 bench/arch_tensors.py --check bench/arch/sd15        # compares with the committed lists (exit 1 if not equal)

Needs diffusers + transformers + torch (e.g. the venv of bench/cpu_peers.py).
"""
import argparse
import json
import os
import sys


def state_dict_shapes(cfg_path):
    import torch
    cfg = json.load(open(cfg_path))
    cls = cfg.get('_class_name') or (cfg.get('architectures') or [None])[0]
    with torch.device('meta'):
        if cls in ('UNet2DConditionModel', 'AutoencoderKL', 'AutoencoderTiny', 'ControlNetModel'):
            import diffusers
            m = getattr(diffusers, cls).from_config(getattr(diffusers, cls).load_config(os.path.dirname(cfg_path)))
        elif cls in ('CLIPTextModel', 'CLIPTextModelWithProjection'):
            import transformers
            c = transformers.CLIPTextConfig.from_pretrained(os.path.dirname(cfg_path))
            m = getattr(transformers, cls)(c)
        else:
            return None, cls
    sd = m.state_dict()
    if cls.startswith('CLIPText'):  # transformers 5 keys drop the "text_model." of the published files
        sd = {(k if k.startswith(('text_model.', 'text_projection')) else 'text_model.' + k): v for k, v in sd.items()}
    return sorted((k, tuple(v.shape)) for k, v in sd.items()), cls


def render(comp, wfile, cls, rows):
    lines = [f'# {comp}: name dtype shape (the weights file {wfile} of this architecture, as {cls} builds it from '
             f'config.json; random values by bench/bench_gen_arch.c)']
    lines += [f'{k} F16 {",".join(str(d) for d in s) if s else "-"}' for k, s in rows]
    return '\n'.join(lines) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('arch')
    ap.add_argument('--check', action='store_true', help='compare with the committed lists instead of writing')
    ap.add_argument('--components', help='comma-separated folder names to write (default: all with a known config)')
    a = ap.parse_args()
    bad = 0
    dirs = [a.arch] + [os.path.join(a.arch, d) for d in sorted(os.listdir(a.arch))]
    for d in dirs:
        cp = os.path.join(d, 'config.json')
        if not os.path.isfile(cp):
            continue
        rows, cls = state_dict_shapes(cp)
        if rows is None:
            continue
        comp = os.path.basename(os.path.normpath(d))
        if a.components and not a.check and comp not in a.components.split(','):
            continue
        wfile = 'model.safetensors' if comp.startswith('text_encoder') else 'diffusion_pytorch_model.safetensors'
        tp = os.path.join(d, 'tensors.txt')
        if a.check:
            have = [l.split() for l in open(tp) if l.strip() and not l.startswith('#')]
            have = sorted((n, tuple(int(x) for x in s.split(',')) if s != '-' else ()) for n, _, s in have)
            same = have == rows
            print(f'{tp}: {len(rows)} tensors from {cls}, {"same as" if same else "DIFFERENT from"} the list '
                  f'({len(have)})')
            if not same:
                bad = 1
                print('  only in the list:', sorted(set(have) - set(rows))[:5])
                print('  only from config:', sorted(set(rows) - set(have))[:5])
        else:
            with open(tp, 'w') as f:
                f.write(render(comp, wfile, cls, rows))
            n = sum(1 for _ in rows)
            params = sum(int(__import__('math').prod(s)) for _, s in rows)
            print(f'wrote {tp}: {n} tensors, {params / 1e6:.1f} M parameters ({cls})')
    return bad


if __name__ == '__main__':
    sys.exit(main())
