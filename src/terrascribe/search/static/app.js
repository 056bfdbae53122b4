/* terrascribe search page: query box -> /api/search -> hits on a Leaflet map + thumbnails.
   No base map (nothing is fetched from outside): a graticule, hit footprints and the tile
   thumbnails themselves drawn as image overlays. */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const map = L.map("map", { zoomControl: true, attributionControl: false, worldCopyJump: true })
    .setView([20, 0], 2);
  const graticule = L.layerGroup().addTo(map);
  const overlays = L.layerGroup().addTo(map);
  const outlines = L.layerGroup().addTo(map);
  let hitsById = {};
  let blobUrls = [];

  function headers() {
    const key = $("apikey").value;
    return key ? { "X-API-Key": key } : {};
  }

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  function drawGraticule() {
    graticule.clearLayers();
    const b = map.getBounds();
    const span = Math.max(b.getEast() - b.getWest(), b.getNorth() - b.getSouth());
    const steps = [30, 10, 5, 1, 0.5, 0.1, 0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001];
    const step = steps.find((s) => span / s >= 3 && span / s <= 30) || steps[steps.length - 1];
    const style = { color: "#9ab", weight: 0.6, interactive: false };
    const west = Math.floor(b.getWest() / step) * step;
    const south = Math.max(-85, Math.floor(b.getSouth() / step) * step);
    const north = Math.min(85, b.getNorth());
    for (let x = west; x <= b.getEast(); x += step) {
      graticule.addLayer(L.polyline([[south, x], [north, x]], style));
    }
    for (let y = south; y <= north; y += step) {
      graticule.addLayer(L.polyline([[y, b.getWest()], [y, b.getEast()]], style));
    }
  }
  map.on("moveend", drawGraticule);

  async function getJSON(url) {
    const res = await fetch(url, { headers: headers() });
    if (res.status === 401) {
      $("keyrow").hidden = false;
      throw new Error("this server needs an API key");
    }
    if (!res.ok) {
      let detail = res.statusText;
      try { const body = await res.json(); detail = JSON.stringify(body.detail); } catch (e) { /* keep */ }
      throw new Error(res.status + " " + detail);
    }
    return res.json();
  }

  async function thumbUrl(id) {
    const res = await fetch("/api/tile/" + id + ".jpg", { headers: headers() });
    if (!res.ok) throw new Error("thumbnail " + id + ": " + res.status);
    const url = URL.createObjectURL(await res.blob());
    blobUrls.push(url);
    return url;
  }

  function clearResults() {
    overlays.clearLayers();
    outlines.clearLayers();
    $("hits").textContent = "";
    $("detail").hidden = true;
    blobUrls.forEach((u) => URL.revokeObjectURL(u));
    blobUrls = [];
    hitsById = {};
  }

  function footprintLatLngs(geom) {
    return geom.coordinates[0].map(([x, y]) => [y, x]);
  }

  async function showDetail(id) {
    document.querySelectorAll("#hits li").forEach((li) =>
      li.classList.toggle("active", li.dataset.id === String(id)));
    const hit = hitsById[id];
    if (hit) map.fitBounds(L.latLngBounds(footprintLatLngs(hit.geometry)), { maxZoom: map.getZoom() });
    try {
      const meta = await getJSON("/api/tile/" + id);
      $("detail-img").src = hit && hit.url ? hit.url : await thumbUrl(id);
      const table = $("detail-meta");
      table.textContent = "";
      const shown = ["id", "source", "source_kind", "item", "date", "gsd_m", "crs",
        "col_off", "row_off", "width", "height", "west", "south", "east", "north", "tile_key"];
      for (const key of shown) {
        const tr = document.createElement("tr");
        const k = document.createElement("td"); k.textContent = key;
        const v = document.createElement("td");
        v.textContent = meta[key] === null || meta[key] === undefined ? "" : String(meta[key]);
        tr.append(k, v);
        table.append(tr);
      }
      $("detail").hidden = false;
    } catch (err) {
      setStatus(String(err.message || err), true);
    }
  }
  $("close").addEventListener("click", () => { $("detail").hidden = true; });

  async function runQuery(ev) {
    if (ev) ev.preventDefault();
    const q = $("q").value.trim();
    if (!q) return;
    const params = new URLSearchParams({ q: q, k: $("k").value || "12" });
    if ($("inview").checked) {
      const b = map.getBounds();
      const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
      params.set("bbox", [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90),
        clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -90, 90)].map((v) => v.toFixed(6)).join(","));
    }
    if ($("date_from").value) params.set("date_from", $("date_from").value);
    if ($("date_to").value) params.set("date_to", $("date_to").value);
    setStatus("searching…");
    clearResults();
    let data;
    try {
      data = await getJSON("/api/search?" + params.toString());
    } catch (err) {
      setStatus(String(err.message || err), true);
      return;
    }
    const hits = data.hits;
    setStatus(hits.length + " hits for “" + q + "”");
    if (!hits.length) return;
    const all = L.latLngBounds([]);
    await Promise.all(hits.map(async (hit) => {
      hitsById[hit.id] = hit;
      const ll = footprintLatLngs(hit.geometry);
      const bounds = L.latLngBounds(ll);
      all.extend(bounds);
      const outline = L.polygon(ll, { color: "#d33", weight: 2, fill: false });
      outline.bindTooltip("#" + hit.rank, { permanent: true, direction: "center", className: "rank-label" });
      outline.on("click", () => showDetail(hit.id));
      outlines.addLayer(outline);
      const li = document.createElement("li");
      li.dataset.id = hit.id;
      li.style.order = hit.rank;
      const img = document.createElement("img");
      img.alt = "tile " + hit.id;
      const cap = document.createElement("div");
      cap.className = "cap";
      cap.textContent = "#" + hit.rank + "  " + hit.score.toFixed(3) + (hit.date ? "  " + hit.date : "");
      li.append(img, cap);
      li.addEventListener("click", () => showDetail(hit.id));
      $("hits").append(li);
      try {
        hit.url = await thumbUrl(hit.id);
        img.src = hit.url;
        overlays.addLayer(L.imageOverlay(hit.url, bounds, { opacity: 0.95, interactive: false }));
      } catch (err) {
        cap.textContent += "  (no thumbnail)";
      }
    }));
    map.fitBounds(all.pad(0.2));
  }
  $("query").addEventListener("submit", runQuery);

  getJSON("/api/info").then((info) => {
    if (info.bbox) map.fitBounds([[info.bbox[1], info.bbox[0]], [info.bbox[3], info.bbox[2]]]);
    $("k").max = info.max_k;
    setStatus(info.tiles + " tiles indexed (" + info.index.type + ", " + info.model.name + ")");
  }).catch((err) => setStatus(String(err.message || err), true));
  drawGraticule();
})();
