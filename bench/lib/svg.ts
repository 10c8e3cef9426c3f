/**
 * @module bench/lib/svg
 * A dependency-free SVG of latency percentile distributions (HdrHistogram style): x is the
 * percentile on a "nines" scale (50 %, 90 %, 99 %, 99.9 % evenly spaced), y the latency in ms
 * on a log scale. One line per series; dashed lines for a second kind (e.g. commit latency).
 *
 * @example
 * writeFileSync("plot.svg", percentilePlot({ title: "POST /execute", series: [{ name: "1,000 req/s", points }] }));
 */

export interface Series {
  name: string;
  /** From `stats.distribution`: percentile in [0, 1) and value in ms. */
  points: { p: number; value: number }[];
  dashed?: boolean;
  color?: string;
}

export interface PlotOptions {
  title: string;
  subtitle?: string;
  series: Series[];
  width?: number;
  height?: number;
  yLabel?: string;
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

export function percentilePlot({ title, subtitle, series, width = 900, height = 520, yLabel = "latency (ms, log scale)" }: PlotOptions): string {
  const margin = { left: 70, right: 220, top: subtitle ? 62 : 46, bottom: 56 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const nines = (p: number) => -Math.log10(Math.max(1e-9, 1 - p));
  const maxX = 3; // 99.9 %
  const values = series.flatMap((s) => s.points.map((pt) => pt.value)).filter((v) => Number.isFinite(v) && v > 0);
  const lo = values.length ? 10 ** Math.floor(Math.log10(Math.min(...values))) : 0.1;
  const hi = values.length ? 10 ** Math.ceil(Math.log10(Math.max(...values))) : 1000;
  const x = (p: number) => margin.left + (Math.min(nines(p), maxX) / maxX) * plotW;
  const y = (v: number) => margin.top + plotH - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotH;

  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(`<text x="${margin.left}" y="24" font-size="16" font-weight="bold">${esc(title)}</text>`);
  if (subtitle) parts.push(`<text x="${margin.left}" y="44" fill="#555">${esc(subtitle)}</text>`);

  // Grid: decades on y, nines on x.
  for (let d = Math.log10(lo); d <= Math.log10(hi) + 1e-9; d++) {
    const v = 10 ** d;
    const yy = y(v);
    parts.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${yy}" y2="${yy}" stroke="#ddd"/>`);
    parts.push(`<text x="${margin.left - 8}" y="${yy + 4}" text-anchor="end">${v >= 1 ? v.toLocaleString("en-US") : v}</text>`);
    for (const m of [2, 5]) {
      const vv = v * m;
      if (vv < hi) parts.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${y(vv)}" y2="${y(vv)}" stroke="#f2f2f2"/>`);
    }
  }
  for (const [p, label] of [
    [0, "0%"],
    [0.5, "50%"],
    [0.9, "90%"],
    [0.99, "99%"],
    [0.999, "99.9%"],
  ] as const) {
    const xx = x(p);
    parts.push(`<line x1="${xx}" x2="${xx}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#ddd"/>`);
    parts.push(`<text x="${xx}" y="${margin.top + plotH + 18}" text-anchor="middle">${label}</text>`);
  }
  parts.push(`<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`);
  parts.push(`<text x="${margin.left + plotW / 2}" y="${height - 12}" text-anchor="middle">percentile</text>`);
  parts.push(`<text transform="translate(16 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);

  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const pts = s.points.filter((pt) => Number.isFinite(pt.value) && pt.value > 0);
    if (pts.length) {
      const d = pts.map((pt, j) => `${j ? "L" : "M"}${x(pt.p).toFixed(1)},${y(pt.value).toFixed(1)}`).join(" ");
      parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ` stroke-dasharray="6 4"` : ""}/>`);
    }
    const ly = margin.top + 10 + i * 20;
    const lx = margin.left + plotW + 14;
    parts.push(`<line x1="${lx}" x2="${lx + 26}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dashed ? ` stroke-dasharray="6 4"` : ""}/>`);
    parts.push(`<text x="${lx + 32}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  parts.push(`</svg>\n`);
  return parts.join("\n");
}
