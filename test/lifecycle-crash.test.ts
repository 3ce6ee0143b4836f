import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Metronome from '@metronome/sdk';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createTestDatabase, eventually, http, mailTo, monthStart, startApp, uniqueName, type RunningApp } from './stack.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;

/**
 * A real worker process SIGKILLed between two steps of a lifecycle transition — after an
 * activity's work is done and before Temporal hears it completed (workers/failpoints.ts) — and
 * started again: during a trial's end (after the end date is written, after the ENDED transition
 * is recorded, after the trial-ended email is sent) and during an arrears transition (after the
 * ARREARS transition is recorded, after the overdue email is sent). Every transition is recorded
 * once and every email arrives once.
 */
describe('crash: the worker is SIGKILLed in the middle of lifecycle transitions', () => {
  const FAILPOINTS = [
    'endContractAtTrialEnd', 'recordLifecycleTransition:ENDED', 'sendNotificationEmail:trial_ended',
    'recordLifecycleTransition:ARREARS', 'sendNotificationEmail:invoice_overdue',
  ];
  const dir = mkdtempSync(join(tmpdir(), 'accrue-failpoints-'));
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;
  let stopping = false;
  const kills: string[] = [];

  /** Starts the worker again whenever a failpoint kills it (a supervisor would). */
  const supervise = (worker: ChildProcess) => {
    worker.once('exit', (_code, signal) => {
      if (stopping || signal !== 'SIGKILL') return;
      kills.push(new Date().toISOString());
      void app.startWorker().then(supervise);
    });
  };

  beforeAll(async () => {
    const db = await createTestDatabase('lifecrash');
    orm = db.orm;
    app = await startApp({ databaseUrl: db.url, gracePeriod: '1s', env: { ACCRUE_FAILPOINTS: FAILPOINTS.join(','), ACCRUE_FAILPOINT_DIR: dir } });
    supervise(app.worker);
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
  });
  afterAll(async () => {
    stopping = true;
    await app?.stop();
    await orm?.close();
  });

  test('a trial ending and a contract going into arrears, the worker killed five times: each transition once, each email once', async () => {
    const lifecycle = async (id: string) => (await http(app, 'GET', `/v1/accrue/contracts/${id}/lifecycle`, { token: app.adminToken })).json.data as { state: string; history: { state: string }[] };

    // A trial that ended three days ago without a commit: the contract ends with it.
    const trialEmail = `${uniqueName('crashtrial')}@e2e.test`;
    const trialCustomer = await client.v1.customers.create({ name: 'Trial Co', ingest_aliases: [uniqueName('t')], billing_email: trialEmail } as Metronome.V1.CustomerCreateParams);
    const emptyCard = await client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    const trialStart = Math.floor((Date.now() - 6 * DAY) / HOUR) * HOUR;
    const trial = await client.v1.contracts.create({
      customer_id: trialCustomer.data.id, rate_card_id: emptyCard.data.id, starting_at: new Date(trialStart).toISOString(), trial_spec: { length_in_days: 3 },
    } as Metronome.V1.ContractCreateParams);

    // Last month's invoice, finalized by policy and due at once: the contract goes into arrears.
    const alias = uniqueName('crasharrears');
    const arrearsEmail = `${alias}@e2e.test`;
    const payer = await client.v1.customers.create({ name: 'Late Payer', ingest_aliases: [alias], billing_email: arrearsEmail } as Metronome.V1.CustomerCreateParams);
    const metric = await client.v1.billableMetrics.create({ name: 'calls', aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const product = await client.v1.contracts.products.create({ name: 'Calls', type: 'USAGE', billable_metric_id: metric.data.id });
    const card = await client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 100, starting_at: monthStart(-3) });
    const p0 = monthStart(-1);
    await client.v1.usage.ingest({ usage: [0, 1].map((i) => ({ transaction_id: `${alias}-${i}`, customer_id: alias, event_type: 'call', timestamp: new Date(Date.parse(p0) + HOUR + i * 1000).toISOString() })) });
    const arrears = await client.v1.contracts.create({
      customer_id: payer.data.id, rate_card_id: card.data.id, starting_at: p0, net_payment_terms_days: 0, approval_policy: { mode: 'NEVER' },
    } as Metronome.V1.ContractCreateParams);

    // Every failpoint fires (the worker dies five times), and both contracts get where they were going.
    await eventually('every failpoint to fire', async () => {
      const fired = readdirSync(dir);
      if (fired.length < FAILPOINTS.length) throw new Error(`fired ${fired.join(', ')}`);
    }, 240_000);
    await eventually('the trial ended and its email sent', async () => {
      if ((await lifecycle(trial.data.id)).state !== 'ENDED') throw new Error('not ENDED');
      if ((await mailTo(trialEmail)).length < 2) throw new Error('mail');
    }, 120_000);
    await eventually('arrears and its overdue email', async () => {
      if ((await lifecycle(arrears.data.id)).state !== 'ARREARS') throw new Error('not in ARREARS');
      if (!(await mailTo(arrearsEmail)).some((m) => m.subject?.startsWith('Invoice overdue'))) throw new Error('mail');
    }, 120_000);
    // Anything a retry might still send or record arrives before counting.
    await new Promise((r) => setTimeout(r, 5000));

    expect(kills.length).toBe(FAILPOINTS.length);
    expect((await lifecycle(trial.data.id)).history.map((t) => t.state)).toEqual(['TRIAL', 'ENDED']);
    expect((await lifecycle(arrears.data.id)).history.map((t) => t.state)).toEqual(['ACTIVE', 'ARREARS']);
    const rows = await orm.em.fork().execute<{ contract_id: string; n: string }[]>(
      'select contract_id::text, count(*)::text as n from contract_lifecycle_transition where contract_id in (?, ?) group by contract_id order by 1', [trial.data.id, arrears.data.id]);
    expect(Object.fromEntries(rows.map((r) => [r.contract_id, r.n]))).toEqual({ [trial.data.id]: '2', [arrears.data.id]: '2' });
    const retrieved = await client.v1.contracts.retrieve({ customer_id: trialCustomer.data.id, contract_id: trial.data.id });
    expect(retrieved.data.current.ending_before).toBe(new Date(trialStart + 3 * DAY).toISOString());

    // The trial: started and ended, once each. Arrears: the invoice and one overdue notice.
    const trialMail = await mailTo(trialEmail);
    expect(trialMail.map((m) => m.messageId).length).toBe(new Set(trialMail.map((m) => m.messageId)).size);
    expect(trialMail).toHaveLength(2);
    const arrearsMail = await mailTo(arrearsEmail);
    expect(arrearsMail.filter((m) => m.subject?.startsWith('Invoice overdue'))).toHaveLength(1);
    expect(arrearsMail.filter((m) => m.subject?.startsWith('Your invoice for'))).toHaveLength(1);
    expect(arrearsMail).toHaveLength(2);
  }, 420_000);
});
