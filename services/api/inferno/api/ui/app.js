// The dashboard: state from the api's read routes, kept current by the event stream.
// Each stored entry says what changed; only that view is read again.

import { cloneForm, confirmAction } from "./actions.js";
import { follow, get, token, Unauthorized } from "./api.js";
import { chart, COLORS } from "./chart.js";
import { $, age, clock, h, number } from "./dom.js";

const state = { experiments: [], selected: null, detail: null, history: {}, operations: new Map(), executors: [], executorsAt: 0 };
const dirty = new Set();
let flushing = null;
let ticking = false;

function selectedId() {
  const wanted = new URLSearchParams(location.hash.slice(1)).get("experiment");
  const ids = state.experiments.map((e) => e.experiment_id);
  return ids.includes(wanted) ? wanted : ids[ids.length - 1] || null;
}

// Reads again what `dirty` names, then draws; entries in a burst (50 ms) make one read.
function refresh(...what) {
  what.forEach((w) => dirty.add(w));
  flushing ||= new Promise((resolve) => setTimeout(resolve, 50)).then(async () => {
    const todo = new Set(dirty);
    dirty.clear();
    flushing = null;
    try {
      await load(todo);
    } catch (error) {
      if (error instanceof Unauthorized) signIn("the token was refused");
      else console.warn(error);
    }
  });
  return flushing;
}

async function load(todo) {
  if (todo.has("experiments")) {
    state.experiments = await get("/api/v1/experiments");
    todo.add("detail").add("history");
  }
  state.selected = selectedId();
  const id = state.selected && encodeURIComponent(state.selected);
  if (todo.has("detail") && id) state.detail = await get(`/api/v1/experiments/${id}`);
  if (todo.has("history") && id) {
    state.history = (await get(`/api/v1/experiments/${id}/metric-history`)).metrics;
  }
  if (todo.has("operations")) {
    for (const op of await get("/api/v1/operations")) state.operations.set(op.ic_id, op);
  }
  for (const item of todo) {
    if (typeof item === "number") state.operations.set(item, await get(`/api/v1/operations/${item}`));
  }
  if (todo.has("executors")) {
    state.executors = await get("/api/v1/executors");
    state.executorsAt = Date.now();
  }
  draw();
}

// What changes the experiments' list (their pipelines, their status) as well as a pipeline.
const EXPERIMENT_CHANGES = new Set(["experiment_created", "experiment_completed", "pipeline_created"]);
// one shard's completion, or several in one event (inferno.events.batches)
const SHARD_COMPLETIONS = new Set(["shard_completed", "shards_completed"]);

function onEntry(entry) {
  const ids = entry.ids || {};
  if (ids.ic_id) refresh(ids.ic_id);
  if (EXPERIMENT_CHANGES.has(entry.type)) refresh("experiments");
  else if (SHARD_COMPLETIONS.has(entry.type)) refresh("detail", "history");
  else if (ids.experiment_id === state.selected || ids.pipeline_id !== undefined) refresh("detail");
}

// drawing

function draw() {
  drawExperiments();
  drawPipelines();
  drawCharts();
  drawFeed();
  drawExecutors();
}

function drawExperiments() {
  const items = [...state.experiments].reverse().map((e) =>
    h("a", { href: `#experiment=${encodeURIComponent(e.experiment_id)}`, class: e.experiment_id === state.selected ? "chip selected" : "chip", dataset: { experimentId: e.experiment_id } },
      h("strong", {}, e.experiment_name), ` ${e.pipeline_ids.length} pipelines · ${e.status}`),
  );
  $("#experiments").replaceChildren(...(items.length ? items : [h("p", { class: "muted" }, "No experiments yet: start one with `inferno run`.")]));
}

const mainMetric = (detail) => detail.eval.scorers[0]?.name || Object.keys(detail.pipelines[0]?.metrics || {})[0];

