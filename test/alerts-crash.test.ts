import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Metronome from '@metronome/sdk';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createTestDatabase, eventually, http, monthStart, startApp, uniqueName, type RunningApp } from './stack.js';
import { startWebhookReceiver } from './webhook-receiver.js';

/**
 * A real worker SIGKILLed right after an alert's crossing is recorded (before its notification is
 * dispatched) and again right after the webhook was delivered (before the notification is marked
 * dispatched): the
 * crossing is recorded once, one notification exists for it, and the receiver gets it — every
 * attempt with the same id.
 */
describe('crash: the worker is killed between an alert crossing and its delivery', () => {
  const dir = mkdtempSync(join(tmpdir(), 'accrue-failpoints-'));
  let app: RunningApp;
  let orm: MikroORM;
  let client: Metronome;
  let stopping = false;
  const kills: string[] = [];
  const supervise = (worker: ChildProcess) => {
    worker.once('exit', (_code, signal) => {
      if (stopping || signal !== 'SIGKILL') return;
      kills.push(new Date().toISOString());
      void app.startWorker().then(supervise);
    });
  };

  beforeAll(async () => {
    const db = await createTestDatabase('alertcrash');
    orm = db.orm;
    app = await startApp({
      databaseUrl: db.url,
      env: {
        ACCRUE_FAILPOINTS: '@outbound-evaluated,@outbound-delivered', ACCRUE_FAILPOINT_DIR: dir,
        ACCRUE_WEBHOOK_ALLOW_PRIVATE: '1', ACCRUE_WEBHOOK_RETRY_INITIAL: '200ms', ACCRUE_WEBHOOK_RETRY_MAX_INTERVAL: '1s',
      },
    });
    supervise(app.worker);
    client = new Metronome({ bearerToken: app.adminToken, baseURL: app.baseURL, maxRetries: 0 });
  });
  afterAll(async () => {
    stopping = true;
    await app?.stop();
    await orm?.close();
  });

  test('killed after the crossing and after the delivery: one crossing, one notification, delivered', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const endpoint = await http(app, 'POST', '/v1/accrue/webhook-endpoints', { token: app.adminToken, body: { url: receiver.url, event_types: ['alerts.spend_threshold_reached'] } });
      const secret = endpoint.json.data.secret as string;
      const metric = await client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
      const product = await client.v1.contracts.products.create({ name: 'Calls', type: 'USAGE', billable_metric_id: metric.data.id });
      const card = await client.v1.contracts.rateCards.create({ name: uniqueName('card') });
      await client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: product.data.id, entitled: true, rate_type: 'FLAT', price: 5, starting_at: monthStart(-1) });
      const alias = uniqueName('crash');
      const customer = await client.v1.customers.create({ name: 'Crash Co', ingest_aliases: [alias] });
      await client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: monthStart(0) });
      const alert = await client.v1.alerts.create({ customer_id: customer.data.id, alert_type: 'spend_threshold_reached', name: 'spend 20c', threshold: 20 });
      await client.v1.usage.ingest({ usage: Array.from({ length: 5 }, (_, i) => ({ transaction_id: `${alias}-${i}`, customer_id: alias, event_type: 'call', timestamp: new Date(Date.now() - 1000).toISOString(), properties: {} })) });

      const hooks = await eventually('the alert delivered after two kills', async () => {
        expect(readdirSync(dir).sort()).toEqual(['_outbound-delivered', '_outbound-evaluated']);
        const got = receiver.received.filter((w) => w.properties.alert_id === alert.data.id);
        expect(got.length).toBeGreaterThanOrEqual(1);
        const [row] = await orm.em.fork().execute<{ status: string }[]>(`select d.status from webhook_delivery d join outbound_event n on n.id = d.notification_id where n.properties ->> 'alert_id' = ?`, [alert.data.id]);
        expect(row?.status).toBe('DELIVERED');
        expect(kills).toHaveLength(2); // the second kill comes right after the delivery is recorded
        return got;
      }, 90_000);
      expect(new Set(hooks.map((w) => w.id)).size).toBe(1);
      for (const w of hooks) client.webhooks.unwrap(w.body, w.headers as Record<string, string>, secret);
      const [state] = await orm.em.fork().execute<{ status: string; fired: number }[]>(`select status, fired from customer_alert_state where alert_id = ?`, [alert.data.id]);
      expect(state).toEqual({ status: 'in_alarm', fired: 1 });
      const events = await orm.em.fork().execute<{ id: string }[]>(`select id::text as id from outbound_event where properties ->> 'alert_id' = ?`, [alert.data.id]);
      expect(events.map((e) => e.id)).toEqual([hooks[0]!.id]);
      // Nothing more arrives once the notification's workflow is done.
      await new Promise((r) => setTimeout(r, 2000));
      expect(receiver.received.filter((w) => w.properties.alert_id === alert.data.id)).toHaveLength(hooks.length);
    } finally {
      await receiver.close();
    }
  });
});
