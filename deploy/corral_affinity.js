// nginx njs module: the affinity key that keeps a conversation on the Corral replica holding its prefix cache.
//
// Loaded by deploy/nginx.conf (js_import) and used as `hash $corral_affinity consistent;`. The key is, in order:
//   1. the X-Corral-Session request header, when a client sends one (any API, any path);
//   2. for chat-style requests, a hash of the model and the conversation's start: the system prompt and the first
//      message. Turn 2 of a conversation repeats turn 1's messages, so it gets turn 1's key and turn 1's replica,
//      where the engine still holds the evaluated prompt;
//   3. for a pull, the model name, so concurrent pulls of one model meet on one replica and share its download;
//   4. nothing (an empty key) for everything else: nginx then balances round-robin.
// The body is read only when nginx kept it in memory (client_body_buffer_size in nginx.conf); a body that went to a
// temporary file, or is not JSON, gets no key. Written for njs 0.7 (Debian 12) and later.

var crypto = require('crypto');

var PROMPT_CHARS = 2048; // of a completion prompt: enough to tell conversations apart, bounded work per request

function text(value) {
    if (value === undefined || value === null) {
        return '';
    }
    return typeof value === 'string' ? value : JSON.stringify(value);
}

function digest(parts) {
    return crypto.createHash('md5').update(parts.join('\u0000')).digest('hex');
}

// The leading system messages and the first other message: what every turn of a conversation starts with.
function conversationStart(messages) {
    var out = [];
    if (!Array.isArray(messages)) {
        return out;
    }
    for (var i = 0; i < messages.length; i++) {
        var m = messages[i] || {};
        out.push(text(m.role) + ':' + text(m.content));
        if (m.role !== 'system' && m.role !== 'developer') {
            break;
        }
    }
    return out;
}

function bodyKey(uri, doc) {
    var model = text(doc.model);
    if (uri === '/api/chat' || uri === '/v1/chat/completions') {
        return digest(['chat', model].concat(conversationStart(doc.messages)));
    }
    if (uri === '/v1/messages') {
        return digest(['chat', model, text(doc.system)].concat(conversationStart(doc.messages)));
    }
    if (uri === '/v1/responses') {
        var input = Array.isArray(doc.input) ? conversationStart(doc.input) : [text(doc.input).slice(0, PROMPT_CHARS)];
        return digest(['chat', model, text(doc.instructions)].concat(input));
    }
    if (uri === '/api/generate' || uri === '/v1/completions') {
        var prompt = Array.isArray(doc.prompt) ? text(doc.prompt[0]) : text(doc.prompt);
        return digest(['generate', model, text(doc.system), prompt.slice(0, PROMPT_CHARS)]);
    }
    if (uri === '/api/pull') {
        return digest(['pull', model || text(doc.name)]);
    }
    return '';
}

function key(r) {
    var session = r.headersIn['X-Corral-Session'];
    if (session) {
        return 'session:' + session;
    }
    if (r.method !== 'POST') {
        return '';
    }
    var body;
    try {
        body = r.requestText;
    } catch (e) {
        return ''; // the body is in a temporary file: no key rather than reading it from disk per request
    }
    if (!body) {
        return '';
    }
    var doc;
    try {
        doc = JSON.parse(body);
    } catch (e) {
        return '';
    }
    if (doc === null || typeof doc !== 'object') {
        return '';
    }
    return bodyKey(r.uri, doc);
}

export default { key };
