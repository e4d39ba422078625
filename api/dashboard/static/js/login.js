// Log in: check the key against the API, keep it in this tab, go where the user was heading.

import { api, setKey } from "./api.js";

const form = document.getElementById("login-form");
const input = document.getElementById("api-key");
const problem = document.getElementById("login-error");

const HOME = "/";
const PAGE = /^\/(dashboard\/(compare|jobs\/[^/]+|experiments\/[^/]+))?$/; // the pages of routes.py

// Where `next` points, if that is one of this dashboard's own pages; else the jobs page. Parsed the
// way the browser will follow it (backslashes, tabs, `..`, schemes), so `/\evil.example` or
// `/%09/evil.example`, which a prefix check reads as local paths, cannot leave the origin.
function destination() {
  let next;
  try {
    next = new URL(new URLSearchParams(location.search).get("next") || HOME, location.origin);
  } catch {
    return HOME;
  }
  return next.origin === location.origin && PAGE.test(next.pathname) ? next.pathname + next.search + next.hash : HOME;
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
