#!/usr/bin/env python3
"""Reference values of torch's CPU generator for tests/test_rng.c (developer-run).

    python3 tools/gen_rng_cases.py [--out tests/data/rng/cases.safetensors]

Writes, for each generator kind of src/sched/rng.h and each seed in SEEDS:
  <kind>.s<seed>.n<N>     torch.randn(N, generator=torch.Generator("cpu").manual_seed(seed))
                          for N in SIZES (fresh generator each)
  <kind>.s<seed>.big.head / .tail   first / last 64 values of randn(BIG) (fresh generator);
                          the FNV-1a 64 hash of all BIG float32 values (little-endian bytes)
                          is in the metadata key <kind>.s<seed>.big.fnv1a64
  <kind>.s<seed>.seq      successive draws from ONE generator, sizes SEQ, concatenated
  <kind>.s<seed>.rand     torch.rand(5) then torch.rand(17) from one generator
Kinds (torch's CPU kernel dispatch, torch.backends.cpu.get_cpu_capability()):
  torch         ATEN_CPU_CAPABILITY=avx2 (the AVX2 and AVX512 kernels draw identically)
  torch_scalar  ATEN_CPU_CAPABILITY=default
Each kind is produced in a subprocess with that environment variable set.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

SEEDS = [0, 1, 42, 2**32 + 5]
SIZES = [1, 5, 15, 16, 17, 100]
BIG = 4 * 64 * 64
SEQ = [5, 5, 100, 1, 17, 3]
KINDS = {"torch": "avx2", "torch_scalar": "default"}


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def worker(kind, out_path):
    import numpy as np
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    tensors, meta = {}, {}
    for seed in SEEDS:
        pre = f"{kind}.s{seed}"
        for n in SIZES:
            g = torch.Generator("cpu").manual_seed(seed)
            tensors[f"{pre}.n{n}"] = torch.randn(n, generator=g).numpy()
        g = torch.Generator("cpu").manual_seed(seed)
        big = torch.randn(BIG, generator=g).numpy().astype("<f4")
        tensors[f"{pre}.big.head"] = big[:64].copy()
        tensors[f"{pre}.big.tail"] = big[-64:].copy()
        meta[f"{pre}.big.fnv1a64"] = fnv1a64(big.tobytes())
        g = torch.Generator("cpu").manual_seed(seed)
        tensors[f"{pre}.seq"] = np.concatenate([torch.randn(n, generator=g).numpy() for n in SEQ])
        g = torch.Generator("cpu").manual_seed(seed)
        tensors[f"{pre}.rand"] = np.concatenate(
            [torch.rand(5, generator=g).numpy(), torch.rand(17, generator=g).numpy()])
    meta[f"{kind}.capability"] = cap
    np.savez(out_path, **tensors)
    with open(out_path + ".json", "w") as f:
        json.dump(meta, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "rng",
                                                  "cases.safetensors"))
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(*a.worker)
        return
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    tensors, meta = {}, {}
    with tempfile.TemporaryDirectory() as td:
        for kind, cap in KINDS.items():
            path = os.path.join(td, kind + ".npz")
            env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
            subprocess.run([sys.executable, __file__, "--worker", kind, path], check=True, env=env)
            with np.load(path) as z:
                for k in z.files:
                    tensors[k] = np.ascontiguousarray(z[k].astype(np.float32))
            with open(path + ".json") as f:
                meta.update(json.load(f))
    meta["seeds"] = ",".join(str(s) for s in SEEDS)
    meta["sizes"] = ",".join(str(s) for s in SIZES)
    meta["big"] = str(BIG)
    meta["seq_sizes"] = ",".join(str(s) for s in SEQ)
    meta["kinds"] = ",".join(KINDS)
    meta["generator"] = f"tools/gen_rng_cases.py, torch {torch.__version__}"
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_file(tensors, a.out, metadata=meta)
    print(f"wrote {a.out}: {len(tensors)} tensors, capabilities "
          + ", ".join(f"{k}={meta[k + '.capability']}" for k in KINDS))


if __name__ == "__main__":
    main()
