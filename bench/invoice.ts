import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { dec } from '../billing/money.js';
import { BalanceGrant, BillableMetric, Contract, Customer, Product, Rate, RateCard } from '../db/entities.js';
import { insertEvents, type NewEvent } from '../db/events.js';
import { newId, invoiceIdFor } from '../db/ids.js';
import { computeInvoice, listCustomerInvoices } from '../db/invoices.js';
import { migrate, openOrm } from '../db/orm.js';
import { ratePass, ratingBacklog } from '../db/rating.js';
import { USD_CENTS } from '../billing/money.js';
import { ROOT } from '../stack/config.js';
import { freePort, waitFor } from '../stack/net.js';
import { startPostgres } from '../stack/postgres.js';
import { spawnService, stopChild } from '../stack/services.js';

/**
 * `npm run bench:invoice`: how long computing a draft invoice takes for a contract with 50
 * products (FLAT, graduated, volume and package rates; ten priced per model) and 1,000,000
 * events in the period, with a prepaid commit, a credit and an override in play. Starts its own
 * PostgreSQL, loads and rates the events, checks every line's quantity against what was sent,
 * then times (a) computeInvoice in process and (b) GET /v1/customers/{id}/invoices/{id} over
 * loopback from a real API process.
 *
 *   BENCH_EVENTS (1000000)  BENCH_PRODUCTS (50)  BENCH_ITERATIONS (300)
 */
const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000_000);
const PRODUCTS = Number(process.env.BENCH_PRODUCTS ?? 50);
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 300);
const MODELS = ['small', 'medium', 'large', 'xl'];
const log = (m: string) => console.log(`[bench] ${m}`);
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;

