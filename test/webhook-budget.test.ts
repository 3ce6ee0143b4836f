import { enqueueNotification } from '../db/notifications.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http } from './stack.js';
import { startWebhookReceiver } from './webhook-receiver.js';

/**
 * Outbound webhooks: every endpoint has its own concurrency budget, so a receiver that holds its
 * requests holds only its own deliveries. The first attempt's timeout is long here, so the slow
 * receiver's requests stay open until the test releases them: whatever reaches the fast
 * receiver meanwhile got there without waiting for the slow one (no timing involved).
 */
describe('webhook delivery: each endpoint has its own concurrency budget', () => {
  const BUDGET = 4;
  const h = useSdkApp('webhook_budget', {
    env: { ACCRUE_WEBHOOK_ALLOW_PRIVATE: '1', ACCRUE_WEBHOOK_FIRST_ATTEMPT_TIMEOUT: '10m', ACCRUE_WEBHOOK_ENDPOINT_CONCURRENCY: String(BUDGET) },
  });

  test('a receiver holding every request delays no other endpoint and holds only its budget', async () => {
    const slow = await startWebhookReceiver();
    const fast = await startWebhookReceiver();
    try {
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      slow.answerWith(async () => {
        await released;
        return 200;
      });
      const endpoint = async (url: string) => {
        const r = await http(h.app, 'POST', '/v1/accrue/webhook-endpoints', { token: h.app.adminToken, body: { url } });
        expect(r.status).toBe(201);
        return r.json.data.id as string;
      };
      const slowId = await endpoint(slow.url);
      const fastId = await endpoint(fast.url);

      // More notifications than the dispatcher's old shared pool of 16, written at once as a producer would.
      const N = 40;
      const ids = await h.orm.em.fork().transactional(async (tx) => {
        const out: string[] = [];
        for (let i = 0; i < N; i++) out.push((await enqueueNotification(tx, { type: 'invoice.finalized', properties: { invoice_id: `budget-${i}` }, dedupKey: `budget-test:${i}` })).id);
        return out;
      });
      const deliveredTo = (r: typeof fast) => new Set(r.received.filter((w) => w.answered === 200 && ids.includes(w.id)).map((w) => w.id));

      await eventually('every notification at the fast endpoint', async () => expect(deliveredTo(fast).size).toBe(N));
      await eventually('the slow endpoint holding its whole budget', async () => expect(slow.stats.held).toBe(BUDGET));
      // All of that while the slow receiver still held its first requests: none answered, none given up.
      expect(slow.received).toHaveLength(0);
      expect(slow.stats.abandoned).toBe(0);
      expect(slow.stats.maxHeld).toBe(BUDGET);

      release();
      await eventually('every notification at the slow endpoint', async () => expect(deliveredTo(slow).size).toBe(N));
      expect(slow.stats.maxHeld).toBe(BUDGET);
      expect(slow.stats.abandoned).toBe(0);
      for (const id of [slowId, fastId]) {
        await eventually('the deliveries recorded', async () => {
          const d = await http(h.app, 'GET', `/v1/accrue/webhook-endpoints/${id}/deliveries?limit=100`, { token: h.app.adminToken });
          const mine = (d.json.data as { notification_id: string; status: string; attempts: number }[]).filter((x) => ids.includes(x.notification_id));
          expect(mine).toHaveLength(N);
          expect(mine.every((x) => x.status === 'DELIVERED' && x.attempts === 1)).toBe(true);
        });
      }
      // Each notification once per endpoint, with its own id.
      expect(fast.received.filter((w) => ids.includes(w.id))).toHaveLength(N);
      expect(slow.received.filter((w) => ids.includes(w.id))).toHaveLength(N);
    } finally {
      await slow.close();
      await fast.close();
    }
  });
});
