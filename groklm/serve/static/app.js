// groklm's chat page: keeps the conversation, sends it to /v1/chat/completions with stream: true, and
// shows the reply as its Server-Sent Events arrive (fetch + ReadableStream; EventSource cannot POST).
// Stop aborts the fetch, which closes the connection; the server then frees the request's slot.
// Each finished reply gets thumbs up / down and an optional correction, posted to /v1/feedback with
// the completion id the stream's chunks carry.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { messages: [], model: null, controller: null, loading: null };

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) result.Authorization = "Bearer " + key;
  return result;
}

async function errorOf(response) {
  // The server's error object ({message, code, ...}), or one that says the status.
  try {
    const body = await response.json();
    return body.error;
  } catch {
    return { message: `HTTP ${response.status}`, code: null };
  }
}

async function errorMessage(response) {
  return (await errorOf(response)).message;
}

async function loadModel() {
  // A newer load (the key changed) supersedes this one: abort it, so that its answer, arriving
  // late, cannot undo what the newer one shows.
  if (state.loading) state.loading.abort();
  const loading = (state.loading = new AbortController());
  try {
    const response = await fetch("/v1/models", { headers: headers(), signal: loading.signal });
    const answer = response.ok ? await response.json() : await errorMessage(response);
    if (loading.signal.aborted) return false;
    if (!response.ok) {
      $("model").textContent = "not connected";
      $("status").textContent = answer;
      return false;
    }
    state.model = answer.data[0].id;
    state.context = answer.data[0].context_length;
    $("model").textContent = `${state.model} · context ${state.context} tokens`;
    $("status").textContent = "";
    return true;
  } catch (error) {
    if (error.name === "AbortError") return false;
    throw error;
  } finally {
    if (state.loading === loading) state.loading = null;
  }
}

function addMessage(role, text) {
  const box = document.createElement("div");
  box.className = "message";
  box.dataset.role = role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;  // textContent, never innerHTML: a reply cannot inject markup
  box.append(label, body);
  $("log").append(box);
  box.scrollIntoView({ block: "end" });
  return box;
}

// Yields each parsed `data:` payload of an SSE response body as it arrives.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ") && line !== "data: [DONE]") yield JSON.parse(line.slice(6));
      }
    }
  }
}

async function sendFeedback(box, completionId, rating, correction) {
  const body = { completion_id: completionId, rating };
  if (correction) body.correction = correction;
  const response = await fetch("/v1/feedback", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) {
    $("status").textContent = `feedback not saved: ${await errorMessage(response)}`;
    return;
  }
  box.dataset.rating = String(rating);
  box.querySelector(".feedback-note").textContent = correction ? "thanks: correction saved" : "thanks";
}

// Thumbs up / down and a correction box under a finished assistant reply.
function addFeedback(box, completionId) {
  const bar = document.createElement("div");
  bar.className = "feedback";
  const button = (label, title) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.title = title;
    bar.append(b);
    return b;
  };
  // Text marks, not emoji: a machine without an emoji font would show empty boxes.
  const up = button("✓ Good", "thumbs up: a good answer");
  const down = button("✗ Bad", "thumbs down: a bad answer");
  const correct = button("Correct…", "write the answer it should have given");
  const note = document.createElement("span");
  note.className = "feedback-note muted";
  bar.append(note);
  const editor = document.createElement("form");
  editor.className = "correction";
  editor.hidden = true;
  const text = document.createElement("textarea");
  text.rows = 3;
  text.placeholder = "The answer it should have given";
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = "Save correction";
  editor.append(text, save);
  up.addEventListener("click", () => sendFeedback(box, completionId, 1, null));
  down.addEventListener("click", () => sendFeedback(box, completionId, -1, null));
  correct.addEventListener("click", () => {
    editor.hidden = !editor.hidden;
    if (!editor.hidden && !text.value) text.value = box.querySelector(".text").textContent;
  });
  editor.addEventListener("submit", (event) => {
    event.preventDefault();
    if (text.value.trim()) sendFeedback(box, completionId, -1, text.value);
  });
  box.append(bar, editor);
}

function maxTokens() {
  // The server refuses a max_tokens its context cannot hold after the prompt (as OpenAI's does):
  // never ask a small model for more than its whole context (send() handles a long conversation).
  const asked = Math.max(1, Number($("max-tokens").value) || 256);
  return state.context ? Math.min(asked, Math.max(1, state.context - 1)) : asked;
}

function request() {
  const system = $("system").value.trim();
  const messages = system ? [{ role: "system", content: system }, ...state.messages] : state.messages;
  return {
    model: state.model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    max_tokens: maxTokens(),
  };
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send(text) {
  if (state.controller || !text.trim()) return;
  if (!state.model && !(await loadModel())) return;
  $("status").textContent = "";
  // The exchange belongs to the conversation it began in: "New conversation" while it streams
  // replaces state.messages, and nothing that comes back after that may land in the new one.
  const conversation = state.messages;
  const asked = addMessage("user", text);
  conversation.push({ role: "user", content: text });
  const answer = addMessage("assistant", "");
  answer.dataset.state = "streaming";
  answer.dataset.chunks = "0";
  const shown = answer.querySelector(".text");
  const controller = (state.controller = new AbortController());
  setBusy(true);
  let reply = "";
  let completionId = null;
  try {
    const post = (body) => fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    let response = await post(request());
    if (!response.ok) {
      const error = await errorOf(response);
      // "Max tokens" is a ceiling, not a demand: when the conversation leaves less room than that,
      // ask again without it and let the reply run to the end of the context.
      if (error.code !== "context_length_exceeded") throw new Error(error.message);
      const { max_tokens: _, ...rest } = request();
      response = await post(rest);
      if (!response.ok) throw new Error(await errorMessage(response));
    }
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.id) completionId = chunk.id;
      if (chunk.usage) {
        $("usage").textContent = `last reply: ${chunk.usage.prompt_tokens} prompt + ${chunk.usage.completion_tokens} completion tokens`;
      }
      for (const choice of chunk.choices) {
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          reply += piece;
          shown.textContent = reply;
          answer.dataset.chunks = String(Number(answer.dataset.chunks) + 1);
          answer.scrollIntoView({ block: "end" });
        }
      }
    }
    answer.dataset.state = "done";
    if (completionId) addFeedback(answer, completionId);
  } catch (error) {
    if (error.name === "AbortError") {
      answer.dataset.state = "stopped";
    } else {
      answer.dataset.state = "error";
      $("status").textContent = error.message;
    }
  } finally {
    state.controller = null;
    setBusy(false);
  }
  if (reply) {
    conversation.push({ role: "assistant", content: reply });
  } else {  // nothing came back: forget the question too, so a retry does not send it twice
    conversation.pop();
    asked.classList.add("failed");
    answer.classList.add("failed");
  }
}

function reset() {
  if (state.controller) state.controller.abort();
  state.messages = [];
  $("log").replaceChildren();
  $("status").textContent = "";
  $("usage").textContent = "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.controller) return;  // one reply at a time; keep what was typed
    const text = $("input").value;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("reset").addEventListener("click", reset);
  $("temperature").addEventListener("input", () => { $("temperature-value").textContent = $("temperature").value; });
  $("api-key").addEventListener("change", loadModel);
  loadModel();
});
