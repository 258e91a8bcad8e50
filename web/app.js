// The streamdiff demo page: camera (or test pattern) -> JPEG frames -> server
// -> output frames, with live controls. No build step: plain ES modules.
import { StreamClient, strengthToTIndex, tIndexToStrength, fnv1a } from './protocol.js';
import { setupControlNets } from './controlnet.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get('token');

// Everything a test or the console may want to look at.
const state = {
  connected: false,
  active: false,
  config: null,
  limits: null,
  framesSent: 0,
  framesOut: 0,
  lastHash: 0,
  lastFrameAt: 0,
  inflight: 0,
  lastSendAt: 0,
  errors: [],
  stats: null,
  loras: [],
  source: 'camera',
};
window.streamdiff = state;

const wsUrl = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws` +
  (token ? `?token=${encodeURIComponent(token)}` : '');
if (token) $('metrics-link').href = `metrics?token=${encodeURIComponent(token)}`;
const client = new StreamClient(wsUrl);
state.client = client;

// ------------------------------------------------------------------ UI helpers

function show(id, text) {
  const el = $(id);
  el.hidden = !text;
  if (text) el.textContent = text;
}

let errorTimer = 0;
function showError(text) {
  state.errors.push(text);
  if (state.errors.length > 20) state.errors.shift();
  show('error', text);
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => show('error', ''), 6000);
}

function setStatus(text, cls) {
  const el = $('status');
  el.textContent = text;
  el.className = `pill ${cls || ''}`;
}

function fmt(v, digits = 2) {
  return Number(v).toFixed(digits);
}

function setSlider(id, value, digits = 2) {
  $(id).value = value;
  $(`${id}-v`).textContent = fmt(value, digits);
}

function currentMode() {
  return document.querySelector('input[name=mode]:checked').value;
}

function updateStrengthLabel() {
  const list = strengthToTIndex(Number($('strength').value), Number($('steps').value));
  $('strength-v').textContent = `${fmt($('strength').value)} [${list.join(', ')}]`;
  return list;
}

function fillSizes(limits, model, cfg) {
  const sel = $('size');
  const native = model && model.native_size ? model.native_size : 512;
  const set = new Set([64, 128, 192, 256, 320, 384, 448, 512, 640, 768, 1024, native, cfg.width]);
  const sizes = [...set].filter((s) => s >= 16 && s <= limits.max_size).sort((a, b) => a - b);
  sel.replaceChildren(...sizes.map((s) => new Option(`${s} × ${s}${s === native ? ' (native)' : ''}`, String(s))));
  if (cfg.width !== cfg.height) sel.add(new Option(`${cfg.width} × ${cfg.height}`, `${cfg.width}x${cfg.height}`));
  sel.value = cfg.width === cfg.height ? String(cfg.width) : `${cfg.width}x${cfg.height}`;
}

// Both views take the stream's aspect ratio (the input shows the crop that is sent).
function setAspect(cfg) {
  for (const v of document.querySelectorAll('.view')) v.style.aspectRatio = `${cfg.width} / ${cfg.height}`;
}

function applyConfigToUI(cfg, all) {
  setAspect(cfg);
  if (all) {
    $('prompt').value = cfg.prompt;
    $('negative').value = cfg.negative_prompt;
    setSlider('guidance', cfg.guidance_scale);
    setSlider('delta', cfg.delta);
    setSlider('similarity', cfg.similarity_threshold);
    $('seed').value = cfg.seed;
    applyBlendToUI(cfg);
    $('cfg-type').value = cfg.cfg_type;
    document.querySelector(`input[name=mode][value=${cfg.mode}]`).checked = true;
    updateModeView();
  }
  const n = cfg.t_index_list.length;
  $('steps').value = String(Math.min(4, n));
  $('strength').value = tIndexToStrength(cfg.t_index_list);
  $('strength-v').textContent = `${fmt(tIndexToStrength(cfg.t_index_list))} [${cfg.t_index_list.join(', ')}]`;
  const sizeValue = cfg.width === cfg.height ? String(cfg.width) : `${cfg.width}x${cfg.height}`;
  if ([...$('size').options].some((o) => o.value === sizeValue)) $('size').value = sizeValue;
}

function sendConfig(fields) {
  if (state.config) Object.assign(state.config, fields);
  client.sendConfig(fields);
}

function debounce(fn, ms) {
  let t = 0;
  return (...a) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...a), ms);
  };
}

// Live sliders: at most one message per `ms`, the last value always sent.
function throttle(fn, ms) {
  let last = 0;
  let t = 0;
  return (...a) => {
    clearTimeout(t);
    const wait = last + ms - performance.now();
    if (wait <= 0) {
      last = performance.now();
      fn(...a);
    } else {
      t = setTimeout(() => {
        last = performance.now();
        fn(...a);
      }, wait);
    }
  };
}

// ------------------------------------------------------------------ input sources

const video = $('input');
const pattern = $('pattern');
let camStream = null;
let patternTimer = 0;

function stopSources() {
  if (camStream) camStream.getTracks().forEach((t) => t.stop());
  camStream = null;
  clearInterval(patternTimer);
  patternTimer = 0;
}

function startPattern() {
  stopSources();
  state.source = 'pattern';
  video.hidden = true;
  pattern.hidden = false;
  pattern.width = pattern.height = 256;
  const g = pattern.getContext('2d');
  const t0 = performance.now();
  patternTimer = setInterval(() => {
    const t = (performance.now() - t0) / 1000;
    const grad = g.createLinearGradient(0, 0, 256, 256);
    grad.addColorStop(0, `hsl(${(t * 40) % 360} 70% 55%)`);
    grad.addColorStop(1, `hsl(${(t * 40 + 160) % 360} 70% 35%)`);
    g.fillStyle = grad;
    g.fillRect(0, 0, 256, 256);
    g.fillStyle = '#fff';
    g.beginPath();
    g.arc(128 + 70 * Math.cos(t), 128 + 70 * Math.sin(t * 1.3), 36, 0, 2 * Math.PI);
    g.fill();
  }, 33);
}

async function listCameras(selected) {
  const sel = $('camera');
  let cams = [];
  try {
    cams = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === 'videoinput');
  } catch (e) {
    cams = [];
  }
  const opts = cams.map((d, i) => new Option(d.label || `Camera ${i + 1}`, d.deviceId));
  opts.push(new Option('Test pattern (no camera)', 'pattern'));
  sel.replaceChildren(...opts);
  sel.value = selected || (cams[0] ? cams[0].deviceId : 'pattern');
}

async function startCamera(deviceId) {
  if (deviceId === 'pattern') {
    startPattern();
    await listCameras('pattern');
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError('This page cannot use a camera here: browsers allow cameras only on https:// or http://127.0.0.1 ' +
      '(or localhost). Showing a test pattern instead.');
    startPattern();
    await listCameras('pattern');
    return;
  }
  stopSources();
  try {
    const constraints = deviceId ? { deviceId: { exact: deviceId } } : { width: { ideal: 640 }, height: { ideal: 480 } };
    camStream = await navigator.mediaDevices.getUserMedia({ video: constraints, audio: false });
    video.srcObject = camStream;
    video.hidden = false;
    pattern.hidden = true;
    state.source = 'camera';
    const track = camStream.getVideoTracks()[0];
    const id = track && track.getSettings ? track.getSettings().deviceId : deviceId;
    await listCameras(id);
  } catch (e) {
    showError(`Camera unavailable (${e.name || 'error'}: ${e.message}). Showing a test pattern instead.`);
    startPattern();
    await listCameras('pattern');
  }
}

// ------------------------------------------------------------------ frames out

const capture = document.createElement('canvas');
let capturing = false;

function captureSource() {
  if (state.source === 'pattern') return pattern;
  return video.readyState >= 2 && video.videoWidth > 0 ? video : null;
}

function pump() {
  if (!client.open || !state.active || !state.config || currentMode() !== 'img2img' || capturing) return;
  const now = performance.now();
  // At most two frames in flight (the server drops older ones anyway); if an
  // answer was lost, try again after a second.
  if (state.inflight >= 2 && now - state.lastSendAt < 1000) return;
  if (client.bufferedAmount > 512 * 1024) return;
  const src = captureSource();
  if (!src) return;
  const W = state.config.width;
  const H = state.config.height;
  if (capture.width !== W || capture.height !== H) {
    capture.width = W;
    capture.height = H;
  }
  const sw = src.videoWidth || src.width;
  const sh = src.videoHeight || src.height;
  const scale = Math.max(W / sw, H / sh); // center crop to the stream's aspect
  const cw = W / scale;
  const ch = H / scale;
  capture.getContext('2d').drawImage(src, (sw - cw) / 2, (sh - ch) / 2, cw, ch, 0, 0, W, H);
  capturing = true;
  capture.toBlob((blob) => {
    capturing = false;
    if (!blob) return;
    client.sendFrame(blob);
    state.inflight = state.inflight >= 2 ? 1 : state.inflight + 1;
    state.lastSendAt = performance.now();
    state.framesSent++;
  }, 'image/jpeg', 0.85);
}
setInterval(pump, 15);

// ------------------------------------------------------------------ frames in

const out = $('output');
const outCtx = out.getContext('2d');
let lastBlob = null;
let drawing = Promise.resolve();

client.on('frame', (buf) => {
  state.inflight = Math.max(0, state.inflight - 1);
  const bytes = new Uint8Array(buf);
  state.framesOut++;
  state.lastHash = fnv1a(bytes);
  state.lastFrameAt = performance.now();
  lastBlob = new Blob([bytes], { type: 'image/jpeg' });
  const blob = lastBlob;
  drawing = drawing.then(async () => {
    try {
      const bmp = await createImageBitmap(blob);
      if (out.width !== bmp.width || out.height !== bmp.height) {
        out.width = bmp.width;
        out.height = bmp.height;
      }
      out.classList.toggle('pixelated', bmp.width < 256);
      outCtx.drawImage(bmp, 0, 0);
      bmp.close();
      state.framesDrawn = (state.framesDrawn || 0) + 1;
    } catch (e) {
      // a broken frame: the next one replaces it
    }
  });
});

$('snapshot').addEventListener('click', () => {
  if (!lastBlob) {
    showError('No output frame yet.');
    return;
  }
  const a = document.createElement('a');
  a.href = URL.createObjectURL(lastBlob);
  a.download = `streamdiff-${new Date().toISOString().replace(/[:.]/g, '-')}.jpg`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
});

// ------------------------------------------------------------------ messages

client.on('open', () => {
  state.connected = true;
  setStatus('connected', 'active');
});

client.on('close', (e) => {
  state.connected = false;
  state.active = false;
  state.inflight = 0;
  let why = 'disconnected';
  if (e.code === 1006) why = token ? 'disconnected (server unreachable, or the token was refused)'
    : 'disconnected (server unreachable, or it wants ?token=… in the page URL)';
  setStatus(why, 'down');
});

client.on('hello', (h) => {
  state.limits = h.limits;
  state.config = h.config;
  state.active = h.state === 'active';
  state.model = h.model;
  $('model').textContent = `${h.model.name} (${h.model.arch}${h.model.taesd ? ', TAESD' : ''})`;
  $('version').textContent = h.version;
  show('notice', h.notice || '');
  fillSizes(h.limits, h.model, h.config);
  applyConfigToUI(h.config, true);
  showLoras(h.loras);
  setStatus(state.active ? 'streaming' : 'queued', state.active ? 'active' : 'queued');
  if (state.active) show('queue', '');
});

client.on('queued', (q) => {
  state.active = false;
  setStatus(`queued #${q.position}`, 'queued');
  show('queue', q.message);
});