// Parents before their clones, each clone one level deeper: the lineage as a tree.
function lineage(pipelines) {
  const byId = new Map(pipelines.map((p) => [p.pipeline_id, p]));
  const children = new Map();
  const roots = [];
  for (const p of pipelines) {
    const parent = byId.has(p.parent_pipeline_id) ? p.parent_pipeline_id : null;
    if (parent === null) roots.push(p);
    else children.set(parent, [...(children.get(parent) || []), p]);
  }
  const out = [];
  const visit = (p, depth) => {
    out.push([p, depth]);
    for (const child of children.get(p.pipeline_id) || []) visit(child, depth + 1);
  };
  roots.forEach((p) => visit(p, 0));
  return out;
}

// Why the scheduler stopped it on its own: the prune policy's or a budget's reason.
function stoppedBy(p) {
  const why = p.pruned ? `pruned: ${p.pruned}` : p.over_budget ? `over budget: ${p.over_budget}` : null;
  return why ? h("small", { class: "stopped-by" }, ` ${why}`) : null;
}

function progress(p, rowCount) {
  const share = p.num_shards ? p.shards_completed / p.num_shards : 0;
  return h("div", { class: "progress", title: `${p.shards_completed}/${p.num_shards} shards, ${p.rows_processed}/${rowCount} rows` },
    h("div", { class: "fill", style: { width: `${(share * 100).toFixed(1)}%` } }),
    h("span", {}, `${p.shards_completed}/${p.num_shards} shards · ${p.rows_processed} rows`));
}

function metricCell(summary) {
  if (!summary || summary.value === null) return "–";
  const interval = summary.lower_bound === null ? "" : ` [${number(summary.lower_bound)}, ${number(summary.upper_bound)}]`;
  return h("span", { title: `${summary.ci_method} ${summary.confidence_level * 100}% interval, n=${summary.count}` },
    h("strong", {}, number(summary.value)), h("small", {}, interval));
}

function buttons(p) {
  const live = !["deleted", "completed", "failed"].includes(p.status);
  const act = (action) => () => confirmAction(action, p);
  return h("div", { class: "actions" },
    p.status === "stopped" ? h("button", { class: "resume", onclick: act("resume") }, "Resume") : h("button", { class: "stop", onclick: act("stop"), disabled: !live }, "Stop"),
    h("button", { class: "delete danger", onclick: act("delete"), disabled: p.status === "deleted" }, "Delete"),
    h("button", { class: "clone", onclick: () => cloneForm(p), disabled: p.status === "deleted" }, "Clone"));
}

function drawPipelines() {
  const detail = state.detail;
  const body = $("#pipelines tbody");
  if (!detail || detail.experiment_id !== state.selected) {
    body.replaceChildren();
    return;
  }
  const metric = mainMetric(detail);
  $("#experiment-title").textContent = `${detail.experiment_name} · pipelines`;
  $("#experiment-summary").textContent = `${detail.experiment_id} · ${detail.row_count} rows in ${detail.num_shards} shards · ${detail.status}`;
  $("#metric-head").textContent = metric || "Metric";
  const names = Object.fromEntries(detail.pipelines.map((p) => [p.pipeline_id, p.pipeline_name]));
  body.replaceChildren(...lineage(detail.pipelines).map(([p, depth]) => {
    const tokens = p.tokens.prompt + p.tokens.completion;
    const parent = p.parent_pipeline_id === null ? "–"
      : h("a", { href: `#pipeline-${p.parent_pipeline_id}`, class: "parent-link", dataset: { parentId: p.parent_pipeline_id } }, `#${p.parent_pipeline_id} ${names[p.parent_pipeline_id] || ""}`);
    return h("tr", { id: `pipeline-${p.pipeline_id}`, dataset: { pipelineId: p.pipeline_id, status: p.status } },
      h("td", {}, p.pipeline_id),
      h("td", { class: "name", style: { paddingLeft: `${0.5 + depth * 1.2}rem` } }, depth ? "└ " : "", h("span", { class: "swatch", style: { background: colorOf(p.pipeline_id) } }), p.pipeline_name, h("small", {}, ` ${p.pipeline_type}`)),
      h("td", {}, h("span", { class: `status ${p.status}` }, p.status), p.error ? h("small", { class: "error" }, ` ${p.error}`) : null,
        stoppedBy(p)),
      h("td", {}, progress(p, detail.row_count)),
      h("td", {}, metricCell(p.metrics[metric])),
      h("td", {}, number(p.rows_per_s, 1)),
      h("td", {}, tokens.toLocaleString()),
      h("td", {}, p.estimated_cost === null ? "–" : `$${number(p.estimated_cost, 4)}`),
      h("td", { class: "parent" }, parent),
      h("td", {}, buttons(p)));
  }));
}

