// Line charts on a canvas: time on x (the last minutes), values on y from 0, a legend.

const INK = "#1f2328";
const GRID = "#d0d7de";
const MUTED = "#656d76";

/** Draws `series` (`[{label, color, dash?, points: [[ms, value]]}]`) over the `spanMs` before `now`. */
export function lines(canvas, series, { now = Date.now(), spanMs = 600000, unit = "" } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  g.font = "11px system-ui, sans-serif";
  const left = 52, right = 8, top = 18, bottom = 20;
  const plotW = width - left - right, plotH = height - top - bottom;
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const max = niceMax(Math.max(0, ...values));
  const x = (t) => left + ((t - (now - spanMs)) / spanMs) * plotW;
  const y = (v) => top + plotH - (v / max) * plotH;

  g.strokeStyle = GRID;
  g.fillStyle = MUTED;
  g.lineWidth = 1;
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let i = 0; i <= 4; i += 1) {
    const v = (max / 4) * i;
    g.beginPath();
    g.moveTo(left, Math.round(y(v)) + 0.5);
    g.lineTo(left + plotW, Math.round(y(v)) + 0.5);
    g.stroke();
    g.fillText(format(v, unit), left - 4, y(v));
  }
  g.textAlign = "center";
  g.textBaseline = "top";
  const minutes = spanMs / 60000;
  for (let m = 0; m <= minutes; m += 2) {
    g.textAlign = m === 0 ? "right" : m === minutes ? "left" : "center";
    g.fillText(m === 0 ? "now" : `-${m} min`, x(now - m * 60000), top + plotH + 4);
  }

  let legendX = left;
  g.textAlign = "left";
  g.textBaseline = "alphabetic";
  for (const s of series) {
    g.strokeStyle = s.color || INK;
    g.lineWidth = 1.5;
    g.setLineDash(s.dash || []);
    g.beginPath();
    let drawing = false;
    for (const [t, v] of s.points) {
      if (!Number.isFinite(v)) { drawing = false; continue; }
      if (drawing) g.lineTo(x(t), y(v)); else g.moveTo(x(t), y(v));
      drawing = true;
    }
    g.stroke();
    g.setLineDash([]);
    g.fillStyle = s.color || INK;
    // A point with no neighbour draws no line: a dot shows it.
    s.points.forEach(([t, v], i) => {
      const alone = !Number.isFinite(s.points[i - 1]?.[1]) && !Number.isFinite(s.points[i + 1]?.[1]);
      if (Number.isFinite(v) && alone) g.fillRect(x(t) - 1.5, y(v) - 1.5, 3, 3);
    });
    g.fillRect(legendX, 6, 10, 3);
    g.fillStyle = INK;
    g.fillText(s.label, legendX + 14, 12);
    legendX += 22 + g.measureText(s.label).width;
  }
  if (series.every((s) => s.points.length === 0) || values.length === 0) {
    g.fillStyle = MUTED;
    g.textAlign = "center";
    g.fillText("no data yet", left + plotW / 2, top + plotH / 2);
  }
}

function niceMax(v) {
  if (v <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 4, 8, 10]) if (m * step >= v) return m * step;
  return 10 * step;
}

function format(v, unit) {
  if (unit === "s") return v < 1 ? `${Math.round(v * 1000)} ms` : `${v.toFixed(v < 10 ? 1 : 0)} s`;
  return v >= 10 ? v.toFixed(0) : Number(v.toFixed(2)).toString();
}
