import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, day, money, saveSession, session } from './api.js';
import { Chart } from './chart.js';
import '@picocss/pico/css/pico.min.css';
import 'uplot/dist/uPlot.min.css';
import './style.css';

/**
 * The finance console (`/console`): log in with an Accrue token (finance, read or admin), then the
 * approval queue (approve, reject with a reason), each invoice's lines and the usage behind them
 * (record a payment, void, regenerate), customers with their lifecycle state, spend, commit
 * remaining and renewals (linked to their workflows in the Temporal UI), and revenue by day and
 * product. Every action is the API's own, with the session's scope.
 */

/**
 * Calls `onChange` whenever the finance data moves (server-sent events from
 * /v1/accrue/console/events, read with fetch so the session goes as a bearer token; reconnects):
 * on `changed`, and on every `ready` — the server sends it once it listens for changes (the
 * first time, after a reconnect, and after its own feed was lost and made again), so data read
 * before it may have missed a change.
 */
function useLive(onChange: () => void, onError: (e: unknown) => void) {
  useEffect(() => {
    const ctrl = new AbortController();
    void (async () => {
      while (!ctrl.signal.aborted) {
        try {
          const res = await fetch('/v1/accrue/console/events', { headers: { authorization: `Bearer ${session()?.token ?? ''}` }, signal: ctrl.signal });
          if (res.status === 401) {
            onError(new ApiError(401, ((await res.json()) as { message?: string }).message ?? 'session expired'));
            return;
          }
          if (!res.ok || !res.body) throw new Error(String(res.status));
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
              const event = buf.slice(0, i);
              buf = buf.slice(i + 2);
              if (/^event: (changed|ready)$/m.test(event)) onChange();
            }
          }
        } catch {
          if (ctrl.signal.aborted) return;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    })();
    return () => ctrl.abort();
  }, []);
}

type Route = { page: 'queue' } | { page: 'customers' } | { page: 'revenue' } | { page: 'invoice'; customerId: string; invoiceId: string };

function parseRoute(): Route {
  const [, page, a, b] = location.hash.split('/');
  if (page === 'invoice' && a && b) return { page, customerId: a, invoiceId: b };
  if (page === 'customers' || page === 'revenue') return { page };
  return { page: 'queue' };
}