const colorOf = (pid) => {
  const ids = state.detail ? state.detail.pipelines.map((p) => String(p.pipeline_id)) : [];
  return COLORS[Math.max(ids.indexOf(String(pid)), 0) % COLORS.length];
};

function drawCharts() {
  const detail = state.detail;
  if (!detail) return;
  const names = Object.fromEntries(detail.pipelines.map((p) => [String(p.pipeline_id), p.pipeline_name]));
  const cards = Object.entries(state.history).map(([metric, series]) =>
    h("section", { class: "card chart-card", dataset: { metric } },
      h("h2", {}, metric),
      chart(metric, series, detail.num_shards, names, colorOf),
      h("p", { class: "legend" }, Object.keys(series).map((pid) =>
        h("span", {}, h("span", { class: "swatch", style: { background: colorOf(pid) } }), names[pid] || pid)))));
  $("#charts").replaceChildren(...(cards.length ? cards : [h("p", { class: "muted card" }, "Charts appear once a shard completes.")]));
}

function drawFeed() {
  const ops = [...state.operations.values()].sort((a, b) => b.ic_id - a.ic_id).slice(0, 100);
  $("#feed").replaceChildren(...ops.map((op) =>
    h("li", { dataset: { icId: op.ic_id, operation: op.operation, status: op.status } },
      h("div", {}, h("span", { class: `status ${op.status}` }, op.status), " ",
        h("strong", {}, op.operation), op.pipeline_id === null ? "" : ` pipeline ${op.pipeline_id}`,
        op.result && op.result.pipeline_id !== undefined ? ` → ${op.result.pipeline_id}` : ""),
      h("div", { class: "muted" }, `${op.actor || "someone"} · ${clock(op.created_at)}`),
      op.reason ? h("div", { class: "reason" }, `“${op.reason}”`) : null,
      op.error ? h("div", { class: "error" }, op.error) : null)));
}

function drawExecutors() {
  const since = (Date.now() - state.executorsAt) / 1000;
  $("#executors").replaceChildren(...(state.executors.length ? state.executors.map((x) =>
    h("li", { dataset: { executorId: x.executor_id } },
      h("strong", {}, x.executor_id), h("span", { class: "muted" }, ` ${x.hostname}`),
      h("div", {}, `${x.busy} busy · ${x.slots - x.busy} free of ${x.slots} slots · heartbeat ${age(x.heartbeat_age_s + since)} ago`),
      h("div", { class: "muted" }, `models: ${x.loaded_models.length ? x.loaded_models.join(", ") : "none loaded"} · ${x.backends.join(", ")}`)))
    : [h("li", { class: "muted" }, "No executor has a live heartbeat.")]));
}

// starting

function signIn(message = "") {
  $("#board").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message;
  $("#token").focus();
}

function start() {
  $("#sign-in").hidden = true;
  $("#board").hidden = false;
  $("#sign-out").hidden = !token.get();
  $("#who").textContent = token.get() ? "signed in" : "";
  follow({
    onOpen: () => {
      tick();
      return refresh("experiments", "operations", "executors");
    },
    onEntry,
    onState: (s) => Object.assign($("#live"), { textContent: s }).setAttribute("data-state", s),
    onUnauthorized: () => signIn(token.get() ? "the token was refused" : ""),
  });
}

// Heartbeats live in a KV bucket, not in the streamed log: executors are read every 5 s, and
// their heartbeat age counts on locally in between.
function tick() {
  if (ticking) return;
  ticking = true;
  setInterval(() => refresh("executors"), 5000);
  setInterval(drawExecutors, 1000);
}

$("#sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  token.set($("#token").value.trim());
  try {
    await get("/api/v1/experiments");
    start();
  } catch (error) {
    token.clear();
    signIn(error instanceof Unauthorized ? "that token was refused" : error.message);
  }
});
$("#sign-out").addEventListener("click", () => { token.clear(); location.reload(); });
window.addEventListener("hashchange", () => refresh("detail", "history"));
start();
