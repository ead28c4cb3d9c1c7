// Operator page: sites and devices with live state, active alerts (acknowledge), a device's transitions, and
// the problems of gateways (clock_skew...) on their site and on their devices' rows.
// Plain JavaScript, no build step. Reads the API with a bearer token kept in localStorage; live updates come
// from GET /api/v1/events (server-sent events, read with fetch so that the token travels in a header). A
// gateway's problems are not events (they start and clear without a state change): GET /api/v1/gateways is
// read again every GATEWAYS_REFRESH_MS while the stream is live.
// The camera wall: GET /api/v1/cameras, then each camera's latest snapshot fetched with the token and drawn on a
// canvas (the hub's CSP allows images from its own origin only, so no blob: or data: URL); a new snapshot comes as
// an "event: snapshot" on the stream, a camera's state change as its "event: device".
"use strict";

const I18N = {
  vi: {
    title: "Vận hành thiết bị", disconnected: "Mất kết nối", live: "Trực tiếp", logout: "Đổi token",
    token_prompt: "Mã truy cập (API token)", sign_in: "Đăng nhập", active_alerts: "Cảnh báo đang mở",
    sites: "Địa điểm và thiết bị", filter_state: "Trạng thái", all: "Tất cả", close: "Đóng",
    transitions: "Chuyển trạng thái gần đây", state_online: "Trực tuyến", state_offline: "Mất kết nối",
    state_degraded: "Suy giảm", state_unknown: "Không rõ", device: "Thiết bị", kind: "Loại", state: "Trạng thái",
    last_seen: "Lần cuối", reason: "Lý do", ack: "Xác nhận", acked_by: "Đã xác nhận bởi", no_alerts: "Không có cảnh báo",
    ward: "Phường/Quận", gateway: "Gateway", never: "chưa thấy", ago: "trước", bad_token: "Token không hợp lệ",
    forbidden: "Token không đủ quyền", firing: "đang báo", acknowledged: "đã xác nhận", devices: "thiết bị",
    site: "Địa điểm", profile: "Cấu hình", no_transitions: "Chưa có", problems: "Sự cố", since: "từ",
    times: "lần", problem_clock_skew: "Đồng hồ gateway bị lệch",
    camera_wall: "Tường camera", no_snapshot: "Chưa có ảnh", changed: "Đổi trạng thái", snapshot_at: "Ảnh",
    trigger_periodic: "định kỳ", trigger_problem: "khi có sự cố", trigger_cleared: "khi hết sự cố",
    problem_image_black: "Hình đen", problem_image_frozen: "Hình bị đứng", problem_image_blurred: "Hình mờ",
    problem_image_covered: "Ống kính bị che", problem_view_changed: "Góc quay bị lệch",
  },
  en: {
    title: "Device operations", disconnected: "Disconnected", live: "Live", logout: "Change token",
    token_prompt: "API token", sign_in: "Sign in", active_alerts: "Active alerts",
    sites: "Sites and devices", filter_state: "State", all: "All", close: "Close",
    transitions: "Recent transitions", state_online: "Online", state_offline: "Offline",
    state_degraded: "Degraded", state_unknown: "Unknown", device: "Device", kind: "Kind", state: "State",
    last_seen: "Last seen", reason: "Reason", ack: "Acknowledge", acked_by: "Acknowledged by", no_alerts: "No alerts",
    ward: "Ward", gateway: "Gateway", never: "never", ago: "ago", bad_token: "Invalid token",
    forbidden: "The token lacks the role", firing: "firing", acknowledged: "acknowledged", devices: "devices",
    site: "Site", profile: "Profile", no_transitions: "None yet", problems: "Problems", since: "since",
    times: "times", problem_clock_skew: "Gateway clock is off",
    camera_wall: "Camera wall", no_snapshot: "No snapshot yet", changed: "State changed", snapshot_at: "Snapshot",
    trigger_periodic: "periodic", trigger_problem: "on a problem", trigger_cleared: "problem cleared",
    problem_image_black: "Black picture", problem_image_frozen: "Frozen picture", problem_image_blurred: "Blurred picture",
    problem_image_covered: "Lens covered", problem_view_changed: "View changed",
  },
};

