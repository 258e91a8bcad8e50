#!/usr/bin/env python3
"""Small scheduler reference data for tests/test_schedulers.c (developer-run).

    pip download diffusers==0.26.3 --no-deps -d /tmp/dl && mkdir -p /tmp/d026 && \
        python3 -m zipfile -e /tmp/dl/diffusers-0.26.3-py3-none-any.whl /tmp/d026
    python3 tools/gen_sched_cases.py --diffusers-src /tmp/d026

--diffusers-src is a folder containing the `diffusers` package of v0.26.3 (the version
the shared fixtures were made with; newer diffusers changed some schedules). Without it
the installed diffusers is used, with a warning. The stub for
huggingface_hub.cached_download (removed from newer huggingface_hub) only lets the old
package import; schedulers do not use it.

Writes
  tests/data/sched/schedules.json      timesteps (+ sigmas for few steps, init_noise_sigma)
                                       of many configs x step counts
  tests/data/sched/rollouts.safetensors short rollouts on 1x4x2x2 latents of options the
                                       fixtures do not cover (format: see test_schedulers.c)
"""
import argparse
import json
import os
import sys

SD15 = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False}
STEPS = [1, 2, 3, 4, 5, 7, 8, 10, 15, 20, 25, 50]
SIGMA_STEPS = 8  # sigmas stored for step counts <= this


def f32(x):
    import numpy as np
    return float(np.float32(x))


def schedule_configs():
    c = []
    add = lambda label, cls, cfg, steps=STEPS, strength=None: c.append((label, cls, cfg, steps, strength))
    add("lcm", "LCMScheduler", dict(SD15))
    for st in (0.3, 0.5, 0.7):
        add(f"lcm strength {st}", "LCMScheduler", dict(SD15), [1, 2, 4, 8], st)
    add("lcm orig 25", "LCMScheduler", dict(SD15, original_inference_steps=25), [1, 2, 3, 4, 5, 7, 8, 10, 15, 20, 25])
    for sp in ("linspace", "leading", "trailing"):
        add(f"ddim {sp}", "DDIMScheduler", dict(SD15, timestep_spacing=sp))
        add(f"dpm {sp}", "DPMSolverMultistepScheduler", dict(SD15, timestep_spacing=sp))
        add(f"euler {sp}", "EulerDiscreteScheduler", dict(SD15, timestep_spacing=sp))
        add(f"euler_a {sp}", "EulerAncestralDiscreteScheduler", dict(SD15, timestep_spacing=sp))
    add("ddim default linear betas", "DDIMScheduler", {})
    add("ddim squaredcos_cap_v2", "DDIMScheduler", {"beta_schedule": "squaredcos_cap_v2"})
    add("ddim rescale zero snr trailing", "DDIMScheduler",
        dict(SD15, rescale_betas_zero_snr=True, timestep_spacing="trailing"))
    add("dpm karras", "DPMSolverMultistepScheduler", dict(SD15, use_karras_sigmas=True))
    add("dpm karras sigma_min", "DPMSolverMultistepScheduler",
        dict(SD15, use_karras_sigmas=True, algorithm_type="dpmsolver", final_sigmas_type="sigma_min"))
    add("dpm lu lambdas", "DPMSolverMultistepScheduler", dict(SD15, use_lu_lambdas=True))
    add("dpm lambda_min_clipped -5.1", "DPMSolverMultistepScheduler", dict(SD15, lambda_min_clipped=-5.1))
    add("dpm lambda_min_clipped trailing", "DPMSolverMultistepScheduler",
        dict(SD15, lambda_min_clipped=-5.1, timestep_spacing="trailing"))
    add("dpm default linear betas", "DPMSolverMultistepScheduler", {})
    add("euler karras", "EulerDiscreteScheduler", dict(SD15, use_karras_sigmas=True))
    add("euler karras sigma range", "EulerDiscreteScheduler",
        dict(SD15, use_karras_sigmas=True, sigma_min=0.05, sigma_max=10.0))
    add("euler continuous v", "EulerDiscreteScheduler",
        dict(SD15, timestep_type="continuous", prediction_type="v_prediction"))
    add("euler log_linear", "EulerDiscreteScheduler", dict(SD15, interpolation_type="log_linear"), [2, 4, 8])
    add("euler rescale zero snr", "EulerDiscreteScheduler", dict(SD15, rescale_betas_zero_snr=True,
                                                                 timestep_spacing="trailing"))
    return c


