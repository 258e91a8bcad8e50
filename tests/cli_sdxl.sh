#!/usr/bin/env bash
# SDXL through the CLI on the committed tiny SDXL folder (tests/data/models/tiny-sdxl):
# txt2img with CFG and a negative prompt, sdxl-turbo style (Euler-a, no CFG),
# img2img, the micro-conditioning options (they change the image; bad values are
# usage errors), the PNG "parameters" naming the model family, and named
# errors for a folder without text_encoder_2 and for an SDXL refiner, and `stream` on SDXL (txt2img
# frames to a folder, img2img on them).
set -uo pipefail
BIN="$1"
DATA="${SD_TEST_DATA:-}"
MODEL="$DATA/models/tiny-sdxl"
if [ -z "$DATA" ] || [ ! -f "$MODEL/model_index.json" ]; then
    echo "cli_sdxl: FAIL: the committed tiny SDXL model '$MODEL' is absent (ctest sets SD_TEST_DATA to tests/data)"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli_sdxl: FAIL: $*"; exit 1; }

COMMON=(-m "$MODEL" -W 32 -H 24 --threads 2 -p "a red fox in the snow")

run() { # run NAME args...: must succeed
    local name="$1"
    shift
    "$BIN" "$@" >"$tmp/$name.log" 2>&1 || fail "$name: exit $? ($(tail -3 "$tmp/$name.log"))"
}

run cfg txt2img "${COMMON[@]}" --steps 2 --cfg-scale 5 -n "blurry" -o "$tmp/cfg.png"
run turbo txt2img "${COMMON[@]}" --sampler euler_a --steps 1 --cfg-scale 0 -o "$tmp/turbo.png"
run turbo2 txt2img "${COMMON[@]}" --sampler euler_a --steps 1 --cfg-scale 0 -o "$tmp/turbo2.png"
cmp -s "$tmp/turbo.png" "$tmp/turbo2.png" || fail "the same seed gave different files"
run crop txt2img "${COMMON[@]}" --sampler euler_a --steps 1 --cfg-scale 0 --crop 64,32 --original-size 96x64 \
    -o "$tmp/crop.png"
cmp -s "$tmp/turbo.png" "$tmp/crop.png" && fail "--crop / --original-size changed nothing"
run p2 txt2img "${COMMON[@]}" --sampler euler_a --steps 1 --cfg-scale 0 --prompt-2 "an oil painting" -o "$tmp/p2.png"
cmp -s "$tmp/turbo.png" "$tmp/p2.png" && fail "--prompt-2 changed nothing"
run i2i img2img "${COMMON[@]}" -i "$tmp/cfg.png" --strength 0.5 --steps 4 --cfg-scale 3 -o "$tmp/i2i.png"
[ -s "$tmp/i2i.png" ] || fail "img2img wrote no image"

if command -v python3 >/dev/null 2>&1; then
    params=$(python3 - "$tmp/crop.png" <<'EOF'
import struct, sys, zlib
b = open(sys.argv[1], 'rb').read()
pos = 8
while pos + 8 <= len(b):
    n, typ = struct.unpack('>I4s', b[pos:pos + 8])
    body = b[pos + 8:pos + 8 + n]
    if typ == b'tEXt' and body.startswith(b'parameters\0'):
        print(body.split(b'\0', 1)[1].decode('latin-1'))
    elif typ == b'zTXt' and body.startswith(b'parameters\0'):
        print(zlib.decompress(body.split(b'\0', 1)[1][1:]).decode('latin-1'))
    pos += 12 + n
EOF
)
    for want in "Model family: sdxl" "Crop top-left: 64,32" "Original size: 96x64"; do
        echo "$params" | grep -q "$want" || fail "PNG parameters lack '$want': $params"
    done
fi

# usage errors: exit 2, naming the option
for bad in "--crop 5" "--original-size 0x64" "--target-size 64" "--negative-crop a,b"; do
    # shellcheck disable=SC2086
    "$BIN" txt2img "${COMMON[@]}" $bad -o "$tmp/x.png" >"$tmp/bad.log" 2>&1
    rc=$?
    [ "$rc" = 2 ] || fail "'$bad': exit $rc, want 2 ($(cat "$tmp/bad.log"))"
    grep -q -- "${bad%% *}" "$tmp/bad.log" || fail "'$bad': the message does not name the option: $(cat "$tmp/bad.log")"
done