// How often the gateways (and their problems) are read again while the page is live.
const GATEWAYS_REFRESH_MS = 15_000;

const state = {
  lang: localStorage.getItem("ioc.lang") || "vi",
  token: localStorage.getItem("ioc.token") || "",
  sites: new Map(),
  devices: new Map(),
  gateways: new Map(),
  alerts: new Map(),
  cameras: new Map(),
  // camera id -> {ts, bitmap}: the snapshot drawn last, so a tile drawn again needs no new request
  images: new Map(),
  filter: "",
  stream: null,
};

const $ = (sel) => document.querySelector(sel);
const t = (key) => (I18N[state.lang] || I18N.vi)[key] || key;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function applyLanguage() {
  document.documentElement.lang = state.lang;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  $("#lang").textContent = state.lang === "vi" ? "EN" : "VI";
  document.title = `IOC — ${t("title")}`;
  render();
}

function ago(ms) {
  if (!ms) return t("never");
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ${t("ago")}`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${t("ago")}`;
  return new Date(ms).toLocaleString(state.lang === "vi" ? "vi-VN" : "en-GB");
}

class AuthError extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, ...(options.headers || {}) },
  });
  if (response.status === 401) throw new AuthError(t("bad_token"));
  if (response.status === 403) throw new Error(t("forbidden"));
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function loadAll() {
  const sites = await api("/api/v1/sites");
  state.sites = new Map(sites.items.map((s) => [s.id, s]));
  state.devices = new Map();
  for (let offset = 0; ; offset += 1000) {
    const page = await api(`/api/v1/devices?limit=1000&offset=${offset}`);
    for (const d of page.items) state.devices.set(d.id, d);
    if (offset + page.items.length >= page.total || page.items.length === 0) break;
  }
  const alerts = await api("/api/v1/alerts?state=open&limit=1000");
  state.alerts = new Map(alerts.items.map((a) => [a.id, a]));
  await loadGateways(false);
  await loadCameras();
  render();
}

async function loadCameras() {
  const answer = await api("/api/v1/cameras?limit=5000");
  state.cameras = new Map(answer.items.map((c) => [c.id, c]));
}

// Problems that changed show at once; an unchanged answer costs no rendering (a wall screen may show thousands
// of devices).
async function loadGateways(renderChanges = true) {
  const answer = await api("/api/v1/gateways");
  const before = problemsSignature();
  state.gateways = new Map(answer.items.map((g) => [g.key, g]));
  if (renderChanges && problemsSignature() !== before) renderSites();
}

function problemsSignature() {
  return JSON.stringify([...state.gateways.values()]
    .filter((g) => g.problems && g.problems.length)
    .map((g) => [g.key, g.problems.map((p) => [p.problem, p.detail])]));
}

// A device's problems are its gateway's: the latest gateway answer, else what the device answer carried.
function deviceProblems(d) {
  const gw = state.gateways.get(`${d.site}/${d.gateway}`);
  return (gw ? gw.problems : d.problems) || [];
}

// "Gateway clock is off: <the hub's detail> (since <time>, 3 times)"; a problem the page has no words for
// yet is named by its code.
function problemTitle(p) {
  const key = `problem_${p.problem}`;
  const label = t(key) === key ? p.problem : t(key);
  const when = [];
  if (p.since_ms) when.push(`${t("since")} ${new Date(p.since_ms).toLocaleString(state.lang === "vi" ? "vi-VN" : "en-GB")}`);
  if (p.count > 1) when.push(`${p.count} ${t("times")}`);
  return `${label}: ${p.detail}${when.length ? ` (${when.join(", ")})` : ""}`;
}

