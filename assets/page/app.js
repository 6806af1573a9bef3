// The status page: reads through /page/api/ with the bearer token in the Authorization
// header of every fetch(), follows JSON-lines event streams with fetch() streaming (an
// EventSource cannot send that header), and writes nothing but an abort.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'tom-ledger-token';
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let stream = null;        // AbortController of the event stream followed now
  let refreshTimer = null;  // pending refresh after events (several come at once)
  let current = null;       // the operation shown in detail, or null for the list
  let rendered = 0;         // performance.now() of the last data shown (for ages)

  class Unauthorized extends Error {}

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  // Whether an operation (a row or a view) can still change.
  const isLive = (v) => !v.archived && v.state !== 'failed' && v.state !== 'completed';

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
      else if (k === 'style') Object.assign(e.style, v);
      else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role' || k === 'title') e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function badge(state, label) {
    return el('span', { class: 'badge s-' + state, text: label || state });
  }

  function duration(ms) {
    if (ms < 1000) return (ms / 1000).toFixed(1) + ' s';
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + (s % 60) + ' s';
    return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
  }

  // An age that keeps counting between refreshes while `live`.
  function age(ms, live) {
    return el('span', { class: 'age', 'data-age-ms': String(ms), 'data-live': live ? '1' : null, text: duration(ms) });
  }

  function tickAges() {
    const passed = performance.now() - rendered;
    for (const e of document.querySelectorAll('.age[data-live]')) {
      e.textContent = duration(Number(e.dataset.ageMs) + passed);
    }
  }

  function setConnection(text) { $('connection').textContent = text; }

  // The token from the URL fragment (`#token=...`), kept for this tab only and taken out
  // of the address bar so it is not bookmarked or shown.
  function takeTokenFromFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (!params.has('token')) return;
    const given = params.get('token');
    if (given) { token = given; sessionStorage.setItem(TOKEN_KEY, given); }
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (token) headers.set('Authorization', 'Bearer ' + token);
    const r = await fetch(path, { ...options, headers, cache: 'no-store' });
    if (r.status === 401) throw new Unauthorized('unauthorized');
    if (!r.ok) {
      let message = r.status + ' ' + r.statusText;
      try { message = (await r.json()).error || message; } catch (_) { /* not json */ }
      throw new Error(message);
    }
    return r;
  }

  // Follow a JSON-lines stream until `controller` aborts or `onLine` returns false;
  // reconnect after an end or an error (told as `{event: 'error'}`). Each stream starts
  // with `hello`, on which the caller reads everything anew.
  async function follow(path, controller, onLine) {
    let delay = 500;
    while (!controller.signal.aborted) {
      try {
        const r = await api(path, { signal: controller.signal });
        setConnection('live');
        delay = 500;
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffered = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffered += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffered.indexOf('\n')) >= 0) {
            const line = buffered.slice(0, end).trim();
            buffered = buffered.slice(end + 1);
            if (!line) continue;
            let event;
            try { event = JSON.parse(line); } catch (_) { continue; }
            if (onLine(event) === false) { controller.abort(); return; }
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
        if (e instanceof Unauthorized) { askToken('The token was refused.'); return; }
        if (onLine({ event: 'error' }) === false) { controller.abort(); return; }
      }
      if (controller.signal.aborted) return;
      setConnection('reconnecting…');
      await sleep(delay);
      delay = Math.min(delay * 2, 5000);
    }
  }

  function stopStream() {
    if (stream) stream.abort();
    stream = null;
    clearTimeout(refreshTimer);
    refreshTimer = null;
  }

  function soon(refresh) {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 150);
  }

  function show(section) {
    for (const id of ['token-section', 'list-section', 'detail-section']) $(id).hidden = id !== section;
  }

  function askToken(reason) {
    stopStream();
    setConnection('token needed');
    $('token-reason').textContent = reason;
    show('token-section');
    $('token-input').value = '';
    $('token-input').focus();
  }

  // Re-rendering keeps keyboard focus on the same control.
  function keepingFocus(render) {
    const key = document.activeElement && document.activeElement.dataset.focusKey;
    render();
    if (key) {
      const again = document.querySelector('[data-focus-key="' + CSS.escape(key) + '"]');
      if (again) again.focus();
    }
  }

  // ---- the list ----

  async function refreshList() {
    try {
      const view = await (await api('/page/api/operations')).json();
      if (current !== null) return;
      rendered = performance.now();
      keepingFocus(() => renderList(view.operations));
    } catch (e) {
      if (e instanceof Unauthorized) askToken('The token was refused.');
      else setConnection('error: ' + e.message);
    }
  }

  function renderList(rows) {
    const body = $('operations').tBodies[0];
    body.replaceChildren(...rows.map((op) => {
      const live = isLive(op);
      const open = el('button', {
        type: 'button', class: 'linkish', text: op.operation, 'data-focus-key': 'op:' + op.operation,
        'aria-label': 'Show operation ' + op.operation,
      });
      open.addEventListener('click', () => { location.hash = 'op=' + encodeURIComponent(op.operation); });
      const state = el('td', { class: 'state' }, badge(op.state));
      if (op.aborted) state.append(' ', badge('aborted'));
      if (op.archived) state.append(' ', el('span', { class: 'archived', text: '(archived)' }));
      if (op.error) state.append(' ', el('span', { text: op.error }));
      return el('tr', { 'data-operation': op.operation, 'data-state': op.state, 'data-archived': op.archived ? '1' : '0' },
        el('td', {}, open),
        state,
        el('td', { class: 'mono', text: op.initiator }),
        el('td', {}, age(op.age_ms, live)),
        el('td', { class: 'num', 'data-count': 'running', text: String(op.call_counts.running) }),
        el('td', { class: 'num', 'data-count': 'done', text: String(op.call_counts.done) }),
        el('td', { class: 'num', 'data-count': 'failed', text: String(op.call_counts.failed) }));
    }));
    $('list-empty').hidden = rows.length > 0;
  }

  function showList() {
    current = null;
    show('list-section');
    document.title = 'tom-ledger: operations';
    stream = new AbortController();
    follow('/page/api/events', stream, (event) => {
      if (event.event === 'hello' || event.event === 'changed') soon(refreshList);
    });
  }

  // ---- one operation ----

  async function refreshDetail(op) {
    try {
      const view = await (await api('/page/api/operations/' + encodeURIComponent(op))).json();
      if (current !== op) return;
      rendered = performance.now();
      keepingFocus(() => renderDetail(view));
      return view;
    } catch (e) {
      if (current !== op) return;
      if (e instanceof Unauthorized) askToken('The token was refused.');
      else setConnection('error: ' + e.message);
    }
  }

  function summaryItem(term, value) {
    return [el('dt', { text: term }), el('dd', {}, value)];
  }

  function renderDetail(v) {
    const live = isLive(v);
    $('detail-id').textContent = v.operation;
    $('detail-section').dataset.state = v.state;
    $('detail-section').dataset.aborted = v.aborted ? '1' : '0';
    const state = el('span', {}, badge(v.state));
    if (v.aborted) state.append(' ', badge('aborted'));
    if (v.archived) state.append(' (archived)');
    $('detail-summary').replaceChildren(
      ...summaryItem('State', state),
      ...summaryItem('Initiator', el('code', { text: v.initiator })),
      ...(v.description ? summaryItem('Description', v.description) : []),
      ...summaryItem('Started', el('time', { dateTime: v.started, text: v.started })),
      ...summaryItem('Age', age(v.age_ms, live)),
      ...summaryItem('Calls', v.call_counts.running + ' running, ' + v.call_counts.done + ' done, ' + v.call_counts.failed + ' failed'));
    $('detail-failure').hidden = !v.failure;
    $('detail-failure').textContent = v.failure ? 'Failed: ' + v.failure : '';
    $('abort-button').hidden = !live || v.aborted;

    $('participants').tBodies[0].replaceChildren(...v.participants.map((p) => el('tr',
      { 'data-participant': p.id, 'data-liveness': p.liveness },
      el('td', {}, el('code', { text: p.id }), p.initiator ? ' (initiator)' : null),
      el('td', {}, badge(p.liveness)),
      el('td', { text: p.host }),
      el('td', { class: 'num', text: String(p.pid) }),
      el('td', {}, age(p.heartbeat_age_ms, live && p.liveness !== 'crashed' && p.liveness !== 'left'), ' ago'))));

    $('calls').tBodies[0].replaceChildren(...v.calls.map((c) => {
      const process = el('td', {});
      if (c.pid) process.append(el('span', { class: 'mono', text: 'pid ' + c.pid + (c.pgid ? ' (group ' + c.pgid + ')' : '') }));
      if (c.command.length) process.append(el('br'), el('code', { text: c.command.join(' ') }));
      const outcome = el('td', {}, badge(c.outcome));
      if (c.frame === 'crashed') outcome.append(' ', badge('crashed'));
      if (c.error) outcome.append(' ', el('span', { text: c.error }));
      return el('tr', { 'data-call': c.call, 'data-outcome': c.outcome },
        el('td', {}, c.name ? c.name + ' ' : '', el('code', { class: 'call-id', text: c.name ? '(' + c.call + ')' : c.call })),
        el('td', {}, el('code', { text: c.participant })),
        outcome, process,
        el('td', {}, age(c.duration_ms, c.outcome === 'running')));
    }));

    renderTimeline(v);

    $('temps').tBodies[0].replaceChildren(...v.temps.map((t) => el('tr', {},
      el('td', {}, el('code', { text: t.path })), el('td', { text: t.owner }), el('td', {}, age(t.age_ms, live)))));
    $('temps-empty').hidden = v.temps.length > 0;
    $('temps').hidden = v.temps.length === 0;

    const log = $('log');
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = v.log_tail.join('\n');
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  // One lane per participant (from its join to the end), then one per worker (call).
  function renderTimeline(v) {
    const total = Math.max(v.timeline.total_ms, 1);
    const pct = (ms) => Math.min(100, Math.max(0, (ms / total) * 100)).toFixed(2) + '%';
    const ids = [...new Set([...v.participants.map((p) => p.id), ...v.timeline.spans.map((s) => s.participant)])].sort();
    const rows = [];
    for (const id of ids) {
      const p = v.participants.find((q) => q.id === id);
      const spans = v.timeline.spans.filter((s) => s.participant === id);
      const from = p ? p.joined_ms : Math.min(...spans.map((s) => s.start_ms));
      const state = p ? p.liveness : 'left';
      // A participant that is gone ends with its last call; the others reach the end.
      const gone = state === 'crashed' || state === 'left';
      const to = gone && spans.length ? Math.max(...spans.map((s) => s.end_ms)) : total;
      rows.push(el('div', { class: 'lane-label participant', text: id, title: id, 'aria-hidden': 'true' }));
      rows.push(el('div', { class: 'lane-track', role: 'listitem', 'aria-label': 'participant ' + id + ', ' + state + ', from ' + duration(from) },
        el('div', { class: 'bar s-' + state, style: { left: pct(from), width: pct(to - from) } })));
      for (const s of spans) {
        const label = s.name + ': ' + s.outcome + ', ' + duration(s.end_ms - s.start_ms) + ' from ' + duration(s.start_ms);
        rows.push(el('div', { class: 'lane-label worker', text: s.name, title: s.name, 'aria-hidden': 'true' }));
        rows.push(el('div', { class: 'lane-track', role: 'listitem', 'aria-label': label, 'data-span': s.call },
          el('div', { class: 'bar s-' + s.outcome, title: label, style: { left: pct(s.start_ms), width: pct(s.end_ms - s.start_ms) } })));
      }
    }
    $('timeline').replaceChildren(...rows);
    $('timeline-scale').textContent = 'From the start of the operation (left) to ' +
      (isLive(v) ? 'now' : 'its last log line') + ' (right): ' + duration(v.timeline.total_ms) + '.';
  }

  async function showDetail(op) {
    current = op;
    show('detail-section');
    document.title = 'tom-ledger: ' + op;
    $('abort-result').textContent = '';
    $('abort-result').className = '';
    $('detail-id').textContent = op;
    const view = await refreshDetail(op);
    if (!view || current !== op || view.archived) return;
    stream = new AbortController();
    const following = stream;
    follow('/v1/operations/' + encodeURIComponent(op) + '/events', following, (event) => {
      if (event.event === 'ping') return true;
      if (event.event === 'error') {
        // Archived while the stream was down: its stream is gone, the view is final.
        refreshDetail(op).then((v) => { if (v && v.archived) following.abort(); });
        return true;
      }
      soon(() => refreshDetail(op));
      return event.event !== 'archived';
    });
  }

  // ---- abort ----

  function openAbortDialog() {
    $('abort-dialog-op').textContent = current;
    $('abort-token').value = token;
    $('abort-dialog').showModal();
  }

  async function confirmAbort(event) {
    event.preventDefault();
    const op = current;
    const given = $('abort-token').value.trim();
    $('abort-dialog').close();
    const result = $('abort-result');
    const headers = given ? { Authorization: 'Bearer ' + given } : {};
    let message;
    let refused = true;
    try {
      const r = await fetch('/page/api/operations/' + encodeURIComponent(op) + '/abort', { method: 'POST', headers, cache: 'no-store' });
      if (r.ok) { message = 'Abort requested: the participants are stopping.'; refused = false; }
      else if (r.status === 401) message = 'Refused: the token was not accepted. Nothing was aborted.';
      else {
        let error = r.status + ' ' + r.statusText;
        try { error = (await r.json()).error || error; } catch (_) { /* not json */ }
        message = 'Refused: ' + error + '. Nothing was aborted.';
      }
    } catch (e) {
      message = 'Refused: the server did not answer (' + e.message + '). Nothing was aborted.';
    }
    result.textContent = message;
    result.className = refused ? 'refused' : 'accepted';
    result.dataset.outcome = refused ? 'refused' : 'accepted';
    $('abort-button').focus();
    if (current === op) refreshDetail(op);
  }

  // ---- routing ----

  function route() {
    takeTokenFromFragment();
    stopStream();
    if (!token && !sessionStorage.getItem(TOKEN_KEY + ':open')) {
      // Try without a token first: a server started with --no-auth answers.
      api('/page/api/operations').then(() => {
        sessionStorage.setItem(TOKEN_KEY + ':open', '1');
        route();
      }, (e) => {
        if (e instanceof Unauthorized) askToken('This server needs its bearer token to show anything.');
        else setConnection('error: ' + e.message);
      });
      return;
    }
    const op = new URLSearchParams(location.hash.slice(1)).get('op');
    if (op) showDetail(op); else showList();
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      token = $('token-input').value.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      route();
    });
    $('abort-button').addEventListener('click', openAbortDialog);
    $('abort-cancel').addEventListener('click', () => $('abort-dialog').close());
    $('abort-form').addEventListener('submit', confirmAbort);
    $('abort-dialog').addEventListener('close', () => { if (!$('abort-button').hidden) $('abort-button').focus(); });
    for (const a of document.querySelectorAll('a.back, #home')) {
      a.addEventListener('click', (e) => { e.preventDefault(); location.hash = ''; route(); });
    }
    window.addEventListener('hashchange', route);
    setInterval(tickAges, 1000);
    route();
  });
})();
