// The live page of master-events (served at /ui). Plain JavaScript, no library, no
// network but this server: two Server-Sent Events streams of /diag/masterEvents.
//
// - The events stream follows the user's filters (type, bucket, vbucket, node; "only
//   new events" = start=now) and shows the newest events first, at most ROW_CAP rows.
//   Gap frames (events the server no longer had) are shown as rows and counted.
// - The rebalance stream asks only for the event types of a rebalance's moves and
//   drives the progress view; the filters do not apply to it.
// - Each stream reconnects by itself, resuming after the last position it saw
//   (since=), with a backoff of 1 s doubling to 10 s. A refusal that a retry cannot
//   cure (a bad filter: 400; credentials: 401/403) is shown and not retried.
// - Everything received is put in the page as text (textContent), never as HTML.
(function () {
  'use strict';

  const ROW_CAP = 500;
  const FLUSH_MS = 100;
  const RETRY_FIRST_MS = 1000;
  const RETRY_MAX_MS = 10000;
  const REBALANCE_TYPES = [
    'rebalanceStart', 'rebalanceEnd', 'updateFastForwardMap',
    'vbucketMoveStart', 'vbucketMoveDone', 'vbucketMoverTerminate',
  ];
  const SHOWN_ELSEWHERE = new Set(['seq', 'ts', 'type', 'bucket', 'vbucket', 'node', 'origin']);
  // The page is at PREFIX/ui or PREFIX/ui/: the stream is at PREFIX/diag/masterEvents.
  const STREAM = location.pathname.replace(/\/ui\/?$/, '') + '/diag/masterEvents';

  const $ = (id) => document.getElementById(id);
  const text = (el, value) => { el.textContent = String(value); };

  // ---------------------------------------------------------------- one stream

  // An EventSource on the stream with `params`, reopened after errors.
  class LiveStream {
    constructor(params, handlers) {
      this.params = params;
      this.h = handlers;
      this.position = null; // the last seq seen (event or heartbeat)
      this.retry = RETRY_FIRST_MS;
      this.es = null;
      this.timer = null;
      this.stopped = false;
      this.open();
    }

    url() {
      const p = new URLSearchParams(this.params);
      if (this.position !== null) {
        p.delete('start');
        p.set('since', String(this.position));
      }
      const qs = p.toString();
      return STREAM + (qs ? '?' + qs : '');
    }

    advance(seq) {
      if (typeof seq === 'number' && (this.position === null || seq > this.position)) {
        this.position = seq;
      }
    }

    open() {
      const url = this.url();
      const es = new EventSource(url);
      this.es = es;
      this.h.status('connecting');
      es.onopen = () => {
        this.retry = RETRY_FIRST_MS;
        this.h.status('live');
      };
      es.onmessage = (m) => {
        const ev = parse(m.data);
        if (!ev) return;
        this.advance(ev.seq);
        this.h.event(ev);
      };
      es.addEventListener('gap', (m) => {
        const gap = parse(m.data);
        if (gap && this.h.gap) this.h.gap(gap);
      });
      es.addEventListener('heartbeat', (m) => {
        const hb = parse(m.data);
        if (!hb) return;
        this.advance(hb.seq);
        if (this.h.heartbeat) this.h.heartbeat(hb);
      });
      es.onerror = () => {
        es.close();
        if (this.stopped || es !== this.es) return;
        this.h.status('reconnecting');
        probe(url).then((refusal) => {
          if (this.stopped || es !== this.es) return;
          if (refusal) {
            this.h.status('closed');
            this.h.error(refusal);
            return;
          }
          const wait = this.retry;
          this.retry = Math.min(this.retry * 2, RETRY_MAX_MS);
          this.timer = setTimeout(() => this.open(), wait);
        });
      };
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      if (this.es) this.es.close();
    }
  }

  function parse(data) {
    try {
      const v = JSON.parse(data);
      return v && typeof v === 'object' ? v : null;
    } catch (e) {
      return null;
    }
  }

  // Why the stream at `url` cannot be opened, when a retry would not help (4xx other
  // than 429); null when it can, or when the server cannot be reached (try again).
  async function probe(url) {
    const ctl = new AbortController();
    try {
      const r = await fetch(url, {
        signal: ctl.signal,
        headers: { Accept: 'application/x-ndjson' },
        credentials: 'same-origin',
        cache: 'no-store',
      });
      if (r.ok || r.status === 429 || r.status >= 500) {
        ctl.abort();
        return null;
      }
      let message = '';
      try {
        const body = await r.json();
        message = body && body.error ? String(body.error) : '';
      } catch (e) {
        message = '';
      }
      return 'The server refused the stream (' + r.status + ')' + (message ? ': ' + message : '') + '.';
    } catch (e) {
      return null;
    }
  }

  // ---------------------------------------------------------------- events view

  const rows = $('event-rows');
  const view = {
    stream: null,
    count: 0,
    gaps: 0,
    lastSeq: null,
    pending: [], // rows not drawn yet, oldest first
    flushTimer: null,
    paused: false,
  };
  text($('row-cap'), ROW_CAP);

  function setStatus(state) {
    const el = $('status');
    el.className = 'status ' + state;
    text(el, state);
  }

  function showError(message) {
    const el = $('error');
    el.hidden = !message;
    text(el, message || '');
  }

  function queue(item) {
    view.pending.push(item);
    if (view.pending.length >= 2 * ROW_CAP) view.pending = view.pending.slice(-ROW_CAP);
    if (view.flushTimer === null) view.flushTimer = setTimeout(flush, FLUSH_MS);
  }

  function flush() {
    view.flushTimer = null;
    text($('event-count'), view.count);
    text($('gap-count'), view.gaps);
    text($('last-seq'), view.lastSeq === null ? '-' : view.lastSeq);
    if (view.paused || view.pending.length === 0) return;
    const items = view.pending.slice(-ROW_CAP);
    view.pending = [];
    const fresh = items.length < 50;
    const frag = document.createDocumentFragment();
    for (let i = items.length - 1; i >= 0; i--) {
      const tr = items[i].gap ? gapRow(items[i].gap) : eventRow(items[i].event);
      if (fresh) tr.classList.add('fresh');
      frag.appendChild(tr);
    }
    rows.insertBefore(frag, rows.firstChild);
    while (rows.rows.length > ROW_CAP) rows.deleteRow(-1);
    text($('shown-count'), rows.rows.length);
  }

  function cell(tr, value, cls) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = value === undefined || value === null ? '' : String(value);
    tr.appendChild(td);
    return td;
  }

  function utc(ts) {
    if (typeof ts !== 'number' || !isFinite(ts)) return '';
    const d = new Date(ts * 1000);
    if (isNaN(d.getTime())) return '';
    return d.toISOString().replace('T', ' ').replace('Z', '');
  }

  function typeClass(type) {
    if (/^rebalance|^bucketRebalance/.test(type)) return 't-rebalance';
    if (/[Ff]ailover/.test(type)) return 't-failover';
    if (/^vbucketMove/.test(type)) return 't-move';
    return '';
  }

  function brief(value) {
    const s = typeof value === 'string' ? value : JSON.stringify(value);
    return s.length > 160 ? s.slice(0, 157) + '...' : s;
  }

  function eventRow(ev) {
    const tr = document.createElement('tr');
    cell(tr, ev.seq, 'num');
    cell(tr, utc(ev.ts)).title = typeof ev.ts === 'number' ? String(ev.ts) : '';
    cell(tr, ev.type, typeClass(String(ev.type)));
    cell(tr, ev.bucket);
    cell(tr, ev.vbucket, 'num');
    const where = cell(tr, typeof ev.node === 'string' ? ev.node : '');
    if (ev.origin && ev.origin !== ev.node) {
      const span = document.createElement('span');
      span.className = 'origin muted';
      span.textContent = (where.textContent ? ' via ' : '') + ev.origin;
      where.appendChild(span);
    }
    const other = [];
    for (const key of Object.keys(ev)) {
      if (!SHOWN_ELSEWHERE.has(key) || (key === 'node' && typeof ev.node !== 'string')) {
        other.push(key + '=' + brief(ev[key]));
      }
    }
    cell(tr, other.join('  '), 'other').title = JSON.stringify(ev);
    return tr;
  }

  function gapRow(gap) {
    const tr = document.createElement('tr');
    tr.className = 'gap';
    const td = cell(tr, gapText(gap));
    td.colSpan = 7;
    return tr;
  }

  function gapText(gap) {
    return 'GAP: ' + gap.missed + ' event(s) missed (seq ' + gap.fromSeq + ' to ' + gap.toSeq +
      ')' + (gap.reason ? ': ' + gap.reason : '') + ' — the server no longer retained them.';
  }

  function filtersFromInputs() {
    const list = (s) => s.split(/[\s,]+/).filter(Boolean).join(',');
    return {
      type: list($('filter-type').value),
      bucket: $('filter-bucket').value.trim(),
      vbucket: list($('filter-vbucket').value),
      node: $('filter-node').value.trim(),
      startNow: $('start-now').checked,
    };
  }

  function filtersToInputs(p) {
    $('filter-type').value = p.get('type') || '';
    $('filter-bucket').value = p.get('bucket') || '';
    $('filter-vbucket').value = p.get('vbucket') || '';
    $('filter-node').value = p.get('node') || '';
    $('start-now').checked = p.get('start') === 'now';
  }

  function connectEvents() {
    if (view.stream) view.stream.stop();
    clearTimeout(view.flushTimer);
    view.flushTimer = null;
    view.count = 0;
    view.gaps = 0;
    view.lastSeq = null;
    view.pending = [];
    rows.replaceChildren();
    showError('');
    $('gap-banner').hidden = true;
    text($('heartbeat'), '');
    flush();
    text($('shown-count'), 0);

    const f = filtersFromInputs();
    const params = new URLSearchParams();
    for (const key of ['type', 'bucket', 'vbucket', 'node']) {
      if (f[key]) params.set(key, f[key]);
    }
    if (f.startNow) params.set('start', 'now');
    const qs = params.toString();
    history.replaceState(null, '', location.pathname + (qs ? '?' + qs : ''));

    view.stream = new LiveStream(params, {
      status: setStatus,
      error: showError,
      event(ev) {
        view.count += 1;
        if (typeof ev.seq === 'number') view.lastSeq = ev.seq;
        queue({ event: ev });
      },
      gap(gap) {
        view.gaps += 1;
        const banner = $('gap-banner');
        banner.hidden = false;
        text(banner, view.gaps + ' gap(s) in this stream; the latest: ' + gapText(gap));
        queue({ gap: gap });
      },
      heartbeat(hb) {
        text($('heartbeat'), '· idle, heartbeat ' + utc(hb.ts).slice(11) + ' at seq ' + hb.seq);
      },
    });
  }

  $('filters').addEventListener('submit', (e) => {
    e.preventDefault();
    connectEvents();
  });
  $('clear-filters').addEventListener('click', () => {
    filtersToInputs(new URLSearchParams());
    connectEvents();
  });
  $('pause').addEventListener('change', (e) => {
    view.paused = e.target.checked;
    if (!view.paused) flush();
  });

  // ---------------------------------------------------------------- rebalance view

  const rb = { current: null, timer: null };

  function newRebalance(pid, ts) {
    return {
      pid: pid || null, // null: its rebalanceStart was not seen
      start: typeof ts === 'number' ? ts : null,
      end: null,
      reason: null,
      lastTs: typeof ts === 'number' ? ts : null,
      planned: new Set(), // bucket/vbucket keys: updateFastForwardMap or vbucketMoveStart
      done: new Set(),
      aborted: 0,
      inflight: new Map(), // key -> {node, bucket, vbucket, pid}
      nodes: new Map(), // node -> {done, inflight: Set of keys}
    };
  }

  function moveKey(ev) {
    return String(ev.bucket) + '/' + String(ev.vbucket);
  }

  function nodeOf(r, node) {
    const name = typeof node === 'string' && node ? node : '(unknown)';
    let n = r.nodes.get(name);
    if (!n) {
      n = { done: 0, inflight: new Set() };
      r.nodes.set(name, n);
    }
    return n;
  }

  // The rebalance moves belong to: the open one, or one whose start was not seen.
  function openRebalance(ev) {
    if (!rb.current || rb.current.end !== null) rb.current = newRebalance(null, ev.ts);
    return rb.current;
  }

  function endMove(r, key) {
    const m = r.inflight.get(key);
    if (!m) return null;
    r.inflight.delete(key);
    nodeOf(r, m.node).inflight.delete(key);
    return m;
  }

  function onRebalanceEvent(ev) {
    let r = rb.current;
    switch (ev.type) {
      case 'rebalanceStart':
        r = rb.current = newRebalance(ev.pid, ev.ts);
        break;
      case 'rebalanceEnd':
        if (!r || r.end !== null) return;
        r.end = typeof ev.ts === 'number' ? ev.ts : r.lastTs;
        r.reason = String(ev.reason);
        if (r.pid === null) r.pid = ev.pid || null;
        break;
      case 'updateFastForwardMap':
        r = openRebalance(ev);
        r.planned.add(moveKey(ev));
        break;
      case 'vbucketMoveStart': {
        r = openRebalance(ev);
        const key = moveKey(ev);
        if (endMove(r, key)) r.aborted += 1; // started again: the earlier move was given up
        r.planned.add(key);
        r.inflight.set(key, { node: ev.node, bucket: ev.bucket, vbucket: ev.vbucket, pid: ev.pid });
        nodeOf(r, ev.node).inflight.add(key);
        break;
      }
      case 'vbucketMoveDone': {
        if (!r) return;
        const key = moveKey(ev);
        const m = endMove(r, key);
        if (m) nodeOf(r, m.node).done += 1;
        r.planned.add(key);
        r.done.add(key);
        break;
      }
      case 'vbucketMoverTerminate': {
        if (!r || ev.reason === 'normal') return;
        const key = moveKey(ev);
        const m = r.inflight.get(key);
        if (m && (m.pid === undefined || ev.pid === undefined || m.pid === ev.pid)) {
          endMove(r, key);
          r.aborted += 1;
        }
        break;
      }
      default:
        return;
    }
    if (r && typeof ev.ts === 'number' && (r.lastTs === null || ev.ts > r.lastTs)) r.lastTs = ev.ts;
    if (rb.timer === null) rb.timer = setTimeout(renderRebalance, FLUSH_MS);
  }

  function seconds(s) {
    if (s === null || !isFinite(s)) return '-';
    if (s < 120) return s.toFixed(1) + ' s';
    return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s';
  }

  function renderRebalance() {
    rb.timer = null;
    const r = rb.current;
    $('rebalance-none').hidden = !!r;
    $('rebalance-view').hidden = !r;
    if (!r) return;
    const total = r.planned.size;
    const done = r.done.size;
    text($('rebalance-pid'), r.pid || '(its rebalanceStart was not seen)');
    const state = $('rebalance-state');
    if (r.end === null) {
      state.className = 'badge running';
      text(state, 'running');
    } else {
      state.className = 'badge ' + (r.reason === 'normal' ? 'normal' : 'failed');
      text(state, 'ended: ' + r.reason);
    }
    text($('rebalance-start'), r.start === null ? '-' : utc(r.start) + ' UTC');
    const until = r.end !== null ? r.end : r.lastTs;
    const took = r.start === null || until === null ? null : until - r.start;
    text($('rebalance-elapsed'), (r.end !== null ? 'took ' : 'running for ') + seconds(took));
    text($('moves-done'), done);
    text($('moves-total'), total);
    text($('moves-inflight'), r.inflight.size);
    text($('moves-aborted'), r.aborted);
    text($('moves-percent'), total ? Math.floor((100 * done) / total) : 0);
    const bar = $('moves-progress');
    bar.max = Math.max(total, 1);
    bar.value = done;

    const body = $('node-rows');
    const frag = document.createDocumentFragment();
    for (const name of [...r.nodes.keys()].sort()) {
      const n = r.nodes.get(name);
      const tr = document.createElement('tr');
      cell(tr, name);
      cell(tr, n.inflight.size, 'num');
      cell(tr, n.done, 'num');
      const vbs = [...n.inflight].map((k) => {
        const m = r.inflight.get(k);
        return m ? m.vbucket : k;
      }).sort((a, b) => a - b);
      cell(tr, vbs.length > 24 ? vbs.slice(0, 24).join(' ') + ' ...' : vbs.join(' '));
      frag.appendChild(tr);
    }
    body.replaceChildren(frag);
  }

  function startRebalanceStream() {
    const params = new URLSearchParams();
    params.set('type', REBALANCE_TYPES.join(','));
    new LiveStream(params, {
      status(state) {
        text($('rebalance-status'), state);
      },
      error(message) {
        showError('Rebalance view: ' + message);
      },
      event: onRebalanceEvent,
    });
  }

  // ---------------------------------------------------------------- start

  filtersToInputs(new URLSearchParams(location.search));
  connectEvents();
  startRebalanceStream();
})();
