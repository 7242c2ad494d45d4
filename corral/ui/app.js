// Corral's web chat: models from /api/tags, answers streamed from /api/chat, conversations in localStorage.
//
// Every piece of text that came from a model or from storage reaches the page through textContent or the DOM-only
// Markdown renderer, never as HTML.

import { api, errorText, ndjson, onKeyNeeded } from "./api.js";
import * as store from "./chats.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);

const ui = {
  model: $("model"), prompt: $("prompt"), send: $("send"), stop: $("stop"), messages: $("messages"),
  composer: $("composer"), attach: $("attach"), file: $("file"), attachments: $("attachments"),
  thinkRow: $("think-row"), think: $("think"), notice: $("notice"), chats: $("chats"), newChat: $("new-chat"),
  menu: $("menu"), scrim: $("scrim"), theme: $("theme"), details: $("details"),
  settings: $("settings"), settingsForm: $("settings-form"), settingsOpen: $("settings-open"),
  settingsCancel: $("settings-cancel"), settingsError: $("settings-error"), system: $("system"),
  temperature: $("temperature"), numCtx: $("num-ctx"), numPredict: $("num-predict"), keepAlive: $("keep-alive"),
  info: $("info"), infoTitle: $("info-title"), infoBody: $("info-body"), infoClose: $("info-close"),
  pull: $("pull"), pullForm: $("pull-form"), pullOpen: $("pull-open"), pullName: $("pull-name"),
  pullProgress: $("pull-progress"), pullStatus: $("pull-status"), pullClose: $("pull-close"),
  pullStart: $("pull-start"), pullInsecure: $("pull-insecure"),
  key: $("key"), keyForm: $("key-form"), keyInput: $("api-key"), keyMessage: $("key-message"),
  keyCancel: $("key-cancel"),
};

const state = {
  chats: [],
  chat: null,
  models: [],
  shows: new Map(), // model name -> Promise of its /api/show answer
  caps: [],
  busy: false,
  controller: null,
  streaming: null, // {msg, view}: the answer being written, wherever its conversation is shown
  attachments: [], // [{name, data (base64)}]
  settings: store.loadSettings(),
  pullController: null,
  noticeKind: "",
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- notices -------------------------------------------------------------------------------------------------------

function notice(text, kind = "info", action = null) {
  ui.notice.replaceChildren(el("span", "", text));
  if (action) {
    const button = el("button", "link", action.label);
    button.type = "button";
    button.addEventListener("click", action.run);
    ui.notice.append(button);
  }
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
  state.noticeKind = kind;
}

function clearNotice(kind) {
  if (kind && state.noticeKind !== kind) return;
  ui.notice.hidden = true;
  state.noticeKind = "";
}

// -- API key -------------------------------------------------------------------------------------------------------

function askForKey(refused) {
  return new Promise((resolve) => {
    ui.keyMessage.textContent = refused
      ? "The server refused that key. Enter the API key again."
      : "This server requires an API key (the CORRAL_API_KEY it was started with).";
    ui.keyInput.value = "";
    const finish = (value) => {
      ui.keyForm.onsubmit = null;
      ui.keyCancel.onclick = null;
      ui.key.oncancel = null;
      if (ui.key.open) ui.key.close();
      resolve(value);
    };
    ui.keyForm.onsubmit = (event) => {
      event.preventDefault();
      finish(ui.keyInput.value.trim() || null);
    };
    ui.keyCancel.onclick = () => finish(null);
    ui.key.oncancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    if (!ui.key.open) ui.key.showModal();
    ui.keyInput.focus();
  });
}

// -- models --------------------------------------------------------------------------------------------------------

function modelInfo(name) {
  if (!state.shows.has(name)) {
    const request = api("api/show", { method: "POST", body: { model: name } }).then(async (response) => {
      if (!response.ok) throw new Error(await errorText(response));
      return response.json();
    });
    request.catch(() => state.shows.delete(name));
    state.shows.set(name, request);
  }
  return state.shows.get(name);
}

async function loadModels(prefer) {
  let response;
  try {
    response = await api("api/tags");
  } catch (err) {
    notice("Cannot reach the Corral server: " + err.message, "error");
    return;
  }
  if (!response.ok) {
    const retry = response.status === 401 ? { label: "Enter the API key", run: () => loadModels(prefer) } : null;
    notice(await errorText(response), "error", retry);
    return;
  }
  clearNotice("error");
  const data = await response.json();
  state.models = (data.models || []).map((m) => m.name || m.model).filter(Boolean).sort();
  state.shows.clear();
  if (!state.models.length) {
    const none = el("option", "", "No models");
    none.value = "";
    ui.model.replaceChildren(none);
    notice("No models in the store yet.", "models", { label: "Pull a model", run: openPull });
    return;
  }
  clearNotice("models");
  ui.model.replaceChildren(...state.models.map((name) => {
    const option = el("option", "", name);
    option.value = name;
    return option;
  }));
  // A name typed without a tag is listed with ":latest".
  const tagged = prefer && !prefer.split("/").pop().includes(":") ? prefer + ":latest" : null;
  const wanted = [prefer, tagged, state.chat && state.chat.model, store.lastModel()]
    .find((n) => state.models.includes(n));
  await selectModel(wanted || await firstChatModel());
}

async function firstChatModel() {
  for (const name of state.models) {
    try {
      if (((await modelInfo(name)).capabilities || []).includes("completion")) return name;
    } catch (_) {
      // try the next one
    }
  }
  return state.models[0];
}

async function selectModel(name) {
  ui.model.value = name;
  store.setLastModel(name);
  let show = null;
  try {
    show = await modelInfo(name);
  } catch (err) {
    if (ui.model.value !== name) return;
    state.caps = [];
    updateButtons();
    notice(`${name}: ${err.message}`, "model");
    return;
  }
  if (ui.model.value !== name) return; // another pick while this one was asked about
  state.caps = show.capabilities || [];
  const vision = state.caps.includes("vision");
  ui.attach.hidden = !vision;
  if (!vision && state.attachments.length) {
    state.attachments = [];
    renderAttachments();
  }
  ui.thinkRow.hidden = !state.caps.includes("thinking");
  if (!state.caps.includes("completion")) {
    notice(`${name} is an embedding model: it cannot chat. Pick another model.`, "model");
  } else {
    clearNotice("model");
  }
  updateButtons();
}

// -- model details -------------------------------------------------------------------------------------------------

function formatBytes(n) {
  if (!Number.isFinite(n) || n <= 0) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const k = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1000)));
  return (n / 1000 ** k).toFixed(k ? 1 : 0) + " " + units[k];
}