client.on('active', (m) => {
  state.active = true;
  setStatus('streaming', 'active');
  show('queue', '');
  if (m.message) console.info(m.message);
});

client.on('config', (m) => {
  state.applied = m.config;
  if (m.reverted) {
    state.config = { ...m.config };
    applyConfigToUI(m.config, false);
    $('cfg-type').value = m.config.cfg_type;
    $('seed').value = m.config.seed;
  }
});

client.on('stats', (s) => {
  state.stats = s;
  state.statsAt = performance.now();
  $('fps').textContent = fmt(s.fps, 1);
  $('latency').textContent = `${Math.round(s.latency_ms)} ms`;
  $('inference').textContent = s.batch_frames > 1.05
    ? `${Math.round(s.inference_ms)} ms (batch of ${fmt(s.batch_frames, 1)})` : `${Math.round(s.inference_ms)} ms`;
  $('skipped').textContent = `${s.skipped} / ${s.dropped}`;
  $('clients').textContent = s.clients_queued ? `${s.clients_active} (+${s.clients_queued} queued)` : `${s.clients_active}`;
});

client.on('lora', (m) => showLoras(m.loras));

client.on('pong', (p) => {
  if (p.rtt_ms !== undefined) $('rtt').textContent = `${Math.round(p.rtt_ms)} ms`;
});