def rollout_configs():
    """(name, class, config, set_timesteps dict, step kwargs, first_step, add_noise)"""
    r = []
    add = lambda *a: r.append(a)
    add("lcm_vpred", "LCMScheduler", dict(SD15, prediction_type="v_prediction"), {"num_inference_steps": 4}, {}, 0,
        False)
    add("lcm_strength06", "LCMScheduler", dict(SD15), {"num_inference_steps": 4, "strength": 0.6}, {}, 0, True)
    add("lcm_custom_strength05", "LCMScheduler", dict(SD15), {"timesteps": [999, 759, 499, 259], "strength": 0.5}, {},
        0, False)
    add("lcm_sample_clip", "LCMScheduler", dict(SD15, prediction_type="sample", clip_sample=True,
                                                clip_sample_range=0.8, set_alpha_to_one=True, steps_offset=0),
        {"num_inference_steps": 3}, {}, 0, False)
    add("ddim_eta05", "DDIMScheduler", dict(SD15), {"num_inference_steps": 6}, {"eta": 0.5}, 0, True)
    add("ddim_vpred_trailing", "DDIMScheduler", dict(SD15, prediction_type="v_prediction", timestep_spacing="trailing"),
        {"num_inference_steps": 5}, {}, 0, False)
    add("ddim_clip_linear", "DDIMScheduler", {"clip_sample": True}, {"num_inference_steps": 5}, {}, 0, False)
    add("ddim_sample_squaredcos", "DDIMScheduler", {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample",
                                                    "clip_sample": False}, {"num_inference_steps": 4}, {}, 0, False)
    add("ddim_rescale_vpred", "DDIMScheduler", dict(SD15, rescale_betas_zero_snr=True, timestep_spacing="trailing",
                                                    prediction_type="v_prediction"), {"num_inference_steps": 5}, {},
        0, False)
    add("dpmpp_heun_o2", "DPMSolverMultistepScheduler", dict(SD15, solver_type="heun"), {"num_inference_steps": 8}, {},
        0, False)
    add("dpm_heun_o2", "DPMSolverMultistepScheduler", dict(SD15, solver_type="heun", algorithm_type="dpmsolver",
                                                           final_sigmas_type="sigma_min"),
        {"num_inference_steps": 8}, {}, 0, False)
    add("dpm_heun_o3", "DPMSolverMultistepScheduler", dict(SD15, solver_type="heun", solver_order=3),
        {"num_inference_steps": 8}, {}, 0, False)
    add("sde_dpmpp_o2", "DPMSolverMultistepScheduler", dict(SD15, algorithm_type="sde-dpmsolver++"),
        {"num_inference_steps": 6}, {}, 0, False)
    add("sde_dpmpp_o2_heun", "DPMSolverMultistepScheduler", dict(SD15, algorithm_type="sde-dpmsolver++",
                                                                 solver_type="heun"),
        {"num_inference_steps": 5}, {}, 0, False)
    add("sde_dpm_o1", "DPMSolverMultistepScheduler", dict(SD15, algorithm_type="sde-dpmsolver", solver_order=1,
                                                          final_sigmas_type="sigma_min"),
        {"num_inference_steps": 4}, {}, 0, False)
    add("dpmpp_vpred_trailing", "DPMSolverMultistepScheduler", dict(SD15, prediction_type="v_prediction",
                                                                    timestep_spacing="trailing"),
        {"num_inference_steps": 6}, {}, 0, False)
    add("dpm_vpred_o3", "DPMSolverMultistepScheduler", dict(SD15, prediction_type="v_prediction", solver_order=3,
                                                            algorithm_type="dpmsolver", final_sigmas_type="sigma_min"),
        {"num_inference_steps": 7}, {}, 0, False)
    add("dpmpp_sample_o2", "DPMSolverMultistepScheduler", dict(SD15, prediction_type="sample"),
        {"num_inference_steps": 5}, {}, 0, False)
    add("dpmpp_lu_o3", "DPMSolverMultistepScheduler", dict(SD15, use_lu_lambdas=True, solver_order=3),
        {"num_inference_steps": 10}, {}, 0, False)
    add("dpmpp_euler_at_final_20", "DPMSolverMultistepScheduler", dict(SD15, euler_at_final=True,
                                                                       final_sigmas_type="sigma_min"),
        {"num_inference_steps": 20}, {}, 0, False)
    add("dpmpp_o2_16_no_lof", "DPMSolverMultistepScheduler", dict(SD15, lower_order_final=False,
                                                                  final_sigmas_type="sigma_min"),
        {"num_inference_steps": 16}, {}, 0, False)
    add("dpmpp_clipped_o3", "DPMSolverMultistepScheduler", dict(SD15, lambda_min_clipped=-5.1, solver_order=3),
        {"num_inference_steps": 12}, {}, 0, False)
    add("dpmpp_img2img", "DPMSolverMultistepScheduler", dict(SD15), {"num_inference_steps": 10}, {}, 4, True)
    add("euler_karras", "EulerDiscreteScheduler", dict(SD15, use_karras_sigmas=True), {"num_inference_steps": 8}, {},
        0, False)
    add("euler_vpred_leading", "EulerDiscreteScheduler", dict(SD15, prediction_type="v_prediction",
                                                              timestep_spacing="leading"),
        {"num_inference_steps": 5}, {}, 0, False)
    add("euler_churn", "EulerDiscreteScheduler", dict(SD15), {"num_inference_steps": 6},
        {"s_churn": 1.0, "s_tmin": 0.5, "s_tmax": 10.0, "s_noise": 1.003}, 0, False)
    add("euler_continuous_vpred", "EulerDiscreteScheduler", dict(SD15, timestep_type="continuous",
                                                                 prediction_type="v_prediction"),
        {"num_inference_steps": 6}, {}, 0, False)
    add("euler_img2img", "EulerDiscreteScheduler", dict(SD15, timestep_spacing="trailing"),
        {"num_inference_steps": 4}, {}, 2, True)
    add("euler_a_vpred_trailing", "EulerAncestralDiscreteScheduler", dict(SD15, prediction_type="v_prediction",
                                                                         timestep_spacing="trailing"),
        {"num_inference_steps": 4}, {}, 0, False)
    add("euler_a_leading", "EulerAncestralDiscreteScheduler", dict(SD15, timestep_spacing="leading"),
        {"num_inference_steps": 5}, {}, 0, True)
    return r