async function openDetails() {
  const name = ui.model.value;
  if (!name) return;
  ui.infoTitle.textContent = name;
  ui.infoBody.replaceChildren(el("p", "hint", "Loading…"));
  ui.info.showModal();
  state.shows.delete(name);
  let show;
  try {
    show = await modelInfo(name);
  } catch (err) {
    ui.infoBody.replaceChildren(el("p", "error", err.message));
    return;
  }
  const details = show.details || {};
  const info = show.model_info || {};
  const contextKey = Object.keys(info).find((k) => k.endsWith(".context_length"));
  const rows = [
    ["Architecture", info["general.architecture"] || details.family],
    ["Parameters", details.parameter_size],
    ["Quantization", details.quantization_level],
    ["Format", details.format],
    ["Context length", contextKey ? String(info[contextKey]) : ""],
    ["Capabilities", (show.capabilities || []).join(", ")],
    ["Modified", show.modified_at ? new Date(show.modified_at).toLocaleString() : ""],
  ];
  const list = el("dl", "facts");
  for (const [label, value] of rows) {
    if (!value) continue;
    list.append(el("dt", "", label), el("dd", "", String(value)));
  }
  const parts = [list];
  const section = (title, text, open) => {
    if (!text) return;
    const box = el("details", "section");
    box.open = open;
    box.append(el("summary", "", title));
    const pre = el("pre");
    pre.append(el("code", "", text));
    box.append(pre);
    parts.push(box);
  };
  section("Parameters", show.parameters, true);
  section("System prompt", show.system, true);
  section("Template", show.template, false);
  section("License", Array.isArray(show.license) ? show.license.join("\n\n") : show.license, false);
  ui.infoBody.replaceChildren(...parts);
}

// -- pulling -------------------------------------------------------------------------------------------------------

function openPull() {
  ui.pullStatus.textContent = "";
  ui.pullProgress.hidden = true;
  ui.pull.showModal();
  ui.pullName.focus();
}

