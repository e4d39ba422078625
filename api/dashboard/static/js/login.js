// Log in: check the key against the API, keep it in this tab, go where the user was heading.

import { api, setKey } from "./api.js";

const form = document.getElementById("login-form");
const input = document.getElementById("api-key");
const problem = document.getElementById("login-error");

function destination() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  return next.startsWith("/") && !next.startsWith("//") ? next : "/"; // same-site paths only
}

form.addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  problem.hidden = true;
  const key = input.value.trim();
  try {
    await api("/v1/fine_tuning/jobs", { params: { limit: 1 }, key });
  } catch (error) {
    problem.textContent = error.status === 401 ? "That key is not valid (or was revoked)." : `Could not check the key: ${error.message}`;
    problem.hidden = false;
    return;
  }
  setKey(key);
  location.assign(destination());
});
input.focus();
