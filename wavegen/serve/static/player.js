// wavegen live: plays /stream, draws a live spectrogram with the Web Audio analyser, and shows
// what /status says once a second. No build step: this file is served as it is.
"use strict";

const $ = (id) => document.getElementById(id);
const audio = $("audio");
const button = $("play");
const canvas = $("spectrogram");
const paint = canvas.getContext("2d");
const COLUMN = 2; // pixels per analyser frame
// magma-like colour stops, quiet to loud
const STOPS = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]];

let context = null;
let analyser = null;
let bins = null;
let playing = false;
let sampleRate = null; // the model's rate: the spectrogram shows 0 .. rate / 2
let slowShown = false;

function colour(v) {
  const x = (v / 255) * (STOPS.length - 1);
  const i = Math.min(Math.floor(x), STOPS.length - 2);
  const f = x - i;
  return STOPS[i].map((a, k) => Math.round(a + f * (STOPS[i + 1][k] - a)));
}

function clock(seconds) {
  if (seconds == null || !isFinite(seconds)) return "–";
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const two = (n) => String(n).padStart(2, "0");
  return (h ? h + ":" + two(m) : m) + ":" + two(s % 60);
}

function notice(text) {
  const el = $("notice");
  el.textContent = text || "";
  el.hidden = !text;
}

function clearCanvas() {
  paint.fillStyle = "rgb(0, 0, 4)";
  paint.fillRect(0, 0, canvas.width, canvas.height);
}

function draw() {
  requestAnimationFrame(draw);
  if (!playing) return;
  analyser.getByteFrequencyData(bins);
  const w = canvas.width, h = canvas.height;
  // the analyser spans 0 .. context rate / 2; the model's audio only reaches its own rate / 2
  const top = sampleRate ? Math.min(1, sampleRate / context.sampleRate) : 1;
  const used = Math.max(1, Math.floor(bins.length * top));
  paint.drawImage(canvas, -COLUMN, 0);
  const column = paint.createImageData(COLUMN, h);
  for (let y = 0; y < h; y++) {
    const [r, g, b] = colour(bins[Math.floor(((h - 1 - y) / h) * used)]);
    for (let x = 0; x < COLUMN; x++) {
      const o = 4 * (y * COLUMN + x);
      column.data[o] = r; column.data[o + 1] = g; column.data[o + 2] = b; column.data[o + 3] = 255;
    }
  }
  paint.putImageData(column, w - COLUMN, 0);
}

function start() {
  if (!context) { // the first click: Web Audio needs a user gesture
    context = new AudioContext();
    analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    analyser.smoothingTimeConstant = 0.2;
    analyser.minDecibels = -100;
    analyser.maxDecibels = -20;
    bins = new Uint8Array(analyser.frequencyBinCount);
    context.createMediaElementSource(audio).connect(analyser);
    analyser.connect(context.destination);
    requestAnimationFrame(draw);
  }
  context.resume();
  audio.src = "/stream?from=" + Date.now(); // a new connection joins at the live edge
  // a stream that failed to load (refused: full, or this address has its listeners) fired "error" first, and
  // streamEnded says why; this says only what else keeps the browser from playing (its autoplay policy)
  audio.play().catch((err) => { if (playing) notice("The browser would not play the stream: " + err.message); });
  playing = true;
  button.textContent = "■ Stop";
  $("onair").classList.add("live");
  notice("");
}

function stop() {
  playing = false;
  audio.pause();
  audio.removeAttribute("src");
  audio.load(); // closes the connection
  button.textContent = "▶ Listen";
  $("onair").classList.remove("live");
  $("clock").textContent = ""; // the next poll would clear it, but none comes where the server has gone
}

button.addEventListener("click", () => (playing ? stop() : start()));
// The stream ends when the server stops (the audio plays out what it holds, then "ended") or fails
// ("error": also a refusal when the stream is full, or this address has as many listeners as one may).
// No "stalled": a slow model's stream pauses while it catches up, and plays on.
async function streamEnded() {
  if (!playing) return;
  stop();
  let text = "The stream stopped. Press Listen to join again.";
  try {
    const look = await fetch("/stream", { method: "HEAD", cache: "no-store" }); // what a listener would get now
    const s = await (await fetch("/status", { cache: "no-store" })).json();
    if (look.status === 503 || s.listeners >= s.max_listeners) {
      text = `The stream is full (${s.max_listeners} listeners). Try again in a little while.`;
    } else if (look.status === 429) {
      const n = s.max_listeners_per_client;
      text = `This address already has ${n} listener${n === 1 ? "" : "s"}, as many as one address may have. ` +
        "Stop one of them, or try again in a little while.";
    }
  } catch (err) {
    // the server is gone: the headline says so at the next poll
  }
  slowShown = false; // this notice takes the slow one's place: a failed poll leaves it
  notice(text);
}
audio.addEventListener("error", streamEnded);
audio.addEventListener("ended", streamEnded);