def import_diffusers(src):
    if src:
        import huggingface_hub
        if not hasattr(huggingface_hub, "cached_download"):
            huggingface_hub.cached_download = lambda *a, **k: None
        sys.path.insert(0, src)
    import diffusers
    if diffusers.__version__ != "0.26.3":
        print(f"WARNING: diffusers {diffusers.__version__} (the fixtures use 0.26.3); pass --diffusers-src",
              file=sys.stderr)
    return diffusers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--diffusers-src", default=os.environ.get("DIFFUSERS_026"))
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                                      "data", "sched"))
    a = ap.parse_args()
    diffusers = import_diffusers(a.diffusers_src)
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    os.makedirs(a.out_dir, exist_ok=True)
    # ------------------------------------------------------------ schedules
    out = []
    for label, cls, cfg, steps_list, strength in schedule_configs():
        group = {"label": label, "class": cls, "config": cfg, "runs": []}
        if strength is not None:
            group["strength"] = strength
        for steps in steps_list:
            s = getattr(diffusers, cls).from_config(dict(cfg, _class_name=cls))
            if strength is not None:
                s.set_timesteps(steps, strength=strength)
            else:
                s.set_timesteps(steps)
            e = {"steps": steps}
            ts = s.timesteps.numpy()
            e["timesteps"] = [int(t) for t in ts] if ts.dtype.kind == "i" else [f32(t) for t in ts]
            if hasattr(s, "sigmas") and cls != "LCMScheduler" and cls != "DDIMScheduler" and steps <= SIGMA_STEPS:
                e["sigmas"] = [f32(v) for v in s.sigmas.numpy()]
            ins = s.init_noise_sigma
            e["init_noise_sigma"] = f32(ins.item() if hasattr(ins, "item") else ins)
            group["runs"].append(e)
        out.append(group)
    meta = {"generator": "tools/gen_sched_cases.py", "diffusers": diffusers.__version__,
            "torch": torch.__version__, "numpy": np.__version__}
    with open(os.path.join(a.out_dir, "schedules.json"), "w") as f:
        f.write('{"meta": ' + json.dumps(meta) + ',\n "schedules": [\n')
        f.write(",\n".join(json.dumps(e, separators=(",", ":")) for e in out))
        f.write("\n]}\n")
    print(f"schedules.json: {len(out)} configs, {sum(len(g['runs']) for g in out)} schedules")

    # ------------------------------------------------------------ rollouts
    tensors, md, names = {}, {}, []
    g = torch.Generator("cpu").manual_seed(20240601)
    shape = (1, 4, 2, 2)
    for name, cls, cfg, sts, step_kw, first, add_noise in rollout_configs():
        modname = {"LCMScheduler": "scheduling_lcm", "DDIMScheduler": "scheduling_ddim",
                   "DPMSolverMultistepScheduler": "scheduling_dpmsolver_multistep",
                   "EulerDiscreteScheduler": "scheduling_euler_discrete",
                   "EulerAncestralDiscreteScheduler": "scheduling_euler_ancestral_discrete"}[cls]
        mod = sys.modules[f"diffusers.schedulers.{modname}"]
        drawn = []

        def fake_randn(shp, generator=None, device=None, dtype=None, layout=None):
            t = torch.randn(shp, generator=g, dtype=torch.float32)
            drawn.append(t)
            return t

        mod.randn_tensor = fake_randn
        s = getattr(diffusers, cls).from_config(dict(cfg, _class_name=cls))
        kw = {k: v for k, v in sts.items()}
        if "timesteps" in kw:
            s.set_timesteps(timesteps=kw.pop("timesteps"), **kw)
        else:
            s.set_timesteps(**kw)
        x = torch.randn(shape, generator=g) * s.init_noise_sigma
        if add_noise:
            x0 = torch.randn(shape, generator=g)
            nz = torch.randn(shape, generator=g)
            t_an = s.timesteps[first:first + 1]
            x = s.add_noise(x0, nz, t_an)
            tensors[f"{name}.an.x0"] = x0.numpy()
            tensors[f"{name}.an.noise"] = nz.numpy()
            tensors[f"{name}.an.out"] = x.numpy().copy()
            cfg_t = float(t_an[0])
        tensors[f"{name}.x"] = x.numpy().copy()
        rows = {"mo": [], "prev": [], "den": [], "in": [], "noise": []}
        steps_with = {"den": [], "in": [], "noise": []}
        for i in range(first, len(s.timesteps)):
            t = s.timesteps[i]
            xin = s.scale_model_input(x, t)
            if not torch.equal(xin, x):
                rows["in"].append(xin.numpy().reshape(-1).copy())
                steps_with["in"].append(i)
            mo = torch.randn(shape, generator=g)
            rows["mo"].append(mo.numpy().reshape(-1))
            drawn.clear()
            res = s.step(mo, t, x, **step_kw)
            assert len(drawn) <= 1
            if drawn:
                rows["noise"].append(drawn[0].numpy().reshape(-1))
                steps_with["noise"].append(i)
            x = res.prev_sample
            rows["prev"].append(x.numpy().reshape(-1).copy())
            den = getattr(res, "denoised", None)
            if den is None:
                den = getattr(res, "pred_original_sample", None)
            if den is not None:
                rows["den"].append(den.numpy().reshape(-1).copy())
                steps_with["den"].append(i)
        for k, v in rows.items():
            if v:
                tensors[f"{name}.{k}"] = np.stack(v)
        for k, v in steps_with.items():
            md[f"{name}.{k}_steps"] = ",".join(str(i) for i in v)
        conf = dict(cfg, _class_name=cls, set_timesteps=dict(sts, first_step=first), **step_kw)
        if add_noise:
            conf["add_noise_t"] = cfg_t
        md[f"{name}.config"] = json.dumps(conf)
        names.append(name)
    md["cases"] = ",".join(names)
    md.update({k: str(v) for k, v in meta.items()})
    tensors = {k: np.ascontiguousarray(v.astype(np.float32)) for k, v in tensors.items()}
    path = os.path.join(a.out_dir, "rollouts.safetensors")
    save_file(tensors, path, metadata=md)
    os.chmod(path, 0o644)
    print(f"rollouts.safetensors: {len(names)} rollouts, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
