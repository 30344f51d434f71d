// normlab's interactive computational graph: steps through the forward, then the backward, of a graph
// whose numbers normlab computed and stored in the page (#normlab-data). Vanilla JavaScript, no library:
// the layout is Graphviz's SVG, inlined by normlab; this script only highlights and explains.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("normlab-data").textContent);
  var FULL = 24; // arrays of at most this many values are shown in full, larger ones as a heat map
  var state = { sample: null, step: 0, arrays: null };

  // ---- numbers ------------------------------------------------------------------------------------

  function decode(a) {
    var bin = atob(a.b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return { shape: a.shape, values: new Float32Array(bytes.buffer) };
  }

  // 4 significant digits; an exponent below 0.001 and from 100000 on, where decimals would be long
  function fmt(v) {
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a < 1e-3 || a >= 1e5) return v.toExponential(3).replace(/\.?0+e/, "e");
    return String(Number(v.toPrecision(4)));
  }

  function shapeText(shape) {
    if (shape.length === 0) return "scalar";
    return "(" + shape.join(", ") + (shape.length === 1 ? ",)" : ")");
  }

  function stats(values) {
    var n = values.length, sum = 0, min = Infinity, max = -Infinity;
    for (var i = 0; i < n; i++) { sum += values[i]; min = Math.min(min, values[i]); max = Math.max(max, values[i]); }
    var mean = sum / n, sq = 0;
    for (var j = 0; j < n; j++) sq += (values[j] - mean) * (values[j] - mean);
    return { mean: mean, std: Math.sqrt(sq / n), min: min, max: max };
  }

  // ---- drawing arrays -----------------------------------------------------------------------------

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // rows x columns of an array: the first axis down, every other axis flattened across
  function grid(shape, size) {
    var rows = shape.length >= 2 ? shape[0] : 1;
    return { rows: rows, cols: rows ? size / rows : 0 };
  }

  // a diverging colour: brown for negative, white for 0, teal for positive, by |v| / scale
  function heatColor(v, scale) {
    var t = scale > 0 ? Math.max(-1, Math.min(1, v / scale)) : 0;
    var end = t < 0 ? [166, 97, 26] : [1, 133, 113];
    var a = Math.abs(t);
    var rgb = [0, 1, 2].map(function (k) { return Math.round(255 + (end[k] - 255) * a); });
    return "rgb(" + rgb.join(",") + ")";
  }

  function heatMap(array, g) {
    var ns = "http://www.w3.org/2000/svg";
    var cell = Math.max(4, Math.min(18, Math.floor(260 / Math.max(g.cols, 1))));
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "heatmap");
    svg.setAttribute("width", g.cols * cell);
    svg.setAttribute("height", g.rows * cell);
    var scale = 0;
    for (var i = 0; i < array.values.length; i++) scale = Math.max(scale, Math.abs(array.values[i]));
    for (var r = 0; r < g.rows; r++) {
      for (var c = 0; c < g.cols; c++) {
        var v = array.values[r * g.cols + c];
        var rect = document.createElementNS(ns, "rect");
        rect.setAttribute("x", c * cell);
        rect.setAttribute("y", r * cell);
        rect.setAttribute("width", cell);
        rect.setAttribute("height", cell);
        rect.setAttribute("fill", heatColor(v, scale));
        var title = document.createElementNS(ns, "title");
        title.textContent = "[" + r + ", " + c + "] " + fmt(v);
        rect.appendChild(title);
        svg.appendChild(rect);
      }
    }
    return { svg: svg, scale: scale };
  }

  // one array: a caption, then its values in full or a summary and a heat map
  function arrayBlock(role, caption, array, kind) {
    var size = array.values.length;
    var box = el("div", { "class": "array " + kind, "data-role": role, "data-shape": array.shape.join(",") });
    var head = el("div", { "class": "caption" });
    head.appendChild(el("span", { "class": "what" }, caption));
    head.appendChild(el("span", { "class": "shape" }, " " + shapeText(array.shape)));
    box.appendChild(head);
    var g = grid(array.shape, size);
    if (size <= FULL) {
      var table = el("table", { "class": "values" });
      for (var r = 0; r < g.rows; r++) {
        var tr = el("tr");
        for (var c = 0; c < g.cols; c++) tr.appendChild(el("td", {}, fmt(array.values[r * g.cols + c])));
        table.appendChild(tr);
      }
      box.appendChild(table);
    } else {
      var s = stats(array.values);
      var summary = el("div", { "class": "summary" });
      [["mean", s.mean], ["std", s.std], ["min", s.min], ["max", s.max]].forEach(function (pair, k) {
        var item = el("span", { "class": "stat", "data-stat": pair[0] });
        item.appendChild(el("b", {}, pair[0] + " "));
        item.appendChild(el("span", { "class": "number" }, fmt(pair[1])));
        summary.appendChild(item);
        if (k === 1) summary.appendChild(el("br"));
      });
      box.appendChild(summary);
      var map = heatMap(array, g);
      box.appendChild(map.svg);
      var note = array.shape.length > 2 ? "axis 0 down, the other axes flattened across; " : "";
      box.appendChild(el("div", { "class": "legend" },
        note + "brown \u2212" + fmt(map.scale) + ", white 0, teal +" + fmt(map.scale) + "; hover for values"));
    }
    return box;
  }

  // an operator and the array after it, kept on one line when the chain wraps
  function opThen(symbol, block) {
    var group = el("span", { "class": "step" });
    group.appendChild(el("span", { "class": "op" }, symbol));
    group.appendChild(block);
    return group;
  }

  function constantBlock(role, caption, value, kind) {
    var box = el("div", { "class": "array " + kind, "data-role": role, "data-shape": "" });
    var head = el("div", { "class": "caption" });
    head.appendChild(el("span", { "class": "what" }, caption));
    box.appendChild(head);
    var table = el("table", { "class": "values" });
    var tr = el("tr");
    tr.appendChild(el("td", {}, fmt(value)));
    table.appendChild(tr);
    box.appendChild(table);
    return box;
  }

  // ---- the sample and its steps ---------------------------------------------------------------------

  function steps() {
    var s = state.sample;
    var list = s.forward.map(function (n, i) { return { phase: "forward", index: i, name: n.name }; });
    s.backward.forEach(function (b, i) { list.push({ phase: "backward", index: i, name: b.name }); });
    return list;
  }

  function selectSample() {
    var shape = document.getElementById("shape").value;
    var seed = Number(document.getElementById("seed").value);
    var s = data.samples.filter(function (x) { return x.shape === shape && x.seed === seed; })[0];
    var layoutChanged = !state.sample || state.sample.layout !== s.layout;
    state.sample = s;
    document.getElementById("description").textContent = s.description;
    state.arrays = {};
    if (layoutChanged) {
      var graph = document.getElementById("graph");
      graph.innerHTML = data.layouts[s.layout].svg;
      graph.querySelectorAll("g.node").forEach(function (g) {
        g.addEventListener("click", function () { jumpTo(g.id.slice("node-".length)); });
      });
    }
    state.step = Math.min(state.step, steps().length - 1);
    show();
  }

  function array(key, encoded) {
    if (!(key in state.arrays)) state.arrays[key] = decode(encoded);
    return state.arrays[key];
  }

  function gradientOf(name) {
    var b = state.sample.backward.filter(function (x) { return x.name === name; })[0];
    return array("d" + name, b.gradient);
  }

  function jumpTo(name) {
    var all = steps(), phase = all[state.step].phase;
    for (var i = 0; i < all.length; i++) {
      if (all[i].name === name && all[i].phase === phase) { state.step = i; show(); return; }
    }
    for (var j = 0; j < all.length; j++) {
      if (all[j].name === name) { state.step = j; show(); return; }
    }
  }

  function go(step) {
    state.step = Math.max(0, Math.min(steps().length - 1, step));
    show();
  }

  // ---- the graph's colours --------------------------------------------------------------------------

  function paintGraph(current) {
    var s = state.sample, graph = document.getElementById("graph");
    var forwardDone = {}, backwardDone = {};
    if (current.phase === "forward") {
      for (var i = 0; i < current.index; i++) forwardDone[s.forward[i].name] = true;
    } else {
      s.forward.forEach(function (n) { forwardDone[n.name] = true; });
      for (var j = 0; j < current.index; j++) backwardDone[s.backward[j].name] = true;
    }
    graph.querySelectorAll("g.node").forEach(function (g) {
      var name = g.id.slice("node-".length);
      g.classList.toggle("forward-done", !!forwardDone[name] && !backwardDone[name]);
      g.classList.toggle("backward-done", !!backwardDone[name]);
      g.classList.toggle("current", name === current.name);
      g.classList.toggle("current-forward", name === current.name && current.phase === "forward");
      g.classList.toggle("current-backward", name === current.name && current.phase === "backward");
    });
    data.layouts[s.layout].edges.forEach(function (edge, k) {
      var g = document.getElementById("edge-" + k);
      if (!g) return;
      // forward: the arrows into the current node; backward: the arrows its gradient comes back along
      g.classList.toggle("flow-forward", current.phase === "forward" && edge[1] === current.name);
      g.classList.toggle("flow-backward", current.phase === "backward" && edge[0] === current.name);
    });
  }

  // ---- the panel ------------------------------------------------------------------------------------

  function show() {
    var all = steps(), current = all[state.step];
    document.body.setAttribute("data-step", state.step);
    document.body.setAttribute("data-phase", current.phase);
    document.body.setAttribute("data-node", current.name);
    document.getElementById("counter").textContent = "step " + (state.step + 1) + " of " + all.length;
    document.getElementById("prev").disabled = state.step === 0;
    document.getElementById("first").disabled = state.step === 0;
    document.getElementById("next").disabled = state.step === all.length - 1;
    document.getElementById("last").disabled = state.step === all.length - 1;
    paintGraph(current);
    var panel = document.getElementById("panel");
    panel.innerHTML = "";
    if (current.phase === "forward") showForward(panel, current.index);
    else showBackward(panel, current.index);
  }

  function phaseHeading(panel, phase, index, count, label) {
    var h = el("h2");
    h.appendChild(el("span", { "class": "phase " + phase }, phase === "forward" ? "Forward" : "Backward"));
    h.appendChild(document.createTextNode(" " + (index + 1) + " of " + count + ": "));
    h.appendChild(el("span", { id: "current-node", "data-node": state.sample[phase][index].name }, label));
    panel.appendChild(h);
  }

  function valueOf(name) {
    var node = state.sample.forward.filter(function (n) { return n.name === name; })[0];
    return array("v" + name, node.value);
  }

  function showForward(panel, index) {
    var s = state.sample, node = s.forward[index];
    phaseHeading(panel, "forward", index, s.forward.length, node.name);
    var formula = node.expression === null
      ? node.name + (node.constant ? " is a constant input (it gets no gradient)" : " is an input of the graph")
      : node.name + " = " + node.expression;
    panel.appendChild(el("p", { "class": "formula", id: "formula" }, formula));
    var row = el("div", { "class": "chain" });
    var inputs = node.inputs.filter(function (name, k) { return node.inputs.indexOf(name) === k; });
    inputs.forEach(function (name) {
      row.appendChild(arrayBlock("input", name, valueOf(name), "forward input"));
    });
    var value = arrayBlock("value", node.name, valueOf(node.name), "forward");
    row.appendChild(inputs.length ? opThen("\u2192", value) : value);
    panel.appendChild(row);
    if (index === s.forward.length - 1) {
      panel.appendChild(el("p", { "class": "note" }, "The forward pass is done. Next, the backward pass: the " +
        "gradient d" + node.name + " arrives from above and flows back, node by node."));
    }
  }

  function showBackward(panel, index) {
    var s = state.sample, step = s.backward[index], name = step.name;
    phaseHeading(panel, "backward", index, s.backward.length, "d" + name);
    if (step.uses.length === 0) {
      panel.appendChild(el("p", { "class": "formula", id: "formula" },
        "d" + name + " = the upstream gradient: what a loss above " + name + " sends back (here drawn from N(0, 1))"));
      panel.appendChild(arrayBlock("gradient", "d" + name, array("d" + name, step.gradient), "backward"));
      return;
    }
    panel.appendChild(el("p", { "class": "formula", id: "formula" }, "d" + name + " = " + step.formula));
    if (step.uses.length > 1) {
      panel.appendChild(el("p", { "class": "note" }, name + " feeds " + step.uses.length + " nodes, so its " +
        "gradient is the sum of what comes back from each use."));
    }
    step.uses.forEach(function (use, k) {
      var box = el("section", { "class": "use", "data-consumer": use.consumer });
      var consumer = s.forward.filter(function (n) { return n.name === use.consumer; })[0];
      var title = "through " + use.consumer + " = " + consumer.expression;
      if (step.uses.length > 1) title = "use " + (k + 1) + " of " + step.uses.length + ": " + title;
      box.appendChild(el("h3", {}, title));
      var row = el("div", { "class": "chain" });
      var key = "u" + name + "." + k + ".";
      if (use.local !== null) {
        var local = array(key + "local", use.local);
        var caption = "local gradient \u2202" + use.consumer + "/\u2202" + name + " = " + use.local_text;
        if (local.values.length === 1 && local.shape.length === 0) {
          row.appendChild(constantBlock("local", caption, local.values[0], "local"));
        } else {
          row.appendChild(arrayBlock("local", caption, local, "local"));
        }
      }
      var upstream = arrayBlock("upstream", "upstream gradient " + use.upstream, gradientOf(use.consumer), "backward");
      row.appendChild(use.local !== null ? opThen("\u00d7", upstream) : upstream);
      var productCaption = use.local !== null ? "local \u00d7 upstream" : use.term;
      var product = arrayBlock("product", productCaption, array(key + "product", use.product), "backward");
      row.appendChild(opThen("=", product));
      if (use.summed !== null) {
        var axes = use.sum_axes.length === 1 ? "axis " + use.sum_axes[0] : "axes (" + use.sum_axes.join(", ") + ")";
        row.appendChild(opThen("\u03a3", arrayBlock("summed", "summed over " + axes + " (" + name + " was broadcast)",
          array(key + "summed", use.summed), "backward")));
      }
      box.appendChild(row);
      if (use.local === null) {
        box.appendChild(el("p", { "class": "note" }, "Not elementwise, so no local factor: the product is " +
          "the operation's own backward, " + use.term + "."));
      }
      panel.appendChild(box);
    });
    var total = step.uses.length > 1 ? "d" + name + " = the sum over the " + step.uses.length + " uses" : "d" + name;
    panel.appendChild(arrayBlock("gradient", total, array("d" + name, step.gradient), "backward total"));
  }

  // ---- controls -------------------------------------------------------------------------------------

  function fill(select, options) {
    options.forEach(function (o) {
      select.appendChild(el("option", { value: String(o) }, String(o).replace(/,/g, ", ")));
    });
  }

  fill(document.getElementById("shape"), data.shapes);
  fill(document.getElementById("seed"), data.seeds);
  document.getElementById("shape").addEventListener("change", selectSample);
  document.getElementById("seed").addEventListener("change", selectSample);
  document.getElementById("first").addEventListener("click", function () { go(0); });
  document.getElementById("prev").addEventListener("click", function () { go(state.step - 1); });
  document.getElementById("next").addEventListener("click", function () { go(state.step + 1); });
  document.getElementById("last").addEventListener("click", function () { go(Infinity); });
  document.addEventListener("keydown", function (e) {
    if (e.target && e.target.tagName === "SELECT") return; // arrows there choose an option
    if (e.target && e.target.tagName === "BUTTON" && (e.key === " " || e.key === "Enter")) return; // a click
    var moves = { ArrowRight: 1, " ": 1, ArrowLeft: -1 }; // up and down still scroll a long panel
    if (e.key in moves) { go(state.step + moves[e.key]); e.preventDefault(); }
    else if (e.key === "Home") { go(0); e.preventDefault(); }
    else if (e.key === "End") { go(Infinity); e.preventDefault(); }
  });
  selectSample();
})();
