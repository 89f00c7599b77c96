// A small SVG writer for benchmark charts: grouped horizontal bars on a log
// scale, one group per workload, one colour per system, the value written at
// the end of each bar and a legend on top. Plain SVG 1.1 text, so a browser,
// GitHub's file view and any image viewer show it without a library.

export interface Series {
  name: string;
  color: string;
}

export interface BarGroup {
  label: string;
  /** Per series (same order): the bar's length on the scale, null when there is no figure. */
  values: (number | null)[];
  /** Per series: what is written at the end of the bar (or where it would start, for no figure). */
  texts: string[];
}

export interface BarChart {
  title: string;
  /** One line under the title: the unit and which way is better. */
  subtitle: string;
  series: Series[];
  groups: BarGroup[];
}

const BAR = 13;
const BAR_GAP = 2;
const GROUP_GAP = 12;
const LABEL_W = 250;
const PLOT_W = 560;
const VALUE_W = 90;
const FONT = 'font-family="Helvetica, Arial, sans-serif"';

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** "0.01", "1", "100", "10k", "1M": the labels of the powers of ten. */
function tickLabel(exp: number): string {
  if (exp < 0) return (10 ** exp).toFixed(-exp);
  if (exp < 3) return String(10 ** exp);
  return exp < 6 ? `${10 ** (exp - 3)}k` : `${10 ** (exp - 6)}M`;
}

/** The chart as an SVG document. The axis spans whole powers of ten around every figure, so each bar's length reads off the grid. */
export function barChart(c: BarChart): string {
  const all = c.groups.flatMap((g) => g.values).filter((v): v is number => v !== null && v > 0);
  const lo = Math.floor(Math.log10(all.length ? Math.min(...all) : 1));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(all.length ? Math.max(...all) : 10)));
  const x = (v: number): number => LABEL_W + ((Math.log10(v) - lo) / (hi - lo)) * PLOT_W;
  const legendH = 22;
  const top = 52 + legendH;
  const groupH = c.series.length * (BAR + BAR_GAP) - BAR_GAP;
  const plotH = c.groups.length * (groupH + GROUP_GAP);
  const width = LABEL_W + PLOT_W + VALUE_W + 10;
  const height = top + plotH + 30;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">${esc(c.title)}</text>`,
    `<text x="10" y="38" fill="#444">${esc(c.subtitle)}</text>`,
  ];
  // Legend: a swatch and a name per series, left to right.
  let lx = 10;
  for (const s of c.series) {
    out.push(`<rect x="${lx}" y="${50}" width="12" height="12" fill="${s.color}"/>`, `<text x="${lx + 16}" y="${60}">${esc(s.name)}</text>`);
    lx += 24 + s.name.length * 6.5;
  }
  // Grid: one line per power of ten, labelled under the plot.
  for (let e = lo; e <= hi; e++) {
    const gx = x(10 ** e).toFixed(1);
    out.push(`<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${top + plotH}" stroke="#ddd"/>`, `<text x="${gx}" y="${top + plotH + 14}" text-anchor="middle" fill="#666">${tickLabel(e)}</text>`);
  }
  c.groups.forEach((g, gi) => {
    const gy = top + gi * (groupH + GROUP_GAP);
    out.push(`<text x="${LABEL_W - 8}" y="${gy + groupH / 2 + 4}" text-anchor="end">${esc(g.label)}</text>`);
    c.series.forEach((s, si) => {
      const y = gy + si * (BAR + BAR_GAP);
      const v = g.values[si];
      const text = esc(g.texts[si] ?? '');
      if (v === null || v === undefined || !(v > 0)) {
        out.push(`<text x="${LABEL_W + 4}" y="${y + BAR - 3}" fill="#999">${text}</text>`);
        return;
      }
      const end = x(v);
      out.push(`<rect x="${LABEL_W}" y="${y}" width="${Math.max(1, end - LABEL_W).toFixed(1)}" height="${BAR}" fill="${s.color}"><title>${esc(s.name)}: ${text}</title></rect>`);
      out.push(`<text x="${(end + 4).toFixed(1)}" y="${y + BAR - 3}">${text}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