// The code itself on the badge (what the API, the logs and the docs call it); its meaning and detail on hover.
function problemBadge(p) {
  return el("span", { class: "problem", dataset: { problem: p.problem }, title: problemTitle(p), text: p.problem });
}

function stateBadge(value) {
  return el("span", { class: "state", dataset: { state: value }, text: t(`state_${value}`) });
}

function renderSummary() {
  const counts = { online: 0, degraded: 0, offline: 0, unknown: 0 };
  for (const d of state.devices.values()) counts[d.state] = (counts[d.state] || 0) + 1;
  const box = $("#summary");
  box.replaceChildren(
    ...Object.entries(counts).map(([k, n]) => el("span", { dataset: { count: k } }, stateBadge(k), ` ${n}`)),
  );
}

function renderAlerts() {
  const list = $("#alerts");
  const open = [...state.alerts.values()].filter((a) => a.state !== "resolved").sort((a, b) => b.id - a.id);
  $("#alert-count").textContent = String(open.length);
  $("#alert-count").dataset.zero = String(open.length === 0);
  if (!open.length) {
    list.replaceChildren(el("li", { class: "muted", text: t("no_alerts") }));
    return;
  }
  list.replaceChildren(
    ...open.map((a) => {
      const item = el(
        "li",
        { dataset: { alert: String(a.id), severity: a.severity, state: a.state } },
        el("strong", { text: `${a.subject} — ${a.rule}` }),
        el("div", { text: a.message }),
        el("div", { class: "meta", text: `${a.severity} · ${t(a.state)} · ${new Date(a.opened_at).toLocaleString()}` }),
      );
      if (a.state === "firing") {
        item.append(el("button", { type: "button", class: "ack", text: t("ack"), onclick: () => acknowledge(a.id) }));
      } else if (a.acked_by) {
        item.append(el("div", { class: "meta", text: `${t("acked_by")} ${a.acked_by}` }));
      }
      return item;
    }),
  );
}

function deviceRow(d) {
  return el(
    "tr",
    { class: "device", dataset: { device: d.id, state: d.state }, onclick: () => showDevice(d.id) },
    el("td", { text: d.id }),
    el("td", { class: "col-kind", text: d.kind }),
    el("td", {}, stateBadge(d.state), ...deviceProblems(d).map(problemBadge)),
    el("td", { class: "last-seen", dataset: { ms: String(d.last_seen_ms || "") }, text: ago(d.last_seen_ms) }),
    el("td", { class: "col-reason reason", text: d.reason || "" }),
  );
}

function renderSites() {
  const container = $("#sites");
  const bySite = new Map();
  for (const d of state.devices.values()) {
    if (state.filter && d.state !== state.filter) continue;
    const key = d.site || "-";
    if (!bySite.has(key)) bySite.set(key, []);
    bySite.get(key).push(d);
  }
  const blocks = [...bySite.keys()].sort().map((siteId) => {
    const site = state.sites.get(siteId) || { id: siteId, name: siteId, ward: null };
    const devices = bySite.get(siteId).sort((a, b) => a.id.localeCompare(b.id));
    const head = el("tr", {}, ...["device", "kind", "state", "last_seen", "reason"].map((k) =>
      el("th", { class: `col-${k}`, text: t(k) })));
    const troubled = [...state.gateways.values()]
      .filter((g) => g.site === siteId && g.problems && g.problems.length)
      .sort((a, b) => a.gateway.localeCompare(b.gateway))
      .map((g) => el("li", { class: "gateway", dataset: { gateway: g.key } },
        `${t("gateway")} ${g.gateway} `, ...g.problems.map(problemBadge)));
    return el(
      "div",
      { class: "site", dataset: { site: siteId } },
      el("h3", {}, site.name || siteId, el("small", { text: `${site.ward ? t("ward") + " " + site.ward + " · " : ""}${devices.length} ${t("devices")}` })),
      ...(troubled.length ? [el("ul", { class: "gateway-problems", "aria-label": t("problems") }, ...troubled)] : []),
      el("table", {}, el("thead", {}, head), el("tbody", {}, ...devices.map(deviceRow))),
    );
  });
  container.replaceChildren(...blocks);
}

