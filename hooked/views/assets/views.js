/* hooked.views runtime: draws the views that hooked/views/*.py describe as JSON.
 *
 * No dependencies, no network. A view is a div.hv-view with id ID followed by a JSON script element
 * with id ID-data; hookedViews.render(ID) draws it. Text from the data
 * (tokens, labels) only ever goes through textContent / setAttribute, never innerHTML.
 * Numbers: finite values are JSON numbers; "NaN", "inf", "-inf" stand for the others, which are drawn
 * hatched and labelled, never with a colour of the scale.
 */
(function () {
  "use strict";
  var VERSION = 1;
  if (window.hookedViews && window.hookedViews.version >= VERSION) return;
  var SVG = "http://www.w3.org/2000/svg";
  var H = { version: VERSION, rendered: 0, renderMs: 0, errors: [] };

  // ------------------------------------------------------------------ data
  function b64(s) {
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function half(h) {
    var s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return s * f * Math.pow(2, -24);
    if (e === 31) return f ? NaN : s * Infinity;
    return s * (1 + f / 1024) * Math.pow(2, e - 15);
  }
  function num(v) {
    if (typeof v === "number") return v;
    if (v === "inf") return Infinity;
    if (v === "-inf") return -Infinity;
    return NaN;
  }
  // {shape, v: [...]} | {shape, f16: base64} | {shape, f32: base64} -> {shape, data, at(i, j, ..)}
  function arr(spec) {
    var data;
    if (spec.f16 !== undefined) {
      var u = b64(spec.f16), n = u.length / 2;
      data = new Float32Array(n);
      for (var i = 0; i < n; i++) data[i] = half(u[2 * i] | (u[2 * i + 1] << 8));
    } else if (spec.f32 !== undefined) {
      data = new Float32Array(b64(spec.f32).buffer);
    } else {
      data = spec.v.map(num);
    }
    var shape = spec.shape, strides = [];
    for (var k = shape.length - 1, st = 1; k >= 0; k--) { strides[k] = st; st *= shape[k]; }
    return {
      shape: shape, data: data,
      at: function () { var o = 0; for (var a = 0; a < arguments.length; a++) o += arguments[a] * strides[a]; return data[o]; }
    };
  }

  // ------------------------------------------------------------------ numbers and colours
  function special(v) {
    if (Number.isNaN(v)) return "NaN";
    if (v === Infinity) return "+inf";
    if (v === -Infinity) return "-inf";
    return null;
  }
  function fmt(v, digits) {
    var s = special(v);
    if (s) return s;
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential((digits || 3) - 1);
    return String(Number(v.toPrecision(digits || 3)));
  }
  function exact(v) { return special(v) || String(v); }
  // decimals for the numbers in the cells of a grid whose largest |value| is m: two significant digits of m
  function decimalsFor(m) {
    if (!(m > 0) || m >= 100) return 0;
    if (m >= 10) return 1;
    if (m >= 0.1) return 2;
    return Math.min(6, 1 - Math.floor(Math.log10(m)));
  }
  // a number inside a cell, with d decimals (never cut off: the font shrinks to fit); hover has the exact value
  function cellNum(v, d) {
    var s = special(v);
    if (s) return s;
    var a = Math.abs(v);
    if (a >= 9999.5) return v.toExponential(1).replace("e+", "e");
    return (a < 0.5 * Math.pow(10, -d) ? 0 : v).toFixed(d);
  }
  var DIVERGING = [[33, 102, 172], [103, 169, 207], [247, 247, 247], [239, 138, 98], [178, 24, 43]];
  var SEQUENTIAL = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    var i = Math.min(stops.length - 2, Math.floor(t)), f = t - i, a = stops[i], b = stops[i + 1];
    return [0, 1, 2].map(function (k) { return Math.round(a[k] + f * (b[k] - a[k])); });
  }
  function rgb(c) { return "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")"; }
  function finiteRange(values) {
    var lo = Infinity, hi = -Infinity;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
    }
    return lo <= hi ? [lo, hi] : [0, 0];
  }
  // scale spec {kind: diverging|sequential|categorical, min, max, colors, names} -> v -> [r,g,b] | null
  function scaleOf(spec, values) {
    var r = finiteRange(values), kind = spec.kind || "sequential";
    if (kind === "categorical") {
      var colors = spec.colors;
      return { kind: kind, spec: spec, color: function (v) {
        return isFinite(v) && colors[v] !== undefined ? hex(colors[v]) : null; } };
    }
    if (kind === "diverging") {
      var m = spec.max !== undefined && spec.max !== null ? spec.max : Math.max(Math.abs(r[0]), Math.abs(r[1]));
      if (!(m > 0)) m = 1;
      return { kind: kind, min: -m, max: m, color: function (v) {
        return isFinite(v) ? ramp(DIVERGING, (v + m) / (2 * m)) : null; } };
    }
    var lo = spec.min !== undefined && spec.min !== null ? spec.min : r[0];
    var hi = spec.max !== undefined && spec.max !== null ? spec.max : r[1];
    if (!(hi > lo)) hi = lo + 1;
    return { kind: kind, min: lo, max: hi, color: function (v) {
      return isFinite(v) ? ramp(SEQUENTIAL, (v - lo) / (hi - lo)) : null; } };
  }
  function hex(h) {
    var n = parseInt(h.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }
  function ink(c) { return c && 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 140 ? "#fff" : "#111"; }

  // ------------------------------------------------------------------ DOM helpers
  function el(tag, attrs, parent, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function svg(tag, attrs, parent, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function shown(tok) { return String(tok).replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(/\r/g, "\\r"); }
  function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + "\u2026" : s; }
  function textWidth(s, px) { return String(s).length * (px || 11) * 0.6; }
  var uid = 0;
  function hatch(root) {
    var id = "hv-hatch-" + (++uid), defs = svg("defs", {}, root);
    var p = svg("pattern", { id: id, width: 6, height: 6, patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)" }, defs);
    svg("rect", { width: 6, height: 6, fill: "#e4e4e4" }, p);
    svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#777", "stroke-width": 2 }, p);
    return "url(#" + id + ")";
  }
  function legend(parent, scale, label, nonfinite) {
    var box = el("div", { class: "hv-legend" }, parent);
    if (label) el("span", { class: "hv-legend-label" }, box, label + " ");
    if (scale.kind === "categorical") {
      scale.spec.names.forEach(function (name, i) {
        var item = el("span", { class: "hv-legend-item" }, box);
        el("span", { class: "hv-swatch", style: "background:" + scale.spec.colors[i] }, item);
        el("span", {}, item, name);
      });
    } else {
      el("span", { class: "hv-legend-num" }, box, fmt(scale.min));
      var stops = scale.kind === "diverging" ? DIVERGING : SEQUENTIAL;
      el("span", { class: "hv-ramp", style: "background:linear-gradient(to right," +
        stops.map(rgb).join(",") + ")" }, box);
      el("span", { class: "hv-legend-num" }, box, fmt(scale.max));
    }
    if (nonfinite) {
      var nf = el("span", { class: "hv-legend-item" }, box);
      el("span", { class: "hv-swatch hv-nonfinite" }, nf);
      el("span", {}, nf, "NaN / \u00b1inf (" + nonfinite + ")");
    }
    return box;
  }
  function countNonFinite(values) {
    var n = 0;
    for (var i = 0; i < values.length; i++) if (!isFinite(values[i])) n++;
    return n;
  }

  // ------------------------------------------------------------------ heatmap
  // p: rows, cols (labels), values {shape [R, C]}, scale, text?, tips?, xlabel, ylabel, value_label,
  //    cell_w?, cell_h?, digits?, show_values?
  function heatmap(box, p, opts) {
    opts = opts || {};
    var A = opts.array || arr(p.values), R = A.shape[0], C = A.shape[1];
    var rows = p.rows || range(R).map(String), cols = p.cols || range(C).map(String);
    var scale = opts.scale || scaleOf(p.scale || {}, A.data);
    var cw = p.cell_w || Math.max(14, Math.min(44, Math.floor(640 / Math.max(1, C))));
    var ch = p.cell_h || Math.max(12, Math.min(28, cw));
    var left = 10 + Math.min(160, Math.max.apply(null, [20].concat(rows.map(function (r) { return textWidth(shown(r)); }))));
    var colText = cols.map(function (c) { return clip(shown(c), 18); });
    var bottom = 14 + Math.min(110, Math.max.apply(null, [12].concat(colText.map(function (c) { return textWidth(c) * 0.82; }))));
    var top = 6, W = left + C * cw + 8, Hh = top + R * ch + bottom + (p.xlabel ? 16 : 0);
    if (R === 0 || C === 0) { el("div", { class: "hv-empty" }, box, "empty: " + R + " x " + C); return null; }
    var root = svg("svg", { width: W, height: Hh, class: "hv-heatmap" }, box);
    var nan = hatch(root);
    var showValues = p.show_values !== undefined ? p.show_values : (!p.text && cw >= 30);
    var range_ = finiteRange(A.data), decimals = decimalsFor(Math.max(Math.abs(range_[0]), Math.abs(range_[1])));
    var g = svg("g", { transform: "translate(" + left + "," + top + ")" }, root);
    for (var r = 0; r < R; r++) {
      for (var c = 0; c < C; c++) {
        var v = A.at(r, c), col = scale.color(v);
        var rect = svg("rect", { x: c * cw, y: r * ch, width: cw - 1, height: ch - 1,
          fill: col ? rgb(col) : nan, class: "hv-cell" + (col ? "" : " hv-nonfinite"),
          "data-row": r, "data-col": c, "data-v": exact(v) }, g);
        var tip = (p.ylabel || "row") + ": " + shown(rows[r]) + "\n" + (p.xlabel || "column") + ": " +
          shown(cols[c]) + "\n" + (p.value_label || "value") + ": " + exact(v);
        if (p.tips) tip += "\n" + p.tips[r][c];
        rect.setAttribute("data-tip", tip);
        var isText = !!p.text, label = isText ? p.text[r][c] : (showValues || !col ? cellNum(v, decimals) : null);
        if (label !== null && label !== undefined) {
          label = shown(label);
          var fs = Math.min(11, ch - 3);
          if (isText) label = clip(label, Math.max(2, Math.floor((cw - 2) / (fs * 0.6))));  // a token: cut, hover has it
          else fs = Math.min(fs, (cw - 3) / (label.length * 0.62));  // a number: never cut, smaller if need be
          svg("text", { x: c * cw + (cw - 1) / 2, y: r * ch + ch / 2, "font-size": fs.toFixed(1),
            "text-anchor": "middle", "dominant-baseline": "central", fill: ink(col || [228, 228, 228]),
            class: "hv-cell-text", "pointer-events": "none" }, g, label);
        }
      }
    }
    rows.forEach(function (lab, r) {
      svg("text", { x: left - 4, y: top + r * ch + ch / 2, "text-anchor": "end", "dominant-baseline": "central",
        class: "hv-ylabel", "data-i": r, "data-label": lab, "font-size": 11 }, root, clip(shown(lab), 26));
    });
    colText.forEach(function (lab, c) {
      var x = left + c * cw + cw / 2, y = top + R * ch + 6;
      svg("text", { x: x, y: y, "text-anchor": "end", "dominant-baseline": "central", class: "hv-xlabel",
        "data-i": c, "data-label": cols[c], "font-size": 11, transform: "rotate(-55 " + x + " " + y + ")" }, root, lab);
    });
    if (p.xlabel) svg("text", { x: left + C * cw / 2, y: Hh - 3, "text-anchor": "middle", class: "hv-axis-title",
      "font-size": 11 }, root, p.xlabel);
    if (!opts.noLegend) legend(box, scale, p.value_label, countNonFinite(A.data));
    return root;
  }
  function range(n) { var a = []; for (var i = 0; i < n; i++) a.push(i); return a; }

  // ------------------------------------------------------------------ attention
  // p: tokens, patterns {shape [L, H, T, T]} (destination rows, source columns), labels? [L] layer names,
  //    initial [l, h]
  function attention(box, p) {
    var A = arr(p.patterns), L = A.shape[0], Hn = A.shape[1], T = A.shape[2];
    if (!L || !Hn || !T) { el("div", { class: "hv-empty" }, box, "no attention patterns (empty cache)"); return; }
    var scale = scaleOf({ kind: "sequential", min: 0, max: 1 }, []);
    var wrap = el("div", { class: "hv-attn" }, box);
    var thumbs = el("div", { class: "hv-thumbs" }, wrap);
    var main = el("div", { class: "hv-attn-main" }, wrap);
    var size = Math.max(20, Math.min(44, Math.floor(520 / Hn)));
    var table = el("table", { class: "hv-thumb-grid" }, thumbs), head = el("tr", {}, table);
    el("th", {}, head, "");
    for (var h = 0; h < Hn; h++) el("th", {}, head, "H" + h);
    var canvases = [], plane = T * T;
    for (var l = 0; l < L; l++) {
      var tr = el("tr", {}, table);
      el("th", {}, tr, p.labels ? p.labels[l] : "L" + l);
      for (h = 0; h < Hn; h++) {
        var td = el("td", {}, tr);
        var cv = el("canvas", { width: T, height: T, class: "hv-thumb", "data-layer": l, "data-head": h,
          "data-tip": "layer " + l + ", head " + h + " (click to show)", style: "width:" + size + "px;height:" + size + "px" }, td);
        var ctx = cv.getContext("2d"), img = ctx.createImageData(T, T), base = (l * Hn + h) * plane;
        for (var i = 0; i < plane; i++) {
          var c = scale.color(A.data[base + i]) || [255, 0, 200];  // non-finite: magenta, not in the scale
          img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2]; img.data[4 * i + 3] = 255;
        }
        ctx.putImageData(img, 0, 0);
        canvases.push(cv);
      }
    }
    function select(l, h) {
      canvases.forEach(function (cv) { cv.classList.toggle("hv-selected", +cv.dataset.layer === l && +cv.dataset.head === h); });
      main.textContent = "";
      el("div", { class: "hv-attn-title" }, main, (p.labels ? p.labels[l] : "layer " + l) + ", head " + h);
      var values = Array.prototype.slice.call(A.data, (l * Hn + h) * plane, (l * Hn + h + 1) * plane);
      var sub = { shape: [T, T], data: values, at: function (r, c) { return values[r * T + c]; } };
      var tips = p.tokens.map(function (d, r) { return p.tokens.map(function (s, c) {
        return "destination " + r + ": " + shown(d) + "\nsource " + c + ": " + shown(s) + "\nweight: " + fmt(values[r * T + c], 4);
      }); });
      var root = heatmap(main, { rows: p.tokens, cols: p.tokens, xlabel: "source (key)", ylabel: "destination (query)",
        value_label: "attention weight", show_values: false, cell_w: Math.max(14, Math.min(34, Math.floor(560 / T))) },
        { array: sub, scale: scale });
      root.querySelectorAll("rect.hv-cell").forEach(function (rect) {
        rect.setAttribute("data-tip", tips[+rect.dataset.row][+rect.dataset.col]);
      });
      main.dataset.layer = l; main.dataset.head = h;
    }
    thumbs.addEventListener("click", function (ev) {
      var t = ev.target.closest("canvas.hv-thumb");
      if (t) select(+t.dataset.layer, +t.dataset.head);
    });
    var start = p.initial || [0, 0];
    select(start[0], start[1]);
  }

  // ------------------------------------------------------------------ bars
  // p: labels, values {shape [N]}, value_label, tips?
  function bars(box, p) {
    var A = arr(p.values), N = A.shape[0];
    if (!N) { el("div", { class: "hv-empty" }, box, "no values"); return; }
    var r = finiteRange(A.data), m = Math.max(Math.abs(r[0]), Math.abs(r[1])) || 1;
    var neg = r[0] < 0, bw = 300, rowH = 16, pad = 58;  // pad: room for a value beside its bar
    var left = 10 + Math.min(180, Math.max.apply(null, p.labels.map(function (s) { return textWidth(shown(s)); })));
    var zero = left + (neg ? pad + bw / 2 : 0), half = neg ? bw / 2 : bw;
    var root = svg("svg", { width: zero + half + pad + 8, height: N * rowH + 24, class: "hv-bars" }, box);
    var nan = hatch(root);
    svg("line", { x1: zero, x2: zero, y1: 0, y2: N * rowH, stroke: "#444" }, root);
    for (var i = 0; i < N; i++) {
      var v = A.data[i], y = i * rowH, ok = isFinite(v), len = ok ? Math.abs(v) / m * half : 14;
      var x = ok && v < 0 ? zero - len : zero;
      var rect = svg("rect", { x: x, y: y + 2, width: Math.max(len, 0.5), height: rowH - 4,
        fill: ok ? (v < 0 ? "#2166ac" : "#b2182b") : nan, class: "hv-bar" + (ok ? "" : " hv-nonfinite"),
        "data-i": i, "data-v": exact(v) }, root);
      rect.setAttribute("data-tip", shown(p.labels[i]) + "\n" + (p.value_label || "value") + ": " + exact(v) +
        (p.tips ? "\n" + p.tips[i] : ""));
      svg("text", { x: left - 4, y: y + rowH / 2, "text-anchor": "end", "dominant-baseline": "central",
        class: "hv-ylabel", "data-i": i, "data-label": p.labels[i], "font-size": 11 }, root, clip(shown(p.labels[i]), 30));
      var tx = ok && v < 0 ? x - 3 : x + Math.max(len, 0.5) + 3;
      svg("text", { x: tx, y: y + rowH / 2, "text-anchor": ok && v < 0 ? "end" : "start", "dominant-baseline": "central",
        class: "hv-bar-value", "font-size": 10, "pointer-events": "none" }, root, fmt(v, 3));
    }
    svg("text", { x: zero, y: N * rowH + 16, "text-anchor": "middle", "font-size": 11, class: "hv-axis-title" },
      root, (p.value_label || "value") + " (scale \u00b1" + fmt(m, 3) + ")");
  }

  // ------------------------------------------------------------------ line and scatter charts
  // p: series [{name, x, y, lo?, hi?, err?, tips?, color?, mode: lines|markers|lines+markers, from_origin?}],
  //    xlabel, ylabel, xlog, ylog, hlines [{y, label}], xticks [{v, label}], equal, circle, width, height
  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  function chart(box, p) {
    var W = p.width || 520, Hh = p.height || 320, m = { l: 58, r: 12, t: 10, b: 42 };
    var series = p.series.map(function (s) {
      return { s: s, x: arr(s.x).data, y: arr(s.y).data, lo: s.lo && arr(s.lo).data, hi: s.hi && arr(s.hi).data,
        err: s.err && arr(s.err).data };
    });
    var xs = [], ys = [], skipped = 0;
    series.forEach(function (q) {
      for (var i = 0; i < q.x.length; i++) {
        if (q.lo && isFinite(q.x[i]) && isFinite(q.lo[i]) && isFinite(q.hi[i])) { xs.push(q.x[i]); ys.push(q.lo[i]); ys.push(q.hi[i]); }
        if (!isFinite(q.x[i]) || !isFinite(q.y[i])) { skipped++; continue; }
        xs.push(q.x[i]); ys.push(q.y[i]);
        if (q.err && isFinite(q.err[i])) { ys.push(q.y[i] - q.err[i]); ys.push(q.y[i] + q.err[i]); }
      }
    });
    (p.hlines || []).forEach(function (h) { ys.push(h.y); });
    if (p.circle) { xs.push(-1, 1); ys.push(-1, 1); }
    if (!xs.length) { el("div", { class: "hv-empty" }, box, "no finite values to plot"); return; }
    var xr = axisRange(xs, p.xlog), yr = axisRange(ys, p.ylog);
    if (p.ylim) yr = p.ylim;
    if (p.equal) {
      var e = Math.max(Math.abs(xr[0]), Math.abs(xr[1]), Math.abs(yr[0]), Math.abs(yr[1]));
      xr = [-e, e]; yr = [-e, e]; W = Hh - m.t - m.b + m.l + m.r;
    }
    var tx = transform(xr, m.l, W - m.r, p.xlog), ty = transform(yr, Hh - m.b, m.t, p.ylog);
    var svgRoot = svg("svg", { width: W, height: Hh, class: "hv-chart" }, box);
    axes(svgRoot, p, xr, yr, tx, ty, W, Hh, m);
    var clipId = "hv-clip-" + (++uid), cp = svg("clipPath", { id: clipId }, svg("defs", {}, svgRoot));
    svg("rect", { x: m.l, y: m.t - 4, width: W - m.l - m.r + 4, height: Hh - m.t - m.b + 8 }, cp);
    var root = svg("g", { "clip-path": "url(#" + clipId + ")" }, svgRoot);
    if (p.circle) svg("circle", { cx: tx(0), cy: ty(0), r: tx(1) - tx(0), fill: "none", stroke: "#ccc" }, root);
    (p.hlines || []).forEach(function (h) {
      svg("line", { x1: m.l, x2: W - m.r, y1: ty(h.y), y2: ty(h.y), stroke: "#999", "stroke-dasharray": "4 3" }, root);
      if (h.label) svg("text", { x: W - m.r - 2, y: ty(h.y) - 3, "text-anchor": "end", "font-size": 10, fill: "#666" }, root, h.label);
    });
    var leg = el("div", { class: "hv-legend" }, box);
    series.forEach(function (q, k) {
      var s = q.s, color = s.color || PALETTE[k % PALETTE.length], mode = s.mode || "lines+markers";
      if (q.lo) {
        var up = [], down = [];
        for (var i = 0; i < q.x.length; i++) if (isFinite(q.lo[i]) && isFinite(q.hi[i]) && isFinite(q.x[i])) {
          up.push(tx(q.x[i]) + "," + ty(q.hi[i])); down.unshift(tx(q.x[i]) + "," + ty(q.lo[i]));
        }
        svg("polygon", { points: up.concat(down).join(" "), fill: color, opacity: 0.15, class: "hv-band" }, root);
      }
      if (mode.indexOf("lines") >= 0) {
        var d = "", pen = false;
        for (i = 0; i < q.x.length; i++) {
          if (!isFinite(q.x[i]) || !isFinite(q.y[i])) { pen = false; continue; }
          d += (pen ? "L" : "M") + tx(q.x[i]).toFixed(1) + "," + ty(q.y[i]).toFixed(1);
          pen = true;
        }
        svg("path", { d: d, fill: "none", stroke: color, "stroke-width": s.width || 1.6, "stroke-dasharray": s.dash || "",
          class: "hv-line" }, root);
      }
      for (i = 0; i < q.x.length; i++) {
        if (!isFinite(q.x[i]) || !isFinite(q.y[i])) continue;
        var cx = tx(q.x[i]), cy = ty(q.y[i]);
        if (s.from_origin) svg("line", { x1: tx(0), y1: ty(0), x2: cx, y2: cy, stroke: color, "stroke-width": 1.6 }, root);
        if (q.err) svg("line", { x1: cx, x2: cx, y1: ty(q.y[i] - q.err[i]), y2: ty(q.y[i] + q.err[i]), stroke: color }, root);
        var tip = (s.name ? s.name + "\n" : "") + (p.xlabel || "x") + ": " + exact(q.x[i]) + "\n" + (p.ylabel || "y") + ": " + exact(q.y[i]);
        if (q.err) tip += " \u00b1 " + fmt(q.err[i], 3);
        if (q.lo) tip += " (band " + fmt(q.lo[i], 3) + " .. " + fmt(q.hi[i], 3) + ")";
        if (s.tips) tip += "\n" + s.tips[i];
        var visible = mode.indexOf("markers") >= 0;
        svg("circle", { cx: cx, cy: cy, r: visible ? (s.size || 3.2) : 5, fill: visible ? (s.colors ? s.colors[i] : color) : "transparent",
          "fill-opacity": visible ? (s.opacity || 1) : 0, class: "hv-point", "data-series": k, "data-i": i,
          "data-x": exact(q.x[i]), "data-y": exact(q.y[i]), "data-tip": tip }, root);
      }
      if (s.name && !s.nolegend) {
        var item = el("span", { class: "hv-legend-item" }, leg);
        el("span", { class: "hv-swatch", style: "background:" + color }, item);
        el("span", {}, item, s.name);
      }
    });
    if (skipped) el("span", { class: "hv-legend-item hv-note" }, leg, skipped + " point(s) NaN/\u00b1inf, not drawn");
  }
  function axisRange(v, log) {
    var f = v.filter(function (x) { return isFinite(x) && (!log || x > 0); });
    var lo = Math.min.apply(null, f), hi = Math.max.apply(null, f);
    if (log) { lo = Math.log10(lo); hi = Math.log10(hi); }
    if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
    var pad = (hi - lo) * 0.05;
    return log ? [Math.pow(10, lo - pad), Math.pow(10, hi + pad)] : [lo - pad, hi + pad];
  }
  function transform(r, a, b, log) {
    var f = log ? Math.log10 : function (x) { return x; }, lo = f(r[0]), hi = f(r[1]);
    return function (v) { return a + (f(v) - lo) / (hi - lo) * (b - a); };
  }
  function ticks(r, log, pixels) {
    if (log) {
      var out = [];
      for (var e = Math.floor(Math.log10(r[0])); e <= Math.ceil(Math.log10(r[1])); e++) {
        [1, 2, 5].forEach(function (k) { var v = k * Math.pow(10, e); if (v >= r[0] && v <= r[1]) out.push(v); });
      }
      return out;
    }
    var want = Math.max(2, Math.min(8, Math.floor((pixels || 300) / 55)));
    var step = Math.pow(10, Math.floor(Math.log10((r[1] - r[0]) / want)));
    [2, 2.5, 2].forEach(function (k) { if ((r[1] - r[0]) / step > want * 1.5) step *= k; });
    var t = [];
    for (var v = Math.ceil(r[0] / step) * step; v <= r[1] + 1e-12; v += step) t.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return t;
  }
  function axes(root, p, xr, yr, tx, ty, W, Hh, m) {
    var g = svg("g", { class: "hv-axes", "font-size": 10, fill: "#444" }, root);
    svg("line", { x1: m.l, x2: W - m.r, y1: Hh - m.b, y2: Hh - m.b, stroke: "#444" }, g);
    svg("line", { x1: m.l, x2: m.l, y1: m.t, y2: Hh - m.b, stroke: "#444" }, g);
    var xt = p.xticks || ticks(xr, p.xlog, W - m.l - m.r).map(function (v) { return { v: v, label: fmt(v, 3) }; });
    xt.forEach(function (t) {
      var x = tx(t.v);
      svg("line", { x1: x, x2: x, y1: m.t, y2: Hh - m.b, stroke: "#eee" }, g);
      svg("text", { x: x, y: Hh - m.b + 13, "text-anchor": "middle" }, g, t.label);
    });
    ticks(yr, p.ylog, Hh - m.t - m.b).forEach(function (v) {
      var y = ty(v);
      svg("line", { x1: m.l, x2: W - m.r, y1: y, y2: y, stroke: "#eee" }, g);
      svg("text", { x: m.l - 4, y: y, "text-anchor": "end", "dominant-baseline": "central" }, g, fmt(v, 3));
    });
    if (p.xlabel) svg("text", { x: (m.l + W - m.r) / 2, y: Hh - 6, "text-anchor": "middle", "font-size": 11, class: "hv-axis-title" }, g, p.xlabel);
    if (p.ylabel) {
      var yy = (m.t + Hh - m.b) / 2;
      svg("text", { x: 12, y: yy, "text-anchor": "middle", "font-size": 11, class: "hv-axis-title",
        transform: "rotate(-90 12 " + yy + ")" }, g, p.ylabel);
    }
  }

  // ------------------------------------------------------------------ shaded text
  // p: rows [{label?, tokens, values {shape [n]}, tips?}], scale, value_label
  function text(box, p) {
    var all = [], rows = p.rows.map(function (r) { var a = arr(r.values).data; all.push.apply(all, a); return a; });
    var scale = scaleOf(p.scale || {}, all);
    p.rows.forEach(function (row, k) {
      var line = el("div", { class: "hv-text-row", "data-row": k }, box);
      if (row.label) el("span", { class: "hv-text-label" }, line, row.label);
      row.tokens.forEach(function (tok, i) {
        var v = rows[k][i], c = scale.color(v);
        var span = el("span", { class: "hv-tok" + (c ? "" : " hv-nonfinite"), "data-i": i, "data-v": exact(v) }, line, shown(tok));
        if (c) { span.style.background = rgb(c); span.style.color = ink(c); }
        span.setAttribute("data-tip", "token " + i + ": " + shown(tok) + "\n" + (p.value_label || "value") + ": " + exact(v) +
          (row.tips ? "\n" + row.tips[i] : ""));
      });
    });
    legend(box, scale, p.value_label, countNonFinite(all));
  }

  // ------------------------------------------------------------------ key/value list, table
  function stats(box, p) {
    var t = el("table", { class: "hv-stats" }, box);
    p.items.forEach(function (kv) {
      var tr = el("tr", {}, t);
      el("th", {}, tr, kv[0]);
      el("td", {}, tr, typeof kv[1] === "number" ? exact(kv[1]) : String(kv[1]));
    });
  }


  // ------------------------------------------------------------------ histogram
  // p: edges {shape [K+1]}, counts {shape [K]}, xlabel, ylabel
  function histogram(box, p) {
    var E = arr(p.edges).data, N = arr(p.counts).data, K = N.length;
    if (!K) { el("div", { class: "hv-empty" }, box, "empty histogram"); return; }
    var W = 420, Hh = 220, m = { l: 50, r: 10, t: 8, b: 40 };
    var xs = Array.prototype.filter.call(E, isFinite);
    if (!xs.length) { el("div", { class: "hv-empty" }, box, "histogram edges are all NaN/missing"); return; }
    var xr = [Math.min.apply(null, xs), Math.max.apply(null, xs)], top = Math.max.apply(null, [1].concat(Array.prototype.filter.call(N, isFinite)));
    if (!(xr[1] > xr[0])) xr = [xr[0] - 0.5, xr[0] + 0.5];
    var tx = transform(xr, m.l, W - m.r), ty = transform([0, top * 1.05], Hh - m.b, m.t);
    var root = svg("svg", { width: W, height: Hh, class: "hv-histogram" }, box), nan = hatch(root);
    axes(root, p, xr, [0, top * 1.05], tx, ty, W, Hh, m);
    for (var i = 0; i < K; i++) {
      var ok = isFinite(E[i]) && isFinite(E[i + 1]), c = N[i];
      var x0 = ok ? tx(E[i]) : m.l, x1 = ok ? tx(E[i + 1]) : m.l + 6, y = isFinite(c) ? ty(c) : m.t;
      svg("rect", { x: x0, y: y, width: Math.max(1, x1 - x0 - 0.5), height: Hh - m.b - y,
        fill: ok && isFinite(c) ? "#4c72b0" : nan, class: "hv-bar" + (ok && isFinite(c) ? "" : " hv-nonfinite"),
        "data-i": i, "data-v": exact(c),
        "data-tip": "[" + exact(E[i]) + ", " + exact(E[i + 1]) + ")\n" + (p.ylabel || "count") + ": " + exact(c) }, root);
    }
  }

  var KINDS = { histogram: histogram, heatmap: heatmap, attention: attention, bars: bars, lines: chart, text: text, stats: stats };

  // ------------------------------------------------------------------ view, tooltip, entry points
  function tooltip(root) {
    var tip = el("div", { class: "hv-tip", role: "tooltip" }, root);
    function place(ev) {
      tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 4) + "px";
      tip.style.top = Math.min(ev.clientY + 14, window.innerHeight - tip.offsetHeight - 4) + "px";
    }
    root.addEventListener("mouseover", function (ev) {
      var t = ev.target.closest && ev.target.closest("[data-tip]");
      if (!t || !root.contains(t)) return;
      tip.textContent = t.getAttribute("data-tip");
      tip.style.display = "block";
      place(ev);
    });
    root.addEventListener("mousemove", function (ev) { if (tip.style.display === "block") place(ev); });
    root.addEventListener("mouseout", function (ev) {
      var t = ev.target.closest && ev.target.closest("[data-tip]");
      if (t && !(ev.relatedTarget && t.contains(ev.relatedTarget))) tip.style.display = "none";
    });
  }
  function draw(root, view) {
    root.textContent = "";
    if (view.title) el("div", { class: "hv-title" }, root, view.title);
    var body = el("div", { class: "hv-panels" }, root);
    view.panels.forEach(function (p, i) {
      var box = el("div", { class: "hv-panel hv-" + p.type, "data-panel": i }, body);
      if (p.title) el("div", { class: "hv-panel-title" }, box, p.title);
      try {
        if (!KINDS[p.type]) throw new Error("unknown panel type " + p.type);
        KINDS[p.type](box, p);
      } catch (e) {
        el("div", { class: "hv-error" }, box, "could not draw this panel: " + e.message);
        H.errors.push(e);
        console.error(e);
      }
      if (p.note) el("div", { class: "hv-note" }, box, p.note);
      if (p.break_after) el("div", { class: "hv-break" }, body);
    });
    tooltip(root);
  }
  H.render = function (id) {
    var root = document.getElementById(id), src = document.getElementById(id + "-data");
    if (!root || !src || root.dataset.hvDone) return;
    var t0 = performance.now();
    draw(root, JSON.parse(src.textContent));
    root.dataset.hvDone = "1";
    H.rendered++;
    H.renderMs += performance.now() - t0;
    document.documentElement.setAttribute("data-hv-rendered", H.rendered);
  };
  H.renderAll = function () {
    document.querySelectorAll("div.hv-view").forEach(function (v) { H.render(v.id); });
  };
  H.fmt = fmt;
  (function style() {
    if (document.getElementById("hv-style")) return;
    var s = document.createElement("style");
    s.id = "hv-style";
    s.textContent = "__CSS__";
    document.head.appendChild(s);
  })();
  window.hookedViews = H;
})();
