// In-page helpers for the browser tests (loaded with page.add_init_script before JupyterLab).
// A dashboard is a widget shown as a cell's output that holds at least one control; what the
// tests watch is everything in it that is not a control: the summary HTML, labels, the plot.
// Selectors are ipywidgets 8's DOM classes.
window.__labkit = (() => {
  const CONTROLS = [
    ['slider', '.widget-slider'],
    ['dropdown', '.widget-dropdown'],
    ['select', '.widget-select, .widget-select-multiple'],
    ['checkbox', '.widget-checkbox'],
    ['toggle-buttons', '.widget-toggle-buttons'],
    ['toggle-button', 'button.widget-toggle-button'],
    ['radio', '.widget-radio-box'],
    ['text', '.widget-text, .widget-textarea'],
    ['button', 'button.widget-button'],
  ];
  const CONTROL_SELECTOR = CONTROLS.map(([, s]) => s).join(', ');
  const CONTENT = '.widget-html-content, .widget-htmlmath-content, .widget-label-basic, ' +
    '.widget-output, .widget-image, .jupyter-matplotlib canvas, .widget-valid';

  // Kernel status messages as the page receives them. JupyterLab's own indicator redraws on an
  // animation frame, so a short busy period can leave it showing "idle" throughout; the
  // websocket never skips one. Frames: JSON text, or binary in the v1 kernel protocol (offsets
  // as uint64, then channel, header, parent header, metadata, content) or the legacy one
  // (offsets as uint32, then the whole message as JSON).
  const statusListeners = new Set();
  const V1 = 'v1.kernel.websocket.jupyter.org';
  function kernelStatus(data, protocol) {
    let header, parent, content;
    const text = new TextDecoder();
    if (typeof data === 'string') {
      const msg = JSON.parse(data);
      [header, parent, content] = [msg.header, msg.parent_header, msg.content];
    } else if (data instanceof ArrayBuffer && protocol === V1) {
      const view = new DataView(data);
      const at = i => Number(view.getBigUint64(8 * (i + 1), true));
      header = JSON.parse(text.decode(data.slice(at(1), at(2))));
      if (header.msg_type !== 'status') return null;
      parent = JSON.parse(text.decode(data.slice(at(2), at(3))));
      content = JSON.parse(text.decode(data.slice(at(4), at(5))));
    } else if (data instanceof ArrayBuffer) {
      const view = new DataView(data);
      const msg = JSON.parse(text.decode(data.slice(view.getUint32(4), view.getUint32(8))));
      [header, parent, content] = [msg.header, msg.parent_header, msg.content];
    } else {
      return null;
    }
    if (!header || header.msg_type !== 'status') return null;
    return {state: content.execution_state, request: parent ? parent.msg_type : ''};
  }
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', event => {
        let status = null;
        try { status = kernelStatus(event.data, this.protocol); } catch (e) { /* not a kernel message */ }
        if (status) statusListeners.forEach(listener => listener(status));
      });
    }
  };

  function cells() {
    return Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell'));
  }

  // Top-level widgets in a cell's output area (not widgets nested in another widget).
  function roots(cell) {
    return Array.from(cell.querySelectorAll('.jp-Cell-outputArea .jupyter-widgets'))
      .filter(w => !w.parentElement.closest('.jupyter-widgets'));
  }

  function kindOf(el) {
    for (const [kind, selector] of CONTROLS) if (el.matches(selector)) return kind;
    return null;
  }

  // Outermost control elements: a ToggleButtons holds buttons that are no controls of their own.
  function controlsIn(root) {
    return Array.from(root.querySelectorAll(CONTROL_SELECTOR))
      .filter(c => !c.parentElement.closest(CONTROL_SELECTOR));
  }

  // A control's description; a Checkbox keeps an empty (zero-width space) label in front and
  // its description beside the box.
  function label(control) {
    const clean = el => (el ? el.textContent.replace(/[\u200b\s]+/g, ' ').trim() : '');
    return clean(control.querySelector(':scope > .widget-label')) || control.getAttribute('title') ||
      clean(control).slice(0, 40);
  }

  // Number the dashboards and their controls (data attributes) so Python can address them.
  function mark() {
    const found = [];
    cells().forEach((cell, cellIndex) => {
      for (const root of roots(cell)) {
        const controls = controlsIn(root);
        if (!controls.length) continue;
        const d = found.length;
        root.dataset.labkitDashboard = String(d);
        found.push({
          dashboard: d, cell: cellIndex,
          controls: controls.map((c, i) => {
            c.dataset.labkitControl = `${d}-${i}`;
            return {id: `${d}-${i}`, kind: kindOf(c), label: label(c)};
          }),
        });
      }
    });
    return found;
  }

  function hash(text) {
    let h = 5381;
    for (let i = 0; i < text.length; i++) h = ((h * 33) ^ text.charCodeAt(i)) >>> 0;
    return `${text.length}:${h.toString(16)}`;
  }

  function insideControl(node, root) {
    const el = node.nodeType === Node.ELEMENT_NODE ? node : node.parentElement;
    const control = el && el.closest('[data-labkit-control]');
    return !!control && root.contains(control);
  }

  // What the dashboard shows, controls excluded: texts, image sources, canvas pixels.
  function signature(root) {
    const parts = [];
    for (const el of root.querySelectorAll(CONTENT)) {
      if (insideControl(el, root)) continue;
      if (el.tagName === 'CANVAS') { parts.push(el.toDataURL()); continue; }
      if (el.tagName === 'IMG') { parts.push(el.getAttribute('src') || ''); continue; }  // an Image widget
      parts.push(el.textContent);
      for (const img of el.querySelectorAll('img')) parts.push(img.getAttribute('src') || '');
    }
    return hash(parts.join('\u0000'));
  }

  function dashboard(d) {
    return document.querySelector(`[data-labkit-dashboard="${d}"]`);
  }

  // Arm a measurement: the first user input on the dashboard is t0; then the kernel takes it up
  // (busy) and answers (idle); every change of what the dashboard shows in between is timed.
  let watch = null;
  function arm(d) {
    disarm();
    const root = dashboard(d);
    const before = signature(root);
    const w = {d, root, before, current: before, t0: null, first: null, last: null, armedAt: performance.now(),
               busySeen: false, idleAfterBusy: false, observers: [], listeners: []};
    const onInput = () => { if (w.t0 === null) w.t0 = performance.now(); };
    for (const type of ['keydown', 'change', 'click', 'input']) {
      root.addEventListener(type, onInput, true);
      w.listeners.push([type, onInput]);
    }
    // Times of the changes of what the dashboard shows (not of every DOM mutation: focus
    // classes and layout attributes change too). A change before the kernel took the input up
    // (went busy) is a late effect of something earlier, not an answer to this input.
    // Only the kernel's handling of widget messages (comm_msg) answers a control; JupyterLab's
    // own requests (kernel_info, comm_info, ...) make the kernel busy too.
    const onStatus = ({state, request}) => {
      if (w.t0 === null || request !== 'comm_msg') return;
      if (state === 'busy') w.busySeen = true;
      else if (w.busySeen && state === 'idle') w.idleAfterBusy = true;
    };
    statusListeners.add(onStatus);
    // Times of the changes of what the dashboard shows (not of every DOM mutation: focus
    // classes and layout attributes change too). A change before the kernel took the input up
    // (went busy) is a late effect of something earlier: it becomes the new baseline.
    const content = new MutationObserver(records => {
      if (records.every(r => insideControl(r.target, root))) return;
      const now = performance.now();
      const shown = signature(root);
      if (shown === w.current) return;
      w.current = shown;
      if (!w.busySeen) { w.before = shown; return; }
      if (w.first === null) w.first = now;
      w.last = now;
    });
    content.observe(root, {subtree: true, childList: true, characterData: true, attributes: true});
    w.observers.push(content);
    w.onStatus = onStatus;
    watch = w;
  }

  function disarm() {
    if (!watch) return;
    watch.observers.forEach(o => o.disconnect());
    statusListeners.delete(watch.onStatus);
    watch.listeners.forEach(([type, fn]) => watch.root.removeEventListener(type, fn, true));
    watch = null;
  }

  // The state of the armed measurement, in ms since the input.
  function reading() {
    const w = watch;
    const changed = w.current !== w.before;
    const since = t => (t === null || w.t0 === null ? null : t - w.t0);
    return {changed, inputSeen: w.t0 !== null, firstMs: since(w.first), lastMs: since(w.last),
            busySeen: w.busySeen, settled: w.idleAfterBusy,
            sinceInputMs: since(performance.now()), sinceArmMs: performance.now() - w.armedAt};
  }

  // Labels, readouts and dropdowns whose text does not fit (ellipsis or cut), and controls cut
  // by a container that hides overflow. Only what is rendered (display != none) is checked.
  function clipped(root) {
    const problems = [];
    const canvas = document.createElement('canvas').getContext('2d');
    const visible = el => el.getClientRects().length > 0 && el.clientWidth > 0;
    const name = el => {
      const control = el.closest('[data-labkit-control]');
      return control ? label(control) : el.textContent.trim().slice(0, 40);
    };
    for (const el of root.querySelectorAll('.widget-label, .widget-readout, select')) {
      if (!visible(el)) continue;
      const cls = el.tagName === 'SELECT' ? 'select' : el.classList.contains('widget-readout')
        ? 'readout' : 'label';
      if (el.tagName === 'SELECT') {
        const option = el.options[el.selectedIndex];
        const style = getComputedStyle(el);
        canvas.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
        const needed = canvas.measureText(option ? option.text : '').width;
        const room = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        if (needed > room + 1) problems.push({kind: cls, name: name(el), text: option.text,
          needed: Math.ceil(needed), room: Math.floor(room)});
      } else if (el.scrollWidth > el.clientWidth + 1) {
        problems.push({kind: cls, name: name(el), text: el.textContent.trim(),
          needed: el.scrollWidth, room: el.clientWidth});
      }
    }
    for (const el of root.querySelectorAll('[data-labkit-control]')) {
      if (!visible(el)) continue;
      const box = el.getBoundingClientRect();
      for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
        const style = getComputedStyle(a);
        if (style.overflowX === 'visible') continue;
        const outer = a.getBoundingClientRect();
        if (box.right > outer.right + 1 || box.left < outer.left - 1) {
          problems.push({kind: 'control', name: label(el), text: '',
            needed: Math.ceil(box.width), room: Math.floor(Math.max(0, outer.right - box.left))});
          break;
        }
        if (a.classList.contains('jp-Notebook')) break;
      }
    }
    return problems;
  }

  // Rendered size of each plot image against its own pixel size.
  function plots(root) {
    return Array.from(root.querySelectorAll('img')).map(img => ({
      shownWidth: img.clientWidth, naturalWidth: img.naturalWidth}));
  }

  // Open the Accordion section or Tab a control sits in, as a student would to reach it.
  function reveal(id) {
    const control = document.querySelector(`[data-labkit-control="${id}"]`);
    const opened = [];
    for (let a = control; a && !a.dataset.labkitDashboard; a = a.parentElement) {
      const parent = a.parentElement;
      if (a.classList.contains('jupyter-widget-Collapse-contents') &&
          !parent.classList.contains('jupyter-widget-Collapse-open')) {
        const header = parent.querySelector(':scope > .jupyter-widget-Collapse-header');
        opened.push(header.textContent.trim());
        header.click();
      } else if (a.classList.contains('lm-mod-hidden') && parent.classList.contains('widget-tab-contents')) {
        const index = Array.from(parent.children).indexOf(a);
        const tab = parent.parentElement.querySelectorAll(':scope > .lm-TabBar .lm-TabBar-tab')[index];
        opened.push(tab.textContent.trim());
        tab.dispatchEvent(new MouseEvent('mousedown', {bubbles: true, button: 0}));
      }
    }
    return opened;
  }

  // Resolves once the dashboard has been painted where it now is (JupyterLab 4 leaves cells
  // out of view unpainted: content-visibility) with its pictures decoded.
  async function painted(d) {
    const images = Array.from(dashboard(d).querySelectorAll('img'));
    await Promise.all(images.map(img => img.decode().catch(() => null)));
    await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  }

  return {mark, arm, disarm, reading, signature: d => signature(dashboard(d)),
          clipped: d => clipped(dashboard(d)), plots: d => plots(dashboard(d)), reveal, painted};
})();
