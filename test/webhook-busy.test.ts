import { enqueueNotification } from '../db/notifications.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http } from './stack.js';
import { startWebhookReceiver } from './webhook-receiver.js';

/**
 * A retry that finds its endpoint's budget full sends nothing, so it must not bring its delivery
 * closer to giving up. Here the budget is one place and the retry window 3 s, while one request
 * holds the place for the send's whole 10 s deadline: longer than the window.
 */
describe('webhook delivery: a full endpoint budget', () => {
  const h = useSdkApp('webhook_busy', {
    env: {
      ACCRUE_WEBHOOK_ALLOW_PRIVATE: '1', ACCRUE_WEBHOOK_FIRST_ATTEMPT_TIMEOUT: '1s', ACCRUE_WEBHOOK_ENDPOINT_CONCURRENCY: '1',
      ACCRUE_WEBHOOK_RETRY_INITIAL: '1s', ACCRUE_WEBHOOK_RETRY_MAX_INTERVAL: '1s', ACCRUE_WEBHOOK_RETRY_FOR: '3s',
    },
  });

  test('does not count toward giving up: a delivery waiting out an overload longer than its retry window is sent', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const r = await http(h.app, 'POST', '/v1/accrue/webhook-endpoints', { token: h.app.adminToken, body: { url: receiver.url } });
      expect(r.status).toBe(201);
      const endpointId = r.json.data.id as string;
      // A's first attempt is refused (500); its retry is held and never answered (cut off by the
      // send's 10 s deadline), holding the endpoint's only place. Everything else: 200 at once.
      let requests = 0;
      receiver.answerWith(() => {
        requests++;
        if (requests === 1) return 500;
        if (requests === 2) return new Promise<number>(() => {});
        return 200;
      });
      const enqueue = (key: string) => h.orm.em.fork().transactional(async (tx) => (await enqueueNotification(tx, { type: 'invoice.finalized', properties: { invoice_id: key }, dedupKey: `busy-test:${key}` })).id);
      const a = await enqueue('a');
      await eventually("A's retry holding the endpoint's place", async () => expect(receiver.stats.held).toBe(1));
      const b = await enqueue('b');

      const deliveries = async () => {
        const d = await http(h.app, 'GET', `/v1/accrue/webhook-endpoints/${endpointId}/deliveries?limit=100`, { token: h.app.adminToken });
        return new Map((d.json.data as { notification_id: string; status: string; attempts: number }[]).map((x) => [x.notification_id, x]));
      };
      // B waited the whole time the place was held (far past its 3 s window) and was then sent once.
      await eventually('B delivered', async () => expect((await deliveries()).get(b)).toMatchObject({ status: 'DELIVERED', attempts: 1 }));
      expect(receiver.received.filter((w) => w.id === b)).toHaveLength(1);
      // Sends still count: A, sent twice in its window (refused, then cut off), gave up.
      await eventually('A given up', async () => expect((await deliveries()).get(a)).toMatchObject({ status: 'FAILED', attempts: 2 }));
      expect(receiver.stats.abandoned).toBe(1);
    } finally {
      await receiver.close();
    }
  });
});