async function pullModel(name) {
  state.pullController = new AbortController();
  ui.pullStart.disabled = true;
  ui.pullClose.textContent = "Cancel";
  ui.pullProgress.hidden = false;
  ui.pullProgress.removeAttribute("value");
  ui.pullStatus.textContent = "pulling manifest";
  try {
    const response = await api("api/pull", {
      method: "POST", body: { model: name, stream: true, insecure: ui.pullInsecure.checked },
      signal: state.pullController.signal,
    });
    if (!response.ok) throw new Error(await errorText(response));
    let ok = false;
    for await (const part of ndjson(response)) {
      if (part.error) throw new Error(part.error);
      const status = String(part.status || "");
      if (part.total) {
        ui.pullProgress.max = part.total;
        ui.pullProgress.value = part.completed || 0;
        const percent = Math.floor((100 * (part.completed || 0)) / part.total);
        ui.pullStatus.textContent = `${status} ${percent}% (${formatBytes(part.completed || 0)} of `
          + `${formatBytes(part.total)})`;
      } else {
        ui.pullStatus.textContent = status;
      }
      if (status === "success") ok = true;
    }
    if (!ok) throw new Error("the pull ended before it finished");
    ui.pullProgress.max = 1;
    ui.pullProgress.value = 1;
    ui.pullStatus.textContent = `Pulled ${name}.`;
    await loadModels(name);
  } catch (err) {
    ui.pullStatus.textContent = err.name === "AbortError" ? "Cancelled." : "Error: " + err.message;
    ui.pullProgress.hidden = true;
  } finally {
    state.pullController = null;
    ui.pullStart.disabled = false;
    ui.pullClose.textContent = "Close";
  }
}

// -- settings ------------------------------------------------------------------------------------------------------

function openSettings() {
  const s = state.settings;
  ui.system.value = s.system || "";
  ui.temperature.value = s.temperature ?? "";
  ui.numCtx.value = s.num_ctx ?? "";
  ui.numPredict.value = s.num_predict ?? "";
  ui.keepAlive.value = s.keep_alive ?? "";
  ui.settingsError.hidden = true;
  ui.settings.showModal();
}

function saveSettingsForm() {
  const number = (input, integer) => {
    const text = input.value.trim();
    if (!text) return undefined;
    const value = Number(text);
    if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) throw new Error(`${input.id}: not a number`);
    return value;
  };
  try {
    state.settings = {
      ...state.settings,
      system: ui.system.value,
      temperature: number(ui.temperature, false),
      num_ctx: number(ui.numCtx, true),
      num_predict: number(ui.numPredict, true),
      keep_alive: ui.keepAlive.value.trim() || undefined,
    };
  } catch (err) {
    ui.settingsError.textContent = err.message;
    ui.settingsError.hidden = false;
    return;
  }
  store.saveSettings(state.settings);
  ui.settings.close();
}

function chatRequest(model, history) {
  const s = state.settings;
  const messages = [];
  if (s.system && s.system.trim()) messages.push({ role: "system", content: s.system });
  for (const m of history) {
    if (m.error && !m.content) continue; // a failed answer is not part of the conversation
    const wire = { role: m.role, content: m.content || "" };
    if (m.images && m.images.length) wire.images = m.images;
    if (m.tool_calls && m.tool_calls.length) wire.tool_calls = m.tool_calls;
    messages.push(wire);
  }
  const body = { model, messages, stream: true };
  const options = {};
  for (const name of ["temperature", "num_ctx", "num_predict"]) {
    if (typeof s[name] === "number") options[name] = s[name];
  }
  if (Object.keys(options).length) body.options = options;
  if (s.keep_alive) body.keep_alive = /^-?\d+(\.\d+)?$/.test(s.keep_alive) ? Number(s.keep_alive) : s.keep_alive;
  if (state.caps.includes("thinking")) body.think = ui.think.checked;
  return body;
}

// -- conversations -------------------------------------------------------------------------------------------------

function persist() {
  const result = store.saveChats(state.chats);
  if (result === false) notice("This browser's storage is full: the conversation was not saved.", "storage");
  else if (result === "images-dropped") notice("Storage is full: attached images were not kept.", "storage");
}