function App() {
  const [s, setS] = useState(session());
  const [notice, setNotice] = useState<string | null>(null);
  const [route, setRoute] = useState(parseRoute());
  useEffect(() => {
    const on = () => setRoute(parseRoute());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  const onError = (e: unknown) => {
    if (e instanceof ApiError && e.status === 401) {
      saveSession(null);
      setS(null);
      setNotice(e.message);
      return;
    }
    setNotice(e instanceof Error ? e.message : String(e));
  };
  if (!s) return <Login notice={notice} onLogin={(x) => { saveSession(x); setS(x); setNotice(null); }} />;
  return (
    <>
      <header class="container">
        <nav>
          <ul><li><strong>Accrue</strong> finance</li></ul>
          <ul>
            <li><a href="#/queue" aria-current={route.page === 'queue' ? 'page' : undefined}>Approvals</a></li>
            <li><a href="#/customers" aria-current={route.page === 'customers' ? 'page' : undefined}>Customers</a></li>
            <li><a href="#/revenue" aria-current={route.page === 'revenue' ? 'page' : undefined}>Revenue</a></li>
            <li><span class="scope" data-testid="scope">{s.scope}</span></li>
            <li><button class="secondary outline" onClick={async () => { await api('POST', '/v1/accrue/console/sessions/end').catch(() => {}); saveSession(null); setS(null); }}>Log out</button></li>
          </ul>
        </nav>
      </header>
      <main class="container">
        {notice && <p role="alert" class="notice" data-testid="notice">{notice} <button class="outline secondary" onClick={() => setNotice(null)} aria-label="Dismiss">×</button></p>}
        {route.page === 'queue' && <Queue onError={onError} />}
        {route.page === 'customers' && <Customers onError={onError} />}
        {route.page === 'revenue' && <Revenue onError={onError} />}
        {route.page === 'invoice' && <InvoicePage customerId={route.customerId} invoiceId={route.invoiceId} onError={onError} />}
      </main>
    </>
  );
}

function Login({ notice, onLogin }: { notice: string | null; onLogin: (s: { token: string; scope: string; expiresAt: string }) => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  return (
    <main class="container login">
      <article>
        <h1>Accrue finance console</h1>
        {notice && <p role="alert" data-testid="notice">{notice}</p>}
        <form onSubmit={async (e) => {
          e.preventDefault();
          try {
            const r = await api<{ data: { session_token: string; scope: string; expires_at: string } }>('POST', '/v1/accrue/console/sessions', { token }, undefined);
            onLogin({ token: r.data.session_token, scope: r.data.scope, expiresAt: r.data.expires_at });
          } catch (err) {
            setError((err as Error).message);
          }
        }}>
          <label for="token">Accrue token (finance, read or admin)</label>
          <input id="token" name="token" type="password" autocomplete="off" required value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} aria-invalid={error ? 'true' : undefined} />
          {error && <small role="alert" data-testid="login-error">{error}</small>}
          <button type="submit">Log in</button>
        </form>
      </article>
    </main>
  );
}

interface QueueRow {
  invoice_id: string; customer_id: string; customer_name: string; contract_id: string; start_timestamp: string; end_timestamp: string;
  total: number; previous_total: number | null; change_percent: number | null; biggest_lines: { name: string; total: number }[]; workflow_url: string | null;
}

function Queue({ onError }: { onError: (e: unknown) => void }) {
  const [rows, setRows] = useState<QueueRow[] | null>(null);
  const load = () => api<{ data: QueueRow[] }>('GET', '/v1/accrue/console/queue').then((r) => setRows(r.data), onError);
  useEffect(() => {
    void load();
  }, []);
  useLive(() => void load(), onError);
  if (!rows) return <p aria-busy="true">Loading the approval queue…</p>;
  return (
    <section>
      <h2>Invoices waiting for approval <small data-testid="queue-count">({rows.length})</small></h2>
      {!rows.length ? <p>Nothing is waiting for approval.</p> : (
        <div class="overflow-auto">
          <table class="striped" data-testid="queue">
            <thead><tr><th scope="col">Customer</th><th scope="col">Contract</th><th scope="col">Period</th><th scope="col">Total</th><th scope="col">Change</th><th scope="col">Biggest lines</th><th scope="col"><span class="sr-only">Open</span></th></tr></thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.invoice_id} data-invoice={r.invoice_id}>
                  <td>{r.customer_name}</td>
                  <td>{r.workflow_url ? <a href={r.workflow_url} target="_blank" rel="noopener" title="The contract's workflow in the Temporal UI">{r.contract_id.slice(0, 8)}</a> : r.contract_id.slice(0, 8)}</td>
                  <td>{day(r.start_timestamp)} → {day(r.end_timestamp)}</td>
                  <td>{money(r.total)}</td>
                  <td>{r.change_percent === null ? 'first' : `${r.change_percent > 0 ? '+' : ''}${r.change_percent}% (was ${money(r.previous_total)})`}</td>
                  <td>{r.biggest_lines.map((l) => `${l.name} ${money(l.total)}`).join(', ')}</td>
                  <td><a href={`#/invoice/${r.customer_id}/${r.invoice_id}`} role="button" class="outline">Open</a></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

interface InvoiceJson {
  id: string; status: string; approval_status: string; total: number; start_timestamp: string; end_timestamp: string; contract_id?: string;
  payment_status?: string; amount_due?: number; rejection_reason?: string | null; customer_id: string;
  line_items: { name: string; type: string; quantity?: number | string; unit_price?: number | string | null; total: number; applied_commit_or_credit?: { id: string; type: string } }[];
}

interface UsageMetric { metric_id: string; name: string; group_key: string | null; groups: { group: Record<string, string | null> | null; points: [string, string | null][] }[] }

function usageSeries(metrics: UsageMetric[]) {
  const xs = [...new Set(metrics.flatMap((m) => m.groups.flatMap((g) => g.points.map((p) => p[0]))))].sort();
  const series = metrics.flatMap((m) => m.groups.map((g) => {
    const at = new Map(g.points.map((p) => [p[0], p[1] === null ? null : Number(p[1])]));
    const label = g.group && m.group_key ? `${m.name} · ${g.group[m.group_key] ?? '(none)'}` : m.name;
    return { label, values: xs.map((x) => at.get(x) ?? 0) };
  }));
  return { x: xs.map((t) => Date.parse(t) / 1000), series };
}

function InvoicePage({ customerId, invoiceId, onError }: { customerId: string; invoiceId: string; onError: (e: unknown) => void }) {
  const [inv, setInv] = useState<InvoiceJson | null>(null);
  const [usage, setUsage] = useState<{ window: string; metrics: UsageMetric[] } | null>(null);
  const [reason, setReason] = useState('');
  const [payment, setPayment] = useState({ amount: '', reference: '' });
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<string | null>(null);
  const load = () => api<{ data: InvoiceJson }>('GET', `/v1/customers/${customerId}/invoices/${invoiceId}`).then((r) => setInv(r.data), onError);
  useEffect(() => {
    void load();
    api<{ data: { window: string; metrics: UsageMetric[] } }>('GET', `/v1/accrue/console/invoices/${invoiceId}/usage`).then((r) => setUsage(r.data), onError);
  }, [invoiceId]);
  const act = async (what: string, fn: () => Promise<unknown>) => {
    setBusy(true);
    setMessage(null);
    try {
      await fn();
      setMessage(`${what}: done`);
      await load();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) onError(e);
      else setMessage(`${what}: ${(e as Error).message}`);
    } finally {
      setBusy(false);
    }
  };
  if (!inv) return <p aria-busy="true">Loading the invoice…</p>;
  const u = usage ? usageSeries(usage.metrics) : null;
  return (
    <section>
      <p><a href="#/queue">← Approvals</a></p>
      <h2>Invoice {day(inv.start_timestamp)} → {day(inv.end_timestamp)}</h2>
      <p>
        Status <strong data-testid="invoice-status">{inv.status}</strong> · approval <strong data-testid="approval-status">{inv.approval_status}</strong>
        {inv.payment_status && <> · payment <strong data-testid="payment-status">{inv.payment_status}</strong></>} · total <strong data-testid="invoice-total">{money(inv.total)}</strong>
        {inv.rejection_reason && <> · rejected: <em>{inv.rejection_reason}</em></>}
      </p>
      {message && <p role="status" data-testid="action-message">{message}</p>}
      <div class="overflow-auto">
        <table class="striped" data-testid="lines">
          <thead><tr><th scope="col">Line</th><th scope="col">Quantity</th><th scope="col">Rate</th><th scope="col">Applied</th><th scope="col">Total</th></tr></thead>
          <tbody>
            {inv.line_items.map((l, i) => (
              <tr key={i}><td>{l.name}</td><td>{l.quantity ?? ''}</td><td>{l.unit_price !== undefined && l.unit_price !== null ? money(l.unit_price) : ''}</td>
                <td>{l.applied_commit_or_credit ? `${l.applied_commit_or_credit.type} ${l.applied_commit_or_credit.id.slice(0, 8)}` : ''}</td><td>{money(l.total)}</td></tr>
            ))}
          </tbody>
        </table>
      </div>
      {u && u.series.length > 0 && <Chart title={`Usage behind this invoice, by ${usage!.window.toLowerCase()}`} x={u.x} series={u.series} />}
      {inv.approval_status === 'PENDING_APPROVAL' && (
        <div class="grid actions">
          <button disabled={busy} onClick={() => act('Approve', () => api('POST', `/v1/invoices/${inv.id}/approve`, { total: inv.total }))}>Approve {money(inv.total)}</button>
          <form onSubmit={(e) => { e.preventDefault(); void act('Reject', () => api('POST', `/v1/invoices/${inv.id}/reject`, { reason })); }}>
            <label for="reason">Reason for rejecting</label>
            <textarea id="reason" required value={reason} onInput={(e) => setReason((e.target as HTMLTextAreaElement).value)} />
            <button type="submit" class="secondary" disabled={busy}>Reject</button>
          </form>
        </div>
      )}
      {inv.status === 'FINALIZED' && (
        <div class="grid actions">
          <form onSubmit={(e) => { e.preventDefault(); void act('Payment', () => api('POST', `/v1/accrue/invoices/${inv.id}/payments`, { amount: Math.round(Number(payment.amount) * 100), reference: payment.reference })); }}>
            <fieldset>
              <legend>Record a payment (wire, cheque)</legend>
              <label for="amount">Amount in dollars</label>
              <input id="amount" inputMode="decimal" required value={payment.amount} onInput={(e) => setPayment({ ...payment, amount: (e.target as HTMLInputElement).value })} />
              <label for="reference">Reference</label>
              <input id="reference" required value={payment.reference} onInput={(e) => setPayment({ ...payment, reference: (e.target as HTMLInputElement).value })} />
            </fieldset>
            <button type="submit" disabled={busy}>Record payment</button>
          </form>
          <div>
            <button class="secondary" disabled={busy} onClick={() => confirm('Void this invoice?') && act('Void', () => api('POST', '/v1/invoices/void', { id: inv.id }))}>Void invoice</button>
          </div>
        </div>
      )}
      {inv.status === 'VOID' && <button disabled={busy} onClick={() => act('Regenerate', () => api('POST', '/v1/invoices/regenerate', { id: inv.id }))}>Regenerate invoice</button>}
    </section>
  );
}

interface CustomerRow {
  id: string; name: string; lifecycle_state: string | null; current_period_spend: number | null; commit_remaining: number | null; renewal_date: string | null;
  contracts: { id: string; name: string | null; starting_at: string; ending_before: string | null; lifecycle_state: string | null; workflow_url: string | null }[];
}

function Customers({ onError }: { onError: (e: unknown) => void }) {
  const [data, setData] = useState<{ data: CustomerRow[]; total_count: number; next_page: string | null; upcoming_renewals: { customer_name: string; contract_id: string; ending_before: string }[] } | null>(null);
  // The page being shown: its token, and the tokens of the pages before it (to go back).
  const [pages, setPages] = useState<string[]>(['']);
  const current = pages[pages.length - 1]!;
  // The live feed's handler is set once: it reloads whichever page is shown then.
  const shown = useRef(current);
  shown.current = current;
  const load = () => api<typeof data>('GET', `/v1/accrue/console/customers?limit=100${shown.current ? `&next_page=${encodeURIComponent(shown.current)}` : ''}`).then(setData, onError);
  useEffect(() => {
    void load();
  }, [current]);
  useLive(() => void load(), onError);
  if (!data) return <p aria-busy="true">Loading customers…</p>;
  const first = (pages.length - 1) * 100 + 1;
  return (
    <section>
      <h2>Customers</h2>
      <p data-testid="customers-count">
        {data.data.length ? `${first.toLocaleString('en-US')}–${(first + data.data.length - 1).toLocaleString('en-US')} of ${data.total_count.toLocaleString('en-US')} customers` : `${data.total_count.toLocaleString('en-US')} customers`}
        {' '}{pages.length > 1 && <button class="secondary outline" onClick={() => setPages(pages.slice(0, -1))}>Previous</button>}
        {' '}{data.next_page && <button class="secondary outline" onClick={() => setPages([...pages, data.next_page!])}>Next</button>}
      </p>
      <div class="overflow-auto">
        <table class="striped" data-testid="customers">
          <thead><tr><th scope="col">Customer</th><th scope="col">State</th><th scope="col">This period</th><th scope="col">Commit left</th><th scope="col">Renews</th><th scope="col">Contracts</th></tr></thead>
          <tbody>
            {data.data.map((c) => (
              <tr key={c.id} data-customer={c.id}>
                <td>{c.name}</td>
                <td><span class={`state state-${(c.lifecycle_state ?? 'none').toLowerCase()}`}>{c.lifecycle_state ?? '—'}</span></td>
                <td>{money(c.current_period_spend)}</td><td>{money(c.commit_remaining)}</td><td>{day(c.renewal_date)}</td>
                <td>{c.contracts.map((k) => (
                  <div key={k.id}>{k.workflow_url ? <a href={k.workflow_url} target="_blank" rel="noopener">{k.name ?? k.id.slice(0, 8)}</a> : (k.name ?? k.id.slice(0, 8))} <small>{k.lifecycle_state}</small></div>
                ))}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h3>Upcoming renewals (90 days)</h3>
      {data.upcoming_renewals.length ? <ul data-testid="renewals">{data.upcoming_renewals.map((r) => <li key={r.contract_id}>{day(r.ending_before)} — {r.customer_name}</li>)}</ul> : <p>None.</p>}
    </section>
  );
}

function Revenue({ onError }: { onError: (e: unknown) => void }) {
  const today = new Date();
  const [range, setRange] = useState({ from: new Date(today.getTime() - 90 * 86_400_000).toISOString().slice(0, 10), to: today.toISOString().slice(0, 10) });
  const [data, setData] = useState<{ days: string[]; billed: { product: string; values: number[] }[]; draft: { product: string; values: number[] }[] } | null>(null);
  useEffect(() => {
    api<{ data: NonNullable<typeof data> }>('GET', `/v1/accrue/console/revenue?from=${range.from}&to=${range.to}`).then((r) => setData(r.data), onError);
  }, [range.from, range.to]);
  const x = data ? data.days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000) : [];
  const total = (s: { values: number[] }[]) => s.reduce((a, p) => a + p.values.reduce((b, v) => b + v, 0), 0);
  return (
    <section>
      <h2>Revenue</h2>
      <div class="grid">
        <label>From <input type="date" value={range.from} onChange={(e) => setRange({ ...range, from: (e.target as HTMLInputElement).value })} /></label>
        <label>To <input type="date" value={range.to} onChange={(e) => setRange({ ...range, to: (e.target as HTMLInputElement).value })} /></label>
      </div>
      {!data ? <p aria-busy="true">Loading revenue…</p> : (
        <>
          <p>Billed <strong data-testid="billed-total">{money(total(data.billed))}</strong> · draft (open periods, today) <strong data-testid="draft-total">{money(total(data.draft))}</strong></p>
          <Chart title="Billed revenue by day and product" x={x} series={data.billed.map((s) => ({ label: s.product, values: s.values }))} bars yFormat={(v) => money(v)} />
          <Chart title="Draft revenue by product (today)" x={x} series={data.draft.map((s) => ({ label: s.product, values: s.values }))} bars yFormat={(v) => money(v)} />
        </>
      )}
    </section>
  );
}

render(<App />, document.getElementById('app')!);
