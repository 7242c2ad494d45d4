// A small Markdown renderer for model output, written for Corral.
//
// A model's text is untrusted, so this never parses HTML: it builds DOM nodes with createElement and text nodes,
// and any HTML in the input stays visible text. Links are kept only for http:, https: and mailto: URLs (and open in
// a new tab without a referrer); images are shown as links, since the page loads nothing from other origins.
//
// Covered: fenced and indented code blocks, headings, paragraphs (single newlines kept as line breaks, as chat
// text expects), bullet and numbered lists (nested), block quotes, tables, rules, and inline code, bold, italic,
// strikethrough, links and bare URLs. Text still streaming in renders sensibly: an unclosed fence is a code block
// up to the end, an unclosed ** stays literal until it closes.

const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$/;
const QUOTE = /^ {0,3}> ?/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*)|$)/;
const TABLE_RULE = /^ *\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$/;
const INDENTED = /^(?: {4}|\t)/;
const PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function blank(line) {
  return line.trim() === "";
}

function indentOf(line) {
  const m = /^[ \t]*/.exec(line)[0];
  return m.replace(/\t/g, "    ").length;
}

function startsBlock(line, next) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || LIST_ITEM.test(line)
    || (line.includes("|") && next !== undefined && TABLE_RULE.test(next) && next.includes("-"));
}

/** Render Markdown text as a DocumentFragment of DOM nodes (no HTML parsing anywhere). */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  blocks(lines, fragment);
  return fragment;
}

function blocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (blank(line)) {
      i++;
      continue;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      i = fence(lines, i, m, parent);
    } else if ((m = HEADING.exec(line))) {
      const h = el("h" + m[1].length);
      inline(m[2] || "", h);
      parent.append(h);
      i++;
    } else if (RULE.test(line)) {
      parent.append(el("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && !blank(lines[i]) && (QUOTE.test(lines[i]) || inner.length)) {
        if (!QUOTE.test(lines[i]) && startsBlock(lines[i], lines[i + 1])) break;
        inner.push(lines[i].replace(QUOTE, ""));
        i++;
      }
      const quote = el("blockquote");
      blocks(inner, quote);
      parent.append(quote);
    } else if (LIST_ITEM.test(line)) {
      i = list(lines, i, parent);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])
               && lines[i + 1].includes("-")) {
      i = table(lines, i, parent);
    } else if (INDENTED.test(line)) {
      const code = [];
      while (i < lines.length && (INDENTED.test(lines[i]) || blank(lines[i]))) {
        code.push(lines[i].replace(INDENTED, ""));
        i++;
      }
      while (code.length && blank(code[code.length - 1])) code.pop();
      parent.append(codeBlock(code.join("\n"), ""));
    } else {
      const para = [];
      while (i < lines.length && !blank(lines[i]) && (para.length === 0 || !startsBlock(lines[i], lines[i + 1]))) {
        para.push(lines[i].trim());
        i++;
      }
      const p = el("p");
      inline(para.join("\n"), p);
      parent.append(p);
    }
  }
}