function openChat(chat) {
  state.chat = chat;
  store.setCurrentId(chat ? chat.id : null);
  renderChats();
  renderMessages();
  if (chat && chat.model && state.models.includes(chat.model) && ui.model.value !== chat.model) {
    selectModel(chat.model);
  }
  document.body.classList.remove("drawer-open");
  ui.scrim.hidden = true;
}

function renderChats() {
  const items = [...state.chats].sort((a, b) => (b.updated || 0) - (a.updated || 0)).map((chat) => {
    const li = el("li", chat === state.chat ? "current" : "");
    const open = el("button", "chat-open", chat.title || "New chat");
    open.type = "button";
    open.title = chat.title || "";
    open.addEventListener("click", () => openChat(chat));
    const remove = el("button", "chat-delete icon", "×");
    remove.type = "button";
    remove.title = "Delete conversation";
    remove.setAttribute("aria-label", "Delete conversation");
    remove.addEventListener("click", () => deleteChat(chat));
    li.append(open, remove);
    return li;
  });
  ui.chats.replaceChildren(...items);
}

function deleteChat(chat) {
  if (state.streaming && chat.messages.includes(state.streaming.msg)) stopAnswer();
  state.chats = state.chats.filter((c) => c !== chat);
  persist();
  if (state.chat === chat) openChat(null);
  else renderChats();
}

// -- messages ------------------------------------------------------------------------------------------------------

function decorateCode(fragment) {
  for (const pre of fragment.querySelectorAll("pre")) {
    const box = el("div", "codeblock");
    const head = el("div", "code-head");
    head.append(el("span", "lang", pre.dataset.lang || "text"));
    const copy = el("button", "copy", "Copy");
    copy.type = "button";
    head.append(copy);
    pre.replaceWith(box);
    box.append(head, pre);
  }
  return fragment;
}

function messageView(msg) {
  const root = el("article", "msg " + (msg.role === "user" ? "user" : "assistant"));
  root.dataset.role = msg.role;
  const head = el("div", "msg-head", msg.role === "user" ? "You" : msg.model || "Assistant");
  root.append(head);
  if (msg.role === "user") {
    if (msg.images && msg.images.length) {
      const strip = el("div", "msg-images");
      for (const data of msg.images) {
        const img = el("img");
        img.alt = "attached image";
        img.src = "data:image/png;base64," + data; // browsers detect the real image type
        strip.append(img);
      }
      root.append(strip);
    }
    if (msg.images_dropped) root.append(el("div", "meta", "(attached images were not kept)"));
    root.append(el("div", "content plain", msg.content || ""));
    root.dataset.state = "done";
    return { root, update() {} };
  }
  let thinking = null;
  let thinkingText = null;
  const content = el("div", "content");
  const tools = el("div", "tools");
  const meta = el("div", "meta");
  root.append(content, tools, meta);
  const view = {
    root,
    update(streaming) {
      if (msg.thinking) {
        if (!thinking) {
          thinking = el("details", "thinking");
          thinking.append(el("summary"));
          thinkingText = el("div", "thinking-text");
          thinking.append(thinkingText);
          root.insertBefore(thinking, content);
        }
        thinking.firstChild.textContent = streaming && !msg.content ? "Thinking…" : "Thought";
        thinkingText.textContent = msg.thinking;
      }
      content.replaceChildren(decorateCode(renderMarkdown(msg.content || "")));
      const calls = (msg.tool_calls || []).map((call) => {
        const box = el("div", "tool-call");
        const fn = (call && call.function) || {};
        box.append(el("div", "tool-name", "Tool call: " + String(fn.name || "?")));
        const pre = el("pre");
        pre.append(el("code", "", JSON.stringify(fn.arguments ?? {}, null, 2)));
        box.append(pre);
        return box;
      });
      tools.replaceChildren(...calls);
      const bits = [];
      if (msg.stats && msg.stats.eval_count) {
        bits.push(`${msg.stats.eval_count} tokens`);
        if (msg.stats.eval_duration) {
          bits.push(`${(msg.stats.eval_count / (msg.stats.eval_duration / 1e9)).toFixed(1)} tokens/s`);
        }
      }
      if (msg.stopped) bits.push("stopped");
      meta.replaceChildren();
      if (bits.length) meta.append(el("span", "", bits.join(" · ")));
      if (msg.error) meta.append(el("span", "error", "Error: " + msg.error));
      root.dataset.state = streaming ? "streaming" : msg.error ? "error" : msg.stopped ? "stopped" : "done";
    },
  };
  view.update(state.streaming && state.streaming.msg === msg);
  return view;
}

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToEnd() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function renderMessages() {
  const chat = state.chat;
  if (!chat || !chat.messages.length) {
    const empty = el("div", "empty");
    empty.append(el("h1", "", "Chat with your models"));
    empty.append(el("p", "", "Answers stream from this machine; the conversation stays in this browser."));
    ui.messages.replaceChildren(empty);
    return;
  }
  const nodes = chat.messages.map((msg) => {
    const view = messageView(msg);
    if (state.streaming && state.streaming.msg === msg) state.streaming.view = view;
    return view.root;
  });
  ui.messages.replaceChildren(...nodes);
  scrollToEnd();
}

