// FusionFrames page: a form that queues jobs, a live queue, a player and a gallery.
// Every piece of user data (prompts, errors, settings) is put into the page with textContent or as
// attribute values, never parsed as HTML.
"use strict";

(() => {
  const ACTIVE = ["queued", "running"];
  const MAX_STREAMS = 3; // browsers allow ~6 connections per host; leave room for fetches and videos
  const TOKEN_KEY = "fusionframes-token";

  // -- token: taken from ?token= once, kept for this tab, removed from the address bar ----------------
  const query = new URLSearchParams(location.search);
  let token = query.get("token") || sessionStorage.getItem(TOKEN_KEY) || "";
  if (query.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, token);
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
  }

  const $ = (id) => document.getElementById(id);
  const form = $("job-form");
  const jobs = new Map(); // id -> latest JobStatus
  const mine = new Set(); // jobs submitted from this page: played when they finish
  const streams = new Map(); // id -> EventSource
  const queueItems = new Map(); // id -> {li, state, bar}
  let imageLimit = 0; // bytes; 0 until /api/models says the model takes an image
  let galleryKey = "";
  let refreshTimer = null;

  function withToken(url) {
    if (!token) return url;
    const u = new URL(url, location.origin);
    u.searchParams.set("token", token);
    return u.pathname + u.search;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    node.append(...children); // strings become text nodes
    return node;
  }

  function describeError(status, data) {
    const detail = data && data.detail;
    if (Array.isArray(detail)) {
      return detail
        .map((d) => {
          const field = (d.loc || []).filter((p) => p !== "body").join(".");
          const msg = String(d.msg || "");
          return field && !msg.startsWith(field + ":") ? `${field}: ${msg}` : msg;
        })
        .join("\n");
    }
    if (typeof detail === "string") return detail;
    if (status === 401) return "This server needs a token: open the page as /?token=YOUR_TOKEN";
    return `HTTP ${status}`;
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    let body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    const response = await fetch(path, {
      method: options.method || "GET",
      headers,
      body,
      credentials: "same-origin",
    });
    let data = null;
    if (response.status !== 204) {
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      const error = new Error(describeError(response.status, data));
      error.status = response.status;
      error.data = data;
      throw error;
    }
    return data;
  }

  // -- the form ------------------------------------------------------------------------------------------

  function currentModes() {
    const mode = form.elements.mode.value;
    return mode === "movie" ? ["movie", "movie-" + form.elements.scene_mode.value] : [mode];
  }

  function updateVisibility() {
    const modes = currentModes();
    for (const node of document.querySelectorAll("[data-modes]")) {
      node.hidden = !node.dataset.modes.split(" ").some((m) => modes.includes(m));
    }
    const numeric = modes.includes("animate") || modes.includes("movie-animate");
    document.querySelector('[data-fps="level"]').hidden = numeric;
    document.querySelector('[data-fps="number"]').hidden = !numeric;
  }

  function visibleValue(name) {
    const input = form.elements[name];
    if (!input || input.closest("[hidden]")) return undefined;
    const value = input.value.trim();
    return value === "" ? undefined : value;
  }

  function numberOrText(value) {
    if (value === undefined) return undefined;
    const n = Number(value);
    return Number.isFinite(n) ? n : value; // the server names the field if it is not a number
  }

  function readDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("image: cannot read " + (file.name || "the image")));
      reader.readAsDataURL(file);
    });
  }

  async function buildRequest() {
    const f = form.elements;
    const body = { mode: f.mode.value, format: f.format.value };
    const put = (key, value) => {
      if (value !== undefined) body[key] = value;
    };
    put("prompt", visibleValue("prompt"));
    put("negative_prompt", visibleValue("negative_prompt"));
    for (const name of ["width", "height", "seed", "num_inference_steps", "guidance_scale", "seconds", "strength"]) {
      put(name, numberOrText(visibleValue(name)));
    }
    put("fps", visibleValue("fps") || numberOrText(visibleValue("fps_number")));
    put("motion", visibleValue("motion"));
    if (body.mode === "t2v") {
      put("motion", numberOrText(visibleValue("motion_level")));
      const file = f.image.closest("[hidden]") ? undefined : f.image.files[0];
      if (file) {
        if (file.size > imageLimit) throw new Error(`image: ${file.name} is larger than ${imageLimit >> 20} MiB`);
        body.image = await readDataUrl(file);
      }
    }
    if (body.mode === "movie") {
      body.scenes = f.scenes.value.split("\n").map((s) => s.trim()).filter(Boolean);
      const durations = visibleValue("durations");
      if (durations) body.durations = durations.split(",").map((d) => numberOrText(d.trim()));
      body.scene_mode = f.scene_mode.value;
      body.transition = f.transition.value;
    }
    return body;
  }

  function fillForm(request) {
    form.reset();
    const f = form.elements;
    f.mode.value = request.mode || "t2v";
    if (request.scene_mode) f.scene_mode.value = request.scene_mode;
    if (request.transition) f.transition.value = request.transition;
    updateVisibility();
    const simple = ["prompt", "negative_prompt", "width", "height", "seed", "num_inference_steps",
      "guidance_scale", "seconds", "strength", "format"];
    for (const name of simple) {
      if (request[name] !== undefined && f[name]) f[name].value = request[name];
    }
    if (typeof request.motion === "string" && request.mode !== "t2v") f.motion.value = request.motion;
    if (request.mode === "t2v" && request.motion !== undefined) f.motion_level.value = String(request.motion);
    if (typeof request.fps === "number") f.fps_number.value = request.fps;
    else if (request.fps) f.fps.value = request.fps;
    if (request.scenes) f.scenes.value = request.scenes.join("\n");
    if (request.durations) f.durations.value = request.durations.join(", ");
    form.scrollIntoView({ behavior: "smooth" });
  }

  function showError(message) {
    $("form-error").textContent = message;
  }

  async function submitJob(request) {
    showError("");
    const job = await api("/api/jobs", { method: "POST", json: request });
    mine.add(job.id);
    jobs.set(job.id, job);
    renderQueueItem(job);
    watch(job.id);
    scheduleRefresh(300);
    return job;
  }

  // A job made from an image: its request holds the image's description; the image is fetched back.
  async function rerun(job) {
    const request = { ...job.request };
    if (request.image && typeof request.image === "object") {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const response = await fetch(`/api/jobs/${job.id}/image`, { headers, credentials: "same-origin" });
      if (!response.ok) throw new Error(describeError(response.status, await response.json().catch(() => null)));
      request.image = await readDataUrl(await response.blob());
    }
    return submitJob(request);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("submit");
    button.disabled = true;
    try {
      await submitJob(await buildRequest());
    } catch (error) {
      showError(error.message);
    } finally {
      button.disabled = false;
    }
  });
  form.addEventListener("change", updateVisibility);
  form.addEventListener("reset", () => setTimeout(updateVisibility, 0));

  // -- describing jobs -----------------------------------------------------------------------------------

  function jobTitle(job) {
    const request = job.request || {};
    if (request.scenes) return request.scenes.join(" / ");
    return request.prompt || "(no prompt)";
  }

  function seconds(value) {
    if (value === null || value === undefined) return "";
    return value < 90 ? `${Math.round(value)} s` : `${Math.round(value / 60)} min`;
  }

  function describeStatus(job) {
    if (job.status === "queued") {
      const eta = job.eta_seconds !== null ? ` · done in ~${seconds(job.eta_seconds)}` : "";
      return `queued #${job.queue_position}${eta}`;
    }
    if (job.status === "running") {
      const stage = job.stages.find((s) => s.name === job.stage);
      const steps = stage ? ` ${stage.step}/${stage.total}` : "";
      const eta = job.eta_seconds !== null ? ` · ~${seconds(job.eta_seconds)} left` : "";
      const cancelling = job.cancel_requested ? " · cancelling" : "";
      return `${job.stage || "starting"}${steps} · ${Math.round(job.progress * 100)}%${eta}${cancelling}`;
    }
    return job.status + (job.error ? `: ${job.error}` : "");
  }

  function summary(job) {
    const s = job.settings || {};
    const r = job.result || {};
    const parts = [job.mode];
    const width = r.width || s.width;
    const height = r.height || s.height;
    if (width && height) parts.push(`${width}×${height}`);
    if (r.num_frames) parts.push(`${r.num_frames} frames @ ${Number(r.fps.toFixed(3))} fps`);
    else if (s.fps !== undefined) parts.push(`fps ${s.fps}`);
    const steps = s.num_inference_steps || s.steps;
    if (steps) parts.push(`${steps} steps`);
    if (s.guidance_scale !== undefined) parts.push(`guidance ${s.guidance_scale}`);
    if (typeof s.motion === "string") parts.push(s.motion);
    if (s.transition) parts.push(s.transition);
    if (s.seed !== undefined && s.seed !== null) parts.push(`seed ${s.seed}`);
    return parts.join(" · ");
  }

  function videoUrl(job, format, download = false) {
    const params = new URLSearchParams({ format });
    if (download) params.set("download", "1");
    return withToken(`/api/jobs/${job.id}/video?${params}`);
  }

  // -- player --------------------------------------------------------------------------------------------

  function play(job) {
    const player = $("player");
    player.src = videoUrl(job, "mp4");
    player.dataset.job = job.id;
    player.dataset.frames = job.result ? String(job.result.num_frames) : "";
    player.dataset.fps = job.result ? String(job.result.fps) : "";
    $("player-caption").textContent = `${jobTitle(job)} — ${summary(job)}`;
    const format = (job.request && job.request.format) || "mp4";
    const link = $("download");
    link.href = videoUrl(job, format, true);
    link.textContent = `Download ${format.toUpperCase()}`;
    link.classList.remove("hidden");
    player.play().catch(() => {});
  }

  // -- queue ---------------------------------------------------------------------------------------------

  function renderQueueItem(job) {
    let item = queueItems.get(job.id);
    if (!item) {
      const state = el("span", { class: "state" });
      const bar = el("progress", { max: "1", value: "0" });
      const cancel = el("button", { type: "button", class: "secondary small", onclick: () => cancelJob(job.id) }, "Cancel");
      const li = el("li", { "data-job": job.id }, el("span", { class: "prompt" }, jobTitle(job)), state, bar, cancel);
      item = { li, state, bar };
      queueItems.set(job.id, item);
      $("queue").append(li);
    }
    item.bar.value = job.progress;
    item.state.textContent = describeStatus(job);
    item.li.dataset.status = job.status;
    $("queue-empty").hidden = queueItems.size > 0;
  }

  function dropQueueItem(id) {
    const item = queueItems.get(id);
    if (item) item.li.remove();
    queueItems.delete(id);
    $("queue-empty").hidden = queueItems.size > 0;
  }

  async function cancelJob(id) {
    try {
      const job = await api(`/api/jobs/${id}/cancel`, { method: "POST" });
      jobs.set(id, job);
      if (ACTIVE.includes(job.status)) renderQueueItem(job);
      else dropQueueItem(id);
    } catch (error) {
      showError(error.message);
    }
    scheduleRefresh(200);
  }

  function watch(id) {
    if (streams.has(id) || streams.size >= MAX_STREAMS || !window.EventSource) return;
    const source = new EventSource(withToken(`/api/jobs/${id}/events`));
    streams.set(id, source);
    const stop = () => {
      source.close();
      streams.delete(id);
    };
    source.addEventListener("status", (event) => {
      const job = JSON.parse(event.data);
      jobs.set(id, job);
      if (ACTIVE.includes(job.status)) {
        renderQueueItem(job);
        return;
      }
      stop();
      finished(job);
    });
    source.addEventListener("deleted", () => {
      stop();
      dropQueueItem(id);
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) stop();
    };
  }

  function finished(job) {
    dropQueueItem(job.id);
    if (job.status === "done" && (mine.has(job.id) || !$("player").dataset.job)) play(job);
    mine.delete(job.id);
    scheduleRefresh(100);
  }

  // -- gallery -------------------------------------------------------------------------------------------

  function galleryCard(job) {
    const card = el("article", { class: "card", "data-job": job.id, "data-status": job.status });
    if (job.status === "done") {
      const thumb = el("video", { preload: "metadata", playsinline: "", loop: "" });
      thumb.muted = true;
      thumb.src = videoUrl(job, "mp4") + "#t=0.01"; // the fragment makes browsers paint the first frame
      thumb.addEventListener("mouseenter", () => thumb.play().catch(() => {}));
      thumb.addEventListener("mouseleave", () => thumb.pause());
      thumb.addEventListener("click", () => play(job));
      card.append(thumb);
    }
    card.append(el("p", { class: "prompt" }, jobTitle(job)));
    card.append(el("p", { class: "settings" }, summary(job)));
    if (job.status !== "done") card.append(el("p", { class: "state" }, describeStatus(job)));
    const buttons = el("div", { class: "buttons" });
    if (job.status === "done") {
      buttons.append(el("button", { type: "button", onclick: () => play(job) }, "Play"));
      const format = (job.request && job.request.format) || "mp4";
      buttons.append(el("a", { class: "button secondary", href: videoUrl(job, format, true), download: "" }, format.toUpperCase()));
    }
    buttons.append(el("button", { type: "button", class: "secondary", title: "same settings and seed",
      onclick: () => rerun(job).catch((e) => showError(e.message)) }, "Re-run"));
    buttons.append(el("button", { type: "button", class: "secondary", onclick: () => fillForm(job.request) }, "Edit"));
    buttons.append(el("button", { type: "button", class: "secondary danger", onclick: () => deleteJob(job.id) }, "Delete"));
    card.append(buttons);
    return card;
  }

  function renderGallery(list) {
    const done = list.filter((job) => !ACTIVE.includes(job.status));
    const key = done.map((job) => job.id + job.status).join(",");
    $("gallery-empty").hidden = done.length > 0;
    if (key === galleryKey) return;
    galleryKey = key;
    $("gallery").replaceChildren(...done.map(galleryCard));
  }

  async function deleteJob(id) {
    try {
      await api(`/api/jobs/${id}`, { method: "DELETE" });
      if ($("player").dataset.job === id) {
        $("player").removeAttribute("src");
        delete $("player").dataset.job;
        $("download").classList.add("hidden");
        $("player-caption").textContent = "Finished videos play here.";
      }
    } catch (error) {
      showError(error.message);
    }
    scheduleRefresh(50);
  }

  // -- polling -------------------------------------------------------------------------------------------

  async function refresh() {
    let active = false;
    try {
      const data = await api("/api/jobs?limit=60");
      const seen = new Set();
      for (const job of data.jobs) {
        jobs.set(job.id, job);
        if (ACTIVE.includes(job.status)) {
          active = true;
          seen.add(job.id);
          renderQueueItem(job);
          if (job.status === "running") watch(job.id);
        } else if (queueItems.has(job.id)) {
          finished(job);
        }
      }
      for (const id of [...queueItems.keys()]) if (!seen.has(id)) dropQueueItem(id);
      renderGallery(data.jobs);
      showQueueCount(data.counts.queued + data.counts.running);
    } catch (error) {
      $("server-status").textContent = error.message;
    }
    scheduleRefresh(active ? 1500 : 8000);
  }

  function scheduleRefresh(delay) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, delay);
  }

  let serverLine = "";

  function showQueueCount(count) {
    if (serverLine) $("server-status").textContent = `${serverLine} · ${count} in queue`;
  }

  async function health() {
    let data;
    try {
      data = await api("/api/health");
    } catch (error) {
      data = error.data && error.data.status ? error.data : null;
      if (!data) {
        $("server-status").textContent = error.message;
        setTimeout(health, 5000);
        return;
      }
    }
    const statusText = { ok: "ready", loading: "loading the model…", error: "model failed to load" };
    serverLine = `${statusText[data.status]} · model ${data.model}`;
    showQueueCount(data.jobs.queued + data.jobs.running);
    $("server-status").dataset.status = data.status;
    setTimeout(health, data.status === "ok" ? 10000 : 2000);
  }

  // What the model takes beyond a prompt (an image, a motion level): shown only when it does; a note
  // says what it does not.
  function showModelInputs(current) {
    const inputs = current.inputs || [];
    for (const node of document.querySelectorAll("[data-input]")) {
      node.hidden = !inputs.includes(node.dataset.input);
    }
    imageLimit = (current.image && current.image.max_bytes) || 0;
    for (const [name, score] of Object.entries(current.motion_levels || {})) {
      form.elements.motion_level.append(el("option", { value: name }, `${name} (${score})`));
    }
    const note = $("inputs-note");
    const notes = current.notes || [];
    note.textContent = notes.length ? "Not with this model: " + notes.join("; ") + "." : "";
    note.hidden = !notes.length;
  }

  async function loadOptions() {
    try {
      const info = await api("/api/models");
      for (const option of form.elements.mode.options) {
        const mode = info.modes[option.value];
        if (mode && !mode.available) {
          option.disabled = true;
          option.title = mode.reason || "not available";
        }
      }
      const presets = (info.modes.animate && info.modes.animate.options.motion_presets) || [];
      for (const name of presets) form.elements.motion.append(el("option", { value: name }, name));
      showModelInputs(info.current);
      const step = info.current.pixel_multiple;
      for (const name of ["width", "height"]) {
        form.elements[name].step = String(step);
        form.elements[name].max = String(info.limits.max_size);
        form.elements[name].placeholder = String(info.current.defaults[name]);
      }
    } catch (error) {
      showError(error.message);
    }
  }

  updateVisibility();
  loadOptions();
  health();
  refresh();
})();
