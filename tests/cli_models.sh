#!/usr/bin/env bash
# Every way users keep weights gives the same image: diffusers folder,
# single-file checkpoint (+ --config-dir), and a Hugging Face id in a fake
# local cache. The tiny test models are committed: without them the test fails.
set -u
SD="$1"
M="${SD_TEST_DATA:-}/models"
[ -d "$M/tiny-sd15" ] || { echo "FAIL: the committed tiny test models are not under $M"; exit 1; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail=0
idat() { python3 -c "import sys;d=open(sys.argv[1],'rb').read();print(d[d.find(b'IDAT'):].hex()[:4000])" "$1"; }
run() { "$SD" txt2img -p "a red fox" -W 32 -H 32 --steps 2 -s 7 "$@" 2>"$T/err" >/dev/null || { echo "FAIL: txt2img $*"; cat "$T/err"; fail=1; }; }

for arch in sd15 sd2; do
  run -m "$M/tiny-$arch" -o "$T/folder-$arch.png"
  run -m "$M/tiny-$arch-single.safetensors" --config-dir "$M/tiny-$arch" -o "$T/single-$arch.png"
  [ "$(idat "$T/folder-$arch.png")" = "$(idat "$T/single-$arch.png")" ] && echo "ok: $arch single-file == folder" \
    || { echo "FAIL: $arch single-file image differs from the folder's"; fail=1; }
done

# fake HF cache: models--org--name/refs/main + snapshots/<hash>/
hub="$T/hub/models--tiny--sd15"
mkdir -p "$hub/refs" "$hub/snapshots"
echo -n "0123456789abcdef0123456789abcdef01234567" > "$hub/refs/main"
cp -r "$M/tiny-sd15" "$hub/snapshots/0123456789abcdef0123456789abcdef01234567"
HF_HUB_CACHE="$T/hub" run -m tiny/sd15 -o "$T/hf.png"
[ "$(idat "$T/folder-sd15.png")" = "$(idat "$T/hf.png")" ] && echo "ok: HF cache id == folder" \
  || { echo "FAIL: HF cache image differs"; fail=1; }
# missing id: clear error naming where it looked
if HF_HUB_CACHE="$T/hub" "$SD" txt2img -m nobody/nothing -p x -W 32 -H 32 --steps 1 -o "$T/x.png" 2>"$T/err"; then
  echo "FAIL: a missing HF id succeeded"; fail=1
elif grep -q "$T/hub" "$T/err"; then echo "ok: missing HF id names the cache folder"
else echo "FAIL: missing HF id message:"; cat "$T/err"; fail=1; fi
# a truncated checkpoint: named error, no crash
head -c 100000 "$M/tiny-sd15-single.safetensors" > "$T/trunc.safetensors"
"$SD" txt2img -m "$T/trunc.safetensors" --config-dir "$M/tiny-sd15" -p x -W 32 -H 32 --steps 1 -o "$T/y.png" 2>"$T/err"
rc=$?
if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q "offsets-out-of-data\|header-out-of-file" "$T/err"; then echo "ok: truncated checkpoint -> named error"
else echo "FAIL: truncated checkpoint (rc $rc):"; cat "$T/err"; fail=1; fi
# a folder whose vae/ is an AutoencoderTiny (as SDXS ships): it decodes with that TAESD, no --taesd needed, and
# gives the image of the same model given the TAESD by --taesd
if [ -d "$M/taesd-tiny" ]; then
  cp -r "$M/tiny-sd15" "$T/sdxs-like"; rm -rf "$T/sdxs-like/vae"; cp -r "$M/taesd-tiny" "$T/sdxs-like/vae"
  run -m "$T/sdxs-like" -o "$T/tinyvae.png"
  run -m "$M/tiny-sd15" --taesd "$M/taesd-tiny" -o "$T/taesd.png"
  [ -s "$T/tinyvae.png" ] && [ "$(idat "$T/tinyvae.png")" = "$(idat "$T/taesd.png")" ] \
    && echo "ok: vae/ AutoencoderTiny folder == --taesd" \
    || { echo "FAIL: a folder with an AutoencoderTiny vae/ did not give the --taesd image"; fail=1; }
  [ -s "$T/tinyvae.png" ] && [ "$(idat "$T/tinyvae.png")" != "$(idat "$T/folder-sd15.png")" ] && echo "ok: and not the KL VAE's image" \
    || { echo "FAIL: the AutoencoderTiny vae/ was not used"; fail=1; }
else
  echo "FAIL: $M/taesd-tiny is missing"; fail=1
fi
[ $fail -eq 0 ] && echo "cli_models: all passed"
exit $fail
