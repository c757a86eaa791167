// One metric's chart as hand-drawn SVG: per pipeline a line of the value and a band of its
// interval, against shards completed. No library: a few dozen lines draw what is needed.

const SVG = "http://www.w3.org/2000/svg";
const W = 560, H = 240, PAD = { left: 44, right: 12, top: 12, bottom: 30 };
export const COLORS = ["#e4572e", "#2e86ab", "#6a994e", "#a23b72", "#f0a202", "#3d405b", "#17bebb", "#8c564b"];

function el(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function extent(series) {
  let low = Infinity, high = -Infinity;
  for (const points of Object.values(series)) {
    for (const p of points) {
      for (const v of [p.value, p.lower_bound, p.upper_bound]) {
        if (v !== null && v !== undefined) { low = Math.min(low, v); high = Math.max(high, v); }
      }
    }
  }
  if (!isFinite(low)) return [0, 1];
  if (low >= 0 && high <= 1) return [0, 1];
  const room = (high - low) * 0.1 || 1;
  return [low - room, high + room];
}

// `series`: {pipeline_id: [{shards, value, lower_bound, upper_bound}]}; `names`: id -> name.
export function chart(metric, series, numShards, names, colorOf) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart" });
  svg.append(Object.assign(el("title"), { textContent: `${metric} by shards completed` }));
  const [low, high] = extent(series);
  const maxShards = Math.max(numShards, 1);
  const x = (s) => PAD.left + (s / maxShards) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - low) / (high - low)) * (H - PAD.top - PAD.bottom);
  const axes = el("g", { class: "axes" });
  for (let i = 0; i <= 4; i++) {
    const v = low + ((high - low) * i) / 4;
    axes.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    const label = el("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = v.toFixed(2);
    axes.append(label);
  }
  const step = Math.max(1, Math.ceil(maxShards / 8));
  for (let s = 0; s <= maxShards; s += step) {
    const label = el("text", { x: x(s), y: H - PAD.bottom + 16, "text-anchor": "middle" });
    label.textContent = String(s);
    axes.append(label);
  }
  const caption = el("text", { x: W - PAD.right, y: H - 2, "text-anchor": "end", class: "caption" });
  caption.textContent = "shards completed";
  axes.append(caption);
  svg.append(axes);
  for (const [pid, points] of Object.entries(series)) {
    const color = colorOf(pid);
    const group = el("g", { "data-pipeline-id": pid });
    const bounded = points.filter((p) => p.lower_bound !== null && p.upper_bound !== null);
    if (bounded.length) {
      const top = bounded.map((p) => `${x(p.shards)},${y(p.upper_bound)}`);
      const bottom = bounded.map((p) => `${x(p.shards)},${y(p.lower_bound)}`).reverse();
      group.append(el("polygon", { points: [...top, ...bottom].join(" "), fill: color, class: "band" }));
    }
    const valued = points.filter((p) => p.value !== null);
    const line = valued.map((p) => `${x(p.shards)},${y(p.value)}`).join(" ");
    group.append(el("polyline", { points: line, stroke: color, class: "line" }));
    for (const p of valued) {
      const dot = el("circle", { cx: x(p.shards), cy: y(p.value), r: 3, fill: color, class: "point" });
      const tip = el("title");
      const interval = p.lower_bound === null ? "" : ` [${p.lower_bound.toFixed(3)}, ${p.upper_bound.toFixed(3)}]`;
      tip.textContent = `${names[pid] || pid}: ${p.value.toFixed(3)}${interval} after ${p.shards} shards`;
      dot.append(tip);
      group.append(dot);
    }
    svg.append(group);
  }
  return svg;
}
