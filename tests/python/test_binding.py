"""The Python binding (python/streamdiff) against the C library and the CLI on the committed tiny models."""

import ctypes
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import streamdiff
from streamdiff import _capi, _images

ROOT = Path(__file__).resolve().parents[2]
SIZE = ["-W", "64", "-H", "64"]


def run_cli(cli, *args):
    r = subprocess.run([cli, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"streamdiff {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr[-2000:]}"
    return r


def pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def frames(n, w=64, h=64, seed=3):
    """n smooth synthetic RGB frames (a moving gradient with a little noise)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for k in range(n):
        r = 0.5 + 0.5 * np.sin((xx + 3 * k) / 9.0)
        gr = 0.5 + 0.5 * np.cos((yy - 2 * k) / 7.0)
        b = (xx + yy) / (w + h)
        img = np.stack([r, gr, b], -1) + 0.03 * g.standard_normal((h, w, 3)).astype(np.float32)
        out.append((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    return out


# ---------------------------------------------------------------- library, versions, layout

def test_versions():
    cm = (ROOT / "CMakeLists.txt").read_text()
    want = re.search(r"project\(streamdiff VERSION ([0-9.]+)", cm).group(1)
    assert streamdiff.library_version() == want
    assert streamdiff.library_path()
    assert isinstance(streamdiff.__version__, str)


def test_struct_mirrors_match_the_header_defaults():
    """The ctypes structs mirror include/streamdiff.h: the documented defaults land in the mirrored fields."""
    lib = _capi.lib()
    p = _capi.padded(_capi.sd_stream_params)
    lib.sd_stream_default_params(ctypes.byref(p))
    assert (p.width, p.height, list(p.t_index_list[:2]), p.n_t_index) == (512, 512, [32, 45], 2)
    assert (p.num_inference_steps, p.frame_buffer_size, p.use_denoising_batch, p.do_add_noise) == (50, 1, True, True)
    assert (p.cfg_type, p.seed, p.max_skip_frames, p.queue_size) == (_capi.SD_CFG_SELF, 2, 10, 4)
    assert abs(p.guidance_scale - 1.2) < 1e-6 and p.delta == 1.0 and p.similarity_threshold == 0.0
    assert p.use_taesd and p.drop_old_frames and p.use_graphs and p.rng == _capi.SD_RNG_TYPE_TORCH
    g = _capi.padded(_capi.sd_gen_params)
    lib.sd_gen_default_params(ctypes.byref(g))
    assert g.prompt == b"" and g.guidance_scale == 7.5 and g.seed == 42 and g.batch_size == 1
    assert abs(g.strength - 0.8) < 1e-6 and g.eta == 0.0 and not g.use_taesd and g.rng == _capi.SD_RNG_TYPE_TORCH
    m = _capi.padded(_capi.sd_model_params)
    lib.sd_model_default_params(ctypes.byref(m))
    assert m.backend == _capi.SD_BACKEND_CPU and m.taesd is None and not m.keep_f16 and not m.check_finite
    assert m.precision == _capi.SD_PRECISION_FP32


def test_model_params_reach_the_library(data):
    """sd_model_params fields set through the mirror arrive where the library reads them."""
    with streamdiff.Model(data / "models" / "tiny-sd15", taesd=data / "models" / "taesd-tiny",
                          prediction_type="v_prediction", check_finite=True, threads=1) as m:
        i = m.info
        assert i.has_taesd and i.prediction_type == "v_prediction"
    with pytest.raises(streamdiff.StreamdiffError, match="prediction"):
        streamdiff.Model(data / "models" / "tiny-sd15", prediction_type="x_prediction")


def test_precision(model, data):
    kw = dict(steps=2, width=32, height=32, seed=4, guidance_scale=1.0, output_type="np")
    want = model.txt2img("a red fox", **kw)
    with streamdiff.Model(data / "models" / "tiny-sd15", precision="fp32") as m:
        assert np.array_equal(m.txt2img("a red fox", **kw), want)
    with streamdiff.Model(data / "models" / "tiny-sd15", precision="bf16") as m:
        got = m.txt2img("a red fox", **kw)
        assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).mean() < 8
    with pytest.raises(ValueError, match="bf16"):
        streamdiff.Model(data / "models" / "tiny-sd15", precision="fp64")


def test_model_info(model, data):
    i = model.info
    assert i.arch == "sd1" and i.scheduler == "LCMScheduler" and i.prediction_type == "epsilon"
    assert i.latent_channels == 4 and i.context_dim == 32 and i.weight_bytes > 0 and not i.has_taesd
    assert Path(i.source).resolve() == (data / "models" / "tiny-sd15").resolve()


# ---------------------------------------------------------------- txt2img / img2img = the CLI

def test_txt2img_equals_cli(model, cli, tmp_path):
    img = model.txt2img("a red fox", steps=2, width=64, height=64, seed=7, guidance_scale=1.0)
    assert isinstance(img, Image.Image) and img.size == (64, 64) and img.mode == "RGB"
    out = tmp_path / "cli.png"
    run_cli(cli, "txt2img", "-m", model.path, "-p", "a red fox", "--steps", 2, *SIZE, "-s", 7, "--cfg-scale", 1,
            "-t", 2, "-o", out)
    assert np.array_equal(np.asarray(img), pixels(out))
    # numpy output: the same pixels; the array wraps the library's bytes (no copy)
    arr = model.txt2img("a red fox", steps=2, width=64, height=64, seed=7, guidance_scale=1.0, output_type="np")
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8 and not arr.flags.owndata
    assert np.array_equal(arr, np.asarray(img))
    # another seed gives another image
    other = model.txt2img("a red fox", steps=2, width=64, height=64, seed=8, guidance_scale=1.0, output_type="np")
    assert not np.array_equal(other, arr)


def test_txt2img_cfg_negative_sampler_equals_cli(model, cli, tmp_path):
    kw = dict(steps=3, width=64, height=48, seed=11, guidance_scale=4.0, negative_prompt="blurry",
              sampler="dpm++2m", schedule="karras")
    img = model.txt2img("an old lighthouse", **kw)
    out = tmp_path / "cli.png"
    run_cli(cli, "txt2img", "-m", model.path, "-p", "an old lighthouse", "-n", "blurry", "--steps", 3, "-W", 64,
            "-H", 48, "-s", 11, "--cfg-scale", 4, "--sampler", "dpm++2m", "--scheduler", "karras", "-t", 2, "-o", out)
    assert np.array_equal(np.asarray(img), pixels(out))


def test_img2img_tcd_equals_cli_and_keeps_the_input_type(model, cli, tmp_path):
    src = frames(1, 64, 64)[0]
    init = tmp_path / "init.png"
    Image.fromarray(src).save(init)
    kw = dict(strength=0.6, steps=4, seed=5, guidance_scale=1.0, sampler="tcd", eta=0.3)
    out_np = model.img2img(src, "a watercolor", **kw)
    assert isinstance(out_np, np.ndarray) and out_np.shape == (64, 64, 3)
    out_pil = model.img2img(Image.fromarray(src), "a watercolor", **kw)
    assert isinstance(out_pil, Image.Image)
    assert np.array_equal(np.asarray(out_pil), out_np)
    out = tmp_path / "cli.png"
    run_cli(cli, "img2img", "-m", model.path, "-i", init, "-p", "a watercolor", "--strength", 0.6, "--steps", 4,
            "-s", 5, "--cfg-scale", 1, "--sampler", "tcd", "--eta", 0.3, "-t", 2, "-o", out)
    assert np.array_equal(out_np, pixels(out))
    # gamma matters
    other = model.img2img(src, "a watercolor", **dict(kw, eta=0.0))
    assert not np.array_equal(other, out_np)


def test_batch_and_progress(model):
    seen = []
    imgs = model.txt2img("a cat", steps=2, width=32, height=32, batch_size=2, guidance_scale=1.0,
                         progress=lambda step, total, el: seen.append((step, total)))
    assert isinstance(imgs, list) and len(imgs) == 2 and all(i.size == (32, 32) for i in imgs)
    assert seen == [(1, 2), (2, 2)]


def test_model_sources_folder_single_file_and_hf_cache(model, data, tmp_path, monkeypatch):
    want = model.txt2img("a boat", steps=1, width=32, height=32, seed=3, guidance_scale=1.0, output_type="np")
    with streamdiff.Model(data / "models" / "tiny-sd15-single.safetensors",
                          config_dir=data / "models" / "tiny-sd15") as single:
        got = single.txt2img("a boat", steps=1, width=32, height=32, seed=3, guidance_scale=1.0, output_type="np")
        assert np.array_equal(got, want)
    # a Hugging Face cache id (never downloads): models--org--name/snapshots/<rev> + refs/main
    repo = tmp_path / "hub" / "models--tiny--sd15"
    (repo / "snapshots").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").symlink_to((data / "models" / "tiny-sd15").resolve())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with streamdiff.Model("tiny/sd15", keep_f16=True) as hub:
        got = hub.txt2img("a boat", steps=1, width=32, height=32, seed=3, guidance_scale=1.0, output_type="np")
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 2  # F16 weights kept as F16


# ---------------------------------------------------------------- streams

def stream_outputs(m, imgs, prompt="a cat", **kw):
    """Python stream outputs aligned with their input frames: the last frame is repeated len(t)-1 times at
    the end and the first len(t)-1 (warm-up) outputs are dropped, as `streamdiff stream` does."""
    s = m.stream(**kw)
    s.prepare(prompt)
    lag = len(s.t_index_list) - 1
    outs = [s(f) for f in imgs + [imgs[-1]] * lag]
    s.close()
    return outs[lag:]


def test_stream_equals_cli_stream(tmodel, cli, data, tmp_path):
    imgs = frames(4)
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    dst.mkdir()
    for k, f in enumerate(imgs):
        Image.fromarray(f).save(src / f"f{k:03d}.png")
    run_cli(cli, "stream", "-m", tmodel.path, "--taesd", data / "models" / "taesd-tiny",
            "-i", src, "-o", f"{dst}/", "-p", "a cat", *SIZE, "--t-index", "32,45", "-t", 2, "--stats-every", 0,
            "--precision", "fp32")  # the Model's default (the stream CLI's default is auto)
    cli_frames = sorted(dst.glob("frame_*.png"))
    assert len(cli_frames) == len(imgs)
    py = stream_outputs(tmodel, imgs, t_index_list=[32, 45], width=64, height=64)
    for k, (a, p) in enumerate(zip(py, cli_frames)):
        assert isinstance(a, np.ndarray) and a.shape == (64, 64, 3)
        assert np.array_equal(a, pixels(p)), f"frame {k} differs from the CLI stream"


def test_stream_types_txt2img_update_and_rebuild(tmodel):
    imgs = frames(3)
    s = tmodel.stream(t_index_list=[32, 45], width=64, height=64, cfg_type="self")
    s.prepare("a cat", guidance_scale=1.2, delta=1.0)
    o1 = s(Image.fromarray(imgs[0]))
    assert isinstance(o1, Image.Image) and o1.size == (64, 64)
    o2 = s(imgs[1])
    assert isinstance(o2, np.ndarray) and o2.shape == (64, 64, 3)
    t = s()  # txt2img frame
    assert isinstance(t, Image.Image)
    assert s.txt2img(output_type="np").shape == (64, 64, 3)
    st = s.stats
    assert st.frames_in >= 2 and st.frames_out >= 2
    # live updates change the output
    s2 = tmodel.stream(t_index_list=[32, 45], width=64, height=64)
    s2.prepare("a cat")
    base = [s2(f) for f in imgs]
    s3 = tmodel.stream(t_index_list=[32, 45], width=64, height=64)
    s3.prepare("a cat")
    s3(imgs[0])
    s3.update(prompt="a dog in the rain", guidance=2.0, delta=0.5)
    changed = [s3(f) for f in imgs[1:]]
    assert not np.array_equal(changed[-1], base[-1])
    # a new t_index_list rebuilds the stream: it then equals a fresh stream with that list
    s3.update(t_index_list=[20, 30, 45])
    assert s3.t_index_list == [20, 30, 45] and s3.prompt == "a dog in the rain"
    fresh = tmodel.stream(t_index_list=[20, 30, 45], width=64, height=64, guidance_scale=2.0, delta=0.5)
    fresh.prepare("a dog in the rain")
    a = [s3(f) for f in imgs]
    b = [fresh(f) for f in imgs]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # the similarity filter (its first frame is the reference): the same frame again is skipped, the
    # previous output repeats
    fresh.enable_similar_image_filter(0.5, 3)
    before = fresh.stats.frames_skipped
    o_ref = fresh(imgs[-1])
    o_skip = fresh(imgs[-1])
    assert fresh.stats.frames_skipped == before + 1
    assert np.array_equal(o_skip, o_ref)
    fresh.disable_similar_image_filter()
    for x in (s, s2, s3, fresh):
        x.close()


def test_stream_txt2img_frames_are_reproducible(tmodel):
    def run(seed):
        with tmodel.stream(t_index_list=[0, 16, 32, 45], width=32, height=32, seed=seed, cfg_type="none") as s:
            s.prepare("a castle")
            return [s.txt2img(output_type="np") for _ in range(5)]
    a, b, c = run(2), run(2), run(3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[-1], c[-1])


def test_stream_prompt_and_seed_blending(tmodel, cli, data, tmp_path):
    """update_stream_params (the forks' prompt_list / seed_list): ends of a slerp equal the single prompt, a
    weight change re-blends, a rebuild keeps the lists, the CLI's --blend-prompt / --seeds give the same frames,
    bad lists raise with the library's message."""
    def run(setup, n=3):
        with tmodel.stream(t_index_list=[35], width=32, height=32, seed=7, cfg_type="none") as s:
            setup(s)
            return [s.txt2img(output_type="np") for _ in range(n)]
    fox = run(lambda s: s.prepare("a red fox"))
    castle = run(lambda s: s.prepare("a castle"))
    at0 = run(lambda s: s.update_stream_params(prompt_list=[("a red fox", 1), ("a castle", 0)]))
    at1 = run(lambda s: s.update_stream_params(prompt_list=[("a red fox", 0), ("a castle", 3)]))
    half = run(lambda s: s.update_stream_params(prompt_list=[("a red fox", 1), ("a castle", 1)]))
    assert all(np.array_equal(x, y) for x, y in zip(at0, fox)) and all(np.array_equal(x, y) for x, y in zip(at1, castle))
    assert not np.array_equal(half[-1], fox[-1]) and not np.array_equal(half[-1], castle[-1])

    def reweight(s):
        s.update_stream_params(prompt_list=[("a red fox", 1), ("a castle", 0)])
        s.update_prompt_weights([1, 1])
    assert all(np.array_equal(x, y) for x, y in zip(run(reweight), half))
    # seeds: one seed of any weight = that seed; a blend differs
    s8 = run(lambda s: (s.prepare("a red fox"), s.update_stream_params(seed_list=[(8, 0.3)])))
    with tmodel.stream(t_index_list=[35], width=32, height=32, seed=8, cfg_type="none") as s:
        s.prepare("a red fox")
        ref8 = [s.txt2img(output_type="np") for _ in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(s8, ref8))
    def run_img(setup):  # the initial noise acts on img2img frames (txt2img frames draw their own latents)
        with tmodel.stream(t_index_list=[35], width=32, height=32, seed=7, cfg_type="none") as s:
            s.prepare("a red fox")
            setup(s)
            return [s(f) for f in frames(3, 32, 32)]
    plain = run_img(lambda s: None)
    same7 = run_img(lambda s: s.update_stream_params(seed_list=[(7, 1), (8, 0)], seed_interpolation_method="slerp"))
    mix = run_img(lambda s: s.update_stream_params(seed_list=[(7, 1), (8, 1)], seed_interpolation_method="slerp"))
    assert all(np.array_equal(x, y) for x, y in zip(same7, plain))
    assert not np.array_equal(mix[-1], plain[-1])
    # the CLI with the same lists gives the same frames
    out = tmp_path / "cli"
    run_cli(cli, "stream", "-m", tmodel.path, "--taesd", data / "models" / "taesd-tiny", "--txt2img", "--frames", 3,
            "-W", 32, "-H", 32, "--t-index", 35, "--cfg-type", "none", "--blend-prompt", "a red fox:1",
            "--blend-prompt", "a castle:1", "--seeds", "7", "-t", 2, "--stats-every", 0, "--precision", "fp32",
            "-o", f"{out}/")
    for k, p in enumerate(sorted(out.glob("frame_*.png"))):
        assert np.array_equal(pixels(p), half[k]), f"CLI blend frame {k} differs"
    # a rebuild (new t_index_list) keeps the blend
    with tmodel.stream(t_index_list=[35], width=32, height=32, seed=7, cfg_type="none") as s:
        s.update_stream_params(prompt_list=[("a red fox", 0), ("a castle", 1)])
        s.update(t_index_list=[20, 40])
        assert s._prompt_list is not None
        with pytest.raises(streamdiff.StreamdiffError, match="weights sum to 0"):
            s.update_stream_params(prompt_list=[("a", 0), ("b", 0)])
        with pytest.raises(streamdiff.StreamdiffError, match="negative"):
            s.update_stream_params(seed_list=[(1, -1)])
        with pytest.raises(streamdiff.StreamdiffError, match="at most 8"):
            s.update_stream_params(prompt_list=[("p", 1)] * 9)
        with pytest.raises(ValueError, match="linear' or 'slerp"):
            s.update_stream_params(prompt_list=[("p", 1)], interpolation_method="cubic")
        with pytest.raises(ValueError, match="2 weights for a seed list of 0"):
            s.update_seed_weights([1, 1])


# ---------------------------------------------------------------- LoRA

def test_lora_live_scales_equal_cli_and_restore_the_base(model, cli, data, tmp_path):
    style = data / "lora" / "style_kohya.safetensors"
    kw = dict(steps=2, width=64, height=64, seed=9, guidance_scale=1.0, output_type="np")
    base = model.txt2img("a red fox", **kw)
    try:
        model.load_lora(style, 0.8)
        assert model.loras == {str(style): 0.8} and model.info.active_loras == 1
        styled = model.txt2img("a red fox", **kw)
        assert not np.array_equal(styled, base)
        out = tmp_path / "cli.png"
        run_cli(cli, "txt2img", "-m", model.path, "-p", "a red fox", "--steps", 2, *SIZE, "-s", 9, "--cfg-scale", 1,
                "--lora", f"{style}:0.8", "-t", 2, "-o", out)
        assert np.array_equal(styled, pixels(out))
        model.set_lora_scale(style, 0.0)
        assert np.array_equal(model.txt2img("a red fox", **kw), base)
        model.set_lora_scale(style, 0.8)
        assert np.array_equal(model.txt2img("a red fox", **kw), styled)
        with pytest.raises(KeyError):
            model.set_lora_scale(data / "lora" / "nope.safetensors", 1.0)
        with pytest.raises(streamdiff.NotFoundError, match="nope"):
            model.load_lora(data / "lora" / "nope.safetensors")
        assert model.loras == {str(style): 0.8}  # a failed load keeps the active set
    finally:
        model.clear_loras()
    assert model.loras == {} and model.info.active_loras == 0
    assert np.array_equal(model.txt2img("a red fox", **kw), base)  # bit for bit


def test_lora_change_reaches_open_streams(tmodel, data):
    style = data / "lora" / "style_kohya.safetensors"
    img = frames(1)[0]

    def outs():
        with tmodel.stream(t_index_list=[32, 45], width=64, height=64) as s:
            s.prepare("a cat")
            return [s(img) for _ in range(3)]
    base = outs()
    s = tmodel.stream(t_index_list=[32, 45], width=64, height=64)
    s.prepare("a cat")
    try:
        tmodel.load_lora(style, 1.0)  # the open stream re-encodes its prompt with the new text encoder
        with_lora = [s(img) for _ in range(3)]
    finally:
        tmodel.clear_loras()
        s.close()
    assert not np.array_equal(with_lora[-1], base[-1])


# ---------------------------------------------------------------- errors

def test_errors_carry_the_library_message(model, tmodel, data, tmp_path):
    with pytest.raises(streamdiff.NotFoundError) as e:
        streamdiff.Model(tmp_path / "no-such-model")
    assert "no-such-model" in str(e.value) and e.value.status_name == "SD_ERR_NOT_FOUND"
    assert isinstance(e.value, streamdiff.StreamdiffError) and isinstance(e.value, FileNotFoundError)
    # a bad shape / size: the library's own rule and message
    with pytest.raises(streamdiff.InvalidArgumentError, match="multiples of 8"):
        model.txt2img("x", width=63, height=64, steps=1)
    with pytest.raises(streamdiff.StreamdiffError, match="width|height|size"):
        tmodel.stream(width=60, height=64)
    with pytest.raises(streamdiff.StreamdiffError, match="t_index"):
        tmodel.stream(t_index_list=[32, 77], width=64, height=64)
    with pytest.raises(streamdiff.InvalidArgumentError, match="tcd"):
        model.txt2img("x", sampler="pndm", steps=1, width=32, height=32)
    with pytest.raises(streamdiff.InvalidArgumentError, match="gamma"):
        model.txt2img("x", sampler="tcd", eta=1.5, steps=1, width=32, height=32)
    # image arrays the binding cannot pass: a clear ValueError before the library
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        model.img2img(np.zeros((32, 32, 4), np.uint8), "x")
    with pytest.raises(ValueError, match="uint8"):
        model.img2img(np.zeros((32, 32, 3), np.float32), "x")
    with pytest.raises(ValueError, match="output_type"):
        model.txt2img("x", output_type="tensor")
    # closed stream / model
    s = tmodel.stream(width=32, height=32)
    s.prepare("x")
    s.close()
    with pytest.raises(streamdiff.ClosedError, match="closed"):
        s(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(streamdiff.ClosedError):
        s.update(prompt="y")
    m2 = streamdiff.Model(data / "models" / "tiny-sd15")
    s2 = m2.stream(width=32, height=32)
    m2.close()  # closes its streams too
    assert s2.closed
    with pytest.raises(streamdiff.ClosedError, match="model is closed"):
        m2.txt2img("x")


# ---------------------------------------------------------------- GIL, copies

def test_compute_releases_the_gil(model):
    done = threading.Event()
    result = {}

    def work():
        result["img"] = model.txt2img("a red fox", steps=4, width=64, height=64, guidance_scale=1.0)
        done.set()

    t = threading.Thread(target=work)
    count = 0
    t0 = time.perf_counter()
    t.start()
    while not done.is_set():
        count += 1
    t.join()
    el = time.perf_counter() - t0
    assert result["img"].size == (64, 64)
    # with the GIL held for the whole call this thread could not count at all while C computes
    assert count > 1000 and el > 0.05, (count, el)


def test_numpy_in_place_and_zero_copy_views():
    a = np.zeros((8, 16, 3), np.uint8)
    assert _images.as_rgb_array(a) is a  # contiguous uint8 HxWx3: handed over as it is
    img = _images.to_sd_image(a)
    assert ctypes.addressof(img.data.contents) == a.ctypes.data and (img.width, img.height) == (16, 8)
    v = a[:, ::2]  # not contiguous: one copy
    assert _images.as_rgb_array(v) is not v


# ---------------------------------------------------------------- ControlNet

def test_controlnet_txt2img_img2img_equal_cli(model, cli, data, tmp_path):
    net = model.load_controlnet(data / "models" / "controlnet-tiny-sd15")
    edges_path = data / "preprocess" / "canny_100_200.png"
    edges = Image.open(edges_path).convert("RGB")
    kw = dict(steps=2, width=48, height=40, seed=3, guidance_scale=1.0)
    plain = model.txt2img("a house on a hill", **kw)
    img = model.txt2img("a house on a hill", controls=[streamdiff.Control(net, edges, scale=0.9)], **kw)
    assert not np.array_equal(np.asarray(plain), np.asarray(img))
    out = tmp_path / "cli.png"
    run_cli(cli, "txt2img", "-m", model.path, "-p", "a house on a hill", "--steps", 2, "-W", 48, "-H", 40, "-s", 3,
            "--cfg-scale", 1, "-t", 2, "--control", f"{net.path}:{edges_path}:0.9", "-o", out)
    assert np.array_equal(np.asarray(img), pixels(out))
    # scale 0 is the plain image; a guidance window and img2img run; two nets at once
    zero = model.txt2img("a house on a hill", controls=[streamdiff.Control(net, edges, scale=0.0)], **kw)
    assert np.array_equal(np.asarray(zero), np.asarray(plain))
    two = model.txt2img("a house on a hill", controls=[streamdiff.Control(net, edges, 0.8, 0.0, 0.5),
                                                       streamdiff.Control(net, np.asarray(edges), 0.5)], **kw)
    assert two.size == (48, 40)
    init = frames(1, 48, 40)[0]
    i2i = model.img2img(init, "a house", strength=0.9, controls=[streamdiff.Control(net, edges)], **kw)
    assert isinstance(i2i, np.ndarray) and i2i.shape == (40, 48, 3)
    net.close()
    with pytest.raises(streamdiff.ClosedError):
        model.txt2img("x", controls=[streamdiff.Control(net, edges)], **kw)


def test_control_preprocess_equals_opencv_reference(data):
    photo = Image.open(data / "preprocess" / "input.png").convert("RGB")
    ref = np.asarray(Image.open(data / "preprocess" / "canny_50_120.png").convert("RGB"))
    got = streamdiff.control_preprocess(photo, "canny", low=50, high=120)
    assert isinstance(got, Image.Image) and np.array_equal(np.asarray(got), ref)
    soft = streamdiff.control_preprocess(np.asarray(photo), "softedge")
    assert isinstance(soft, np.ndarray) and soft.shape == ref.shape and soft.max() == 255
    with pytest.raises(ValueError):
        streamdiff.control_preprocess(photo, "depth")
    with pytest.raises(streamdiff.InvalidArgumentError, match="canny thresholds"):
        streamdiff.control_preprocess(photo, "canny", low=300, high=200)


def test_controlnet_stream_and_errors(data):
    with streamdiff.Model(data / "models" / "tiny-sd15", threads=2) as m:
        net = m.load_controlnet(data / "models" / "controlnet-tiny-sd15-single.safetensors")
        with pytest.raises(streamdiff.StreamdiffError, match="another base model"):
            m.load_controlnet(data / "models" / "controlnet-tiny-sd2")
        fr = frames(3, 32, 32)
        s0 = m.stream(width=32, height=32, use_taesd=False, cfg_type="none")
        s1 = m.stream(width=32, height=32, use_taesd=False, cfg_type="none",
                      controls=[streamdiff.Control(net, None, scale=1.0)], control_preprocess="canny")
        s0.prepare("a house")
        s1.prepare("a house")
        outs0 = [np.asarray(s0(f)) for f in fr]
        outs1 = [np.asarray(s1(f)) for f in fr]
        assert not np.array_equal(outs0[-1], outs1[-1])
        with pytest.raises(streamdiff.InvalidArgumentError):
            s1.txt2img()  # control images made from frames: a txt2img frame has none
    assert net.closed  # closed with its model


def test_sdxl_txt2img_options_and_stream_equal_cli(cli, data, tmp_path):
    """SDXL (tiny-sdxl): txt2img with prompt_2 and micro-conditioning equals the CLI's; an SDXL stream (with the
    tiny TAESD, laid out as TAESDXL) equals `streamdiff stream` frame by frame; a bad SDXL option is a TypeError."""
    xl = data / "models" / "tiny-sdxl"
    with streamdiff.Model(xl, taesd=data / "models" / "taesd-tiny", threads=2) as m:
        assert m.info.arch == "sdxl"
        kw = dict(steps=1, width=32, height=32, seed=5, guidance_scale=0.0, sampler="euler_a")
        img = m.txt2img("a red fox", prompt_2="an oil painting", original_size=(96, 64),
                        crops_coords_top_left=(16, 8), **kw)
        out = tmp_path / "xl.png"
        run_cli(cli, "txt2img", "-m", xl, "-p", "a red fox", "--prompt-2", "an oil painting", "--original-size",
                "64x96", "--crop", "16,8", "--steps", 1, "-W", 32, "-H", 32, "-s", 5, "--cfg-scale", 0, "--sampler",
                "euler_a", "-t", 2, "-o", out)
        assert np.array_equal(np.asarray(img), pixels(out))
        assert not np.array_equal(np.asarray(img), np.asarray(m.txt2img("a red fox", **kw)))
        with pytest.raises(TypeError):
            m.txt2img("a red fox", original_sise=(64, 64), **kw)
        imgs = frames(3, w=64, h=32)
        src, dst = tmp_path / "in", tmp_path / "out"
        src.mkdir()
        dst.mkdir()
        for k, f in enumerate(imgs):
            Image.fromarray(f).save(src / f"f{k:03d}.png")
        run_cli(cli, "stream", "-m", xl, "--taesd", data / "models" / "taesd-tiny", "-i", src, "-o", f"{dst}/",
                "-p", "a cat", "-W", 64, "-H", 32, "--t-index", "20,40", "--cfg-type", "full", "--guidance", 1.5,
                "-n", "blurry", "-t", 2, "--stats-every", 0, "--precision", "fp32")
        cli_frames = sorted(dst.glob("frame_*.png"))
        assert len(cli_frames) == len(imgs)
        s = m.stream(t_index_list=[20, 40], width=64, height=32, cfg_type="full", guidance_scale=1.5)
        s.prepare("a cat", negative_prompt="blurry")
        outs = [s(f) for f in imgs + [imgs[-1]]][1:]
        s.close()
        for k, (a, p) in enumerate(zip(outs, cli_frames)):
            assert np.array_equal(a, pixels(p)), f"SDXL stream frame {k} differs from the CLI stream"


def test_controlnet_stream_live_settings(data):
    """Stream.set_control: a live scale / preprocessor equals a stream created with it; bad values raise and
    change nothing; the settings survive a rebuild (a new t_index_list)."""
    with streamdiff.Model(data / "models" / "tiny-sd15", threads=2) as m:
        net = m.load_controlnet(data / "models" / "controlnet-tiny-sd15")
        fr = frames(3, 32, 32)
        kw = dict(width=32, height=32, use_taesd=False, cfg_type="none", t_index_list=[20, 40])

        def run(s):
            s.prepare("a house")
            return [np.asarray(s(f)) for f in fr]
        ref = run(m.stream(controls=[streamdiff.Control(net, None, scale=0.3)], control_preprocess="canny", **kw))
        s = m.stream(controls=[streamdiff.Control(net, None, scale=1.0)], **kw)
        assert s.get_control(0) == dict(scale=1.0, start=0.0, end=1.0, preprocess="none", low=100, high=200,
                                        threshold=64, from_frame=True)
        s.set_control(0, scale=0.3, preprocess="canny")
        got = run(s)
        assert all(np.array_equal(a, b) for a, b in zip(got, ref))
        with pytest.raises(streamdiff.InvalidArgumentError, match="scale"):
            s.set_control(0, scale=11)
        with pytest.raises(streamdiff.InvalidArgumentError, match="index 1"):
            s.set_control(1, scale=0.5)
        with pytest.raises(streamdiff.InvalidArgumentError):
            s.set_control(0, low=300, high=200)
        with pytest.raises(ValueError, match="unknown control preprocessor"):
            s.set_control(0, preprocess="depth")
        assert s.get_control(0)["scale"] == pytest.approx(0.3) and s.get_control(0)["preprocess"] == "canny"
        s.update(t_index_list=[25, 45])  # rebuilt: the live settings stay
        assert s.get_control(0)["scale"] == pytest.approx(0.3) and s.get_control(0)["preprocess"] == "canny"
