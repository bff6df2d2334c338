// riskgate review: the page to review held payment intents.
//
// Every value from the API is untrusted. The DOM is built only with createElement,
// textContent and setAttribute on a fixed list of harmless attributes (see `el`); API values
// never reach an HTML parser (no markup setters), URLs other than an encodeURIComponent'd path segment, or styles.
"use strict";

(function () {
  const POLL_MS = 5000; // fallback polling while the event stream is down
  const SSE_RETRY_MIN_MS = 2000;
  const SSE_RETRY_MAX_MS = 30000;
  const PAGE = 50;        // holds and history rows per page
  const FILTERS = [
    ["f-rule", "rule"], ["f-agent", "agent"], ["f-account", "account"], ["f-text", "text"],
    ["f-min-amount", "min_amount"], ["f-max-amount", "max_amount"],
    ["f-min-age", "min_age"], ["f-max-age", "max_age"],
  ];
  const HISTORY_FILTERS = [
    ["h-reviewer", "reviewer"], ["h-outcome", "outcome"], ["h-agent", "agent"],
    ["h-account", "account"], ["h-text", "text"],
  ];
  /** Why the API says a hold may not be approved by the signed-in reviewer. */
  const WHY_NOT = {
    proposer: "You proposed this intent (its agent is you): someone else must approve it.",
    viewer: "Viewers cannot approve or reject.",
    already_approved: "You have already approved this hold.",
  };

  const state = {
    session: null,      // {reviewer, role, csrf_token} while signed in
    query: "",          // the applied filters, as a query string
    offset: 0,          // first hold of the page shown
    count: 0,           // holds matching the filters, all pages
    holds: [],          // the page's holds, as the API gave them
    picked: new Map(),  // ref -> {key, intent_id, record}: holds selected for a bulk review
    view: "queue",      // "queue" or "history"
    hQuery: "", hOffset: 0, hCount: 0, hLoading: false,
    loading: false,     // a list fetch is in flight
    reloadQueued: false, // another list fetch was asked for meanwhile
    ageCells: [],       // [{cell, base}]: base is age_seconds at fetch time
    fetchedAt: 0,       // performance.now() when the list was fetched
    selectedId: null,   // ref (holdRef) of the hold shown in the detail panel
    record: null,       // {partition, offset} of the shown hold's decision record
    detailSeq: 0,       // bumped on every detail fetch, to drop stale answers
    detailLoading: false, // the first read of the chosen hold is in flight
    detailGone: false,  // the shown hold answered 404
    approvals: null,    // approvals object of the shown hold
    whyNot: "",         // why the signed-in reviewer may not approve the shown hold, if not
    approvalsKey: "",   // ... as JSON, to notice changes in list refreshes
    listError: false,   // the global status shows a list loading error
    busy: false,        // an approve/reject is in flight
    es: null, esTimer: 0, esRetryMs: SSE_RETRY_MIN_MS, esFailed: false,
    pollTimer: 0, ageTimer: 0,
  };

  const $ = (id) => document.getElementById(id);

  // ---- Safe DOM helpers ----------------------------------------------------------------

  const SAFE_ATTRS = new Set(["class", "scope", "colspan", "tabindex", "role", "aria-hidden",
    "aria-label", "aria-current", "datetime", "title", "type"]);

  /** Creates an element. `text` sets textContent, other keys must be in SAFE_ATTRS;
   *  children are nodes or strings (appended as text). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (SAFE_ATTRS.has(k)) node.setAttribute(k, String(v));
      else throw new Error("refusing attribute " + k);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  /** A string for a scalar API value, "" for anything else. */
  function str(v) {
    return typeof v === "string" ? v : (typeof v === "number" || typeof v === "boolean") ? String(v) : "";
  }
  const obj = (v) => (v && typeof v === "object" && !Array.isArray(v)) ? v : {};
  const arr = (v) => Array.isArray(v) ? v : [];
  /** Marks a missing value: a dash for the eye, "none" for screen readers. */
  const none = () => el("span", { class: "none" }, el("span", { "aria-hidden": "true", text: "—" }),
    el("span", { class: "visually-hidden", text: "none" }));
  /** The text of a value, or the missing marker. */
  const show = (v) => str(v) === "" ? none() : str(v);
  const clear = (node) => node.replaceChildren();

  // ---- Formatting ----------------------------------------------------------------------

  /** 12000.5 -> "12,000.5", keeping the exact decimal string (no float rounding). */
  function formatAmount(v) {
    const s = str(v);
    const m = /^(-?)(\d+)(\.\d+)?$/.exec(s);
    return m ? m[1] + m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ",") + (m[3] || "") : s;
  }

  /** Seconds -> "45s", "2m 05s", "1h 02m", "3d 4h". */
  function formatAge(sec) {
    const t = Math.max(0, Math.floor(sec));
    const pad = (n) => String(n).padStart(2, "0");
    if (t < 60) return t + "s";
    if (t < 3600) return Math.floor(t / 60) + "m " + pad(t % 60) + "s";
    if (t < 86400) return Math.floor(t / 3600) + "h " + pad(Math.floor(t / 60) % 60) + "m";
    return Math.floor(t / 86400) + "d " + Math.floor(t / 3600) % 24 + "h";
  }

  /** The age of a hold at fetch time: age_seconds, else derived from created_at. */
  function baseAge(h) {
    if (typeof h.age_seconds === "number") return h.age_seconds;
    const t = Date.parse(str(h.created_at));
    return Number.isNaN(t) ? NaN : (Date.now() - t) / 1000;
  }

  /** "1 of 2" when more than one approval is needed, else null. */
  function approvalsText(a) {
    const required = Number(obj(a).required);
    return required > 1 ? arr(obj(a).approved_by).length + " of " + required : null;
  }

  /** A timestamp as given (UTC ISO 8601), with an optional relative hint. */
  function timeNode(v, relative) {
    const s = str(v);
    if (!s) return none();
    const node = el("time", { datetime: s, text: s });
    const t = Date.parse(s);
    if (relative && !Number.isNaN(t)) {
      const d = (t - Date.now()) / 1000;
      return el("span", {}, node, el("span", { class: "sub", text: d > 0 ? "in " + formatAge(d) : "expired" }));
    }
    return node;
  }

  // ---- Status messages -----------------------------------------------------------------

  function setMessage(node, text, isError) {
    const msg = text ? (isError ? "Error: " + text : text) : "";
    if (node.textContent !== msg) node.textContent = msg;
    node.classList.toggle("error", Boolean(isError));
  }
  const setStatus = (text, isError) => setMessage($("status"), text, isError);
  const setDetailStatus = (text, isError) => setMessage($("detail-status"), text, isError);

  // ---- API -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  /** Calls the JSON API. Resolves to the parsed body (null for 204), rejects with ApiError.
   *  A 401 while signed in ends the session and returns to the login view. */
  async function api(method, path, body) {
    const headers = { "Accept": "application/json", "X-Requested-With": "riskgate" };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf_token;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (_) {
      throw new ApiError(0, "network", "Could not reach the server.");
    }
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (_) { data = null; }
    }
    if (res.ok) return data;
    const e = obj(obj(data).error);
    const err = new ApiError(res.status, str(e.code), str(e.message) || "Request failed (HTTP " + res.status + ").");
    if (res.status === 401 && state.session) showLogin("Your session has ended. Please sign in again.");
    throw err;
  }

  /**
   * A hold is named by its partition-key value and its intent id (the scope of idempotency:
   * one intent id may be held in two accounts). `ref` is that pair as one opaque string.
   */
  function holdRef(h) { return JSON.stringify([str(h.key), str(h.intent_id)]); }
  function refParts(ref) {
    const p = JSON.parse(ref);
    return { key: str(p[0]), id: str(p[1]) };
  }
  /** How a hold is named to people: "intent id (key)". */
  function holdLabel(ref) {
    const { key, id } = refParts(ref);
    return key ? id + " (" + key + ")" : id;
  }

  /** Path of one hold; "." and ".." cannot be a path segment, so they are refused. */
  function holdPath(ref, suffix) {
    const { key, id } = refParts(ref);
    const bad = (s) => !s || s === "." || s === "..";
    if (bad(key) || bad(id)) throw new ApiError(0, "bad_id", "This hold cannot be addressed.");
    return "/api/holds/" + encodeURIComponent(key) + "/" + encodeURIComponent(id) + (suffix || "");
  }

  /** Reports a failed call in `where` unless the 401 handler already took over. */
  function report(err, prefix, where) {
    if (err.status === 401 || !state.session) return;
    (where || setStatus)(prefix + ": " + err.message, true);
  }

  // ---- Session -------------------------------------------------------------------------

  function showLogin(message) {
    state.session = null;
    stopLive();
    closeDetail(false);
    clear($("holds-body"));
    state.ageCells = [];
    $("queue-view").hidden = true;
    $("history-view").hidden = true;
    $("views").hidden = true;
    // The next person starts afresh: no selection, no filters, the first page.
    state.picked.clear();
    updateBulk();
    for (const [id] of FILTERS.concat(HISTORY_FILTERS)) $(id).value = "";
    state.query = state.hQuery = "";
    state.offset = state.hOffset = 0;
    state.view = "queue";
    $("session-info").hidden = true;
    $("whoami").textContent = "";
    $("login-view").hidden = false;
    $("secret").value = "";
    $("login-error").textContent = message || "";
    $("reviewer").focus();
  }

  function signedIn(s) {
    s = obj(s);
    if (!str(s.reviewer)) throw new ApiError(0, "bad_session", "Unexpected session response.");
    state.session = { reviewer: str(s.reviewer), role: str(s.role), csrf_token: str(s.csrf_token) };
    $("whoami").textContent = "Signed in as " + state.session.reviewer + " (" + state.session.role + ")";
    $("session-info").hidden = false;
    $("login-view").hidden = true;
    $("login-error").textContent = "";
    $("views").hidden = false;
    showView(state.view);
    startLive();
  }

  /** Only approvers may act; anything else (including an unknown role) is treated as viewer. */
  const canAct = () => Boolean(state.session && state.session.role === "approver");

  async function login(ev) {
    ev.preventDefault();
    const reviewer = $("reviewer").value.trim();
    const secret = $("secret").value;
    $("login-error").textContent = "";
    if (!reviewer || !secret) {
      $("login-error").textContent = "Enter your reviewer name and secret.";
      return;
    }
    $("login-submit").disabled = true;
    try {
      const s = await api("POST", "/api/session", { reviewer, secret });
      $("secret").value = "";
      signedIn(s);
      $("main").focus();
    } catch (err) {
      $("login-error").textContent = err.message;
      $("secret").value = "";
      $("secret").focus();
    } finally {
      $("login-submit").disabled = false;
    }
  }

  async function logout() {
    try {
      await api("DELETE", "/api/session");
    } catch (err) {
      if (err.status !== 401) { setStatus("Could not sign out: " + err.message, true); return; }
    }
    if (state.session) showLogin("");
    setStatus("Signed out.");
  }

  // ---- Holds list ----------------------------------------------------------------------

  /** Fetches the list with the applied filters. Calls made while one is in flight are
   *  coalesced into one more fetch afterwards, so the newest filters always win. */
  async function loadHolds() {
    if (state.loading) { state.reloadQueued = true; return; }
    state.loading = true;
    try {
      do {
        state.reloadQueued = false;
        const params = new URLSearchParams(state.query);
        params.set("limit", String(PAGE));
        params.set("offset", String(state.offset));
        const data = obj(await api("GET", "/api/holds?" + params.toString()));
        if (!state.session) return;
        const count = typeof data.count === "number" ? data.count : arr(data.holds).length;
        // The page emptied (holds reviewed elsewhere): show the last page that has any.
        if (state.offset > 0 && state.offset >= count) {
          state.offset = Math.max(0, Math.floor((count - 1) / PAGE) * PAGE);
          state.reloadQueued = true;
          continue;
        }
        renderHolds(arr(data.holds), count);
      } while (state.reloadQueued && state.session);
      if (state.listError) { state.listError = false; setStatus(""); }
    } catch (err) {
      if (err.status !== 401 && state.session) state.listError = true;
      report(err, "Could not load holds");
    } finally {
      state.loading = false;
    }
  }

  function renderHolds(holds, count) {
    const body = $("holds-body");
    const focused = document.activeElement && document.activeElement.closest
      ? document.activeElement.closest("#holds-body tr[data-intent-id]") : null;
    const focusedId = focused ? focused.dataset.ref : null;

    state.ageCells = [];
    state.fetchedAt = performance.now();
    state.holds = holds.map(obj);
    const rows = state.holds.map((h) => holdRow(h));
    if (rows.length === 0) {
      const td = el("td", { colspan: 9, class: "empty" }, "Nothing is held.");
      if (state.query) td.append(el("span", { class: "sub", text: "Clear the filters to see every hold." }));
      rows.push(el("tr", {}, td));
    }
    body.replaceChildren(...rows);
    updateAges();

    const n = count;
    state.count = n;
    $("hold-count").textContent = n.toLocaleString("en") + " pending";
    $("filter-note").hidden = !state.query;
    setPager("page", state.offset, holds.length, n);
    // A picked hold that is no longer pending is no longer picked.
    if (state.picked.size) {
      const onPage = new Set(state.holds.map(holdRef));
      for (const ref of Array.from(state.picked.keys())) {
        if (!onPage.has(ref) && holds.length === n) state.picked.delete(ref);
      }
    }
    updateBulk();

    // Keep keyboard focus on the same hold across refreshes.
    if (focusedId !== null) {
      const again = rowFor(focusedId);
      if (again) again.focus();
    }
    // If the open hold left the list or its approvals changed, re-read it (404 = gone).
    if (state.selectedId !== null && !state.detailLoading && !state.busy) {
      const h = holds.find((x) => holdRef(obj(x)) === state.selectedId);
      const changed = h ? JSON.stringify(obj(h).approvals || null) !== state.approvalsKey : !state.detailGone;
      if (changed) openDetail(state.selectedId, { refresh: true });
    }
  }

  function rowFor(id) {
    return Array.from($("holds-body").rows).find((r) => r.dataset.ref === id) || null;
  }

  function holdRow(h) {
    const ref = holdRef(h);
    const tr = el("tr", { class: "hold-row", tabindex: 0 });
    tr.dataset.intentId = str(h.intent_id);
    tr.dataset.key = str(h.key);
    tr.dataset.ref = ref;
    if (ref === state.selectedId) markRow(tr, true);

    // Picking a hold for a bulk review: a real checkbox, so Tab and Space reach it.
    const pick = el("input", { type: "checkbox", class: "pick", "aria-label": "Select " + holdLabel(ref) });
    pick.checked = state.picked.has(ref);
    if (pick.checked) tr.classList.add("picked");
    const pickCell = el("td", { class: "pick-cell" }, pick);

    // Age from the intent's creation, and when it was decided.
    const age = el("td", { class: "age" });
    const ageNow = el("span", { class: "age-intent" });
    const ageDecided = el("span", { class: "sub age-decided" });
    age.append(ageNow, ageDecided);
    state.ageCells.push({ cell: ageNow, base: baseAge(h) });
    if (typeof h.decided_age_seconds === "number") {
      state.ageCells.push({ cell: ageDecided, base: h.decided_age_seconds, prefix: "decided " });
    }

    tr.append(pickCell, age, el("td", {}, show(h.agent_id)), el("td", {}, show(h.account_id)),
      el("td", {}, show(h.action)), amountCell(h), counterpartyCell(h), whyCell(h), approvalsCell(h));
    return tr;
  }

  /** The amount in the intent's currency, and under it in the base currency. */
  function amountCell(h) {
    const cell = el("td", { class: "amount" });
    if (!str(h.amount)) {
      cell.append(none());
      return cell;
    }
    cell.append(el("span", { class: "amt", text: formatAmount(h.amount) }));
    if (str(h.currency)) cell.append(" ", el("span", { class: "ccy", text: str(h.currency) }));
    const base = str(h.base_currency);
    if (h.base_unknown === true) {
      cell.append(el("span", { class: "sub base-unknown", text: "no " + (base || "base") + " rate" }));
    } else if (str(h.base_amount) && base && base !== str(h.currency)) {
      cell.append(el("span", { class: "sub base", text: "≈ " + formatAmount(h.base_amount) + " " + base }));
    }
    return cell;
  }

  function counterpartyCell(h) {
    const cp = obj(h.counterparty);
    const cell = el("td", { class: "cp" });
    const sub = [str(cp.id), str(cp.country)].filter(Boolean).join(" · ");
    if (str(cp.name)) cell.append(el("span", { class: "cp-name", text: str(cp.name) }));
    if (sub) cell.append(el("span", { class: "sub", text: sub }));
    if (!cell.firstChild) cell.append(none());
    return cell;
  }

  /** Why it is held: matched rules, rules that failed, and the score against its thresholds. */
  function whyCell(h) {
    const cell = el("td", { class: "reasons" });
    const items = arr(h.reasons).map((r) => reasonItem(obj(r)))
      .concat(arr(h.errors).map((e) => errorItem(obj(e))));
    if (items.length) cell.append(el("ul", {}, ...items));
    const score = scoreText(h);
    if (score) cell.append(el("span", { class: "sub score", text: score }));
    if (!cell.firstChild) cell.append(none());
    return cell;
  }

  /** "score 60 · hold at 50 · deny at 90", when the decision was scored. */
  function scoreText(h) {
    const t = obj(h.thresholds);
    if (typeof h.score !== "number" || (h.score === 0 && h.thresholds === undefined)) return "";
    const parts = ["score " + h.score];
    if (typeof t.hold_at === "number") parts.push("hold at " + t.hold_at);
    if (typeof t.deny_at === "number") parts.push("deny at " + t.deny_at);
    return parts.join(" · ");
  }

  function errorItem(e) {
    return el("li", { class: "rule-error" }, el("span", { class: "rule", text: str(e.rule) }),
      ": " + str(e.message), " ", el("span", { class: "tag tag-error", text: "error" }));
  }

  function approvalsCell(h) {
    const a = obj(h.approvals);
    const text = approvalsText(a);
    const cell = el("td", { class: "approvals" }, text || none());
    const by = arr(a.approved_by).map(str).filter(Boolean);
    if (text && by.length) cell.append(el("span", { class: "sub", text: "by " + by.join(", ") }));
    return cell;
  }

  /** One reason as "rule: message", with a small tag for its action (text, not only color). */
  function reasonItem(r) {
    const li = el("li", {}, el("span", { class: "rule", text: str(r.rule) }));
    if (str(r.message)) li.append(": " + str(r.message));
    const action = str(r.action);
    if (action === "hold") li.append(" ", el("span", { class: "tag tag-hold", text: "hold" }));
    else if (action === "score" && str(r.score)) li.append(" ", el("span", { class: "tag", text: "score " + str(r.score) }));
    else if (action) li.append(" ", el("span", { class: "tag", text: action }));
    return li;
  }

  /** Ticks every second: age at fetch time plus the time since. */
  function updateAges() {
    const elapsed = (performance.now() - state.fetchedAt) / 1000;
    for (const { cell, base, prefix } of state.ageCells) {
      const text = Number.isNaN(base) ? "?" : (prefix || "") + formatAge(base + elapsed);
      if (cell.textContent !== text) cell.textContent = text;
    }
  }

  function markRow(tr, on) {
    tr.classList.toggle("selected", on);
    if (on) tr.setAttribute("aria-current", "true"); else tr.removeAttribute("aria-current");
  }

  // ---- Pages ---------------------------------------------------------------------------

  /** "51–100 of 10,000" and the Previous / Next buttons of pager `name` (`page`, `h`). */
  function setPager(name, offset, shown, count) {
    const range = $(name === "page" ? "page-range" : "h-range");
    range.textContent = count === 0 ? "" :
      (offset + 1).toLocaleString("en") + "–" + (offset + shown).toLocaleString("en") +
      " of " + count.toLocaleString("en");
    $(name === "page" ? "page-prev" : "h-prev").disabled = offset === 0;
    $(name === "page" ? "page-next" : "h-next").disabled = offset + shown >= count;
  }

  // ---- Picking holds for one review of many --------------------------------------------

  function togglePick(tr, on) {
    const ref = tr.dataset.ref;
    const h = state.holds.find((x) => holdRef(x) === ref);
    const rec = h ? obj(h.record) : {};
    const box = tr.querySelector("input.pick");
    if (on && h && Number.isInteger(rec.partition) && Number.isInteger(rec.offset)) {
      state.picked.set(ref, { key: str(h.key), intent_id: str(h.intent_id),
        record: { partition: rec.partition, offset: rec.offset } });
    } else {
      state.picked.delete(ref);
    }
    if (box) box.checked = state.picked.has(ref);
    tr.classList.toggle("picked", state.picked.has(ref));
    updateBulk();
  }

  function pickPage(on) {
    for (const tr of $("holds-body").rows) if (tr.dataset.ref) togglePick(tr, on);
  }

  function updateBulk() {
    const n = state.picked.size;
    $("bulk").hidden = n === 0 || !state.session;
    $("bulk-count").textContent = n + " selected";
    const allowed = canAct() && !state.busy;
    $("bulk-approve").disabled = !allowed;
    $("bulk-reject").disabled = !allowed;
    const rows = Array.from($("holds-body").rows).filter((r) => r.dataset.ref);
    const on = rows.filter((r) => state.picked.has(r.dataset.ref)).length;
    const all = $("pick-page");
    all.checked = rows.length > 0 && on === rows.length;
    all.indeterminate = on > 0 && on < rows.length;
  }

  /** Approves or rejects every picked hold with one comment: each gets its own record. */
  async function bulkReview(kind) {
    if (state.busy || !canAct() || state.picked.size === 0) return;
    const box = $("bulk-comment");
    const comment = box.value.trim();
    if (kind === "reject" && !comment) {
      box.setAttribute("aria-invalid", "true");
      setStatus("A comment is required to reject.", true);
      box.focus();
      return;
    }
    box.removeAttribute("aria-invalid");
    const holds = Array.from(state.picked.values());
    state.busy = true;
    updateBulk();
    setStatus((kind === "approve" ? "Approving " : "Rejecting ") + holds.length + " holds…");
    try {
      const data = obj(await api("POST", "/api/holds/review", { verdict: kind, comment, holds }));
      const results = arr(data.results).map(obj);
      for (const r of results) {
        if (r.status === 200) state.picked.delete(JSON.stringify([str(r.key), str(r.intent_id)]));
      }
      const refused = results.filter((r) => r.status !== 200);
      let text = (kind === "approve" ? "Approved " : "Rejected ") + (results.length - refused.length) + " of " + results.length + ".";
      if (refused.length) {
        text += " Not reviewed: " + refused.slice(0, 5).map((r) =>
          str(r.intent_id) + " (" + str(r.message) + ")").join("; ") + (refused.length > 5 ? "; …" : "");
      }
      setStatus(text, refused.length > 0);
      if (!refused.length) box.value = "";
    } catch (err) {
      report(err, kind === "approve" ? "Could not approve the selection" : "Could not reject the selection");
    } finally {
      state.busy = false;
      updateBulk();
      loadHolds();
    }
  }

  // ---- History of ended reviews ----------------------------------------------------------

  async function loadHistory() {
    if (state.hLoading) return;
    state.hLoading = true;
    try {
      const params = new URLSearchParams(state.hQuery);
      params.set("limit", String(PAGE));
      params.set("offset", String(state.hOffset));
      const data = obj(await api("GET", "/api/history?" + params.toString()));
      if (!state.session) return;
      renderHistory(arr(data.reviews).map(obj), typeof data.count === "number" ? data.count : 0);
    } catch (err) {
      report(err, "Could not load the history");
    } finally {
      state.hLoading = false;
    }
  }

  const OUTCOMES = { approve: "approved", reject: "rejected", expire: "expired" };

  function renderHistory(items, count) {
    state.hCount = count;
    const rows = items.map((e) => {
      const amount = el("td", { class: "amount" });
      if (str(e.amount)) {
        amount.append(el("span", { class: "amt", text: formatAmount(e.amount) }), " ",
          el("span", { class: "ccy", text: str(e.currency) }));
        if (str(e.base_amount) && str(e.base_currency) && str(e.base_currency) !== str(e.currency)) {
          amount.append(el("span", { class: "sub", text: "≈ " + formatAmount(e.base_amount) + " " + str(e.base_currency) }));
        }
      } else {
        amount.append(none());
      }
      const outcome = str(e.outcome);
      return el("tr", { class: "ended-row" },
        el("td", {}, timeNode(e.reviewed_at)),
        el("td", {}, el("span", { class: "tag tag-" + outcome, text: OUTCOMES[outcome] || outcome })),
        el("td", {}, show(e.reviewer)),
        el("td", {}, show(e.intent_id), el("span", { class: "sub", text: arr(e.rules).map(str).join(", ") })),
        el("td", {}, show(e.agent_id)),
        el("td", {}, show(e.account_id)),
        amount,
        el("td", { class: "comment" }, show(e.comment)));
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 8, class: "empty", text: "No ended reviews." })));
    $("history-body").replaceChildren(...rows);
    $("history-count").textContent = count.toLocaleString("en") + " ended";
    setPager("h", state.hOffset, items.length, count);
  }

  /** Shows the queue or the history. */
  function showView(view) {
    state.view = view;
    const queue = view === "queue";
    $("queue-view").hidden = !queue;
    $("history-view").hidden = queue;
    $("tab-queue").setAttribute("aria-pressed", String(queue));
    $("tab-history").setAttribute("aria-pressed", String(!queue));
    if (queue) loadHolds(); else loadHistory();
  }

  // ---- Filters and pages of the two lists -----------------------------------------------

  /** The queue and the history: their filters, where their state is, how each loads. */
  const LISTS = {
    queue: { filters: FILTERS, query: "query", offset: "offset", count: "count",
      load: () => loadHolds(), focus: "hold-count" },
    history: { filters: HISTORY_FILTERS, query: "hQuery", offset: "hOffset", count: "hCount",
      load: () => loadHistory(), focus: "history-count" },
  };

  function applyFilters(list, ev) {
    ev.preventDefault();
    const params = new URLSearchParams();
    for (const [id, key] of list.filters) {
      const v = $(id).value.trim();
      if (v) params.set(key, v);
    }
    state[list.query] = params.toString();
    state[list.offset] = 0;
    list.load();
  }

  function clearFilters(list) {
    for (const [id] of list.filters) $(id).value = "";
    state[list.query] = "";
    state[list.offset] = 0;
    list.load();
    setStatus("Filters cleared.");
  }

  function turnPage(list, delta) {
    const next = Math.max(0, state[list.offset] + delta * PAGE);
    if (next === state[list.offset] || next >= state[list.count]) return;
    state[list.offset] = next;
    list.load();
    $(list.focus).focus();
  }

  // ---- Detail --------------------------------------------------------------------------

  /** Shows one hold. `refresh` re-reads the open hold without moving focus or clearing input. */
  async function openDetail(id, opts) {
    // Choosing the hold that is already open re-reads it, keeping the comment being written.
    const refresh = Boolean(opts && opts.refresh) || (state.selectedId === id && !$("detail").hidden);
    const seq = ++state.detailSeq;
    if (refresh && opts && opts.focus) $("detail-title").focus();
    if (!refresh || state.selectedId !== id) {
      state.selectedId = id;
      state.detailLoading = true;
      state.detailGone = false;
      state.approvals = null;
      state.approvalsKey = "";
      state.record = null;
      for (const r of $("holds-body").rows) markRow(r, r.dataset.ref === id);
      $("detail-title").textContent = "Hold " + holdLabel(id);
      clear($("detail-body"));
      $("intent-json").textContent = "";
      $("comment").value = "";
      $("comment").removeAttribute("aria-invalid");
      setDetailStatus("Loading…");
      $("detail").hidden = false;
      $("panes").classList.add("with-detail");
      updateActions(null);
      if (opts && opts.focus) $("detail-title").focus();
    }
    const firstRead = state.detailLoading; // "Loading…" is showing
    try {
      const data = obj(await api("GET", holdPath(id)));
      if (seq !== state.detailSeq || !state.session) return;
      state.detailLoading = false;
      state.detailGone = false;
      renderDetail(obj(data.hold), obj(data.decision));
      if (firstRead) setDetailStatus("");
    } catch (err) {
      if (seq !== state.detailSeq) return;
      state.detailLoading = false;
      if (err.status === 404) {
        state.detailGone = true;
        state.approvals = null;
        updateActions(null);
        setDetailStatus(err.message || holdLabel(id) + " is no longer pending.");
      } else {
        report(err, "Could not load " + holdLabel(id), setDetailStatus);
      }
    }
  }

  function closeDetail(returnFocus) {
    const id = state.selectedId;
    state.selectedId = null;
    state.detailSeq++;
    state.detailLoading = state.detailGone = false;
    state.approvals = null;
    state.approvalsKey = "";
    state.record = null;
    $("detail").hidden = true;
    $("panes").classList.remove("with-detail");
    clear($("detail-body"));
    $("intent-json").textContent = "";
    $("comment").value = "";
    setDetailStatus("");
    for (const r of $("holds-body").rows) markRow(r, false);
    if (returnFocus) (rowFor(id) || $("hold-count")).focus();
  }

  function renderDetail(hold, dec) {
    const intent = obj(dec.intent);
    const pick = (k) => (hold[k] !== undefined ? hold[k] : intent[k]);
    const cp = obj(hold.counterparty || intent.counterparty);
    const src = obj(dec.source);      // where the intent was read from
    const rec = obj(hold.record);     // where the hold decision is on the decisions topic
    // Sent back with a review, so that it answers the very decision shown (409 otherwise).
    state.record = Number.isInteger(rec.partition) && Number.isInteger(rec.offset)
      ? { partition: rec.partition, offset: rec.offset } : null;
    const a = obj(hold.approvals);
    state.approvals = a;
    state.approvalsKey = JSON.stringify(hold.approvals || null);

    // Facts as a definition list.
    const dl = el("dl", { class: "facts" });
    const fact = (label, value) => dl.append(el("dt", { text: label }),
      el("dd", {}, value instanceof Node ? value : show(value)));
    fact("Intent", pick("intent_id"));
    fact("Agent", pick("agent_id"));
    fact("Account", pick("account_id"));
    fact("Action", pick("action"));
    fact("Amount", str(pick("amount")) ? el("span", { class: "amt", text: formatAmount(pick("amount")) }) : none());
    fact("Currency", pick("currency"));
    if (hold.base_unknown === true) {
      fact("Base amount", "unknown: no " + (str(hold.base_currency) || "base") + " rate for " + str(pick("currency")));
    } else if (str(hold.base_amount) && str(hold.base_currency)) {
      fact("Base amount", formatAmount(hold.base_amount) + " " + str(hold.base_currency));
    }
    fact("Counterparty name", cp.name);
    fact("Counterparty id", cp.id);
    fact("Counterparty country", cp.country);
    fact("Counterparty account", cp.account);
    fact("Score", scoreText(hold) || (hold.score !== undefined ? hold.score : dec.score));
    if (str(dec.decision)) fact("Decision", dec.decision);
    const by = arr(a.approved_by).map(str).filter(Boolean);
    const required = Number(a.required);
    fact("Approvals", (required > 0 ? by.length + " of " + required : "") +
      (by.length ? " (approved by " + by.join(", ") + ")" : ""));
    state.whyNot = hold.may_approve === false ? str(hold.why_not) : "";
    fact("Created at", timeNode(pick("created_at")));
    fact("Decided at", timeNode(hold.decided_at || dec.decided_at));
    fact("Expires at", timeNode(hold.expires_at, true));
    fact("Ruleset", hold.ruleset || dec.ruleset);
    if (str(src.file)) {
      fact("Source file", src.file);
      fact("Source line", src.line);
    } else {
      fact("Source topic", src.topic);
      fact("Source partition", src.partition);
      fact("Source offset", src.offset);
    }
    if (str(rec.partition) || str(rec.offset)) {
      fact("Hold record", "decisions partition " + (str(rec.partition) || "?") + ", offset " + (str(rec.offset) || "?"));
    }
    if (dec.duplicate === true) fact("Duplicate", "yes");

    const parts = [dl];

    // Reasons: prefer the hold's (they carry per-rule approvals), else the decision's.
    const reasons = arr(hold.reasons).length ? arr(hold.reasons) : arr(dec.reasons);
    parts.push(el("h3", { text: "Reasons" }));
    if (reasons.length) {
      parts.push(el("ul", { class: "reason-list" }, ...reasons.map((r) => {
        r = obj(r);
        const meta = [["Action", r.action], ["Score", r.score], ["Approvals", r.approvals]]
          .filter(([, v]) => str(v) !== "").map(([k, v]) => k + " " + str(v)).join(" · ");
        return el("li", { class: str(r.action) === "hold" ? "is-hold" : null },
          el("span", { class: "rule", text: str(r.rule) }),
          str(r.action) === "hold" ? el("span", { class: "tag tag-hold", text: "hold" }) : null,
          el("span", { class: "reason-msg", text: str(r.message) }),
          meta ? el("span", { class: "sub", text: meta }) : null);
      })));
    } else {
      parts.push(el("p", { class: "muted", text: "No reasons recorded." }));
    }

    const errors = arr(dec.errors).length ? arr(dec.errors) : arr(hold.errors);
    if (errors.length) {
      parts.push(el("h3", { text: "Rule errors" }), el("ul", { class: "errors" },
        ...errors.map((e) => el("li", {}, el("span", { class: "rule", text: str(obj(e).rule) }),
          ": " + str(obj(e).message)))));
    }

    const counters = Object.entries(dec.counters !== undefined ? obj(dec.counters) : obj(hold.counters));
    parts.push(el("h3", { text: "Counters" }));
    parts.push(counters.length
      ? table("Counters as the rules saw them", ["Counter", "Value"], counters, [false, true])
      : el("p", { class: "muted", text: "No counters." }));

    $("detail-body").replaceChildren(...parts);
    $("intent-json").textContent = dec.intent === undefined ? "(not available)" : JSON.stringify(dec.intent, null, 2);
    updateActions(a);
  }

  /** A small table; `numeric[i]` right-aligns column i. */
  function table(caption, heads, rows, numeric) {
    const num = numeric || [];
    return el("table", { class: "mini" },
      el("caption", { class: "visually-hidden", text: caption }),
      el("thead", {}, el("tr", {}, ...heads.map((h, i) => el("th", { scope: "col", class: num[i] ? "num" : null, text: h })))),
      el("tbody", {}, ...rows.map((cells) => el("tr", {},
        ...cells.map((c, i) => el("td", { class: num[i] ? "num" : null }, show(c)))))));
  }

  /** Shows or hides the approve/reject controls. `approvals` is null when there is nothing to act on. */
  function updateActions(approvals) {
    const allowed = canAct();
    const mine = Boolean(approvals && state.session && arr(approvals.approved_by).includes(state.session.reviewer));
    // The server says whether this reviewer may approve (the proposer never may).
    const proposer = Boolean(approvals) && state.whyNot === "proposer";
    $("detail-actions").hidden = !allowed;
    $("viewer-note").hidden = allowed;
    $("own-approval").hidden = !mine;
    $("no-approve").hidden = !proposer;
    $("no-approve").textContent = proposer ? WHY_NOT.proposer : "";
    $("approve").disabled = !allowed || !approvals || mine || proposer || state.busy;
    $("reject").disabled = !allowed || !approvals || state.busy;
  }

  /** Approves or rejects the open hold. */
  async function decide(kind) {
    const id = state.selectedId;
    if (id === null || state.busy || !canAct()) return;
    const box = $("comment");
    const comment = box.value.trim();
    if (kind === "reject" && !comment) {
      box.setAttribute("aria-invalid", "true");
      setDetailStatus("A comment is required to reject.", true);
      box.focus();
      return;
    }
    box.removeAttribute("aria-invalid");
    state.busy = true;
    $("approve").disabled = $("reject").disabled = true;
    setDetailStatus(kind === "approve" ? "Approving…" : "Rejecting…");
    try {
      const body = comment ? { comment } : {};
      if (state.record) body.record = state.record;
      const data = obj(await api("POST", holdPath(id, "/" + kind), body));
      state.busy = false;
      // `final`: this review ended the hold (approved and released, or rejected).
      // Without it, released=false means the approval still needs another approver.
      const ended = data.final !== undefined ? data.final === true : data.released !== false;
      if (!ended) {
        const msg = "Approval recorded; a second approver is needed";
        if (state.selectedId === id) {
          box.value = "";
          setDetailStatus(msg);
          openDetail(id, { refresh: true });
        } else {
          setStatus(msg + " (" + holdLabel(id) + ")");
        }
      } else {
        if (state.selectedId === id) closeDetail(true);
        setStatus((kind === "approve" ? "Approved " : "Rejected ") + holdLabel(id));
      }
      loadHolds();
    } catch (err) {
      state.busy = false;
      if (state.selectedId === id) {
        report(err, kind === "approve" ? "Could not approve" : "Could not reject", setDetailStatus);
        if (err.status === 404 || err.status === 409) openDetail(id, { refresh: true });
        else updateActions(state.detailGone ? null : state.approvals);
      } else {
        report(err, "Could not " + kind + " " + holdLabel(id));
      }
      if (err.status === 404 || err.status === 409) loadHolds();
    }
  }

  // ---- Live updates --------------------------------------------------------------------

  function startLive() {
    stopLive();
    state.ageTimer = setInterval(updateAges, 1000);
    connectEvents();
  }

  function stopLive() {
    if (state.es) state.es.close();
    state.es = null;
    clearTimeout(state.esTimer);
    clearInterval(state.ageTimer);
    stopPolling();
    state.esRetryMs = SSE_RETRY_MIN_MS;
    state.esFailed = false;
  }

  /** Listens for `holds` events; on error polls instead and retries with backoff. */
  function connectEvents() {
    if (!state.session) return;
    if (typeof EventSource === "undefined") { startPolling(); return; }
    const es = new EventSource("/api/events");
    state.es = es;
    es.addEventListener("open", () => {
      state.esRetryMs = SSE_RETRY_MIN_MS;
      stopPolling();
      if (state.esFailed) { state.esFailed = false; loadHolds(); } // catch up on missed events
    });
    es.addEventListener("holds", () => (state.view === "queue" ? loadHolds() : loadHistory()));
    es.addEventListener("error", () => {
      es.close();
      if (state.es !== es || !state.session) return;
      state.es = null;
      state.esFailed = true;
      startPolling();
      clearTimeout(state.esTimer);
      state.esTimer = setTimeout(connectEvents, state.esRetryMs);
      state.esRetryMs = Math.min(state.esRetryMs * 2, SSE_RETRY_MAX_MS);
    });
  }

  function startPolling() {
    if (state.pollTimer) return;
    loadHolds();
    state.pollTimer = setInterval(loadHolds, POLL_MS);
  }

  function stopPolling() {
    clearInterval(state.pollTimer);
    state.pollTimer = 0;
  }

  // ---- Wiring --------------------------------------------------------------------------

  function onRowActivate(ev) {
    const tr = ev.target.closest("tr[data-intent-id]");
    if (!tr) return;
    if (ev.target.matches && ev.target.matches("input.pick")) {
      if (ev.type === "click") togglePick(tr, ev.target.checked);
      return;
    }
    if (ev.type === "keydown" && (ev.key === "x" || ev.key === "X") && ev.target === tr) {
      ev.preventDefault();
      togglePick(tr, !state.picked.has(tr.dataset.ref));
      return;
    }
    if (ev.type === "click") {
      const sel = window.getSelection && window.getSelection();
      if (sel && !sel.isCollapsed && tr.contains(sel.anchorNode)) return; // the user is copying text
      openDetail(tr.dataset.ref, { focus: true });
      return;
    }
    if (ev.target !== tr) return;
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      openDetail(tr.dataset.ref, { focus: true });
    } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      const next = ev.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
      if (next && next.dataset.intentId !== undefined) { ev.preventDefault(); next.focus(); }
    }
  }

  async function boot() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("filters").addEventListener("submit", (ev) => applyFilters(LISTS.queue, ev));
    $("f-clear").addEventListener("click", () => clearFilters(LISTS.queue));
    $("tab-queue").addEventListener("click", () => showView("queue"));
    $("tab-history").addEventListener("click", () => showView("history"));
    $("page-prev").addEventListener("click", () => turnPage(LISTS.queue, -1));
    $("page-next").addEventListener("click", () => turnPage(LISTS.queue, 1));
    $("pick-page").addEventListener("change", (ev) => pickPage(ev.target.checked));
    $("bulk-approve").addEventListener("click", () => bulkReview("approve"));
    $("bulk-reject").addEventListener("click", () => bulkReview("reject"));
    $("bulk-clear").addEventListener("click", () => { state.picked.clear(); renderHolds(state.holds, state.count); });
    $("bulk-comment").addEventListener("input", () => $("bulk-comment").removeAttribute("aria-invalid"));
    $("h-filters").addEventListener("submit", (ev) => applyFilters(LISTS.history, ev));
    $("h-clear").addEventListener("click", () => clearFilters(LISTS.history));
    $("h-prev").addEventListener("click", () => turnPage(LISTS.history, -1));
    $("h-next").addEventListener("click", () => turnPage(LISTS.history, 1));
    $("holds-body").addEventListener("click", onRowActivate);
    $("holds-body").addEventListener("keydown", onRowActivate);
    $("detail-close").addEventListener("click", () => closeDetail(true));
    $("detail").addEventListener("keydown", (ev) => {
      // Escape closes the panel, except from a comment being written (it would be lost).
      if (ev.key !== "Escape") return;
      if (ev.target === $("comment") && $("comment").value.trim()) return;
      ev.preventDefault();
      closeDetail(true);
    });
    $("approve").addEventListener("click", () => decide("approve"));
    $("reject").addEventListener("click", () => decide("reject"));
    $("comment").addEventListener("input", () => $("comment").removeAttribute("aria-invalid"));
    $("login-submit").disabled = false;

    try {
      signedIn(await api("GET", "/api/session"));
    } catch (err) {
      showLogin(err.status === 401 ? "" : err.message);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