function updateRow(d) {
  // One row, not the whole page: a wall screen may show thousands of devices.
  const row = document.querySelector(`tr[data-device="${CSS.escape(d.id)}"]`);
  if (!row || (state.filter && d.state !== state.filter)) return renderSites();
  row.replaceWith(deviceRow(d));
}

function localTime(ms) {
  return new Date(ms).toLocaleString(state.lang === "vi" ? "vi-VN" : "en-GB");
}

// An image problem's code on the badge (as the API and the agent name it), its words on hover.
function imageProblemBadge(name) {
  const key = `problem_${name}`;
  return el("span", { class: "problem", dataset: { problem: name }, title: t(key) === key ? name : t(key), text: name });
}

// Troubled cameras first (offline, degraded, unknown, online), then by id.
const STATE_ORDER = { offline: 0, degraded: 1, unknown: 2, online: 3 };

function cameraTile(c) {
  const snap = c.snapshot;
  const canvas = el("canvas", { width: "320", height: "180", "aria-label": `${c.id}` });
  const frame = el("div", { class: "frame" }, snap ? canvas : el("span", { class: "muted", text: t("no_snapshot") }));
  const gw = state.gateways.get(`${c.site}/${c.gateway}`);
  const gatewayProblems = gw ? gw.problems || [] : c.gateway_problems.map((p) => ({ problem: p, detail: "" }));
  const site = state.sites.get(c.site);
  const where = [site ? site.name || c.site : c.site, c.ward ? `${t("ward")} ${c.ward}` : ""].filter(Boolean);
  const tile = el(
    "figure",
    { class: "camera", dataset: { camera: c.id, state: c.state } },
    frame,
    el(
      "figcaption",
      {},
      el("div", { class: "camera-head" }, el("strong", { text: c.id }), stateBadge(c.state),
        ...(snap && snap.problems ? snap.problems.map(imageProblemBadge) : []), ...gatewayProblems.map(problemBadge)),
      el("div", { class: "meta", text: where.join(" · ") }),
      el("div", { class: "meta changed", dataset: { ms: String(c.changed_ms || "") }, title: c.reason || "",
        text: `${t("changed")}: ${ago(c.changed_ms)}` }),
      el("div", { class: "meta snapshot", dataset: { ts: String(snap ? snap.ts_ms : "") },
        text: snap ? `${t("snapshot_at")}: ${localTime(snap.ts_ms)} · ${t(`trigger_${snap.trigger}`)}` : "" }),
    ),
  );
  if (snap) {
    const cached = state.images.get(c.id);
    if (cached && cached.ts === snap.ts_ms) drawSnapshot(c.id, snap, canvas);
    else onScreen.observe(canvas); // fetched once the tile is on screen: a wall may list thousands of cameras
  }
  return tile;
}

// Each tile's canvas waits here until it scrolls into view (or is in view when drawn).
const onScreen = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    onScreen.unobserve(entry.target);
    const tile = entry.target.closest("figure.camera");
    const c = tile && state.cameras.get(tile.dataset.camera);
    if (c && c.snapshot) drawSnapshot(c.id, c.snapshot, entry.target);
  }
}, { rootMargin: "200px" });