client.on('error', (e) => showError(`${e.code}: ${e.message}`));

setInterval(() => {
  if (client.open) client.ping();
  if (state.statsAt && performance.now() - state.statsAt > 3000) $('fps').textContent = '0.0';
}, 2000);

// ------------------------------------------------------------------ controls

const sendPrompt = debounce(() => sendConfig({ prompt: $('prompt').value, negative_prompt: $('negative').value }), 150);
$('prompt').addEventListener('input', sendPrompt);
$('negative').addEventListener('input', sendPrompt);

for (const [id, field] of [['guidance', 'guidance_scale'], ['delta', 'delta'], ['similarity', 'similarity_threshold']]) {
  const send = throttle((v) => sendConfig({ [field]: v }), 100);
  $(id).addEventListener('input', () => {
    $(`${id}-v`).textContent = fmt($(id).value);
    send(Number($(id).value));
  });
}

// t_index_list changes need a new stream: send on release, not while dragging.
$('strength').addEventListener('input', updateStrengthLabel);
$('strength').addEventListener('change', () => sendConfig({ t_index_list: updateStrengthLabel() }));
$('steps').addEventListener('change', () => sendConfig({ t_index_list: updateStrengthLabel() }));

$('size').addEventListener('change', () => {
  const [w, h] = $('size').value.split('x').map(Number);
  sendConfig({ width: w, height: h || w });
  setAspect(state.config);
});
$('cfg-type').addEventListener('change', () => sendConfig({ cfg_type: $('cfg-type').value }));
$('seed').addEventListener('change', () => {
  const s = Math.max(0, Math.floor(Number($('seed').value) || 0));
  $('seed').value = s;
  sendConfig({ seed: s });
});
$('dice').addEventListener('click', () => {
  $('seed').value = Math.floor(Math.random() * 2 ** 31);
  $('seed').dispatchEvent(new Event('change'));
});

