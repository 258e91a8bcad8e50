// The page's ControlNet controls: one group per ControlNet the server loaded (serve --control; hello.controlnets),
// each with its conditioning scale and, for nets made from the camera frames, the preprocessor and its thresholds.
// The settings are this client's own: a change sends a "controlnet" message (throttled), and the server's
// "config" answer (config.controlnets) moves the controls back to what it applied.

const PREPROCESSORS = ['none', 'canny', 'softedge', 'scribble', 'invert', 'tile'];

function slider(label, min, max, step, aria) {
  const el = document.createElement('label');
  const out = document.createElement('output');
  const input = document.createElement('input');
  Object.assign(input, { type: 'range', min: String(min), max: String(max), step: String(step) });
  input.setAttribute('aria-label', aria);
  el.append(label, ' ', out, input);
  return { el, out, input };
}

// box: the container element; client: the StreamClient; state: window.streamdiff (state.controlnets is kept
// as the nets with the settings the server applied last); throttle: the page's limiter of live sliders.
export function setupControlNets(box, client, state, throttle) {
  state.controlnets = [];
  let nets = [];
  let ui = [];
  let dragging = -1;
  const senders = [];

  function show(settings) {
    if (!Array.isArray(settings)) return;
    state.controlnets = nets.map((n, i) => ({ ...n, ...(settings[i] || {}) }));
    ui.forEach((u, i) => {
      const s = settings[i];
      if (!s || i === dragging) return; // the user's value wins while dragging; the answer to it follows
      u.scale.input.max = String(Math.max(2, s.scale));
      u.scale.input.value = s.scale;
      u.scale.out.textContent = Number(s.scale).toFixed(2);
      if (!u.pre) return;
      u.pre.value = s.preprocess;
      u.low.input.value = s.canny_low;
      u.low.out.textContent = s.canny_low;
      u.high.input.value = s.canny_high;
      u.high.out.textContent = s.canny_high;
      u.thr.input.value = s.threshold;
      u.thr.out.textContent = s.threshold;
      u.low.el.hidden = u.high.el.hidden = s.preprocess !== 'canny';
      u.thr.el.hidden = s.preprocess !== 'scribble';
    });
  }

  function build(list, settings) {
    nets = list;
    ui = list.map((n, i) => {
      const group = document.createElement('fieldset');
      group.className = 'controlnet';
      const legend = document.createElement('legend');
      legend.textContent = `ControlNet ${n.name}${n.from_frame ? '' : ' (fixed image)'}`;
      legend.title = n.name;
      const send = throttle((fields) => client.send({ type: 'controlnet', net: i, ...fields }), 150);
      senders[i] = send;
      const u = { scale: slider('Scale', 0, 2, 0.05, `Conditioning scale of ${n.name}`) };
      u.scale.input.addEventListener('input', () => {
        dragging = i;
        u.scale.out.textContent = Number(u.scale.input.value).toFixed(2);
        send({ scale: Number(u.scale.input.value) });
      });
      u.scale.input.addEventListener('change', () => { dragging = -1; });
      group.append(legend, u.scale.el);
      if (n.from_frame) {
        const preLabel = document.createElement('label');
        u.pre = document.createElement('select');
        u.pre.setAttribute('aria-label', `Preprocessor of ${n.name}`);
        u.pre.append(...PREPROCESSORS.map((p) => new Option(p, p)));
        preLabel.append('Preprocessor', u.pre);
        u.low = slider('Canny low', 0, 1000, 5, `Canny low threshold of ${n.name}`);
        u.high = slider('Canny high', 0, 1000, 5, `Canny high threshold of ${n.name}`);
        u.thr = slider('Scribble threshold', 1, 255, 1, `Scribble threshold of ${n.name}`);
        u.pre.addEventListener('change', () => {
          u.low.el.hidden = u.high.el.hidden = u.pre.value !== 'canny';
          u.thr.el.hidden = u.pre.value !== 'scribble';
          send({ preprocess: u.pre.value });
        });
        for (const [s, field] of [[u.low, 'canny_low'], [u.high, 'canny_high'], [u.thr, 'threshold']]) {
          s.input.addEventListener('input', () => {
            dragging = i;
            s.out.textContent = s.input.value;
            let low = Number(u.low.input.value);
            let high = Number(u.high.input.value);
            if (field === 'canny_low' && low > high) u.high.input.value = high = low; // keep low <= high
            if (field === 'canny_high' && high < low) u.low.input.value = low = high;
            send(field === 'threshold' ? { threshold: Number(s.input.value) } : { canny_low: low, canny_high: high });
          });
          s.input.addEventListener('change', () => { dragging = -1; });
        }
        group.append(preLabel, u.low.el, u.high.el, u.thr.el);
      }
      return { ...u, group };
    });
    box.replaceChildren(...ui.map((u) => u.group));
    box.hidden = !list.length;
    show(settings);
  }

  client.on('hello', (h) => build(Array.isArray(h.controlnets) ? h.controlnets : [], h.config && h.config.controlnets));
  client.on('config', (m) => show(m.config && m.config.controlnets));
}
