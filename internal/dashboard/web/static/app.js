// Polls the daemon's per-volume I/O rates (/ui/io.json) every second and
// updates the cells marked data-io="VOLUME" data-field="FIELD", the
// busiest-volumes table and a volume page's sparkline.
(function () {
  "use strict";
  var cells = document.querySelectorAll("[data-io]");
  var busiest = document.querySelector("#busiest tbody");
  var spark = document.getElementById("spark");
  if (!cells.length && !busiest && !spark) return;
  var history = [];

  function bps(v) {
    var u = ["B/s", "KiB/s", "MiB/s", "GiB/s"], i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : v.toFixed(0)) + " " + u[i];
  }
  function fmt(field, v) {
    return field.indexOf("bytes") >= 0 ? bps(v) : v.toFixed(0);
  }
  function cell(text, num) {
    var td = document.createElement("td");
    td.textContent = text;
    if (num) td.className = "num";
    return td;
  }
  function update(j) {
    if (!j.interval_seconds) return;
    var by = {};
    (j.volumes || []).forEach(function (v) { by[v.volume] = v; });
    cells.forEach(function (c) {
      var v = by[c.getAttribute("data-io")];
      var f = c.getAttribute("data-field");
      c.textContent = v ? fmt(f, v[f]) : fmt(f, 0);
    });
    if (busiest) {
      var rows = (j.volumes || []).filter(function (v) {
        return v.read_iops + v.write_iops + v.read_bytes_per_second + v.write_bytes_per_second > 0;
      }).slice(0, 10);
      busiest.textContent = "";
      rows.forEach(function (v) {
        var tr = document.createElement("tr");
        tr.appendChild(cell(v.volume));
        tr.appendChild(cell((v.read_iops + v.write_iops).toFixed(0), true));
        tr.appendChild(cell(bps(v.read_bytes_per_second), true));
        tr.appendChild(cell(bps(v.write_bytes_per_second), true));
        busiest.appendChild(tr);
      });
      if (!rows.length) {
        var tr = document.createElement("tr"), td = cell("no I/O");
        td.colSpan = 4; td.className = "muted"; tr.appendChild(td); busiest.appendChild(tr);
      }
    }
    if (spark) {
      var v = by[spark.getAttribute("data-volume")] || {read_iops: 0, write_iops: 0};
      history.push([v.read_iops, v.write_iops]);
      if (history.length > 60) history.shift();
      var top = 1;
      history.forEach(function (h) { top = Math.max(top, h[0], h[1]); });
      ["r", "w"].forEach(function (k, i) {
        var n = history.length;
        var pts = history.map(function (h, x) { // the latest at the right
          return (300 - (n - 1 - x) * 300 / 59).toFixed(1) + "," + (58 - h[i] * 56 / top).toFixed(1);
        });
        spark.querySelector("polyline." + k).setAttribute("points", pts.join(" "));
      });
    }
  }
  function poll() {
    fetch("/ui/io.json", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) { if (j) update(j); })
      .catch(function () {})
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