// Fetched with the token (an <img> cannot send it), drawn on the tile's canvas; the newest request wins.
async function drawSnapshot(id, snap, canvas) {
  let image = state.images.get(id);
  if (!image || image.ts !== snap.ts_ms) {
    try {
      const response = await fetch(snap.url, { headers: { Authorization: `Bearer ${state.token}` } });
      if (!response.ok) throw new Error(`${snap.url}: HTTP ${response.status}`);
      const bitmap = await createImageBitmap(await response.blob());
      const current = state.images.get(id);
      if (current && current.ts > snap.ts_ms) return; // a newer one came meanwhile
      image = { ts: snap.ts_ms, bitmap };
      state.images.set(id, image);
    } catch (err) {
      console.warn("snapshot:", err);
      return;
    }
  }
  canvas.width = image.bitmap.width;
  canvas.height = image.bitmap.height;
  canvas.getContext("2d").drawImage(image.bitmap, 0, 0);
  canvas.dataset.ts = String(image.ts);
}

function renderCameras() {
  onScreen.disconnect(); // every tile is made again
  const cameras = [...state.cameras.values()].sort(
    (a, b) => (STATE_ORDER[a.state] ?? 2) - (STATE_ORDER[b.state] ?? 2) || a.id.localeCompare(b.id));
  $("#cameras-panel").hidden = cameras.length === 0;
  $("#camera-count").textContent = String(cameras.length);
  $("#camera-count").dataset.zero = String(cameras.length === 0);
  $("#cameras").replaceChildren(...cameras.map(cameraTile));
}

function updateCamera(id) {
  const c = state.cameras.get(id);
  const tile = document.querySelector(`figure.camera[data-camera="${CSS.escape(id)}"]`);
  if (!c || !tile || tile.dataset.state !== c.state) return renderCameras(); // its place on the wall changes
  const canvas = tile.querySelector("canvas");
  if (canvas) onScreen.unobserve(canvas);
  tile.replaceWith(cameraTile(c));
}

function render() {
  renderSummary();
  renderAlerts();
  renderSites();
  renderCameras();
}

async function acknowledge(id) {
  try {
    const alert = await api(`/api/v1/alerts/${id}/ack`, { method: "POST" });
    state.alerts.set(alert.id, alert);
    renderAlerts();
  } catch (err) {
    window.alert(err.message);
  }
}

async function showDevice(id) {
  const d = await api(`/api/v1/devices/${encodeURIComponent(id)}?transitions=20`);
  const panel = $("#detail-panel");
  panel.hidden = false;
  panel.dataset.device = id;
  $("#detail-title").textContent = `${t("device")} ${d.id}`;
  const info = [["kind", d.kind], ["profile", d.profile], ["site", d.site], ["gateway", d.gateway], ["ward", d.ward],
    ["state", t(`state_${d.state}`)], ["reason", d.reason], ["last_seen", ago(d.last_seen_ms)]];
  $("#detail-info").replaceChildren(...info.flatMap(([k, v]) => [el("dt", { text: t(k) }), el("dd", { text: v ?? "" })]));
  if (d.problems && d.problems.length) {
    $("#detail-info").append(el("dt", { text: t("problems") }), el("dd", { class: "problems" },
      ...d.problems.flatMap((p) => [problemBadge(p), ` ${problemTitle(p)} `])));
  }
  const items = d.transitions.map((tr) =>
    el("li", {}, `${new Date(tr.ts_ms).toLocaleString()} `, stateBadge(tr.old), " → ", stateBadge(tr.new), ` ${tr.reason}`));
  $("#transitions").replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: t("no_transitions") })]));
}