function updateButtons() {
  const canChat = state.caps.includes("completion") && Boolean(ui.model.value);
  ui.send.disabled = state.busy || !canChat;
  ui.send.hidden = state.busy;
  ui.stop.hidden = !state.busy;
}

// -- sending -------------------------------------------------------------------------------------------------------

let frame = 0;

function redrawStreaming() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    if (!state.streaming || !state.streaming.view) return;
    const stick = nearBottom();
    state.streaming.view.update(true);
    if (stick) scrollToEnd();
  });
}

async function send() {
  if (state.busy) return;
  const text = ui.prompt.value;
  const model = ui.model.value;
  if (!text.trim() && !state.attachments.length) return;
  if (!model || !state.caps.includes("completion")) {
    notice("Pick a chat model first.", "model");
    return;
  }
  if (!state.chat) {
    state.chat = store.newChat(model);
    state.chats.unshift(state.chat);
    store.setCurrentId(state.chat.id);
  }
  const chat = state.chat;
  const user = { role: "user", content: text };
  if (state.attachments.length) user.images = state.attachments.map((a) => a.data);
  if (!chat.messages.length) chat.title = text.trim().replace(/\s+/g, " ").slice(0, 60) || "Images";
  chat.model = model;
  const history = [...chat.messages, user];
  const reply = { role: "assistant", content: "", model, pending: true };
  chat.messages.push(user, reply);
  chat.updated = Date.now();
  ui.prompt.value = "";
  resizePrompt();
  state.attachments = [];
  renderAttachments();

  const controller = new AbortController();
  state.controller = controller;
  state.busy = true;
  state.streaming = { msg: reply, view: null };
  updateButtons();
  persist();
  renderChats();
  renderMessages();

  let lastSave = performance.now();
  try {
    const response = await api("api/chat", { method: "POST", body: chatRequest(model, history),
                                            signal: controller.signal });
    if (!response.ok) throw new Error(await errorText(response));
    for await (const part of ndjson(response)) {
      if (part.error) throw new Error(part.error);
      const m = part.message || {};
      if (m.thinking) reply.thinking = (reply.thinking || "") + m.thinking;
      if (m.content) reply.content += m.content;
      if (m.tool_calls) reply.tool_calls = [...(reply.tool_calls || []), ...m.tool_calls];
      if (part.done) {
        reply.stats = {
          eval_count: part.eval_count, eval_duration: part.eval_duration,
          prompt_eval_count: part.prompt_eval_count, total_duration: part.total_duration,
          done_reason: part.done_reason,
        };
      }
      redrawStreaming();
      if (performance.now() - lastSave > 1000) {
        lastSave = performance.now();
        persist();
      }
    }
  } catch (err) {
    if (err.name === "AbortError") reply.stopped = true;
    else reply.error = err.message || String(err);
  } finally {
    delete reply.pending;
    const view = state.streaming && state.streaming.view;
    state.streaming = null;
    state.controller = null;
    state.busy = false;
    if (frame) {
      cancelAnimationFrame(frame);
      frame = 0;
    }
    if (view) {
      const stick = nearBottom();
      view.update(false);
      if (stick) scrollToEnd();
    }
    chat.updated = Date.now();
    persist();
    updateButtons();
    if (state.chat === chat) ui.prompt.focus();
  }
}

function stopAnswer() {
  if (state.controller) state.controller.abort();
}

// -- composer ------------------------------------------------------------------------------------------------------

