import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { day, money } from './api.js';
import { Chart } from './chart.js';
import '@picocss/pico/css/pico.min.css';
import 'uplot/dist/uPlot.min.css';
import './style.css';

/**
 * A customer's embeddable dashboard (`/console/embed/{usage|invoices|credits|commits_and_credits}?t=…`,
 * from v1.dashboards.getEmbeddableUrl): usage over time per metric and group (hour or day), the
 * current draft invoice, commit and credit burn-down with the projected day each runs out, the
 * alerts in effect — and, for `invoices`, the past invoices. It listens to server-sent events and
 * refetches when the customer's usage is rated, so it moves within seconds without a reload.
 */

interface Data {
  customer: { id: string; name: string };
  dashboard: string;
  generated_at: string;
  expires_at: string;
  colors: Record<string, string>;
  labels: Record<string, string>;
  values: Record<string, Record<string, string>>;
  usage?: { window: string; metrics: { metric_id: string; name: string; group_key: string | null; groups: { group: Record<string, string | null> | null; points: [string, string | null][] }[] }[] };
  draft?: { invoice_id: string; start_timestamp: string; end_timestamp: string; total: number; lines: { name: string; type: string; quantity: string | number | null; total: number }[] }[];
  balances?: { id: string; name: string; type: string; remaining: number; drawn_this_period: number; period_start: string; burn: [string, number][]; projected_run_out: string | null; expires_at: string | null }[];
  alerts: { id: string; name: string; type: string; threshold: number; status: string }[];
  invoices?: { id: string; start_timestamp: string; end_timestamp: string; status: string; total: number }[];
}

const params = new URLSearchParams(location.search);
const token = params.get('t') ?? '';
const dashboard = location.pathname.split('/').pop() ?? 'usage';

let requests = 0;

function App() {
  const [data, setData] = useState<Data | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [window, setWindow] = useState<'HOUR' | 'DAY'>('HOUR');
  const [live, setLive] = useState(false);
  const load = async () => {
    // Answers can cross (a window switch while an update loads): only the latest request's counts.
    const mine = ++requests;
    const res = await fetch(`/v1/accrue/embed/data?t=${encodeURIComponent(token)}&window=${window}`);
    const json = (await res.json()) as { data?: Data; message?: string };
    if (mine !== requests) return;
    if (!res.ok) {
      setError(json.message ?? `${res.status}`);
      return;
    }
    setError(null);
    setData(json.data!);
  };
  useEffect(() => {
    void load();
  }, [window]);
  useEffect(() => {
    const events = new EventSource(`/v1/accrue/embed/events?t=${encodeURIComponent(token)}`);
    events.addEventListener('ready', () => setLive(true));
    events.addEventListener('changed', () => void load());
    events.addEventListener('expired', () => {
      setError('This dashboard link has expired.');
      events.close();
    });
    events.onerror = () => setLive(false);
    return () => events.close();
  }, [window]);
  if (error) return <main class="container"><p role="alert" data-testid="error">{error}</p></main>;
  if (!data) return <main class="container"><p aria-busy="true">Loading…</p></main>;
  const style = Object.entries(data.colors).map(([k, v]) => `--accrue-${k}:${v}`).join(';');
  const palette = Array.from({ length: 10 }, (_, i) => data.colors[`UsageLine_${i}`]).filter((c): c is string => !!c);

  return (
    <main class="container embed" style={style}>
      <header class="embed-head">
        <h1>{data.customer.name}</h1>
        <small data-testid="live">{live ? '● live' : '○ connecting'}</small>
      </header>
      {data.usage && <Usage data={data} usage={data.usage} window={window} setWindow={setWindow} palette={palette} />}
      {data.draft && <Draft draft={data.draft} />}
      {data.balances && <Balances balances={data.balances} />}
      {data.invoices && (
        <section>
          <h2>Invoices</h2>
          <table class="striped"><thead><tr><th scope="col">Period</th><th scope="col">Status</th><th scope="col">Total</th></tr></thead>
            <tbody>{data.invoices.map((i) => <tr key={i.id}><td>{day(i.start_timestamp)} → {day(i.end_timestamp)}</td><td>{i.status}</td><td>{money(i.total)}</td></tr>)}</tbody></table>
        </section>
      )}
      <section>
        <h2>Alerts</h2>
        {data.alerts.length ? <ul data-testid="alerts">{data.alerts.map((a) => <li key={a.id}>{a.name} — {a.status === 'in_alarm' ? <strong>in alarm</strong> : a.status}</li>)}</ul> : <p>No alerts.</p>}
      </section>
    </main>
  );
}

