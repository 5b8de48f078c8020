// The search page: plain JavaScript over the JSON API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const FLOOR = document.body.dataset.floor;
let current = null;      // the last answer of the served embedding
let ready = false;

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

function thumbSrc(name, size) {
  return "/api/drawings/" + encodeURIComponent(name) + "/thumbnail.png" + (size === "large" ? "?size=large" : "");
}

async function api(url, options) {
  const resp = await fetch(url, options);
  let body = null;
  try { body = await resp.json(); } catch (e) { body = {detail: resp.status + " " + resp.statusText}; }
  if (!resp.ok) {
    const err = new Error(body && body.detail ? body.detail : resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return body;
}

// ------------------------------------------------------------------ status
async function pollStatus() {
  try {
    const s = await api("/api/health");
    const el = $("status");
    el.className = "status " + s.state;
    if (s.state === "ready") {
      el.textContent = "gallery ready: " + s.drawings + " drawings" + (s.skipped ? " (" + s.skipped + " skipped)" : "");
      if (!ready) { ready = true; onReady(); }
      return;
    }
    el.textContent = s.message;
    if (s.state === "failed") return;
  } catch (e) {
    $("status").textContent = "no answer from the server: " + e.message;
  }
  setTimeout(pollStatus, 1000);
}

function onReady() {
  const params = new URLSearchParams(window.location.search);
  if (params.get("topk")) setTopk(params.get("topk"));
  if (params.get("query")) {
    $("name").value = params.get("query");
    searchName(params.get("query"));
  }
}

function setTopk(k) {
  const sel = $("topk");
  if (![...sel.options].some((o) => o.value === String(k))) {
    const opt = document.createElement("option");
    opt.value = opt.textContent = String(k);
    sel.appendChild(opt);
  }
  sel.value = String(k);
}

// ------------------------------------------------------------------ names
let nameTimer = null;
$("name").addEventListener("input", () => {
  clearTimeout(nameTimer);
  nameTimer = setTimeout(async () => {
    try {
      const page = await api("/api/drawings?limit=30&q=" + encodeURIComponent($("name").value));
      $("names").innerHTML = "";
      for (const n of page.names) {
        const opt = document.createElement("option");
        opt.value = n;
        $("names").appendChild(opt);
      }
    } catch (e) { /* the status line says why the gallery is not there */ }
  }, 150);
});

$("by-name").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("name").value.trim();
  if (name) searchName(name);
});

// ------------------------------------------------------------------ search
function topk() { return $("topk").value; }

async function searchName(name) {
  const k = topk();
  history.replaceState(null, "", "/?query=" + encodeURIComponent(name) + "&topk=" + k);
  await run(() => api("/api/search?query=" + encodeURIComponent(name) + "&topk=" + k),
            () => api("/api/search?query=" + encodeURIComponent(name) + "&topk=" + k + "&embedding=" + FLOOR));
}

async function searchFile(file) {
  const form = () => {
    const f = new FormData();
    f.append("file", file);
    f.append("topk", topk());
    return f;
  };
  history.replaceState(null, "", "/");
  await run(() => api("/api/search", {method: "POST", body: form()}), () => {
    const f = form();
    f.append("embedding", FLOOR);
    return api("/api/search?picture=0", {method: "POST", body: f});
  });
}

async function run(model, floor) {
  showMessage("");
  $("results").innerHTML = '<div class="busy">searching…</div>';
  $("floor-results").innerHTML = "";
  try {
    current = await model();
  } catch (e) {
    $("results").innerHTML = "";
    showMessage(e.message);
    return;
  }
  showAnswer(current);
  if ($("show-floor").checked) {
    $("floor-column").hidden = false;
    try { showResults(await floor(), $("floor-results"), $("floor-title")); }
    catch (e) { $("floor-results").textContent = e.message; }
  } else {
    $("floor-column").hidden = true;
  }
}

function showAnswer(a) {
  const q = a.query;
  $("query-box").hidden = false;
  $("query-name").textContent = q.name + (q.from === "upload" ? " (uploaded)" : "");
  $("query-picture").src = q.thumbnail || "";
  $("query-picture").hidden = !q.thumbnail;
  const link = q.from === "gallery" ? "/?query=" + encodeURIComponent(q.name) + "&topk=" + a.results.length : "";
  $("permalink").hidden = !link;
  $("permalink").href = link || "#";
  showResults(a, $("results"), $("results-title"));
}

function showResults(a, grid, title) {
  title.hidden = false;
  title.textContent = "top " + a.results.length + " of " + a.gallery_size + " by " + a.embedding.kind +
    " (" + a.score + ")" + (a.left_out.length ? " — left out: " + a.left_out.join(", ") : "");
  grid.innerHTML = "";
  for (const r of a.results) {
    const card = document.createElement("button");
    card.type = "button";
    card.className = "card result";
    card.dataset.name = r.name;
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = r.name;
    img.src = r.thumbnail;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = r.rank + ". " + r.name;
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = (a.method === "cosine" ? "similarity " : "−distance ") + r.similarity.toFixed(3);
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = (r.percentile ?? 0) + "%";
    bar.appendChild(fill);
    bar.title = r.percentile === null ? "no other drawings to compare with"
      : "more similar to the query than " + r.percentile.toFixed(0) + "% of the gallery";
    const pct = document.createElement("div");
    pct.className = "pct";
    pct.textContent = r.percentile === null ? "" : "above " + r.percentile.toFixed(0) + "% of the gallery";
    card.append(img, name, score, bar, pct);
    card.addEventListener("click", () => compare(a, r));
    grid.appendChild(card);
  }
}

// ------------------------------------------------------------------ compare
async function compare(a, r) {
  const q = a.query;
  $("compare-a").src = q.from === "gallery" ? thumbSrc(q.name, "large") : (q.thumbnail || "");
  $("compare-a-name").textContent = "query: " + q.name;
  $("compare-b").src = thumbSrc(r.name, "large");
  $("compare-b-name").textContent = "#" + r.rank + ": " + r.name;
  $("compare-text").textContent = "similarity " + r.similarity.toFixed(3) +
    (r.percentile === null ? "" : "; more similar to the query than " + r.percentile.toFixed(0) + "% of the gallery");
  $("compare-query").onclick = () => {
    $("compare").hidden = true;
    $("name").value = r.name;
    searchName(r.name);
  };
  $("compare").hidden = false;
  if (q.from === "gallery") {
    try {
      const p = await api("/api/pair?a=" + encodeURIComponent(q.name) + "&b=" + encodeURIComponent(r.name));
      $("compare-text").textContent = "similarity " + p.similarity.toFixed(3) + " (" + p.embedding + ")" +
        (p.percentile === null ? "" : "; more similar to the query than " + p.percentile.toFixed(0) + "% of " +
         p.reference + " other gallery drawings");
    } catch (e) { /* the numbers of the search stay */ }
  }
}
$("compare-close").addEventListener("click", () => { $("compare").hidden = true; });
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") $("compare").hidden = true; });

// ------------------------------------------------------------------ upload
$("file").addEventListener("change", () => { if ($("file").files.length) searchFile($("file").files[0]); });
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (ev) => {
  ev.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  if (ev.dataTransfer.files.length) searchFile(ev.dataTransfer.files[0]);
});
$("show-floor").addEventListener("change", () => {
  if (current && current.query.from === "gallery") searchName(current.query.name);
  else if (!$("show-floor").checked) $("floor-column").hidden = true;
});

pollStatus();