# bad folders: named errors (exit 1), no crash
mkdir -p "$tmp/no_te2" "$tmp/refiner"
for c in tokenizer tokenizer_2 text_encoder unet vae scheduler; do ln -s "$MODEL/$c" "$tmp/no_te2/$c"; done
cp "$MODEL/model_index.json" "$tmp/no_te2/"
"$BIN" txt2img -m "$tmp/no_te2" -p x -o "$tmp/x.png" >"$tmp/e1.log" 2>&1
rc=$?
[ "$rc" = 1 ] || fail "a folder without text_encoder_2: exit $rc, want 1"
grep -q "text_encoder_2" "$tmp/e1.log" || fail "missing text_encoder_2 not named: $(cat "$tmp/e1.log")"
for c in tokenizer_2 text_encoder_2 unet vae scheduler; do ln -s "$MODEL/$c" "$tmp/refiner/$c"; done
printf '{"_class_name": "StableDiffusionXLImg2ImgPipeline", "requires_aesthetics_score": true, "text_encoder": [null, null]}' \
    >"$tmp/refiner/model_index.json"
"$BIN" img2img -m "$tmp/refiner" -i "$tmp/cfg.png" -p x -o "$tmp/x.png" >"$tmp/e2.log" 2>&1
rc=$?
[ "$rc" = 1 ] || fail "an SDXL refiner: exit $rc, want 1"
grep -q "refiner" "$tmp/e2.log" || fail "the refiner is not named: $(cat "$tmp/e2.log")"

# `stream` on SDXL (with the tiny TAESD, as TAESDXL would be): txt2img frames into a folder, then img2img on
# them with RCFG and a negative prompt (frames of another size are fitted); needs the video layer (FFmpeg)
if [[ "$("$BIN" --version 2>&1)" == *"video (FFmpeg) no"* ]]; then
    echo "cli_sdxl: stream part skipped: built without FFmpeg"
else
    XS=(-m "$MODEL" --taesd "$DATA/models/taesd-tiny" --threads 2 --stats-every 0)
    run st2i stream "${XS[@]}" -W 64 -H 32 --txt2img --frames 4 -p "a red fox" -o "$tmp/xl_frames/"
    [ "$(ls "$tmp/xl_frames" | grep -c '^frame_[0-9]*\.png$')" -eq 4 ] || fail "stream txt2img: expected 4 PNGs"
    run si2i stream "${XS[@]}" -W 32 -H 32 -i "$tmp/xl_frames" -o "$tmp/xl_out/" -p "an oil painting" -n "blurry" \
        --t-index 20,40 --cfg-type self
    probe=$("$BIN" stream --probe "$tmp/xl_out")
    echo "$probe" | grep -q "^frames 4 size 32x32" || fail "stream img2img on SDXL: $probe"
fi

# single-file SDXL checkpoints (SGM layout, tools/gen_testdata.py): the same pixels as the folder they were made
# from, with the folder as --config-dir (the tiny models' head counts are not in the weights); the distilled
# (SSD-1B / Vega-like) UNet too, against a folder view of tiny-sdxl with that UNet
idat() { od -An -tx1 -v "$1" | tr -d ' \n' | sed 's/.*49444154//'; }
M="$DATA/models"
run f1 txt2img "${COMMON[@]}" --steps 2 --cfg-scale 5 -n "blurry" -o "$tmp/f1.png"
run s1 txt2img "${COMMON[@]/#$MODEL/$M/tiny-sdxl-single.safetensors}" --config-dir "$MODEL" --steps 2 --cfg-scale 5 \
    -n "blurry" -o "$tmp/s1.png"
[ "$(idat "$tmp/f1.png")" = "$(idat "$tmp/s1.png")" ] || fail "the SDXL single file's image differs from the folder's"
mkdir -p "$tmp/asym"
for c in "$MODEL"/*; do
    n=$(basename "$c")
    if [ "$n" = unet ]; then ln -s "$M/unet-sdxl-asym" "$tmp/asym/unet"; else ln -s "$c" "$tmp/asym/$n"; fi
done
run f2 txt2img "${COMMON[@]/#$MODEL/$tmp/asym}" --sampler euler_a --steps 1 --cfg-scale 0 -o "$tmp/f2.png"
run s2 txt2img "${COMMON[@]/#$MODEL/$M/tiny-sdxl-asym-single.safetensors}" --config-dir "$tmp/asym" \
    --sampler euler_a --steps 1 --cfg-scale 0 -o "$tmp/s2.png"
[ "$(idat "$tmp/f2.png")" = "$(idat "$tmp/s2.png")" ] || fail "the distilled SDXL single file's image differs"
[ "$(idat "$tmp/f2.png")" = "$(idat "$tmp/turbo.png")" ] && fail "the distilled UNet gave tiny-sdxl's image"

# Hugging Face cache ids (a fake cache: models--org--name/refs/main + snapshots/<hash>/) resolve like SD1's
hub="$tmp/hub"
fake_repo() { # fake_repo ORG/NAME FOLDER
    local d="$hub/models--${1%%/*}--${1##*/}" h=0123456789abcdef0123456789abcdef01234567
    mkdir -p "$d/refs" "$d/snapshots"
    printf '%s' "$h" >"$d/refs/main"
    ln -s "$2" "$d/snapshots/$h"
}
mkdir -p "$tmp/lcm"
ln -s "$DATA/lora/xl_lcm_peft.safetensors" "$tmp/lcm/pytorch_lora_weights.safetensors"
fake_repo stabilityai/sdxl-turbo "$MODEL"
fake_repo stabilityai/stable-diffusion-xl-base-1.0 "$MODEL"
fake_repo segmind/SSD-1B "$tmp/asym"
fake_repo madebyollin/taesdxl "$M/taesd-tiny"
fake_repo latent-consistency/lcm-lora-sdxl "$tmp/lcm"
for id in stabilityai/sdxl-turbo stabilityai/stable-diffusion-xl-base-1.0; do
    HF_HUB_CACHE="$hub" run "hf_${id##*/}" txt2img "${COMMON[@]/#$MODEL/$id}" --steps 2 --cfg-scale 5 -n "blurry" \
        -o "$tmp/hf.png"
    [ "$(idat "$tmp/f1.png")" = "$(idat "$tmp/hf.png")" ] || fail "$id from the HF cache differs from the folder"