function Usage({ data, usage, window, setWindow, palette }: { data: Data; usage: NonNullable<Data['usage']>; window: 'HOUR' | 'DAY'; setWindow: (w: 'HOUR' | 'DAY') => void; palette: string[] }) {
  const label = (key: string | null) => (key ? data.labels[key] ?? key : '');
  const valueLabel = (key: string, value: string | null | undefined) => (value === null || value === undefined ? '(none)' : data.values[key]?.[value] ?? value);
  const total = (m: NonNullable<Data['usage']>['metrics'][number]) => m.groups.reduce((s, g) => s + g.points.reduce((a, p) => a + Number(p[1] ?? 0), 0), 0);
  return (
    <section>
      <h2>Usage</h2>
      <fieldset role="group" aria-label="Window">
        <button class={window === 'HOUR' ? '' : 'outline'} aria-pressed={window === 'HOUR'} onClick={() => setWindow('HOUR')}>By hour</button>
        <button class={window === 'DAY' ? '' : 'outline'} aria-pressed={window === 'DAY'} onClick={() => setWindow('DAY')}>By day</button>
      </fieldset>
      {!usage.metrics.length && <p>No usage yet.</p>}
      {usage.metrics.map((m) => {
        const xs = [...new Set(m.groups.flatMap((g) => g.points.map((p) => p[0])))].sort();
        return (
          <div key={m.metric_id}>
            <p>{m.name}: <strong data-testid={`usage-total-${m.name}`}>{total(m)}</strong></p>
            <Chart title={`${m.name}${m.group_key ? ` by ${label(m.group_key)}` : ''}, per ${window.toLowerCase()}`} x={xs.map((t) => Date.parse(t) / 1000)} palette={palette.length ? palette : undefined}
              series={m.groups.map((g) => {
                const at = new Map(g.points.map((p) => [p[0], Number(p[1] ?? 0)]));
                return { label: g.group && m.group_key ? valueLabel(m.group_key, g.group[m.group_key]) : m.name, values: xs.map((x) => at.get(x) ?? 0) };
              })} />
          </div>
        );
      })}
    </section>
  );
}

function Draft({ draft }: { draft: NonNullable<Data['draft']> }) {
  return (
    <section>
      <h2>This period so far</h2>
      {draft.map((d) => (
        <article key={d.invoice_id}>
          <header>{day(d.start_timestamp)} → {day(d.end_timestamp)} · <strong data-testid="draft-total">{money(d.total)}</strong></header>
          <table><tbody>{d.lines.map((l, i) => <tr key={i}><td>{l.name}</td><td>{l.quantity ?? ''}</td><td>{money(l.total)}</td></tr>)}</tbody></table>
        </article>
      ))}
      {!draft.length && <p>No open period.</p>}
    </section>
  );
}

function Balances({ balances }: { balances: NonNullable<Data['balances']> }) {
  return (
    <section>
      <h2>{dashboard === 'credits' ? 'Credits' : 'Commits and credits'}</h2>
      {!balances.length && <p>Nothing in effect.</p>}
      {balances.map((b) => {
        const x = b.burn.map((p) => Date.parse(p[0]) / 1000);
        const y = b.burn.map((p) => p[1]);
        const projected = b.projected_run_out ? [...x.map(() => null as number | null).slice(0, -1), y[y.length - 1]!, 0] : null;
        const xs = b.projected_run_out ? [...x, Date.parse(b.projected_run_out) / 1000] : x;
        return (
          <article key={b.id}>
            <header>{b.name} ({b.type.toLowerCase()}): <strong data-testid="balance-remaining">{money(b.remaining)}</strong> left
              {b.projected_run_out ? <> · runs out around <strong data-testid="run-out">{day(b.projected_run_out)}</strong></>
                : b.drawn_this_period > 0 ? <> · lasts until it expires on <strong data-testid="run-out">{day(b.expires_at)}</strong></> : ' · not drawing down this period'}</header>
            <Chart title={`${b.name} burn-down`} x={xs} height={160} yFormat={(v) => money(v)}
              series={[{ label: 'balance', values: [...y, ...(b.projected_run_out ? [null] : [])] }, ...(projected ? [{ label: 'projected', values: projected, dash: true }] : [])]} />
          </article>
        );
      })}
    </section>
  );
}

render(<App />, document.getElementById('app')!);