function show(s) {
  sampleRate = s.sample_rate;
  const label = s.label || (s.labels.length ? "even blend of " + s.labels.join(", ") : "none");
  $("headline").textContent = `${s.model}${s.trained ? "" : " (random weights)"} · ${s.model_type}, ` +
    `${s.sample_rate / 1000} kHz · ${s.backend} engine · ${s.codec}`;
  $("f-model").textContent = s.model;
  $("f-preset").textContent = s.preset || "–";
  $("f-label").textContent = label;
  $("f-seed").textContent = s.seed;
  $("f-temperature").textContent = s.temperature;
  $("f-draws").textContent = (s.pitch_sync ? `pitch-synchronous (${s.pitch_sync})` : "independent") +
    (s.postfilter ? ` + postfilter ${s.postfilter}` : "");
  $("f-position").textContent = clock(s.position_seconds);
  $("f-speed").textContent = s.realtime_factor == null ? "–" : s.realtime_factor.toFixed(1) + "× real time";
  $("f-buffered").textContent = s.buffered_seconds.toFixed(1) + " s";
  $("f-listeners").textContent = `${s.listeners} of ${s.max_listeners}`;
  const counts = Object.entries(s.guard.counts);
  $("f-guard").textContent = !s.guard.enabled ? "guard off" : counts.length ? counts.map(([k, n]) => `${k} ${n}`).join(" · ") : "none";
  const list = $("events");
  list.replaceChildren(...s.guard.events.slice(-8).reverse().map((e) => {
    const li = document.createElement("li");
    li.textContent = e.kind === "gave up"
      ? `${clock(e.seconds)}  gave up after ${e.attempt} redraw${e.attempt === 1 ? "" : "s"}: kept the ${e.detected}`
      : `${clock(e.seconds)}  ${e.kind} on draw ${e.attempt + 1}`;
    return li;
  }));
  $("no-events").hidden = s.guard.events.length > 0 || !s.guard.enabled;
  $("nyquist").textContent = `0 – ${(s.sample_rate / 2000).toFixed(1)} kHz`;
  if (s.slow) {
    const speed = s.realtime_factor == null ? "less than" : s.realtime_factor.toFixed(2) + "×";
    notice(`This model generates ${speed} real time on this machine: the stream falls behind ` +
      `(${s.delay_seconds.toFixed(1)} s so far) and pauses while it catches up.`);
    slowShown = true;
  } else if (slowShown) {
    notice("");
    slowShown = false;
  }
  $("clock").textContent = playing && audio.currentTime ? "listening " + clock(audio.currentTime) : "";
}

async function poll() {
  try {
    const s = await (await fetch("/status", { cache: "no-store" })).json();
    show(s);
    showControl(s);
  } catch (err) {
    $("headline").textContent = "the server is not answering";
    if (slowShown) { // no longer news: the stream does not fall behind, it is gone
      notice("");
      slowShown = false;
    }
  }
}

// the label control: only on a page opened as /#token=TOKEN on a server started with --control-token. The
// token stays in this tab (a fragment never reaches the server; it is taken off the address at once).
let token = null;
function readToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token")) {
    sessionStorage.setItem("wavegen-token", fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  token = sessionStorage.getItem("wavegen-token");
}
readToken();
window.addEventListener("hashchange", readToken);

function showControl(s) {
  const form = $("control");
  if (!token || !s.label_control || !form.hidden) return;
  // it starts at the label in force (switched to before this page opened, or --label), not the model's first: by
  // its name (label_in_force), as the label's text may say it otherwise ("bells:1"); a blend in force has no one
  // label to start at: the first. An option shows its text with spaces stripped and collapsed, so a label with a
  // space at either end, or two together, is shown quoted: " lead" and "lead" are told apart.
  const shown = (l) => (l !== l.trim() || /\s\s/.test(l) ? JSON.stringify(l) : l);
  const start = s.label_in_force;
  $("c-label").replaceChildren(...s.labels.map((l) => new Option(shown(l), l, l === start, l === start)));
  form.hidden = false;
}

$("control").addEventListener("submit", async (event) => {
  event.preventDefault();
  const typed = $("c-blend").value; // as typed: a label may begin with a space (" lead")
  const text = typed.trim() ? typed : $("c-label").value;
  $("c-result").textContent = "switching…";
  try {
    const r = await fetch("/label", { method: "POST", body: text, cache: "no-store",
      headers: { "Authorization": "Bearer " + token, "Content-Type": "text/plain" } });
    const a = await r.json();
    $("c-result").textContent = !r.ok ? a.error : a.pending ? `${a.label}: asked for, not taken yet`
      : `${a.label} from ${clock(a.starts_at_seconds)}, on air in ${a.on_air_in_seconds.toFixed(1)} s`;
  } catch (err) {
    $("c-result").textContent = "the server is not answering";
  }
});

$("stream-url").textContent = location.origin + "/stream";
clearCanvas();
poll();
setInterval(poll, 1000);