done
HF_HUB_CACHE="$hub" run hf_ssd txt2img "${COMMON[@]/#$MODEL/segmind/SSD-1B}" --sampler euler_a --steps 1 \
    --cfg-scale 0 -o "$tmp/hf.png"
[ "$(idat "$tmp/f2.png")" = "$(idat "$tmp/hf.png")" ] || fail "segmind/SSD-1B from the HF cache differs"
HF_HUB_CACHE="$hub" run hf_taesd txt2img -m "$MODEL" -W 64 -H 64 --threads 2 -p x --taesd madebyollin/taesdxl \
    --steps 1 -o "$tmp/hf.png"
run lcm_file txt2img "${COMMON[@]}" --sampler lcm --steps 2 --cfg-scale 1 \
    --lora "$DATA/lora/xl_lcm_peft.safetensors" --lora "$DATA/lora/xl_style_kohya.safetensors:0.8" -o "$tmp/l1.png"
HF_HUB_CACHE="$hub" run lcm_id txt2img "${COMMON[@]}" --sampler lcm --steps 2 --cfg-scale 1 \
    --lora latent-consistency/lcm-lora-sdxl --lora "$DATA/lora/xl_style_kohya.safetensors:0.8" -o "$tmp/l2.png"
[ "$(idat "$tmp/l1.png")" = "$(idat "$tmp/l2.png")" ] || fail "the LoRA by HF id differs from the file"
[ "$(idat "$tmp/l1.png")" = "$(idat "$tmp/turbo.png")" ] && fail "the LoRAs changed nothing"
HF_HUB_CACHE="$hub" "$BIN" txt2img -m "$M/tiny-sd15" -p x -W 16 -H 16 --steps 1 \
    --lora latent-consistency/lcm-lora-sdxl -o "$tmp/x.png" >"$tmp/e4.log" 2>&1
rc=$?
[ "$rc" = 1 ] || fail "an SDXL LoRA on SD1.5: exit $rc, want 1"
grep -q "an sdxl LoRA" "$tmp/e4.log" || fail "an SDXL LoRA on SD1.5 is not named: $(cat "$tmp/e4.log")"

# a VAE of the other family: named, both ways
mkdir -p "$tmp/sd15_xlvae" "$tmp/xl_sdvae"
for c in "$M/tiny-sd15"/*; do
    n=$(basename "$c")
    if [ "$n" = vae ]; then ln -s "$MODEL/vae" "$tmp/sd15_xlvae/vae"; else ln -s "$c" "$tmp/sd15_xlvae/$n"; fi
done
for c in "$MODEL"/*; do
    n=$(basename "$c")
    if [ "$n" = vae ]; then ln -s "$M/tiny-sd15/vae" "$tmp/xl_sdvae/vae"; else ln -s "$c" "$tmp/xl_sdvae/$n"; fi
done
for d in sd15_xlvae:"an SDXL VAE" xl_sdvae:"an SD1/SD2 VAE"; do
    "$BIN" txt2img -m "$tmp/${d%%:*}" -p x -W 16 -H 16 --steps 1 -o "$tmp/x.png" >"$tmp/e5.log" 2>&1
    rc=$?
    [ "$rc" = 1 ] || fail "${d%%:*}: exit $rc, want 1"
    grep -q "${d#*:}" "$tmp/e5.log" || fail "${d%%:*}: the VAE family is not named: $(cat "$tmp/e5.log")"
done
echo "cli_sdxl: OK"