function onEvent(kind, data) {
  if (kind === "device") {
    const d = state.devices.get(data.device);
    if (d) {
      d.state = data.state;
      d.reason = data.reason;
    } else {
      state.devices.set(data.device, {
        id: data.device, kind: "", site: data.site, gateway: data.gateway, state: data.state, reason: data.reason,
      });
    }
    renderSummary();
    updateRow(state.devices.get(data.device));
    const camera = state.cameras.get(data.device);
    if (camera) {
      camera.state = data.state;
      camera.reason = data.reason;
      camera.changed_ms = data.ts_ms;
      renderCameras();
    }
    if ($("#detail-panel").dataset.device === data.device && !$("#detail-panel").hidden) showDevice(data.device);
  } else if (kind === "seen") {
    for (const [id, ms] of Object.entries(data.devices)) {
      const d = state.devices.get(id);
      if (d) d.last_seen_ms = ms;
    }
  } else if (kind === "snapshot") {
    const camera = state.cameras.get(data.device);
    if (!camera) return; // a camera the page does not know yet: the next full load brings it
    if (camera.snapshot && camera.snapshot.ts_ms > data.ts_ms) return; // an older one, sent late
    const { device, ...snap } = data;
    camera.snapshot = snap;
    updateCamera(device);
  } else if (kind === "alert") {
    const a = data.alert;
    if (a.state === "resolved") state.alerts.delete(a.id);
    else state.alerts.set(a.id, a);
    renderAlerts();
  }
}

function setLive(on) {
  const badge = $("#live");
  badge.className = `live ${on ? "on" : "off"}`;
  badge.dataset.i18n = on ? "live" : "disconnected";
  badge.textContent = t(badge.dataset.i18n);
}

async function stream() {
  const controller = new AbortController();
  state.stream = controller;
  try {
    const response = await fetch("/api/v1/events", {
      headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
      signal: controller.signal,
    });
    if (response.status === 401) {
      // The token was revoked or expired (the hub also ends an open stream then): ask for another one.
      setLive(false);
      if (state.stream === controller) state.stream = null;
      askToken(t("bad_token"));
      return;
    }
    if (!response.ok) throw new Error(`events: HTTP ${response.status}`);
    setLive(true);
    // Reload once connected: nothing that happened before the stream started is missed.
    await loadAll();
    refreshGateways(controller);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let kind = "message";
        let data = "";
        for (const line of frame.split("\n")) {
          if (line.startsWith("event: ")) kind = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onEvent(kind, JSON.parse(data));
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
    console.warn("event stream:", err);
  }
  setLive(false);
  if (state.stream === controller) setTimeout(stream, 2000);
}

// While this stream is the page's: a failed read is retried at the next period (the stream notices a bad token).
async function refreshGateways(controller) {
  while (state.stream === controller && !controller.signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, GATEWAYS_REFRESH_MS));
    if (state.stream !== controller || controller.signal.aborted) return;
    try {
      await loadGateways();
      if (state.cameras.size) renderCameras(); // their gateways' problems
    } catch (err) {
      console.warn("gateways:", err);
    }
  }
}

function askToken(message = "") {
  $("#login-error").textContent = message;
  $("#login").showModal();
}

async function start() {
  try {
    await loadAll();
  } catch (err) {
    if (err instanceof AuthError) return askToken(err.message);
    console.warn(err);
  }
  stream();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#lang").addEventListener("click", () => {
    state.lang = state.lang === "vi" ? "en" : "vi";
    localStorage.setItem("ioc.lang", state.lang);
    applyLanguage();
  });
  $("#logout").addEventListener("click", () => {
    if (state.stream) state.stream.abort();
    state.stream = null;
    askToken();
  });
  $("#login-form").addEventListener("submit", () => {
    state.token = $("#token").value.trim();
    localStorage.setItem("ioc.token", state.token);
    start();
  });
  $("#state-filter").addEventListener("change", (e) => {
    state.filter = e.target.value;
    renderSites();
  });
  $("#detail-close").addEventListener("click", () => { $("#detail-panel").hidden = true; });
  setInterval(() => {
    for (const cell of document.querySelectorAll("td.last-seen")) {
      const d = state.devices.get(cell.parentElement.dataset.device);
      if (d) cell.textContent = ago(d.last_seen_ms);
    }
    for (const line of document.querySelectorAll(".camera .changed")) {
      line.textContent = `${t("changed")}: ${ago(Number(line.dataset.ms) || null)}`;
    }
  }, 1000);
  applyLanguage();
  if (state.token) start();
  else askToken();
});