const work = mkdtempSync(join(tmpdir(), 'accrue-bench-invoice-'));
chmodSync(work, 0o755);
const pgPort = await freePort();
const postgres = await startPostgres({ dataDir: join(work, 'pg'), port: pgPort });
let api: ReturnType<typeof spawnService> | undefined;
try {
  const orm = await openOrm(postgres.url, { poolMax: 4 });
  await migrate(orm);
  const em = orm.em.fork();
  const now = new Date();
  const periodStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
  const periodEnd = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const hours = (periodEnd.getTime() - periodStart.getTime()) / 3_600_000;

  // Catalog: one SUM metric per product; every fifth product priced per model.
  const customerId = newId();
  em.create(Customer, { id: customerId, name: 'Bench AI', billingEmail: null, customFields: {}, createdAt: now, updatedAt: now });
  const rateCardId = newId();
  em.create(RateCard, { id: rateCardId, name: 'bench', creditTypeId: USD_CENTS.id, customFields: {}, aliases: [], createdAt: now });
  await em.flush();
  const products: { id: string; metricId: string; eventType: string; grouped: boolean }[] = [];
  for (let i = 0; i < PRODUCTS; i++) {
    const grouped = i % 5 === 0;
    const metricId = newId();
    em.create(BillableMetric, {
      id: metricId, name: `metric ${i}`, aggregationType: 'SUM', aggregationKey: 'units', eventTypeFilter: { in_values: [`p${i}`] }, propertyFilters: [],
      groupKeys: grouped ? [['model']] : [], customFields: {}, createdAt: now, ratingFromXid: '1', backfillCursorXid: '1', backfillStatus: 'DONE', backfillEventsProcessed: 0, backfillEventsTotal: 0,
    });
    await em.flush(); // entities carry ids, not relations: write the metric before its product
    const id = newId();
    em.create(Product, { id, name: `Product ${String(i).padStart(2, '0')}`, type: 'USAGE', billableMetricId: metricId, tags: i % 2 ? ['ai'] : [], customFields: {}, attributes: grouped ? { pricing_group_key: ['model'] } : {}, updates: [], createdAt: now });
    products.push({ id, metricId, eventType: `p${i}`, grouped });
  }
  await em.flush();
  for (let i = 0; i < PRODUCTS; i++) {
    const p = products[i]!;
    const kind = i % 4;
    const spec = kind === 0 ? { rateType: 'FLAT' as const, price: '0.25' }
      : kind === 1 ? { rateType: 'TIERED' as const, tiers: [{ size: '10000', price: '0.5' }, { size: '100000', price: '0.2' }, { price: '0.1' }] }
        : kind === 2 ? { rateType: 'VOLUME' as const, tiers: [{ size: '5000', price: '0.3' }, { price: '0.15' }] }
          : { rateType: 'PACKAGE' as const, price: '100', packageSize: '1000' };
    for (const model of p.grouped ? MODELS : [null]) {
      em.create(Rate, {
        id: newId(), rateCardId, productId: p.id, rateType: spec.rateType, price: 'price' in spec ? spec.price : null, tiers: 'tiers' in spec ? spec.tiers : null,
        packageSize: 'packageSize' in spec ? spec.packageSize : null, packageRounding: 'packageSize' in spec ? 'UP' : null,
        pricingGroupValues: model ? { model } : {}, entitled: true, startingAt: periodStart, createdAt: now,
      } as Rate);
    }
  }
  await em.flush();
  const contractId = newId();
  em.create(Contract, {
    id: contractId, customerId, rateCardId, startingAt: periodStart, usageStatementFrequency: 'MONTHLY', usageStatementDay: 'FIRST_OF_MONTH', customFields: {}, createdAt: now,
    terms: { overrides: [{ id: newId(), starting_at: periodStart.toISOString(), type: 'MULTIPLIER', multiplier: '0.9', applicable_product_tags: ['ai'] }] },
  });
  await em.flush();
  const fixedId = newId();
  em.create(Product, { id: fixedId, name: 'Commit', type: 'FIXED', billableMetricId: null, tags: [], customFields: {}, attributes: {}, updates: [], createdAt: now });
  await em.flush();
  for (const [kind, amount, priority] of [['PREPAID', '500000', 2], ['CREDIT', '20000', 1]] as const) {
    em.create(BalanceGrant, {
      id: newId(), customerId, contractId, kind, productId: fixedId, name: kind, priority, customFields: {}, createdAt: now,
      accessSchedule: { credit_type_id: USD_CENTS.id, schedule_items: [{ id: newId(), amount, starting_at: periodStart.toISOString(), ending_before: periodEnd.toISOString() }] },
    } as BalanceGrant);
  }
  await em.flush();

  // 1M events over the period's hours, spread over products and models; expected sums kept exactly.
  log(`loading ${EVENTS} events for ${PRODUCTS} products over ${hours} hours`);
  const pool = new pg.Pool({ connectionString: postgres.url, max: 4 });
  pool.on('error', () => {}); // connections closed when PostgreSQL stops
  const expected = new Map<string, bigint>();
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const t0 = Date.now();
  const BATCH = 5000;
  let inflight: Promise<unknown>[] = [];
  for (let start = 0; start < EVENTS; start += BATCH) {
    const batch: NewEvent[] = [];
    for (let i = start; i < Math.min(EVENTS, start + BATCH); i++) {
      const p = products[i % PRODUCTS]!;
      const model = p.grouped ? MODELS[Math.floor(rand() * MODELS.length)]! : undefined;
      const units = 1 + Math.floor(rand() * 20);
      const ts = new Date(periodStart.getTime() + Math.floor(rand() * hours * 3_600_000)).toISOString();
      const key = `${p.id}|${model ?? ''}`;
      expected.set(key, (expected.get(key) ?? 0n) + BigInt(units));
      batch.push({ transactionId: `e${i}`, customerId, eventType: p.eventType, timestamp: ts, properties: model ? { units, model } : { units } });
    }
    inflight.push(insertEvents(pool, batch));
    if (inflight.length >= 4) { await Promise.all(inflight); inflight = []; }
  }
  await Promise.all(inflight);
  log(`inserted in ${((Date.now() - t0) / 1000).toFixed(1)} s; rating`);
  const t1 = Date.now();
  while (await ratingBacklog(orm.em.fork())) await ratePass(orm.em.fork(), 200_000);
  log(`rated in ${((Date.now() - t1) / 1000).toFixed(1)} s`);
  const hourlyRows = (await pool.query('select count(*)::int as n from usage_hourly')).rows[0].n as number;

  // Correctness first: every line's quantity equals what was sent.
  const contract = (await orm.em.fork().findOne(Contract, { id: contractId }))!;
  const period = { start: periodStart.toISOString(), end: periodEnd.toISOString() };
  const inv = await computeInvoice(orm.em.fork(), contract, period);
  const usageLines = inv.lines.filter((l) => l.type === 'usage');
  let mismatches = 0;
  for (const l of usageLines) {
    const key = `${l.productId}|${l.pricingGroupValues?.model ?? ''}`;
    if (!dec(expected.get(key)!.toString()).eq(l.quantity!)) mismatches++;
  }
  if (usageLines.length !== expected.size || mismatches) throw new Error(`invoice quantities disagree with the events sent: ${usageLines.length} lines for ${expected.size} expected, ${mismatches} mismatches`);
  log(`invoice checked: ${usageLines.length} usage lines equal the events sent; total ${inv.total.toString()} cents, ${inv.lines.length} lines`);

  if (process.env.BENCH_HOLD) { log(`holding: ${postgres.url} customer ${customerId}`); await new Promise((r) => setTimeout(r, Number(process.env.BENCH_HOLD) * 1000)); }
  // (a) computeInvoice in process.
  for (let i = 0; i < 20; i++) await computeInvoice(orm.em.fork(), contract, period);
  const inProcess: number[] = [];
  for (let i = 0; i < ITERATIONS; i++) {
    const s = performance.now();
    await computeInvoice(orm.em.fork(), contract, period);
    inProcess.push(performance.now() - s);
  }
  // (b) the same draft over HTTP from a real API process (which also drafts the current period).
  const port = await freePort();
  const token = `bench-${Date.now()}`;
  api = spawnService('api', { ...process.env, DATABASE_URL: postgres.url, TEMPORAL_ADDRESS: '127.0.0.1:9', SMTP_URL: 'smtp://127.0.0.1:9', ACCRUE_ADMIN_TOKEN: token, PORT: String(port) }, { quiet: true });
  const url = `http://127.0.0.1:${port}/v1/customers/${customerId}/invoices/${invoiceIdFor(contractId, period.start)}`;
  const H = { authorization: `Bearer ${token}` };
  await waitFor('API', async () => { if ((await fetch(url, { headers: H })).status !== 200) throw new Error('not yet'); });
  const viaApi = (await (await fetch(url, { headers: H })).json()) as { data: { total: number } };
  if (String(viaApi.data.total) !== inv.total.toString()) throw new Error(`API total ${viaApi.data.total} != ${inv.total.toString()}`);
  for (let i = 0; i < 20; i++) await (await fetch(url, { headers: H })).arrayBuffer();
  const overHttp: number[] = [];
  for (let i = 0; i < ITERATIONS; i++) {
    const s = performance.now();
    const r = await fetch(url, { headers: H });
    await r.arrayBuffer();
    overHttp.push(performance.now() - s);
  }
  void listCustomerInvoices;

  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const pgVersion = (await pool.query('select version()')).rows[0].version as string;
  const f = (x: number) => `${x.toFixed(1)} ms`;
  const table = [
    '| measure | result |', '|---|---|',
    `| machine | ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, ${pgVersion.split(' on ')[0]} on the same host |`,
    `| contract | ${PRODUCTS} products (FLAT, graduated, volume, package; every 5th priced per model × ${MODELS.length}), prepaid commit, credit, multiplier override |`,
    `| events in the period | ${EVENTS.toLocaleString('en')} (${hourlyRows.toLocaleString('en')} hourly aggregate rows) |`,
    `| invoice | ${inv.lines.length} lines, total ${inv.total.toString()} cents; every usage line's quantity equals the events sent |`,
    `| computeInvoice in process, p50 / p99 / max (${ITERATIONS} runs) | ${f(pct(inProcess, 50))} / ${f(pct(inProcess, 99))} / ${f(Math.max(...inProcess))} |`,
    `| GET invoice over HTTP, p50 / p99 / max (${ITERATIONS} runs) | ${f(pct(overHttp, 50))} / ${f(pct(overHttp, 99))} / ${f(Math.max(...overHttp))} |`,
  ].join('\n');
  console.log(`\n${table}\n`);
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', 'invoice-latest.md'), `# bench:invoice — ${new Date().toISOString()}\n\n${table}\n`);
  await pool.end();
  await orm.close();
} catch (err) {
  console.error(`[bench] failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
} finally {
  if (api) await stopChild(api);
  await postgres.stop();
  rmSync(work, { recursive: true, force: true });
}