function resizePrompt() {
  const box = ui.prompt;
  box.style.height = "auto";
  const wanted = box.scrollHeight + box.offsetHeight - box.clientHeight; // content plus borders
  box.style.height = Math.min(wanted, 220) + "px";
  box.style.overflowY = wanted > 220 ? "auto" : "hidden";
}

function renderAttachments() {
  ui.attachments.hidden = !state.attachments.length;
  ui.attachments.replaceChildren(...state.attachments.map((item, k) => {
    const box = el("div", "thumb");
    const img = el("img");
    img.alt = item.name;
    img.src = "data:image/png;base64," + item.data;
    const remove = el("button", "thumb-remove", "×");
    remove.type = "button";
    remove.title = "Remove " + item.name;
    remove.addEventListener("click", () => {
      state.attachments.splice(k, 1);
      renderAttachments();
    });
    box.append(img, remove);
    return box;
  }));
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve({ name: file.name, data: String(reader.result).split(",", 2)[1] || "" });
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function addImages(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    try {
      state.attachments.push(await readImage(file));
    } catch (err) {
      notice(`Could not read ${file.name}: ${err.message}`, "attach");
    }
  }
  renderAttachments();
}

// -- wiring --------------------------------------------------------------------------------------------------------

function toggleTheme() {
  const root = document.documentElement;
  const current = root.dataset.theme || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  const next = current === "dark" ? "light" : "dark";
  root.dataset.theme = next;
  try {
    localStorage.setItem("corral.theme", next);
  } catch (_) {
    // storage disabled
  }
}

function wire() {
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  ui.prompt.addEventListener("input", resizePrompt);
  ui.prompt.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])].filter((f) => f.type.startsWith("image/"));
    if (files.length && !ui.attach.hidden) {
      event.preventDefault();
      addImages(files);
    }
  });
  ui.stop.addEventListener("click", stopAnswer);
  ui.model.addEventListener("change", () => selectModel(ui.model.value));
  ui.attach.addEventListener("click", () => ui.file.click());
  ui.file.addEventListener("change", () => {
    addImages([...ui.file.files]);
    ui.file.value = "";
  });
  ui.newChat.addEventListener("click", () => {
    openChat(null);
    ui.prompt.focus();
  });
  ui.menu.addEventListener("click", () => {
    const open = document.body.classList.toggle("drawer-open");
    ui.scrim.hidden = !open;
  });
  ui.scrim.addEventListener("click", () => {
    document.body.classList.remove("drawer-open");
    ui.scrim.hidden = true;
  });
  ui.theme.addEventListener("click", toggleTheme);
  ui.details.addEventListener("click", openDetails);
  ui.infoClose.addEventListener("click", () => ui.info.close());
  ui.settingsOpen.addEventListener("click", openSettings);
  ui.settingsCancel.addEventListener("click", () => ui.settings.close());
  ui.settingsForm.addEventListener("submit", (event) => {
    event.preventDefault();
    saveSettingsForm();
  });
  ui.pullOpen.addEventListener("click", openPull);
  ui.pullForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = ui.pullName.value.trim();
    if (name && !state.pullController) pullModel(name);
  });
  ui.pullClose.addEventListener("click", () => {
    if (state.pullController) state.pullController.abort();
    else ui.pull.close();
  });
  ui.pull.addEventListener("close", () => {
    if (state.pullController) state.pullController.abort(); // Esc cancels a pull like the Cancel button
  });
  ui.messages.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const code = button.closest(".codeblock").querySelector("pre code").textContent;
    const done = () => {
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 1200);
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(code).then(done, () => {});
  });
}

async function start() {
  onKeyNeeded(askForKey);
  if (matchMedia("(max-width: 760px)").matches) ui.prompt.placeholder = "Message";
  wire();
  ui.think.checked = Boolean(state.settings.think);
  ui.think.addEventListener("change", () => {
    state.settings = { ...state.settings, think: ui.think.checked };
    store.saveSettings(state.settings);
  });
  state.chats = store.loadChats();
  for (const chat of state.chats) {
    for (const m of chat.messages) {
      if (m.pending) { // the page was closed while this answer was streaming
        delete m.pending;
        m.stopped = true;
      }
    }
  }
  const current = store.currentId();
  state.chat = state.chats.find((c) => c.id === current) || null;
  renderChats();
  renderMessages();
  updateButtons();
  await loadModels();
  ui.prompt.focus();
}

start();
