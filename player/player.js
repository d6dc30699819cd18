// The node's operator page: plays <stream> over HLS (hls.js) or DASH (dash.js) from this node,
// and says in the page (and its title, for scripts) whether playback advances.
//
// It trusts only its own node: media URLs are this page's origin plus the paths in its own
// <meta name="mesh-hls|mesh-dash"> and the stream name; nothing in the query names a host or
// a path (a link could otherwise send the viewer token elsewhere). The query gives the stream
// (checked as the node checks it), the token and the format only.
'use strict';

const STREAM = /^[A-Za-z0-9_-]{1,128}$/;
const q = new URLSearchParams(location.search);
const f = document.getElementById('f'), v = document.getElementById('v'), st = document.getElementById('status');
for (const k of ['stream', 'token', 'format']) if (q.get(k)) f.elements[k].value = q.get(k);

function say(text, error) {
  st.textContent = text;
  st.className = error ? 'error' : '';
  document.title = (error ? 'error: ' : '') + text;
}

// A media URL on this node: the page's own origin, a path prefix from its own <meta>, the stream.
function mediaUrl(format, stream, file, token) {
  const meta = document.querySelector('meta[name="mesh-' + format + '"]');
  const prefix = meta ? meta.content : '/' + format + '/';
  if (!/^\/(?!\/)[A-Za-z0-9._~\/-]*\/$/.test(prefix)) throw new Error('bad mesh-' + format + ' path in the page');
  const url = new URL(prefix + stream + '/' + file, location.origin);
  if (url.origin !== location.origin) throw new Error('media not on this node');
  if (token) url.searchParams.set('token', token);
  return url.href;
}

let player = null;
function play(stream, token, format) {
  if (player) { player.destroy ? player.destroy() : player.reset(); player = null; }
  if (!STREAM.test(stream)) return say('bad stream name (1-128 of A-Z a-z 0-9 _ -)', true);
  if (format !== 'hls' && format !== 'dash') return say('format: hls or dash', true);
  let url;
  try {
    url = mediaUrl(format, stream, format === 'dash' ? 'manifest.mpd' : 'master.m3u8', token);
  } catch (e) {
    return say(e.message, true);
  }
  if (format === 'dash') {
    player = dashjs.MediaPlayer().create();
    // Clock sync from this node's own Date header (the page itself, without its query): dash.js
    // would otherwise ask a public time server, which a node on a closed network cannot reach.
    player.updateSettings({ streaming: { utcSynchronization: { useManifestDateHeaderTimeSource: true,
      defaultTimingSource: { scheme: 'urn:mpeg:dash:utc:http-head:2014', value: location.origin + location.pathname } } } });
    player.on(dashjs.MediaPlayer.events.ERROR, e => say('dash: ' + JSON.stringify(e.error || e).slice(0, 200), true));
    player.initialize(v, url, true);
  } else {
    if (window.Hls && Hls.isSupported()) {
      // The transmuxer's worker from this node's file (the CSP allows no blob: worker).
      player = new Hls({ workerPath: 'hls.worker.js' });
      player.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) say('hls: ' + d.type + ' ' + d.details, true); });
      player.loadSource(url);
      player.attachMedia(v);
    } else {
      v.src = url;
    }
    v.play().catch(() => {});
  }
  say('loading ' + format + ' ' + stream);
}

let first = null;
v.addEventListener('timeupdate', () => {
  if (first === null) first = v.currentTime;
  if (v.currentTime - first >= 3) say('playing ' + v.currentTime.toFixed(1) + ' s');
});
v.addEventListener('error', () => say('video: ' + (v.error && v.error.message), true));

f.addEventListener('submit', e => {
  e.preventDefault();
  play(f.elements.stream.value, f.elements.token.value, f.elements.format.value);
});
if (q.get('stream')) play(q.get('stream'), q.get('token'), q.get('format') || 'hls');