// Blending (docs/protocol.md "prompts", "seeds"): a second prompt and a second seed, each mixed with the main one
// by a slider (weights 1-t, t). The server encodes each prompt once, so moving a slider only re-blends.
function blendPrompts() {
  const other = $('blend-prompt').value, t = Number($('blend-t').value);
  if (!other) return { prompts: [] };
  return { prompts: [{ prompt: $('prompt').value, weight: 1 - t }, { prompt: other, weight: t }],
    prompt_blend: $('blend-mode').value };
}
function blendSeeds() {
  const other = $('blend-seed').value, t = Number($('seed-t').value);
  if (other === '') return { seeds: [] };
  return { seeds: [{ seed: Math.max(0, Math.floor(Number($('seed').value) || 0)), weight: 1 - t },
    { seed: Math.max(0, Math.floor(Number(other) || 0)), weight: t }], seed_blend: 'slerp' };
}
const sendBlendPrompts = throttle(() => sendConfig(blendPrompts()), 100);
const sendBlendSeeds = throttle(() => sendConfig(blendSeeds()), 100);
for (const id of ['blend-t', 'seed-t']) $(id).addEventListener('input', () => { $(`${id}-v`).textContent = fmt($(id).value); });
$('blend-t').addEventListener('input', sendBlendPrompts);
$('blend-mode').addEventListener('change', sendBlendPrompts);
$('blend-prompt').addEventListener('input', debounce(sendBlendPrompts, 150));
$('prompt').addEventListener('input', debounce(() => { if ($('blend-prompt').value) sendBlendPrompts(); }, 150));
$('seed-t').addEventListener('input', sendBlendSeeds);
$('blend-seed').addEventListener('change', sendBlendSeeds);
$('seed').addEventListener('change', () => { if ($('blend-seed').value !== '') sendBlendSeeds(); });
function applyBlendToUI(cfg) {
  const p = cfg.prompts || [], sd = cfg.seeds || [];
  $('blend-prompt').value = p.length === 2 ? p[1].prompt : '';
  if (p.length === 2) $('blend-t').value = p[1].weight / (p[0].weight + p[1].weight);
  if (cfg.prompt_blend) $('blend-mode').value = cfg.prompt_blend;
  $('blend-seed').value = sd.length === 2 ? sd[1].seed : '';
  if (sd.length === 2) $('seed-t').value = sd[1].weight / (sd[0].weight + sd[1].weight);
  for (const id of ['blend-t', 'seed-t']) $(`${id}-v`).textContent = fmt($(id).value);
}

