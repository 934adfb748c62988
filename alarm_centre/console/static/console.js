// Operator console: the live alert queue. Vanilla JS, no build step.
// Everything from the server is put on screen with textContent, never innerHTML, so names and notes
// that contain markup show as text.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    me: null,
    alerts: new Map(),      // id -> alert JSON
    order: [],              // ids in queue order
    selected: null,         // alert id
    residents: new Map(),   // resident id -> name
    leaving: new Map(),     // id -> timer of a resolved alert about to leave the queue
    detailSeq: 0,
    sound: true,
    shortcuts: true,        // single-character key shortcuts (WCAG 2.1.4: each operator can turn them off)
    audio: null,
    source: null,
    opener: null,           // the control that opened the dialog now open; focus goes back to it
    drafting: {},           // "note" / "resolve" -> the alert whose draft the open dialog holds
    said: { assertive: [], polite: [] },  // announcements waiting to be said together
  };
  const TYPE_WORDS = {
    voice_help: "Voice help", pendant: "Pendant", fall: "Fall", smoke: "Smoke", heat: "Heat", co: "Carbon monoxide",
    gas: "Gas", epilepsy: "Epilepsy", panic: "Panic", inactivity: "Inactivity", bed_exit: "Bed exit",
    chair_exit: "Chair exit", door_exit: "Door exit", flood: "Flood", extreme_temperature: "Extreme temperature",
    bogus_caller: "Bogus caller", no_heartbeat: "No heartbeat", unknown_signal: "Unknown signal", low_battery: "Low battery", mains_fail: "Mains fail",
    tamper: "Tamper", sensor_fault: "Sensor fault", radio_jamming: "Radio jamming",
  };
  const PRIORITY_WORDS = { 1: "Emergency", 2: "Urgent", 3: "Technical" };
  //: How a burst of new alerts is summed up: one kind, then its plural.
  const KIND_WORDS = { 1: ["emergency", "emergencies"], 2: ["urgent alert", "urgent alerts"],
    3: ["technical alert", "technical alerts"], test: ["test alarm", "test alarms"] };
  //: Announcements arriving within this many ms of the first are said together (a burst is summed up).
  const SAY_TOGETHER_MS = 600;
  const LATE_S = 60;
  const EMPTY_DETAIL = "Select an alert (j / k or the arrow keys).";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  function can(right) { return !!state.me && state.me.rights.includes(right); }
  function typeWord(t) { return Object.hasOwn(TYPE_WORDS, t) ? TYPE_WORDS[t] : String(t); }
  // An unknown signal names its raw code and protocol (an operator must see what the unit sent).
  function signalOf(a) {
    const d = a && a.data && a.data.event_data;
    if (a.type !== "unknown_signal" || !d || typeof d !== "object") return "";
    const code = typeof d.code === "string" ? d.code : "?";
    const protocol = typeof d.protocol === "string" ? d.protocol : "?";
    return `code ${code.length > 40 ? code.slice(0, 40) + "…" : code} (${protocol})`;
  }
  function typeText(a) {
    const signal = signalOf(a);
    return signal ? `${typeWord(a.type)}: ${signal}` : typeWord(a.type);
  }

  function status(message, isError) {
    const box = $("status");
    box.textContent = message || "";
    box.classList.toggle("error", !!isError);
  }

  // Screen readers: emergencies and urgent alerts interrupt (assertive); technical alerts, test alarms
  // and other people's actions wait their turn (polite). Whatever arrives together is said together,
  // so a burst of twelve is heard as "12 new emergencies: ..." rather than as only the last one.
  function announce(message, options) {
    const polite = !!(options && options.polite);
    const queue = polite ? state.said.polite : state.said.assertive;
    const kind = options && options.kind !== undefined ? options.kind : null;
    queue.push({ text: message, kind, what: (options && options.what) || message });
    if (queue.length === 1) setTimeout(() => sayTogether(polite), SAY_TOGETHER_MS);
  }

  function sayTogether(polite) {
    const items = polite ? state.said.polite.splice(0) : state.said.assertive.splice(0);
    if (!items.length) return;
    const box = $(polite ? "announcer-polite" : "announcer");
    box.textContent = "";
    setTimeout(() => { box.textContent = summary(items); }, 50);
  }

  function kindWords(kind, n) { return KIND_WORDS[kind][n === 1 ? 0 : 1]; }

  function summary(items) {
    if (items.length === 1) return items[0].text;
    const fresh = items.filter((i) => i.kind !== null);
    const parts = [];
    if (fresh.length === 1) parts.push(fresh[0].text);
    if (fresh.length > 1) {
      const counts = new Map();
      for (const i of fresh) counts.set(i.kind, (counts.get(i.kind) || 0) + 1);
      const head = counts.size === 1 ? `${fresh.length} new ${kindWords(fresh[0].kind, fresh.length)}`
        : `${fresh.length} new alerts (` + [...counts].map(([k, n]) => `${n} ${kindWords(k, n)}`).join(", ") + ")";
      const more = fresh.length > 3 ? `, and ${fresh.length - 3} more` : "";
      parts.push(`${head}: ${fresh.slice(0, 3).map((i) => i.what).join("; ")}${more}.`);
    }
    return parts.concat(items.filter((i) => i.kind === null).map((i) => i.text)).join(" ");
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (method !== "GET") headers[state.me.csrf_header] = state.me.csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (resp.status === 401) { window.location.assign("/login?ended=timeout"); throw new Error("signed out"); }
    if (window.TelecareSession) window.TelecareSession.activity();
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const detail = data && data.detail;
      let why = data && data.error ? data.error : "HTTP " + resp.status;
      if (typeof detail === "string") why += ": " + detail;
      else if (detail && detail.message) why += ": " + detail.message;
      else if (Array.isArray(detail) && detail.length) why += ": " + detail[0].field + " " + detail[0].message;
      const err = new Error(why);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  // -- time ---------------------------------------------------------------------------------------
  function since(iso) {
    const s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const pad = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${pad(m)}:${pad(r)}` : `${m}:${pad(r)}`;
  }
  function clock(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }) +
      (Date.now() - d > 86400000 ? " " + d.toLocaleDateString() : "");
  }
  // An alert waiting longer than a minute is late: said in words as well as in red (WCAG 1.4.1).
  function isLate(alert) {
    return !!alert && alert.state === "raised" && !alert.test && (Date.now() - Date.parse(alert.raised_at)) / 1000 >= LATE_S;
  }
  function showTimer(node, alert) {
    const late = isLate(alert);
    node.textContent = since(node.dataset.since) + (late ? " late" : "");
    node.classList.toggle("overdue", late);
  }
  function tickTimers() {
    for (const node of document.querySelectorAll("[data-since]")) showTimer(node, state.alerts.get(node.dataset.alert));
  }

  // -- sound --------------------------------------------------------------------------------------
  function beep(priority) {
    if (!state.sound) return;
    try {
      state.audio = state.audio || new (window.AudioContext || window.webkitAudioContext)();
      const ctx = state.audio;
      const tones = priority === 1 ? [0, 0.25] : [0];
      for (const at of tones) {
        const osc = ctx.createOscillator(), gain = ctx.createGain();
        osc.frequency.value = priority === 1 ? 880 : 660;
        gain.gain.setValueAtTime(0.15, ctx.currentTime + at);
        gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + at + 0.2);
        osc.connect(gain).connect(ctx.destination);
        osc.start(ctx.currentTime + at);
        osc.stop(ctx.currentTime + at + 0.2);
      }
    } catch (e) { /* no audio device: the visual cue and the announcement remain */ }
  }
  function setSound(on) {
    state.sound = on;
    const b = $("sound-toggle");
    b.textContent = on ? "Sound on" : "Sound off";
    b.setAttribute("aria-pressed", on ? "true" : "false");
    try { localStorage.setItem("tc-sound", on ? "on" : "off"); } catch (e) { /* private mode */ }
  }

  // -- queue --------------------------------------------------------------------------------------
  // Real alerts first, then by priority and age: a commissioning test never sits above a real call.
  function queueKey(a) { return [a.test ? 1 : 0, a.priority, Date.parse(a.raised_at), Number(a.id)]; }
  function badgeClass(a) { return a.test ? "prio prio-test" : `prio prio-${a.priority}`; }
  function compare(x, y) {
    const a = queueKey(x), b = queueKey(y);
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
    return 0;
  }

  // Sorting must not fail on an alert that cannot be drawn: those go last, by id.
  function safeCompare(x, y) {
    let bx = 0, by = 0;
    try { checkShape(x); } catch (e) { bx = 1; }
    try { checkShape(y); } catch (e) { by = 1; }
    if (bx || by) return bx - by || alertIdOf(x).localeCompare(alertIdOf(y));
    return compare(x, y) || 0;
  }

  function who(a) {
    if (a.resident_id) return state.residents.get(a.resident_id) || a.resident_id;
    return "Unit " + a.device_id;
  }

  function escalated(a) {
    const e = a.data && a.data.escalation;
    return !!(e && e.highlight && a.state === "raised");
  }

  function flags(a) {
    const out = [];
    if (escalated(a)) out.push(el("span", { class: "flag flag-esc", text: "ESCALATED" }));
    if (a.test) out.push(el("span", { class: "flag flag-test", text: "TEST" }));
    if (a.unregistered) out.push(el("span", { class: "flag flag-unreg", text: "UNREGISTERED" }));
    if (a.repeat_count > 0) out.push(el("span", { class: "flag", text: "×" + (a.repeat_count + 1) }));
    if (a.clock_skew) out.push(el("span", { class: "flag", text: "clock skew" }));
    return out;
  }

  function stateWords(a) {
    if (a.state === "acknowledged") return "Acknowledged by " + (a.acknowledged_by || "?");
    if (a.state === "resolved") return "Resolved" + (a.outcome ? " (" + a.outcome.replaceAll("_", " ") + ")" : "");
    return "Waiting";
  }

  // What the queue needs of an alert to draw it. An alert that lacks it is drawn as an error row
  // naming what is wrong; it never stops the other alerts from showing.
  const SHAPE = { id: "string", device_id: "string", type: "string", priority: "number", state: "string",
    raised_at: "string" };
  function kindOf(v) { return v === null ? "null" : Array.isArray(v) ? "a list" : typeof v; }
  function checkShape(a) {
    if (a === null || typeof a !== "object") throw new Error("the alert is " + kindOf(a) + ", not an object");
    const wrong = [];
    for (const [k, t] of Object.entries(SHAPE)) if (typeof a[k] !== t) wrong.push(`${k} is ${kindOf(a[k])}, not a ${t}`);
    for (const k of ["resident_id", "acknowledged_by", "outcome"]) {
      if (a[k] !== null && a[k] !== undefined && typeof a[k] !== "string") wrong.push(`${k} is ${kindOf(a[k])}`);
    }
    if (typeof a.raised_at === "string" && Number.isNaN(Date.parse(a.raised_at))) wrong.push("raised_at is not a time");
    if (wrong.length) throw new Error(wrong.join("; "));
  }
  function alertIdOf(a) {
    const id = a && (typeof a.id === "string" || typeof a.id === "number") ? String(a.id) : "";
    return id || "?";
  }

  function errorRow(a, err) {
    const id = alertIdOf(a);
    const why = err && err.message ? err.message : String(err);
    const selected = id === state.selected;
    const button = el("button", {
      type: "button", class: "alert-row error-row", "data-id": id, "aria-current": selected ? "true" : null,
      "aria-label": `Alert ${id} cannot be shown: ${why}`,
    },
      el("span", { class: "prio prio-error", text: "!" }),
      el("span", { class: "error-text" },
        el("strong", { text: `Alert ${id} cannot be shown here.` }),
        ` ${why}. Open it through the API (/api/v1/alerts/${id}) and tell your supervisor.`),
    );
    button.addEventListener("click", () => select(id, true));
    return el("li", { class: "q-item q-error" + (selected ? " selected" : ""), id: "alert-" + id }, button);
  }

  function drawRow(a) {
    try {
      checkShape(a);
      return row(a);
    } catch (err) {
      console.error("alert " + alertIdOf(a) + " cannot be drawn", err);
      return errorRow(a, err);
    }
  }

  function row(a) {
    const selected = a.id === state.selected;
    // The row is named by what it shows (WCAG 2.5.3), with a few words only a screen reader hears
    // (absolutely placed, so they take no cell of the row's grid).
    const said = (text) => el("span", { class: "sr-only", text });
    const timer = el("span", { class: "timer", "data-since": a.raised_at, "data-alert": a.id });
    showTimer(timer, a);
    const button = el("button", {
      type: "button", class: "alert-row", "data-id": a.id, "aria-current": selected ? "true" : null,
    },
      el("span", { class: badgeClass(a), text: a.test ? "TEST" : "P" + a.priority }),
      said(a.test ? " alarm, not an emergency:" : ` ${(PRIORITY_WORDS[a.priority] || "priority").toLowerCase()}:`),
      el("span", { class: "a-type", text: typeText(a) }), said(","),
      el("span", { class: "a-who" + (a.resident_id ? "" : " a-unit"), title: who(a), text: who(a) }), said(","),
      el("span", { class: "a-flags" }, ...flags(a).flatMap((f) => [f, " "])),
      el("span", { class: `state-chip state-${a.state}`, text: stateWords(a) }), said(", for"),
      timer,
    );
    button.addEventListener("click", () => select(a.id, true));
    const li = el("li", {
      class: `q-item p${a.priority} s-${a.state}` + (a.test ? " is-test" : "") + (a.unregistered ? " is-unreg" : "") + (escalated(a) ? " is-escalated" : "") +
        (selected ? " selected" : ""), id: "alert-" + a.id,
    }, button);
    return li;
  }

  function renderQueue() {
    const list = $("queue");
    const focusedId = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.id : null;
    state.order = [...state.alerts.entries()].sort(([, x], [, y]) => safeCompare(x, y)).map(([id]) => id);
    const fresh = new Set(document.querySelectorAll(".q-item.fresh").length ?
      [...document.querySelectorAll(".q-item.fresh")].map((n) => n.id) : []);
    list.replaceChildren(...state.order.map((id) => drawRow(state.alerts.get(id))));
    for (const id of fresh) { const n = document.getElementById(id); if (n) n.classList.add("fresh"); }
    const open = [...state.alerts.values()].filter((a) => a.state !== "resolved").length;
    $("queue-count").textContent = String(open);
    $("queue-empty").hidden = state.alerts.size > 0;
    if (focusedId) {
      const again = list.querySelector(`button[data-id="${CSS.escape(focusedId)}"]`);
      if (again) again.focus();
    }
  }

  function flash(id) {
    const node = document.getElementById("alert-" + id);
    if (!node) return;
    node.classList.add("fresh");
    setTimeout(() => node.classList.remove("fresh"), 6000);
    setTimeout(() => { const n = document.getElementById("alert-" + id); if (n) n.classList.remove("fresh"); }, 6100);
  }

  async function learnResidents(alerts) {
    const missing = [...new Set(alerts.map((a) => a && a.resident_id)
      .filter((r) => typeof r === "string" && r && !state.residents.has(r)))];
    if (!missing.length) return false;
    for (let i = 0; i < missing.length; i += 100) {
      const part = missing.slice(i, i + 100);
      const names = await api("GET", "/console/api/residents?ids=" + encodeURIComponent(part.join(",")));
      for (const r of part) state.residents.set(r, names[r] || r);
    }
    return true;
  }

  function upsert(alert) {
    if (alert === null || typeof alert !== "object" || typeof alert.id !== "string") {
      throw new Error("an alert update without an id arrived and was skipped");
    }
    let drawable = true;
    try { checkShape(alert); } catch (e) { drawable = false; }
    if (!drawable) {  // keep it in the queue as an error row; no announcement we could not word
      state.alerts.set(alert.id, alert);
      renderQueue();
      if (alert.id === state.selected) showDetail();
      return;
    }
    const known = state.alerts.has(alert.id);
    const before = state.alerts.get(alert.id);
    if (before && before.updated_at && alert.updated_at && before.updated_at > alert.updated_at) return;
    if (alert.state === "resolved") {
      if (!known) return;
      state.alerts.set(alert.id, alert);
      if (!state.leaving.has(alert.id)) {
        state.leaving.set(alert.id, setTimeout(() => {
          state.leaving.delete(alert.id);
          state.alerts.delete(alert.id);
          if (state.selected === alert.id) state.selected = null;
          renderQueue();
          if (!state.selected) showDetail();
        }, 8000));
      }
    } else {
      state.alerts.set(alert.id, alert);
    }
    renderQueue();
    if (!known) {
      flash(alert.id);
      const kind = alert.test ? "test" : (KIND_WORDS[alert.priority] ? alert.priority : 3);
      const what = `${typeText(alert)} for ${who(alert)}` + (alert.unregistered ? ", unregistered device" : "");
      announce(`New ${kindWords(kind, 1)}: ${what}`, { polite: kind === "test" || kind === 3, kind, what });
      if (!alert.test && alert.priority <= 2) beep(alert.priority);
      if (!state.selected) select(alert.id, false);
    } else if (before && before.state !== alert.state && alert.state === "acknowledged") {
      announce(`${typeWord(alert.type)} for ${who(alert)} acknowledged by ${alert.acknowledged_by}`, { polite: true });
    }
    if (alert.id === state.selected) showDetail();
    learnResidents([alert]).then((changed) => { if (changed) { renderQueue(); if (alert.id === state.selected) showDetail(); } })
      .catch(() => {});
  }

  async function loadQueue() {
    const seen = [];
    let cursor = null;
    do {
      const page = await api("GET", "/api/v1/alerts?state=open&limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
      seen.push(...page.alerts);
      cursor = page.next_cursor;
    } while (cursor && seen.length < 5000);
    await learnResidents(seen).catch(() => false);
    state.alerts = new Map(seen.map((a, i) => [typeof (a && a.id) === "string" ? a.id : "unreadable-" + i, a]));
    if (state.selected && !state.alerts.has(state.selected)) state.selected = null;
    if (!state.selected && state.order.length === 0 && seen.length) {
      state.selected = [...state.alerts.entries()].sort(([, x], [, y]) => safeCompare(x, y))[0][0];
    }
    renderQueue();
    showDetail();
  }

  // -- live stream --------------------------------------------------------------------------------
  function connect() {
    if (state.source) state.source.close();
    const live = $("live-state");
    const source = new EventSource("/api/v1/stream");
    state.source = source;
    const session = window.TelecareSession;
    source.onopen = () => {
      live.textContent = "live";
      live.className = "live-state on";
      if (session) session.live(true);  // an open live queue keeps the session from idling out
      loadQueue().catch(showError);
    };
    source.addEventListener("alert", (ev) => { try { upsert(JSON.parse(ev.data)); } catch (e) { showError(e); } });
    source.addEventListener("resync", () => loadQueue().catch(showError));
    source.addEventListener("expired", () => {
      // The server ended the stream: signed out or expired (go to sign-in), or a store hiccup (reconnect).
      source.close();
      fetch("/console/api/me", { credentials: "same-origin" }).then((r) => {
        if (r.status === 401) window.location.assign("/login?ended=timeout"); else setTimeout(connect, 1000);
      }).catch(() => setTimeout(connect, 2000));
    });
    source.onerror = () => {
      live.textContent = "reconnecting…";
      live.className = "live-state off";
      if (session) session.live(false);
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (signed out?) — check, then try again shortly.
        fetch("/console/api/me", { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) window.location.assign("/login?ended=timeout");
          else setTimeout(connect, 2000);
        }).catch(() => setTimeout(connect, 2000));
      }
    };
  }

  // -- selection and detail -----------------------------------------------------------------------
  function select(id, focus) {
    state.selected = id;
    for (const n of document.querySelectorAll(".q-item")) {
      const on = n.id === "alert-" + id;
      n.classList.toggle("selected", on);
      const b = n.querySelector("button");
      if (on) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current");
    }
    const b = document.querySelector(`#alert-${CSS.escape(String(id))} button`);
    if (b && focus) { b.focus(); }
    if (b) b.scrollIntoView({ block: "nearest" });
    showDetail();
  }

  function move(delta) {
    if (!state.order.length) return;
    let i = state.order.indexOf(state.selected);
    i = i < 0 ? 0 : Math.min(state.order.length - 1, Math.max(0, i + delta));
    select(state.order[i], true);
  }

  function dlRow(dl, label, value, cls) {
    if (value === null || value === undefined || value === "") return;
    dl.append(el("dt", { text: label }), el("dd", { class: cls || null, text: String(value) }));
  }

  function renderResident(ctx, alert) {
    const dl = $("resident");
    const responders = $("responders");
    dl.replaceChildren();
    responders.replaceChildren();
    const r = ctx && ctx.resident;
    if (!r) {
      dl.append(el("dt", { text: "Resident" }), el("dd", { class: "warn", text: alert.unregistered
        ? "Unregistered device: no resident on record. Call back the unit or the number it used."
        : "No resident linked to this device." }));
      return;
    }
    dlRow(dl, "Name", r.name, "big");
    dlRow(dl, "Address", r.address);
    dlRow(dl, "Phone", r.phone);
    dlRow(dl, "Key safe", r.key_safe);
    dlRow(dl, "Medical notes", r.medical_notes, "medical");
    dlRow(dl, "Language", r.language);
    for (const [k, v] of r.extra || []) dlRow(dl, k.replaceAll("_", " "), v);
    if (!r.responders.length) responders.append(el("li", { class: "muted", text: "No responders on record." }));
    for (const p of r.responders) {
      responders.append(el("li", {}, el("span", { class: "r-name", text: p.name }),
        p.relation ? el("span", { class: "muted", text: " (" + p.relation + ")" }) : null,
        p.phone ? el("span", { class: "r-phone", text: " " + p.phone }) : null));
    }
  }

  function renderUnits(ctx, alert) {
    const box = $("units");
    box.replaceChildren();
    const units = (ctx && ctx.units) || [];
    if (!units.length) {
      box.append(el("p", { class: "warn", text: `Device ${alert.device_id} is not registered.` }));
      return;
    }
    for (const u of units) {
      const dl = el("dl", { class: "unit" });
      const online = u.online === null ? "unknown" : (u.online ? "online" : "OFFLINE");
      dlRow(dl, "Unit", `${u.id} (${u.kind || "?"})` + (u.id === alert.device_id ? " — raised this alert" : ""));
      dlRow(dl, "Connection", online, u.online === false ? "warn" : null);
      dlRow(dl, "Last heartbeat", u.last_heartbeat ? clock(u.last_heartbeat) + " (" + since(u.last_heartbeat) + " ago)" : "none received");
      dlRow(dl, "Last seen", u.last_seen ? clock(u.last_seen) : "never");
      dlRow(dl, "Battery", u.battery);
      dlRow(dl, "Signal", u.signal);
      if (u.status && u.status !== "active") dlRow(dl, "Status", u.status, "warn");
      if (u.test_mode) dlRow(dl, "Mode", "test mode (installer)", "test-text");
      box.append(dl);
    }
  }

  function timelineText(t) {
    const d = t.detail || {};
    const bits = [];
    if (d.to && d.from !== undefined) bits.push(`from ${d.from || "nobody"} to ${d.to}`);
    if (d.outcome) bits.push("outcome " + String(d.outcome).replaceAll("_", " "));
    if (d.note) bits.push("“" + d.note + "”");
    if (d.reason) bits.push(String(d.reason));
    if (d.cmd) bits.push(String(d.cmd));
    if (Array.isArray(d.commands)) {
      bits.push("not sent: " + d.commands.map((c) => `${c && c.cmd} to ${c && c.target}`).join(", "));
    }
    if (d.error) bits.push("error: " + d.error);
    if (d.step_action) bits.push(`step ${d.step}: ${d.step_action}` + (d.waited_s ? ` after ${Math.round(d.waited_s)} s` : ""));
    if (d.to && d.from === undefined) bits.push("to " + (Array.isArray(d.to) ? d.to.join(", ") : String(d.to)));
    return bits.join(" · ");
  }

  function renderTimeline(entries) {
    const list = $("timeline");
    list.replaceChildren(...entries.slice().reverse().map((t) => {
      try {
        return el("li", { class: "tl-" + t.action },
          el("time", { datetime: t.at, text: clock(t.at) }),
          el("span", { class: "tl-action", text: String(t.action).replaceAll("_", " ") }),
          el("span", { class: "tl-actor", text: t.actor + " via " + t.source }),
          el("span", { class: "tl-detail", text: timelineText(t) }));
      } catch (err) {  // one odd entry must not hide the rest of the timeline
        return el("li", { class: "tl-error warn", text: "This timeline entry cannot be shown: " + err.message });
      }
    }));
  }

  async function showDetail() {
    const id = state.selected;
    announceShown(id);
    const body = $("detail-body");
    if (!id || !state.alerts.has(id)) {
      body.hidden = true;
      $("detail-empty").textContent = EMPTY_DETAIL;
      $("detail-empty").hidden = false;
      $("detail-heading").textContent = "Alert";
      return;
    }
    const alert = state.alerts.get(id);
    try { checkShape(alert); } catch (e) {
      body.hidden = true;
      $("detail-empty").hidden = false;
      $("detail-empty").textContent = `Alert ${alertIdOf(alert)} cannot be shown: ${e.message}.`;
      $("detail-heading").textContent = `Alert ${alertIdOf(alert)}`;
      return;
    }
    $("detail-empty").textContent = EMPTY_DETAIL;
    body.hidden = false;
    $("detail-empty").hidden = true;
    $("detail-heading").textContent = `Alert ${alert.id}: ${typeText(alert)} — ${who(alert)}`;
    const p = $("d-priority");
    p.className = badgeClass(alert);
    p.textContent = alert.test ? "Test alarm (not an emergency)" : `P${alert.priority} ${PRIORITY_WORDS[alert.priority] || ""}`;
    $("d-type").textContent = typeText(alert);
    $("d-flags").replaceChildren(...flags(alert));
    const st = $("d-state");
    st.className = "state-chip state-" + alert.state;
    st.textContent = stateWords(alert);
    const timer = $("d-timer");
    timer.dataset.since = alert.raised_at;
    timer.dataset.alert = alert.id;
    showTimer(timer, alert);
    const mayHandle = can("alerts:handle");
    $("actions").hidden = !mayHandle;
    $("no-handle").hidden = mayHandle;
    $("btn-ack").disabled = alert.state !== "raised";
    const mine = alert.state === "acknowledged" && alert.acknowledged_by === state.me.name;
    $("btn-resolve").disabled = !mine;
    $("btn-note").disabled = alert.state === "resolved";
    $("btn-reassign").hidden = !can("alerts:reassign");
    $("btn-reassign").disabled = alert.state === "resolved";
    const seq = ++state.detailSeq;
    try {
      const [full, ctx] = await Promise.all([
        api("GET", "/api/v1/alerts/" + encodeURIComponent(id)),
        api("GET", "/console/api/alerts/" + encodeURIComponent(id) + "/context"),
      ]);
      if (seq !== state.detailSeq) return;
      renderResident(ctx, alert);
      renderUnits(ctx, alert);
      renderTimeline(full.timeline || []);
    } catch (e) {
      if (seq === state.detailSeq) showError(e);
    }
  }

  function showError(e) { status(e && e.message ? e.message : String(e), true); }

  // -- actions ------------------------------------------------------------------------------------
  function current() {
    const a = state.selected ? state.alerts.get(state.selected) : null;
    try { checkShape(a); } catch (e) {
      if (a !== null && a !== undefined) status(`Alert ${alertIdOf(a)} cannot be shown, so it cannot be handled here.`, true);
      return null;
    }
    return a;
  }

  function cannotHandle() {
    if (can("alerts:handle")) return false;
    status(`Your role (${state.me.role}) cannot handle alerts.`, true);
    return true;
  }

  async function acknowledge() {
    const a = current();
    if (!a || cannotHandle()) return;
    if (a.state !== "raised") { status(stateWords(a) + ": nothing to acknowledge.", true); return; }
    try {
      const updated = await api("POST", `/api/v1/alerts/${encodeURIComponent(a.id)}/acknowledge`);
      upsert(updated);
      status(`Alert ${a.id} acknowledged. Call the resident.`);
    } catch (e) {
      showError(e);
    }
    keepFocusUsable();
  }

  // -- dialogs: focus goes back to what opened them; half-written notes are kept --------------------
  function openDialog(id, first) {
    const opener = document.activeElement;
    state.opener = opener && opener !== document.body ? { node: opener, rowId: opener.closest && opener.closest("#queue") ? opener.dataset.id : null } : null;
    $(id).showModal();
    if (first) first.focus();
  }

  function usable(node) {
    return !!node && node.isConnected && !node.disabled && node.getClientRects().length > 0 && !node.closest("[hidden], dialog:not([open])");
  }

  function rowButton(id) {
    return id ? document.querySelector(`#alert-${CSS.escape(String(id))} button`) : null;
  }

  function restoreFocus() {
    const opener = state.opener;
    state.opener = null;
    // A dialog's "close" event comes a task after it closed: the operator may have moved on by then
    // (to a queue row, say). Focus goes back only if it is nowhere in particular or still on the opener.
    const now = document.activeElement;
    if (now && now !== document.body && !now.closest("dialog") && !(opener && now === opener.node)) return;
    if (opener && usable(opener.node)) { opener.node.focus(); return; }
    const again = opener && rowButton(opener.rowId);  // the queue was redrawn meanwhile
    if (usable(again)) { again.focus(); return; }
    focusSelectedRow();
  }

  function focusSelectedRow() {
    const b = rowButton(state.selected);
    if (usable(b)) b.focus(); else $("main").focus();
  }

  // After an action, a button that became disabled (or left) would drop focus to the page: go to the row.
  function keepFocusUsable() {
    if (document.querySelector("dialog[open]")) return;
    const f = document.activeElement;
    if (!f || f === document.body || !usable(f)) focusSelectedRow();
  }

  // Drafts live in this tab's sessionStorage (gone when the tab closes, cleared on signing out), keyed by
  // user and alert, so a note survives the session ending, a reload or the dialog being closed.
  function draftKey(kind, alertId) { return `tc-draft:${state.me.name}:${alertId}:${kind}`; }
  function saveDraft(kind, alertId, text) {
    try {
      if (text.trim()) sessionStorage.setItem(draftKey(kind, alertId), text);
      else sessionStorage.removeItem(draftKey(kind, alertId));
    } catch (e) { /* storage full or blocked: the text stays in the box */ }
  }
  function loadDraft(kind, alertId) {
    try { return sessionStorage.getItem(draftKey(kind, alertId)) || ""; } catch (e) { return ""; }
  }
  function fillFromDraft(kind, alertId, box, notice) {
    state.drafting[kind] = alertId;  // typing saves to this alert, even if the selection moves meanwhile
    const draft = loadDraft(kind, alertId);
    box.value = draft;
    $(notice).textContent = draft ? "A draft you had not sent was restored." : "";
  }
  function keepDrafts(box, kind) {
    box.addEventListener("input", () => {
      if (state.drafting[kind]) saveDraft(kind, state.drafting[kind], box.value);
    });
  }

  function openResolve() {
    const a = current();
    if (!a || cannotHandle()) return;
    if (!(a.state === "acknowledged" && a.acknowledged_by === state.me.name)) {
      status(a.state === "raised" ? "Acknowledge the alert before resolving it." : stateWords(a) + ".", true);
      return;
    }
    const box = $("outcomes");
    box.replaceChildren(...state.me.outcomes.map((o, i) => el("label", { class: "outcome" },
      el("input", { type: "radio", name: "outcome", value: o.code, required: true, checked: i === 0 ? true : null }),
      el("span", { class: "outcome-key key-hint", "aria-hidden": "true", text: i < 9 ? String(i + 1) : "" }),
      " " + o.label)));
    fillFromDraft("resolve", a.id, $("resolve-note"), "resolve-draft");
    openDialog("resolve-dialog", box.querySelector("input"));
  }

  async function submitResolve(ev) {
    ev.preventDefault();
    const a = current();
    const picked = document.querySelector("#outcomes input:checked");
    if (!a || !picked) return;
    const note = $("resolve-note").value.trim();
    $("resolve-dialog").close();
    try {
      const updated = await api("POST", `/api/v1/alerts/${encodeURIComponent(a.id)}/resolve`,
        note ? { outcome: picked.value, note } : { outcome: picked.value });
      saveDraft("resolve", a.id, "");
      upsert(updated);
      status(`Alert ${a.id} resolved: ${picked.value.replaceAll("_", " ")}.`);
    } catch (e) { showError(e); }
    keepFocusUsable();
  }

  function openNote() {
    const a = current();
    if (!a || cannotHandle()) return;
    fillFromDraft("note", a.id, $("note-text"), "note-draft");
    openDialog("note-dialog", $("note-text"));
  }

  async function submitNote(ev) {
    ev.preventDefault();
    const a = current();
    const note = $("note-text").value.trim();
    if (!a || !note) return;
    $("note-dialog").close();
    try {
      await api("POST", `/api/v1/alerts/${encodeURIComponent(a.id)}/notes`, { note });
      saveDraft("note", a.id, "");
      status(`Note added to alert ${a.id}.`);
      showDetail();
    } catch (e) { showError(e); }  // the draft is kept: nothing was lost
    keepFocusUsable();
  }

  function openReassign() {
    const a = current();
    if (!a) return;
    if (!can("alerts:reassign")) { status(`Your role (${state.me.role}) cannot hand alerts over.`, true); return; }
    $("reassign-to").value = "";
    openDialog("reassign-dialog", $("reassign-to"));
  }

  async function submitReassign(ev) {
    ev.preventDefault();
    const a = current();
    const to = $("reassign-to").value.trim();
    if (!a || !to) return;
    $("reassign-dialog").close();
    try {
      upsert(await api("POST", `/api/v1/alerts/${encodeURIComponent(a.id)}/reassign`, { to }));
      status(`Alert ${a.id} handed over to ${to}.`);
    } catch (e) { showError(e); }
    keepFocusUsable();
  }

  function openHelp() { openDialog("help-dialog", $("shortcuts-on")); }

  // -- keys -----------------------------------------------------------------------------------------
  // Single-character shortcuts (WCAG 2.1.4) act only where they are meant: on a queue row, or when
  // nothing in particular has focus (the page, the alert pane). Never while a button, link, text box or
  // any other control has focus, and not at all once the operator has switched them off.
  const CONTROLS = "a[href], button, input, select, textarea, summary, audio[controls], video[controls], " +
    "[contenteditable]:not([contenteditable='false']), [tabindex]:not([tabindex='-1']), [role=button], " +
    "[role=link], [role=checkbox], [role=switch], [role=tab], [role=menuitem], [role=slider], [role=textbox]";
  function onQueue(target) {
    if (!target || target === document.body || target === document.documentElement) return true;
    if (target.closest("#queue")) return true;
    return !target.closest(CONTROLS);
  }

  function setShortcuts(on, remember) {
    state.shortcuts = on;
    $("shortcuts-on").checked = on;
    document.body.classList.toggle("shortcuts-off", !on);
    for (const b of document.querySelectorAll("[data-keys]")) {
      if (on) b.setAttribute("aria-keyshortcuts", b.dataset.keys); else b.removeAttribute("aria-keyshortcuts");
    }
    if (remember) {
      try { localStorage.setItem("tc-shortcuts", on ? "on" : "off"); } catch (e) { /* private mode */ }
    }
  }

  function onKey(ev) {
    const open = document.querySelector("dialog[open]");
    if (open && open.id === "note-dialog" && ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) &&
        ev.target.id === "note-text") {
      ev.preventDefault();
      $("note-form").requestSubmit();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (open) {
      if (open.id === "resolve-dialog" && state.shortcuts && /^[1-9]$/.test(ev.key) && ev.target.tagName !== "TEXTAREA") {
        const choice = open.querySelectorAll("#outcomes input")[Number(ev.key) - 1];
        if (choice) { choice.checked = true; choice.focus(); ev.preventDefault(); }
      }
      if (open.id === "resolve-dialog" && ev.key === "Enter" && !["TEXTAREA", "BUTTON"].includes(ev.target.tagName)) {
        ev.preventDefault();
        $("resolve-form").requestSubmit();
      }
      if (open.id === "note-dialog" && ev.key === "Enter" && !ev.shiftKey && ev.target.id === "note-text") {
        ev.preventDefault();  // Enter adds the note; Shift+Enter starts a new line (said under the box)
        $("note-form").requestSubmit();
      }
      return;  // Escape closes native dialogs by itself
    }
    if (!onQueue(ev.target)) return;
    const arrows = { ArrowDown: () => move(1), ArrowUp: () => move(-1) };  // not character keys: always on
    const letters = {
      j: () => move(1), k: () => move(-1), a: acknowledge, r: openResolve, n: openNote, h: openReassign, "?": openHelp,
    };
    const action = arrows[ev.key] || (state.shortcuts ? letters[ev.key] : undefined);
    if (action) { ev.preventDefault(); action(); }
  }

  // The fixed key bar must never cover what has focus (WCAG 2.4.11): scrolling keeps clear of its height.
  function keepClearOfKeyBar() {
    const bar = $("keys-help");
    const fixed = getComputedStyle(bar).position === "fixed";
    document.documentElement.style.setProperty("--keys-h", fixed ? bar.offsetHeight + "px" : "0px");
  }

  // -- hooks for the console's other scripts (telephony's calls.js) --------------------------------
  // "console:alert-shown" says which alert the detail pane shows; "console:show-alert" asks to show one.
  function announceShown(id) {
    document.dispatchEvent(new CustomEvent("console:alert-shown", { detail: { id: id || null } }));
  }
  // Other scripts' letter keys follow the same rule as the queue's (WCAG 2.1.4): only where focus is on
  // the queue or nowhere in particular, and never when the operator has switched shortcuts off.
  window.consoleShortcuts = { allowed: (target) => Boolean(state.shortcuts) && onQueue(target) };
  document.addEventListener("console:show-alert", (ev) => {
    const id = ev.detail && ev.detail.id !== undefined ? String(ev.detail.id) : "";
    if (state.alerts.has(id)) select(id, false);
  });

  async function start() {
    try {
      const resp = await fetch("/console/api/me", { credentials: "same-origin" });
      if (resp.status === 401) { window.location.assign("/login"); return; }
      state.me = await resp.json();
    } catch (e) { showError(e); return; }
    document.body.classList.toggle("can-handle", can("alerts:handle"));
    let stored = null;
    try { stored = localStorage.getItem("tc-sound"); } catch (e) { stored = null; }
    setSound(stored ? stored === "on" : !!state.me.sound);
    $("sound-toggle").hidden = false;
    $("sound-toggle").addEventListener("click", () => setSound(!state.sound));
    let keys = null;
    try { keys = localStorage.getItem("tc-shortcuts"); } catch (e) { keys = null; }
    for (const b of document.querySelectorAll("[aria-keyshortcuts]")) b.dataset.keys = b.getAttribute("aria-keyshortcuts");
    setShortcuts(keys !== "off", false);
    $("shortcuts-on").addEventListener("change", (ev) => setShortcuts(ev.target.checked, true));
    window.addEventListener("beforeunload", () => { if (state.source) state.source.close(); });
    $("btn-ack").addEventListener("click", acknowledge);
    $("btn-resolve").addEventListener("click", openResolve);
    $("btn-note").addEventListener("click", openNote);
    $("help-button").addEventListener("click", openHelp);
    $("resolve-form").addEventListener("submit", submitResolve);
    $("note-form").addEventListener("submit", submitNote);
    $("btn-reassign").addEventListener("click", openReassign);
    $("reassign-form").addEventListener("submit", submitReassign);
    keepDrafts($("note-text"), "note");
    keepDrafts($("resolve-note"), "resolve");
    document.body.classList.toggle("can-reassign", can("alerts:reassign"));
    for (const b of document.querySelectorAll("dialog .cancel")) {
      b.addEventListener("click", () => b.closest("dialog").close());
    }
    for (const d of ["help-dialog", "resolve-dialog", "note-dialog", "reassign-dialog"]) $(d).addEventListener("close", restoreFocus);
    document.addEventListener("keydown", onKey);
    keepClearOfKeyBar();
    new ResizeObserver(keepClearOfKeyBar).observe($("keys-help"));
    window.addEventListener("resize", keepClearOfKeyBar);
    setInterval(tickTimers, 1000);
    await loadQueue().catch(showError);
    connect();
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
