// Telephony on the operator console: the incoming-call banner, taking calls (available or not), the live
// state of the selected alert's calls, and click to dial. Vanilla JS, no build step; everything from the
// server goes on screen with textContent. It talks to console.js only through two events:
// "console:alert-shown" (which alert the detail pane shows) and "console:show-alert" (show this one).
//
// Keys (ignored while typing or while a dialog is open): p pick up the call ringing for you (browser
// phone), x decline it / hang up your call, c call from the alert card (or add a party to your call),
// t transfer your call. The banner's announcements go to an assertive live region.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    me: null,         // /console/api/me (name, rights, csrf)
    phone: null,      // /api/v1/telephony/presence
    calls: new Map(), // call id -> call JSON
    alerts: new Map(),// alert id -> {type, who} for the banner's words
    shown: null,      // the alert id the detail pane shows
    recordings: [],   // the shown alert's recordings (supervisors: played through the bridge)
    source: null,
    device: null,     // Twilio.Device when the browser is the operator's phone
    incoming: null,   // the Voice SDK call ringing in the browser
    announced: new Set(),
    audio: null,
  };
  const WORDS = {
    voice_help: "Voice help", pendant: "Pendant", fall: "Fall", smoke: "Smoke", heat: "Heat",
    co: "Carbon monoxide", gas: "Gas", epilepsy: "Epilepsy", panic: "Panic", inactivity: "Inactivity",
  };
  const LEG_WORDS = {
    queued: "ringing", ringing: "ringing", cancelling: "stopping", answered: "on the line",
    hanging_up: "hanging up", ended: "left", unanswered: "did not answer",
  };

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

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (method !== "GET") headers[state.me.csrf_header] = state.me.csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const d = data && data.detail;
      let why = data && data.error ? data.error : "HTTP " + resp.status;
      if (typeof d === "string") why += ": " + d;
      else if (d && d.message) why += ": " + d.message;
      else if (Array.isArray(d) && d.length) why += ": " + d[0].field + " " + d[0].message;
      const err = new Error(why);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  // -- words -----------------------------------------------------------------------------------------
  function clockSince(iso) {
    const s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
    const m = Math.floor(s / 60), r = s % 60;
    return `${m}:${String(r).padStart(2, "0")}`;
  }
  function myOffer(call) {
    if (!state.me || !["waiting", "overflow", "connected"].includes(call.state)) return null;
    return call.legs.find((l) => l.role === "operator" && l.party === state.me.name &&
      (l.state === "queued" || l.state === "ringing")) || null;
  }
  function myLeg(call) {
    if (!state.me) return null;
    return call.legs.find((l) => l.role === "operator" && l.party === state.me.name && l.state === "answered") || null;
  }
  function alertWords(alertId) {
    const a = state.alerts.get(alertId);
    return a ? `${a.type}, ${a.who}` : `alert ${alertId}`;
  }
  function callerWords(call) {
    if (call.direction === "outbound") return "your call";
    if (call.matched === "unmatched") return `unknown caller ${call.caller || "(withheld)"}`;
    return call.caller || "(withheld)";
  }
  function stateWords(call) {
    const mine = myLeg(call);
    if (call.state === "waiting") return `Waiting ${clockSince(call.started_at)}`;
    if (call.state === "overflow") return `Waiting ${clockSince(call.started_at)}, overflow centre ringing`;
    if (call.state === "dialing") return "Ringing your phone";
    if (call.state === "connected") {
      const others = call.legs.filter((l) => l.state === "answered" && l !== mine).map((l) => l.party);
      return `Connected ${clockSince(call.answered_at)}` + (others.length ? ` with ${others.join(", ")}` : "");
    }
    return `Ended (${(call.result || "").replaceAll("_", " ")})`;
  }

  // -- the live region and the banner ----------------------------------------------------------------
  function announce(message) {
    const box = $("call-announcer");
    box.textContent = "";
    setTimeout(() => { box.textContent = message; }, 30);
  }
  function say(message, isError) {
    const box = $("call-status");
    box.textContent = message || "";
    box.classList.toggle("error", !!isError);
  }

  function buildBanner() {
    const main = $("main");
    const banner = el("section", { id: "call-banner", class: "call-banner", "aria-labelledby": "call-banner-heading" },
      el("h2", { id: "call-banner-heading", class: "sr-only", text: "Calls" }),
      el("div", { id: "call-announcer", class: "sr-only", "aria-live": "assertive", "aria-atomic": "true" }),
      el("div", { id: "call-status", class: "call-status", role: "status", "aria-live": "polite" }),
      el("div", { class: "call-presence" },
        el("button", { type: "button", id: "call-available", class: "small", "aria-pressed": "false", hidden: true,
          text: "Not taking calls" }),
        el("span", { id: "call-waiting", class: "call-waiting" })),
      el("ul", { id: "call-offers", class: "call-offers", "aria-label": "Calls ringing for you" }));
    main.prepend(banner);
    $("call-available").addEventListener("click", toggleAvailable);
  }

  function renderBanner() {
    const offers = $("call-offers");
    const mine = [...state.calls.values()].filter((c) => myOffer(c));
    const focused = document.activeElement && offers.contains(document.activeElement) ? document.activeElement.dataset.act : null;
    offers.replaceChildren(...mine.map((call) => {
      const offer = myOffer(call);
      const transfer = offer.transfer_from ? ` (transferred by ${offer.transfer_from})` : "";
      const browser = !!state.incoming;
      const words = `Incoming call${transfer}: ${alertWords(call.alert_id)}, ${callerWords(call)}`;
      return el("li", { class: "call-offer", "data-call": call.id },
        el("span", { class: "call-offer-icon", "aria-hidden": "true", text: "☎" }),
        el("span", { class: "call-offer-text", text: words }),
        browser
          ? el("button", { type: "button", class: "primary", "data-act": "answer", "aria-keyshortcuts": "p",
            "aria-label": `Answer the call on alert ${call.alert_id}` }, "Answer")
          : el("span", { class: "call-offer-hint", text: "Answer it on your phone" }),
        el("button", { type: "button", "data-act": "decline", "aria-keyshortcuts": "x",
          "aria-label": `Decline the call on alert ${call.alert_id}` }, "Decline"),
        el("button", { type: "button", "data-act": "show", "aria-label": `Show alert ${call.alert_id}` }, "Show alert"));
    }));
    for (const li of offers.children) {
      const id = li.dataset.call;
      for (const b of li.querySelectorAll("button")) {
        b.addEventListener("click", () => {
          if (b.dataset.act === "answer") answer();
          else if (b.dataset.act === "decline") decline(id);
          else showAlert(state.calls.get(id).alert_id, 0);
        });
      }
    }
    if (focused) {
      const again = offers.querySelector(`button[data-act="${focused}"]`);
      if (again) again.focus();
    }
    document.body.classList.toggle("call-ringing", mine.length > 0);
    const waiting = [...state.calls.values()].filter((c) => (c.state === "waiting" || c.state === "overflow") && !myOffer(c));
    $("call-waiting").textContent = waiting.length
      ? `${waiting.length} call${waiting.length > 1 ? "s" : ""} waiting, longest ${clockSince(waiting.map((c) => c.started_at).sort()[0])}`
      : "";
  }

  function renderPresence() {
    const b = $("call-available");
    if (!state.phone || !state.phone.takes_calls || !can("alerts:handle")) { b.hidden = true; return; }
    b.hidden = false;
    b.setAttribute("aria-pressed", state.phone.available ? "true" : "false");
    b.textContent = state.phone.available ? `Taking calls (${state.phone.via})` : "Not taking calls";
  }

  async function toggleAvailable() {
    try {
      const now = await api("PUT", "/api/v1/telephony/presence", { available: !state.phone.available });
      Object.assign(state.phone, now);
      renderPresence();
      say(now.available ? "You are taking calls." : "You are not taking calls.");
    } catch (e) { say(e.message, true); }
  }

  function ring(on) {
    let sound = true;
    try { sound = localStorage.getItem("tc-sound") !== "off"; } catch (e) { sound = true; }
    if (!on || !sound) return;
    try {
      state.audio = state.audio || new (window.AudioContext || window.webkitAudioContext)();
      const ctx = state.audio;
      for (const at of [0, 0.4]) {
        const osc = ctx.createOscillator(), gain = ctx.createGain();
        osc.frequency.value = 480;
        gain.gain.setValueAtTime(0.12, ctx.currentTime + at);
        gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + at + 0.3);
        osc.connect(gain).connect(ctx.destination);
        osc.start(ctx.currentTime + at);
        osc.stop(ctx.currentTime + at + 0.3);
      }
    } catch (e) { /* no audio: the banner and the announcement remain */ }
  }

  // Ask the queue to show an alert; an alert raised by the call itself may reach the queue a moment after
  // the call does, so ask again a few times until the card shows it.
  function showAlert(alertId, tries) {
    const id = String(alertId);
    document.dispatchEvent(new CustomEvent("console:show-alert", { detail: { id } }));
    const left = tries === undefined ? 6 : tries;
    if (left > 0) setTimeout(() => { if (state.shown !== id) showAlert(id, left - 1); }, 400);
  }

  // -- calls from the stream -------------------------------------------------------------------------
  async function learnAlert(alertId) {
    if (state.alerts.has(alertId)) return;
    try {
      const a = await api("GET", "/api/v1/alerts/" + encodeURIComponent(alertId));
      let who = a.resident_id || ("unit " + a.device_id);
      if (a.resident_id) {
        const names = await api("GET", "/console/api/residents?ids=" + encodeURIComponent(a.resident_id));
        who = names[a.resident_id] || who;
      }
      const type = (WORDS[a.type] || String(a.type).replaceAll("_", " ")) + (a.unregistered ? " (unregistered)" : "");
      state.alerts.set(alertId, { type, who });
    } catch (e) { state.alerts.set(alertId, { type: "Alert " + alertId, who: "" }); }
  }

  async function upsert(call) {
    if (!call || typeof call.id !== "string" || !Array.isArray(call.legs)) return;
    const before = state.calls.get(call.id);
    state.calls.set(call.id, call);
    await learnAlert(call.alert_id);
    const offer = myOffer(call);
    const key = offer ? call.id + ":" + offer.id : null;
    if (offer && !state.announced.has(key)) {
      state.announced.add(key);
      const how = state.incoming || (state.phone && state.phone.via === "browser")
        ? "Press P to answer, X to decline." : "Answer it on your phone, or press X to decline.";
      announce(`Incoming call for you: ${alertWords(call.alert_id)}, ${callerWords(call)}. ${how}`);
      ring(true);
      showAlert(call.alert_id);
    }
    if (before && before.state !== call.state && call.alert_id === state.shown) {
      if (call.state === "connected") announce(`Call on alert ${call.alert_id} connected.`);
      if (call.state === "ended") announce(`Call on alert ${call.alert_id} ended.`);
    }
    if (call.state === "ended") setTimeout(() => { state.calls.delete(call.id); render(); }, 8000);
    if (call.recordings.length && call.alert_id === state.shown) loadRecordings(call.alert_id);
    render();
  }

  function connect() {
    if (state.source) state.source.close();
    const source = new EventSource("/api/v1/calls/stream");
    state.source = source;
    source.addEventListener("calls", (ev) => {
      try {
        state.calls.clear();
        const data = JSON.parse(ev.data);
        Promise.all(data.calls.map(upsert)).then(render);
      } catch (e) { say(e.message, true); }
    });
    source.addEventListener("call", (ev) => { try { upsert(JSON.parse(ev.data)); } catch (e) { say(e.message, true); } });
    source.addEventListener("expired", () => { source.close(); setTimeout(connect, 2000); });
    source.onopen = () => document.body.classList.add("calls-live");
    source.onerror = () => {
      document.body.classList.remove("calls-live");
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    };
  }

  // -- the call panel on the alert card --------------------------------------------------------------
  function render() {
    renderBanner();
    renderPanel();
  }

  function renderPanel() {
    const panel = $("call-panel");
    if (!panel) return;
    const id = state.shown;
    if (!id || !state.phone) { panel.hidden = true; return; }
    panel.hidden = false;
    const calls = [...state.calls.values()].filter((c) => c.alert_id === id);
    const live = calls.filter((c) => c.state !== "ended");
    const handle = can("alerts:handle") && state.phone.takes_calls;
    const mineLive = live.find((c) => myLeg(c));
    const list = el("ul", { class: "call-list" }, ...calls.map((c) => {
      const parties = el("ul", { class: "call-legs" }, ...c.legs.filter((l) => l.role !== "caller" || c.direction === "inbound")
        .map((l) => el("li", { class: "leg-" + l.state },
          `${l.role === "caller" ? "Caller " + (c.caller || "(withheld)") : l.party}: ${LEG_WORDS[l.state] || l.state}` +
          (l.emergency ? " (emergency services)" : ""))));
      return el("li", { class: "call-item call-" + c.state, "data-call": c.id },
        el("strong", { text: (c.direction === "inbound" ? "Call in" : "Call out") + ": " }),
        el("span", { class: "call-state", "data-call-state": c.id, text: stateWords(c) }),
        c.state === "connected" ? el("span", { class: "call-rec", text: " ● recorded" }) : null,
        parties);
    }));
    const buttons = el("div", { class: "call-actions" });
    if (handle && mineLive) {
      buttons.append(
        el("button", { type: "button", id: "call-hangup", class: "danger" }, el("kbd", { text: "x" }), " Hang up"),
        el("button", { type: "button", id: "call-add" }, el("kbd", { text: "c" }), " Add a party…"),
        el("button", { type: "button", id: "call-transfer" }, el("kbd", { text: "t" }), " Transfer…"));
    } else if (handle && !live.some((c) => c.state === "dialing" && c.started_by === state.me.name)) {
      buttons.append(el("button", { type: "button", id: "call-dial" }, el("kbd", { text: "c" }), " Call…"));
    }
    const heading = el("h3", { id: "call-panel-heading", text: "Calls" });
    const children = [heading, calls.length ? list : el("p", { class: "muted", text: "No call on this alert now." }), buttons];
    if (handle) children.push(el("p", { class: "call-keys muted" },
      "Keys: ", el("kbd", { text: "c" }), " call or add a party · ", el("kbd", { text: "t" }), " transfer · ",
      el("kbd", { text: "x" }), " hang up or decline · ", el("kbd", { text: "p" }), " answer in the browser"));
    if (state.recordings.length) {
      children.push(el("h4", { text: "Recordings" }), el("ul", { class: "call-recordings" },
        ...state.recordings.map((r) => el("li", {},
          el("span", { text: `Call ${r.call}, ${r.duration_s} s ` }),
          el("audio", { controls: true, preload: "none", src: `/api/v1/recordings/${encodeURIComponent(r.id)}/audio`,
            "aria-label": `Recording of call ${r.call}, ${r.duration_s} seconds` })))));
    }
    const focused = document.activeElement && panel.contains(document.activeElement) ? document.activeElement.id : null;
    panel.replaceChildren(...children);
    const hang = $("call-hangup"), add = $("call-add"), transfer = $("call-transfer"), dial = $("call-dial");
    if (hang) hang.addEventListener("click", () => hangUp(mineLive.id));
    if (add) add.addEventListener("click", () => openDial(mineLive.id));
    if (transfer) transfer.addEventListener("click", () => openTransfer(mineLive.id));
    if (dial) dial.addEventListener("click", () => openDial(null));
    if (focused && $(focused)) $(focused).focus();
  }

  // Supervisors play an alert's recordings from its card, through the bridge (never a Twilio address).
  async function loadRecordings(alertId) {
    if (!alertId || !can("calls:review")) return;
    try {
      const body = await api("GET", "/api/v1/calls?alert_id=" + encodeURIComponent(alertId));
      if (state.shown !== alertId) return;
      state.recordings = body.calls.flatMap((c) => c.recordings.filter((r) => !r.deleted)
        .map((r) => ({ id: r.id, call: c.id, duration_s: r.duration_s })));
      renderPanel();
    } catch (e) { /* the card shows the rest */ }
  }

  function tick() {
    for (const node of document.querySelectorAll("[data-call-state]")) {
      const call = state.calls.get(node.dataset.callState);
      if (call) node.textContent = stateWords(call);
    }
    renderBanner();
  }

  // -- actions -----------------------------------------------------------------------------------------
  function restoreFocus(to) {
    const target = to && document.body.contains(to) ? to : document.querySelector("#queue button[aria-current]") || $("main");
    target.focus();
  }

  function answer() {
    if (!state.incoming) { say("Answer the call on your phone.", true); return; }
    try { state.incoming.accept(); say("Answering…"); } catch (e) { say("Could not answer: " + e.message, true); }
  }

  async function decline(callId) {
    const back = document.activeElement;
    try {
      if (state.incoming) { try { state.incoming.reject(); } catch (e) { /* the bridge stops it anyway */ } state.incoming = null; }
      upsert(await api("POST", `/api/v1/calls/${encodeURIComponent(callId)}/decline`));
      say("Declined; the call goes to the next operator.");
    } catch (e) { say(e.message, true); }
    restoreFocus(back);
  }

  async function hangUp(callId) {
    try {
      upsert(await api("POST", `/api/v1/calls/${encodeURIComponent(callId)}/hangup`));
      say("You left the call.");
    } catch (e) { say(e.message, true); }
  }

  function dialog(id, title, body, submitText, onSubmit) {
    let box = $(id);
    if (box) box.remove();
    const back = document.activeElement;
    const form = el("form", { method: "dialog" }, el("h2", { id: id + "-title", text: title }), ...body,
      el("div", { class: "dialog-buttons" },
        el("button", { type: "submit", class: "primary", text: submitText }),
        el("button", { type: "button", class: "cancel", text: "Cancel" })));
    box = el("dialog", { id, class: "call-dialog", "aria-labelledby": id + "-title" }, form);
    document.body.append(box);
    form.querySelector(".cancel").addEventListener("click", () => box.close());
    box.addEventListener("close", () => { box.remove(); restoreFocus(back); });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const done = await onSubmit(form);
      if (done !== false) box.close();
    });
    box.showModal();
    const first = form.querySelector("input:checked, input, select");
    if (first) first.focus();
    return box;
  }

  async function openDial(callId) {
    const alertId = state.shown;
    if (!alertId) return;
    let responders = [];
    try {
      const ctx = await api("GET", "/console/api/alerts/" + encodeURIComponent(alertId) + "/context");
      responders = (ctx.resident && ctx.resident.responders) || [];
    } catch (e) { responders = []; }
    const choices = [["resident", "The resident (their own phone)"], ["unit", "The alarm unit"]];
    responders.forEach((r, i) => { if (r.phone) choices.push(["responder:" + i, `Responder: ${r.name}${r.relation ? " (" + r.relation + ")" : ""}`]); });
    choices.push(["emergency", `Emergency services (${state.phone.emergency_number})`], ["number", "Another number"]);
    const radios = el("fieldset", {}, el("legend", { text: "Whom to call" }), ...choices.map(([value, label], i) =>
      el("label", { class: "call-choice" },
        el("input", { type: "radio", name: "to", value, checked: i === 0 ? true : null, required: true }), " " + label)));
    const number = el("input", { id: "call-number", name: "number", inputmode: "tel", autocomplete: "off",
      placeholder: "+447700900123", maxlength: "16", "aria-describedby": "call-number-hint" });
    const body = [radios, el("label", { for: "call-number", text: "Number (for another number)" }), number,
      el("p", { id: "call-number-hint", class: "hint", text: "In international form, starting with +." })];
    const title = callId ? "Add a party to the call" : `Call from alert ${alertId}`;
    dialog("call-dial-dialog", title, body, callId ? "Add to the call" : "Call", async (form) => {
      const picked = form.querySelector("input[name=to]:checked").value;
      const payload = picked.startsWith("responder:") ? { to: "responder", responder: Number(picked.slice(10)) } : { to: picked };
      if (picked === "number") payload.number = number.value.trim();
      try {
        const path = callId ? `/api/v1/calls/${encodeURIComponent(callId)}/parties` : `/api/v1/alerts/${encodeURIComponent(alertId)}/calls`;
        upsert(await api("POST", path, payload));
        say(callId ? "Dialling them into the call…" : "Ringing your phone first; answer it to be connected.");
        return true;
      } catch (e) { say(e.message, true); return true; }
    });
  }

  function openTransfer(callId) {
    const others = (state.phone.operators || []).filter((o) => o.operator !== state.me.name && !o.on_call);
    const select = el("select", { id: "call-transfer-to", name: "operator", required: true },
      ...others.map((o) => el("option", { value: o.operator, text: `${o.operator}${o.available ? "" : " (not taking calls)"}` })));
    const body = others.length
      ? [el("label", { for: "call-transfer-to", text: "Transfer to" }), select]
      : [el("p", { text: "No other operator is free." })];
    dialog("call-transfer-dialog", "Transfer the call", body, "Transfer", async () => {
      if (!others.length) return true;
      try {
        upsert(await api("POST", `/api/v1/calls/${encodeURIComponent(callId)}/transfer`, { operator: select.value }));
        say(`Ringing ${select.value}; you leave the call when they answer.`);
      } catch (e) { say(e.message, true); }
      return true;
    });
  }

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || document.querySelector("dialog[open]")) return;
    const tag = ev.target && ev.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
    // The console's rule for letter keys (not on buttons or links, and switchable off): WCAG 2.1.4.
    if (window.consoleShortcuts && !window.consoleShortcuts.allowed(ev.target)) return;
    const offered = [...state.calls.values()].find((c) => myOffer(c));
    const mine = [...state.calls.values()].find((c) => myLeg(c) && c.state === "connected");
    let done = true;
    if (ev.key === "p" && offered) answer();
    else if (ev.key === "x" && offered) decline(offered.id);
    else if (ev.key === "x" && mine) hangUp(mine.id);
    else if (ev.key === "c" && can("alerts:handle") && state.phone && state.phone.takes_calls) openDial(mine && mine.alert_id === state.shown ? mine.id : null);
    else if (ev.key === "t" && mine) openTransfer(mine.id);
    else done = false;
    if (done) ev.preventDefault();
  }

  // -- the browser as the operator's phone (Twilio Voice SDK, when the deployer provides it) ---------
  async function startDevice() {
    if (!state.phone || !state.phone.sdk) return;
    await new Promise((resolve, reject) => {
      if (window.Twilio && window.Twilio.Device) { resolve(); return; }
      const s = el("script", { src: state.phone.sdk });
      s.addEventListener("load", resolve);
      s.addEventListener("error", () => reject(new Error("the Voice SDK could not be loaded")));
      document.head.append(s);
    });
    const fetchToken = async () => (await api("GET", "/api/v1/telephony/token")).token;
    const device = new window.Twilio.Device(await fetchToken(), { closeProtection: true });
    device.on("tokenWillExpire", async () => { try { device.updateToken(await fetchToken()); } catch (e) { say(e.message, true); } });
    device.on("error", (e) => say("Browser phone: " + (e && e.message ? e.message : e), true));
    device.on("incoming", (call) => {
      state.incoming = call;
      const clear = () => { if (state.incoming === call) state.incoming = null; render(); };
      call.on("cancel", clear);
      call.on("reject", clear);
      call.on("disconnect", clear);
      call.on("accept", () => { say("Connected."); });
      // A call you dialled rings your browser first: you asked for it, so it is taken at once.
      if ([...state.calls.values()].some((c) => c.state === "dialing" && c.started_by === state.me.name)) call.accept();
      render();
    });
    await device.register();
    state.device = device;
    document.body.classList.add("browser-phone");
  }

  async function start() {
    if (!$("main")) return;
    try {
      const resp = await fetch("/console/api/me", { credentials: "same-origin" });
      if (!resp.ok) return;
      state.me = await resp.json();
      state.phone = await api("GET", "/api/v1/telephony/presence");
    } catch (e) { return; }  // telephony off (404): nothing of this script shows
    const css = el("link", { rel: "stylesheet", href: "/static/telephony/calls.css" });
    document.head.append(css);
    buildBanner();
    renderPresence();
    document.addEventListener("console:alert-shown", (ev) => {
      state.shown = ev.detail && ev.detail.id;
      state.recordings = [];
      renderPanel();
      loadRecordings(state.shown);
    });
    const current = document.querySelector("#queue button[aria-current='true']");
    if (current && !state.shown) { state.shown = current.dataset.id; renderPanel(); }
    document.addEventListener("keydown", onKey);
    setInterval(tick, 1000);
    connect();
    startDevice().catch((e) => say(e.message, true));
    document.body.dataset.calls = "ready";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
