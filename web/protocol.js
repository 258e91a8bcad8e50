// WebSocket client for `streamdiff serve` (docs/protocol.md).
//
// Events (CustomEvent, detail = the message): open, close, hello, config,
// stats, lora, error, queued, active, pong, and frame (detail = ArrayBuffer of
// a JPEG). Reconnects by itself with a growing delay.

export const NUM_INFERENCE_STEPS = 50;

// Strength (0..1] and a step count -> t_index_list: the first index sets how
// much noise the input gets (strength 1 = index 0 = all noise), the others
// are spread evenly up to index 45 (StreamDiffusion's [32, 45] is strength
// 0.36 with 2 steps).
export function strengthToTIndex(strength, steps) {
  const n = Math.max(1, Math.min(16, steps | 0));
  const last = 45;
  let first = Math.round((1 - strength) * NUM_INFERENCE_STEPS);
  first = Math.max(0, Math.min(n === 1 ? NUM_INFERENCE_STEPS - 1 : last - (n - 1), first));
  if (n === 1) return [first];
  const out = [];
  for (let i = 0; i < n; i++) {
    const v = Math.round(first + ((last - first) * i) / (n - 1));
    out.push(i && v <= out[i - 1] ? out[i - 1] + 1 : v);
  }
  return out;
}

export function tIndexToStrength(list) {
  return list && list.length ? 1 - list[0] / NUM_INFERENCE_STEPS : 0.36;
}

// 32-bit FNV-1a of bytes (a cheap frame fingerprint for tests and the console).
export function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export class StreamClient extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.retryMs = 500;
    this.closedByUser = false;
    this.pingId = 0;
    this.pings = new Map();
  }

  connect() {
    this.closedByUser = false;
    const ws = new WebSocket(this.url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      this.retryMs = 500;
      this.emit('open', {});
    };
    ws.onclose = (ev) => {
      this.emit('close', { code: ev.code, reason: ev.reason });
      if (this.ws === ws) this.ws = null;
      if (!this.closedByUser) {
        setTimeout(() => this.connect(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 5000);
      }
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') {
        this.emit('frame', ev.data);
        return;
      }
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (msg.type === 'pong' && this.pings.has(msg.id)) {
        msg.rtt_ms = performance.now() - this.pings.get(msg.id);
        this.pings.delete(msg.id);
      }
      this.emit(msg.type, msg);
    };
  }

  close() {
    this.closedByUser = true;
    if (this.ws) this.ws.close();
  }

  get open() {
    return this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  get bufferedAmount() {
    return this.ws ? this.ws.bufferedAmount : 0;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  on(type, fn) {
    this.addEventListener(type, (ev) => fn(ev.detail));
  }

  send(obj) {
    if (this.open) this.ws.send(JSON.stringify(obj));
  }

  sendConfig(fields) {
    this.send({ type: 'config', ...fields });
  }

  // One scale per LoRA the server loaded (hello.loras), in order.
  sendLora(scales) {
    this.send({ type: 'lora', scales });
  }

  sendFrame(blob) {
    if (this.open) this.ws.send(blob);
  }

  ping() {
    const id = ++this.pingId;
    this.pings.set(id, performance.now());
    if (this.pings.size > 16) this.pings.delete(this.pings.keys().next().value);
    this.send({ type: 'ping', id });
  }
}
