/**
 * The admin's live view (realtime/admin_live.py): polls the server API through the admin's
 * JSON views and posts its actions to them. Everything shown is set as text, never as HTML.
 */

const root = document.getElementById("rt-live");
const urls = {data: root.dataset.dataUrl, presence: root.dataset.presenceUrl, act: root.dataset.actUrl};
const canAct = root.dataset.canAct === "true";
const interval = Number(root.dataset.interval) || 2000;
const csrf = root.querySelector("input[name=csrfmiddlewaretoken]")?.value ?? "";
const $ = (id) => document.getElementById(id);
let presenceChannel = "";

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

function button(label, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = "button rt-live-action";
  element.textContent = label;
  element.addEventListener("click", onClick);
  return element;
}

function uptime(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function say(text, error = false) {
  const message = $("rt-live-message");
  message.textContent = text;
  message.className = error ? "rt-message errornote" : "rt-message";
}

async function getJson(url) {
  const response = await fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
  const body = await response.json();
  if (!response.ok) throw new Error(`${body.err ?? response.status}${body.detail ? `: ${body.detail}` : ""}`);
  return body;
}

function showProcesses(info) {
  const body = $("rt-live-processes");
  body.replaceChildren();
  for (const process of info.processes) {
    const row = document.createElement("tr");
    row.dataset.process = process.id;
    cell(row, process.id).className = "rt-process-id";
    cell(row, process.hostname);
    cell(row, String(process.pid));
    cell(row, process.version);
    cell(row, uptime(process.uptime));
    cell(row, String(process.connections), "rt-connections");
    cell(row, String(process.authenticated));
    cell(row, String(process.subscriptions));
    body.append(row);
  }
  const missing = $("rt-live-missing");
  missing.replaceChildren();
  for (const process of info.missing) {
    const item = document.createElement("li");
    const why = process.err ? `answered ${process.err}` : "did not answer in time";
    item.textContent = `${process.hostname} pid ${process.pid} (${process.id}) ${why}`;
    missing.append(item);
  }
  const totals = $("rt-live-totals");
  totals.replaceChildren();
  for (const [label, value] of [
    ["processes", info.processes.length],
    ["connections", info.totals.connections],
    ["authenticated", info.totals.authenticated],
    ["subscriptions", info.totals.subscriptions],
  ]) {
    const span = document.createElement("span");
    span.dataset.total = label;
    span.textContent = `${value} ${label}`;
    totals.append(span);
  }
}

function showChannels(channels) {
  const body = $("rt-live-channels");
  body.replaceChildren();
  for (const entry of channels.channels) {
    const row = document.createElement("tr");
    row.dataset.channel = entry.channel;
    const name = cell(row, "");
    const link = document.createElement("a");
    link.href = "#presence";
    link.textContent = entry.channel;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      $("rt-live-presence-channel").value = entry.channel;
      showPresence(entry.channel);
    });
    name.append(link);
    cell(row, String(entry.subscribers), "rt-subscribers");
    cell(row, entry.rate === null ? "–" : entry.rate.toFixed(1), "rt-rate");
    body.append(row);
  }
}

async function showPresence(channel) {
  presenceChannel = channel;
  const body = $("rt-live-members");
  let reply;
  try {
    reply = await getJson(`${urls.presence}?channel=${encodeURIComponent(channel)}`);
  } catch (error) {
    body.replaceChildren();
    say(`Presence of ${channel}: ${error.message}`, true);
    return;
  }
  body.replaceChildren();
  for (const member of reply.members) {
    for (const client of member.clients) {
      const row = document.createElement("tr");
      row.dataset.client = client;
      cell(row, member.user ? `${member.user.name} (${member.user.id})` : "–");
      cell(row, client).className = "rt-client";
      if (canAct) {
        const actions = cell(row, "");
        if (member.user) {
          actions.append(button("Disconnect user", () => act({action: "disconnect", user: String(member.user.id)})));
        }
        actions.append(button("Disconnect client", () => act({action: "disconnect", client})));
        actions.append(button("Unsubscribe", () => act({action: "unsubscribe", channel, client})));
      }
      body.append(row);
    }
  }
}

async function act(body) {
  const response = await fetch(urls.act, {
    method: "POST",
    credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json"},
    body: JSON.stringify(body),
  });
  const reply = await response.json();
  if (!response.ok) {
    say(`${body.action}: ${reply.err ?? response.status}${reply.detail ? ` (${reply.detail})` : ""}`, true);
    return;
  }
  const done = reply.disconnected ?? reply.unsubscribed ?? [];
  const missing = reply.missing.length ? `; ${reply.missing.length} process(es) did not answer` : "";
  say(`${body.action === "disconnect" ? "Disconnected" : "Unsubscribed"} ${done.length} connection(s)${missing}.`);
  await refresh();
}

function formBody(form, action) {
  const data = new FormData(form);
  const body = {action};
  for (const key of ["user", "client", "channel"]) {
    const value = (data.get(key) ?? "").trim();
    if (value) body[key] = value;
  }
  if (data.get("reconnect")) body.reconnect = true;
  return body;
}

$("rt-live-presence-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showPresence($("rt-live-presence-channel").value.trim());
});
for (const [id, action] of [
  ["rt-live-disconnect-form", "disconnect"],
  ["rt-live-unsubscribe-form", "unsubscribe"],
]) {
  $(id)?.addEventListener("submit", (event) => {
    event.preventDefault();
    act(formBody(event.target, action));
  });
}

let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const reply = await getJson(urls.data);
    showProcesses(reply.info);
    showChannels(reply.channels);
    if (presenceChannel) await showPresence(presenceChannel);
    const status = $("rt-live-status");
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    status.dataset.updated = String(Date.now());
  } catch (error) {
    $("rt-live-status").textContent = `Could not update: ${error.message}`;
  }
  timer = setTimeout(refresh, interval);
}

refresh();
