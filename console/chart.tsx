import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface Series {
  label: string;
  values: (number | null)[];
  color?: string;
  dash?: boolean;
}

const PALETTE = ['#1f6feb', '#d97706', '#059669', '#db2777', '#7c3aed', '#0891b2', '#dc2626', '#65a30d', '#9333ea', '#ea580c'];

/**
 * A time-series chart (uPlot): x in epoch seconds, one line per series, sized to its container
 * (it follows the container's width, so it works on a phone). `title` is its accessible name.
 */
export function Chart({ title, x, series, height = 220, bars = false, palette = PALETTE, yFormat }: { title: string; x: number[]; series: Series[]; height?: number; bars?: boolean; palette?: string[]; yFormat?: (v: number) => string }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const opts: uPlot.Options = {
      width: Math.max(el.clientWidth, 240), height,
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: s.color ?? palette[i % palette.length], width: 2,
        ...(s.dash ? { dash: [6, 4] } : {}),
        ...(bars ? { paths: uPlot.paths.bars!({ size: [0.6, 40] }), fill: `${s.color ?? palette[i % palette.length]}99` } : {}),
      }))],
      axes: [{}, { ...(yFormat ? { values: (_u: uPlot, ticks: number[]) => ticks.map(yFormat) } : {}), size: 70 }],
      legend: { live: false },
    };
    const plot = new uPlot(opts, [x, ...series.map((s) => s.values)] as uPlot.AlignedData, el);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(el.clientWidth, 240), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [JSON.stringify([x, series]), height]);
  return <figure class="chart"><div ref={ref} role="img" aria-label={title} /><figcaption>{title}</figcaption></figure>;
}