function codeBlock(text, language) {
  const pre = el("pre");
  const code = el("code");
  const lang = /^[\w+#.-]{1,32}$/.test(language) ? language.toLowerCase() : "";
  if (lang) {
    code.className = "language-" + lang;
    pre.dataset.lang = lang;
  }
  code.textContent = text;
  pre.append(code);
  return pre;
}

function fence(lines, start, match, parent) {
  const marker = match[1];
  const indent = indentOf(lines[start]);
  const closing = new RegExp("^ {0,3}" + (marker[0] === "`" ? "`" : "~") + "{" + marker.length + ",}[ \\t]*$");
  const code = [];
  let i = start + 1;
  while (i < lines.length && !closing.test(lines[i])) {
    let line = lines[i];
    for (let k = 0; k < indent && line.startsWith(" "); k++) line = line.slice(1);
    code.push(line);
    i++;
  }
  parent.append(codeBlock(code.join("\n"), match[2]));
  return i + 1; // past the closing fence (or the end, while a fence is still streaming)
}

function list(lines, start, parent) {
  const first = LIST_ITEM.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const base = first[1].length;
  const node = el(ordered ? "ol" : "ul");
  if (ordered) {
    const n = parseInt(first[2], 10);
    if (n !== 1) node.start = n;
  }
  let i = start;
  while (i < lines.length) {
    const m = LIST_ITEM.exec(lines[i]);
    if (!m || m[1].length !== base || /\d/.test(m[2]) !== ordered) break;
    const contentIndent = base + m[2].length + 1;
    const item = [m[3] || ""];
    i++;
    while (i < lines.length) {
      const line = lines[i];
      if (blank(line)) {
        // A blank line keeps the item open only when indented content follows.
        let j = i;
        while (j < lines.length && blank(lines[j])) j++;
        if (j < lines.length && indentOf(lines[j]) > base && !(LIST_ITEM.test(lines[j])
            && LIST_ITEM.exec(lines[j])[1].length <= base)) {
          for (; i < j; i++) item.push("");
          continue;
        }
        break;
      }
      const indent = indentOf(line);
      if (indent > base) {
        item.push(line.replace(/^[ \t]+/, (lead) => " ".repeat(Math.max(0, indentOf(lead) - contentIndent))));
        i++;
        continue;
      }
      if (startsBlock(line, lines[i + 1])) break;
      item.push(line); // a lazy continuation of the item's paragraph
      i++;
    }
    const li = el("li");
    blocks(item, li);
    node.append(li);
    // A blank line between items of the same list.
    if (i < lines.length && blank(lines[i])) {
      let j = i;
      while (j < lines.length && blank(lines[j])) j++;
      const next = j < lines.length ? LIST_ITEM.exec(lines[j]) : null;
      if (next && next[1].length === base && /\d/.test(next[2]) === ordered) i = j;
    }
  }
  parent.append(node);
  return i;
}

function cells(row) {
  let text = row.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  const out = [];
  let cell = "";
  let inCode = false;
  for (let k = 0; k < text.length; k++) {
    const c = text[k];
    if (c === "\\" && text[k + 1] === "|") {
      cell += "|";
      k++;
    } else if (c === "`") {
      inCode = !inCode;
      cell += c;
    } else if (c === "|" && !inCode) {
      out.push(cell.trim());
      cell = "";
    } else {
      cell += c;
    }
  }
  out.push(cell.trim());
  return out;
}

function table(lines, start, parent) {
  const head = cells(lines[start]);
  const aligns = cells(lines[start + 1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "");
  const wrap = el("div", "table-wrap");
  const t = el("table");
  const thead = el("thead");
  const tr = el("tr");
  head.forEach((text, k) => {
    const th = el("th");
    if (aligns[k]) th.className = "align-" + aligns[k];
    inline(text, th);
    tr.append(th);
  });
  thead.append(tr);
  t.append(thead);
  const tbody = el("tbody");
  let i = start + 2;
  while (i < lines.length && !blank(lines[i]) && lines[i].includes("|")) {
    const row = el("tr");
    const values = cells(lines[i]);
    head.forEach((_, k) => {
      const td = el("td");
      if (aligns[k]) td.className = "align-" + aligns[k];
      inline(values[k] || "", td);
      row.append(td);
    });
    tbody.append(row);
    i++;
  }
  t.append(tbody);
  wrap.append(t);
  parent.append(wrap);
  return i;
}

/** A URL a link may point at, or null: absolute http(s) or mailto only. */
export function safeUrl(raw) {
  let url;
  try {
    url = new URL(raw.trim());
  } catch (_) {
    return null;
  }
  return SAFE_SCHEMES.has(url.protocol) ? url.href : null;
}

function link(href, parent) {
  const a = el("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  parent.append(a);
  return a;
}

function isWordChar(c) {
  return c !== undefined && /[\p{L}\p{N}]/u.test(c);
}

function isSpace(c) {
  return c === undefined || /\s/.test(c);
}

// [label](url "title") at text[i] === "[": {label, url, end} or null.
function parseLink(text, i) {
  let depth = 0;
  let k = i;
  for (; k < text.length; k++) {
    const c = text[k];
    if (c === "\\") {
      k++;
    } else if (c === "[") {
      depth++;
    } else if (c === "]") {
      depth--;
      if (depth === 0) break;
    } else if (c === "\n" && text[k + 1] === "\n") {
      return null;
    }
  }
  if (k >= text.length || text[k + 1] !== "(") return null;
  const label = text.slice(i + 1, k);
  let parens = 0;
  let j = k + 2;
  for (; j < text.length; j++) {
    const c = text[j];
    if (c === "\\") j++;
    else if (c === "(") parens++;
    else if (c === ")") {
      if (parens === 0) break;
      parens--;
    } else if (c === "\n") return null;
  }
  if (j >= text.length) return null;
  let target = text.slice(k + 2, j).trim();
  const titled = /^(\S+)\s+["'(].*["')]$/.exec(target);
  if (titled) target = titled[1];
  if (target.startsWith("<") && target.endsWith(">")) target = target.slice(1, -1);
  return { label, url: target, end: j + 1 };
}

// Emphasis at text[i] (one of * _ ~): {tag(s), inner, end} or null when it does not open a span here.
function parseEmphasis(text, i) {
  const c = text[i];
  let run = 1;
  while (text[i + run] === c) run++;
  if (c === "~" && run !== 2) return null;
  if (run > 3) return null;
  const before = text[i - 1];
  const after = text[i + run];
  if (isSpace(after)) return null;
  if (c === "_" && isWordChar(before)) return null; // snake_case stays as written
  const delimiter = c.repeat(run);
  let from = i + run + 1;
  while (from <= text.length) {
    const k = text.indexOf(delimiter, from);
    if (k < 0) return null;
    const closeBefore = text[k - 1];
    const closeAfter = text[k + run];
    if (!isSpace(closeBefore) && closeAfter !== c && !(c === "_" && isWordChar(closeAfter))
        && text[k - 1] !== c && !text.slice(i + run, k).includes("\n\n")) {
      const tags = c === "~" ? ["del"] : run === 1 ? ["em"] : run === 2 ? ["strong"] : ["strong", "em"];
      return { tags, inner: text.slice(i + run, k), end: k + run };
    }
    from = k + 1;
  }
  return null;
}

const BARE_URL = /^(?:https?:\/\/|mailto:)[^\s<>"'`]+/;

function inline(text, parent) {
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && PUNCTUATION.includes(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "\n") {
      flush();
      parent.append(el("br"));
      i++;
      continue;
    }
    if (c === "`") {
      let run = 1;
      while (text[i + run] === "`") run++;
      const ticks = "`".repeat(run);
      let k = text.indexOf(ticks, i + run);
      while (k >= 0 && text[k + run] === "`") {
        let r = run;
        while (text[k + r] === "`") r++;
        k = text.indexOf(ticks, k + r);
      }
      if (k < 0) {
        buffer += ticks;
        i += run;
        continue;
      }
      let body = text.slice(i + run, k).replace(/\n/g, " ");
      if (body.length > 2 && body.startsWith(" ") && body.endsWith(" ")) body = body.slice(1, -1);
      flush();
      const code = el("code");
      code.textContent = body;
      parent.append(code);
      i = k + run;
      continue;
    }
    if (c === "[" || (c === "!" && text[i + 1] === "[")) {
      const image = c === "!";
      const found = parseLink(text, image ? i + 1 : i);
      if (found) {
        flush();
        const href = safeUrl(found.url);
        if (href) {
          const a = link(href, parent);
          if (image) {
            a.className = "image-link";
            a.append(document.createTextNode(found.label || href));
          } else {
            inline(found.label, a);
          }
        } else {
          inline(found.label, parent); // an unsafe or relative target: keep the words, drop the link
        }
        i = found.end;
        continue;
      }
    }
    if (c === "<") {
      const m = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/.exec(text.slice(i));
      const href = m && safeUrl(m[1]);
      if (href) {
        flush();
        link(href, parent).textContent = m[1];
        i += m[0].length;
        continue;
      }
    }
    if ((c === "h" || c === "m") && !isWordChar(text[i - 1])) {
      const m = BARE_URL.exec(text.slice(i));
      if (m) {
        let url = m[0];
        while (/[.,;:!?*_~]$/.test(url) || (url.endsWith(")") && !url.includes("("))) url = url.slice(0, -1);
        const href = safeUrl(url);
        if (href) {
          flush();
          link(href, parent).textContent = url;
          i += url.length;
          continue;
        }
      }
    }
    if (c === "*" || c === "_" || c === "~") {
      const span = parseEmphasis(text, i);
      if (span) {
        flush();
        let target = parent;
        for (const tag of span.tags) {
          const node = el(tag);
          target.append(node);
          target = node;
        }
        inline(span.inner, target);
        i = span.end;
        continue;
      }
      // A whole run of the marker is literal when it opens nothing.
      let run = 1;
      while (text[i + run] === c) run++;
      buffer += c.repeat(run);
      i += run;
      continue;
    }
    buffer += c;
    i++;
  }
  flush();
}