// LoRAs: one slider per LoRA the server loaded (serve --lora). The model is
// shared, so the scales are the server's: a slider sends every scale
// (throttled: each change re-fuses the weights), and the server's "lora"
// answer, also sent when another client changes them, moves the sliders.
const loraBox = $('loras');
let loraDragging = -1;
const sendLoras = throttle(() => {
  client.sendLora([...loraBox.querySelectorAll('input')].map((el) => Number(el.value)));
}, 200);

function buildLoras(list) {
  loraBox.replaceChildren(...list.map((l, i) => {
    const label = document.createElement('label');
    const name = document.createElement('span');
    name.className = 'lora-name';
    name.textContent = `LoRA ${l.name}`;
    const out = document.createElement('output');
    const input = document.createElement('input');
    input.type = 'range';
    input.min = String(Math.min(-1, l.scale));
    input.max = String(Math.max(2, l.scale));
    input.step = '0.05';
    input.setAttribute('aria-label', `Scale of ${l.name}`);
    input.addEventListener('input', () => {
      loraDragging = i;
      out.textContent = fmt(input.value);
      sendLoras();
    });
    input.addEventListener('change', () => {
      loraDragging = -1;
    });
    label.title = l.name;
    label.append(name, ' ', out, input);
    return label;
  }));
}

function showLoras(list) {
  list = Array.isArray(list) ? list : [];
  const names = (l) => l.map((x) => x.name).join('\n');
  if (names(list) !== names(state.loras) || loraBox.querySelectorAll('input').length !== list.length) {
    buildLoras(list);
  }
  state.loras = list.map((l) => ({ name: l.name, scale: l.scale }));
  loraBox.hidden = !list.length;
  loraBox.querySelectorAll('label').forEach((label, i) => {
    if (i === loraDragging) return; // the user's value wins while dragging; the answer to it follows
    const input = label.querySelector('input');
    input.min = String(Math.min(Number(input.min), list[i].scale));
    input.max = String(Math.max(Number(input.max), list[i].scale));
    input.value = list[i].scale;
    label.querySelector('output').textContent = fmt(list[i].scale);
  });
}

// ControlNets: this client's own scale / preprocessor per net the server loaded (web/controlnet.js).
setupControlNets($('controlnets'), client, state, throttle);

function updateModeView() {
  const txt = currentMode() === 'txt2img';
  $('input-off').hidden = !txt;
  video.style.opacity = txt ? 0.25 : 1;
  pattern.style.opacity = txt ? 0.25 : 1;
}
for (const r of document.querySelectorAll('input[name=mode]')) {
  r.addEventListener('change', () => {
    updateModeView();
    state.inflight = 0;
    sendConfig({ mode: currentMode() });
  });
}

$('camera').addEventListener('change', () => startCamera($('camera').value));

// ------------------------------------------------------------------ start

setStatus('connecting…');
client.connect();
startCamera(params.get('source') === 'pattern' ? 'pattern' : '');
