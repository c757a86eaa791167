// Stop, resume, delete (each confirmed, with an optional reason) and clone (a JSON form
// prefilled with the parent's knobs; the api's 400 errors are shown in place).

import { post } from "./api.js";
import { $ } from "./dom.js";

const MASK = "***";
const KNOBS = ["pipeline_type", "model_config", "sampling_params", "client_config", "rpm_limit", "tpm_limit"];

// The value without masked secrets: left out, a clone inherits the parent's real ones.
function unmasked(value) {
  if (Array.isArray(value)) return value.map(unmasked);
  if (value && typeof value === "object") {
    const out = {};
    for (const [key, inner] of Object.entries(value)) if (inner !== MASK) out[key] = unmasked(inner);
    return out;
  }
  return value;
}

export function cloneKnobs(pipeline) {
  const knobs = { pipeline_name: `${pipeline.pipeline_name}-clone` };
  for (const key of KNOBS) {
    const value = unmasked(pipeline[key]);
    if (value !== null && value !== undefined && !(typeof value === "object" && !Object.keys(value).length)) {
      knobs[key] = value;
    }
  }
  return knobs;
}

const reasonOf = (input) => (input.value.trim() ? { reason: input.value.trim() } : {});

// Opens `dialog`, calls `submit()` on OK until it returns true (an error keeps it open).
function run(dialog, submit) {
  const form = dialog.querySelector("form");
  form.onsubmit = async (event) => {
    if (event.submitter && event.submitter.value === "cancel") return;
    event.preventDefault();
    const ok = form.querySelector("button[value=ok]");
    ok.disabled = true;
    try {
      if (await submit()) dialog.close();
    } finally {
      ok.disabled = false;
    }
  };
  dialog.showModal();
}

async function settle(path, body, error) {
  error.textContent = "";
  try {
    const op = await post(`${path}?wait=10`, body);
    if (op.status === "failed") {
      error.textContent = op.error;
      return false;
    }
    return true;
  } catch (failure) {
    error.textContent = failure.message;
    return false;
  }
}

const WORDS = {
  stop: ["Stop", "No new shard starts; one in flight finishes and counts."],
  resume: ["Resume", "It goes on from its first incomplete shard."],
  delete: ["Delete", "In-flight work is aborted and nothing more of it counts. This cannot be undone."],
};

export function confirmAction(action, pipeline) {
  const [verb, text] = WORDS[action];
  $("#confirm-title").textContent = `${verb} pipeline ${pipeline.pipeline_id} (${pipeline.pipeline_name})?`;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = verb;
  $("#confirm-ok").classList.toggle("danger", action === "delete");
  const reason = $("#confirm-reason");
  reason.value = "";
  $("#confirm-error").textContent = "";
  run($("#confirm"), () =>
    settle(`/api/v1/pipelines/${pipeline.pipeline_id}/${action}`, reasonOf(reason), $("#confirm-error")),
  );
}

export function cloneForm(pipeline) {
  $("#clone-title").textContent = `Clone pipeline ${pipeline.pipeline_id} (${pipeline.pipeline_name})`;
  const text = $("#clone-json");
  text.value = JSON.stringify(cloneKnobs(pipeline), null, 2);
  const reason = $("#clone-reason");
  reason.value = "";
  const error = $("#clone-error");
  error.textContent = "";
  run($("#clone"), () => {
    let changes;
    try {
      changes = JSON.parse(text.value);
    } catch (failure) {
      error.textContent = `not JSON: ${failure.message}`;
      return false;
    }
    if (!changes || typeof changes !== "object" || Array.isArray(changes)) {
      error.textContent = "the changes must be a JSON object";
      return false;
    }
    return settle(`/api/v1/pipelines/${pipeline.pipeline_id}/clone`, { ...changes, ...reasonOf(reason) }, error);
  });
}
