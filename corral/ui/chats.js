// Conversations and settings, kept in this browser's localStorage only; the server stores nothing of a chat.
//
// "corral.chats": [{id, title, model, updated, messages: [{role, content, thinking?, tool_calls?, images?,
//                   model?, stopped?, error?, stats?}]}], newest first
// "corral.current": the id of the open conversation
// "corral.settings": {system, temperature, num_ctx, num_predict, keep_alive, think}
// "corral.model": the model picked last

const CHATS = "corral.chats";
const CURRENT = "corral.current";
const SETTINGS = "corral.settings";
const MODEL = "corral.model";

function read(item, fallback) {
  try {
    const raw = localStorage.getItem(item);
    return raw === null ? fallback : JSON.parse(raw);
  } catch (_) {
    return fallback;
  }
}

function validMessage(m) {
  return m && typeof m === "object" && typeof m.role === "string" && typeof (m.content ?? "") === "string";
}

export function loadChats() {
  const chats = read(CHATS, []);
  if (!Array.isArray(chats)) return [];
  return chats
    .filter((c) => c && typeof c === "object" && typeof c.id === "string" && Array.isArray(c.messages))
    .map((c) => ({ ...c, title: String(c.title || "New chat"), messages: c.messages.filter(validMessage) }));
}

/** Save every conversation; when the browser's quota is full, drop attached images (oldest first) and retry. */
export function saveChats(chats) {
  try {
    localStorage.setItem(CHATS, JSON.stringify(chats));
    return true;
  } catch (_) {
    // fall through: quota
  }
  const slim = chats.map((c) => ({
    ...c, messages: c.messages.map((m) => (m.images ? { ...m, images: undefined, images_dropped: true } : m)),
  }));
  try {
    localStorage.setItem(CHATS, JSON.stringify(slim));
  } catch (_) {
    return false;
  }
  return "images-dropped";
}

export function currentId() {
  try {
    return localStorage.getItem(CURRENT);
  } catch (_) {
    return null;
  }
}

export function setCurrentId(id) {
  try {
    if (id) localStorage.setItem(CURRENT, id);
    else localStorage.removeItem(CURRENT);
  } catch (_) {
    // storage disabled
  }
}

export function newChat(model) {
  const id = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2));
  return { id, title: "New chat", model: model || "", updated: Date.now(), messages: [] };
}

export function loadSettings() {
  const s = read(SETTINGS, {});
  return s && typeof s === "object" ? s : {};
}

export function saveSettings(settings) {
  try {
    localStorage.setItem(SETTINGS, JSON.stringify(settings));
  } catch (_) {
    // storage disabled
  }
}

export function lastModel() {
  const name = read(MODEL, null);
  return typeof name === "string" ? name : null;
}

export function setLastModel(name) {
  try {
    localStorage.setItem(MODEL, JSON.stringify(name));
  } catch (_) {
    // storage disabled
  }
}
