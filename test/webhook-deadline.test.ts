import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { enqueueNotification } from '../db/notifications.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http } from './stack.js';

/**
 * A receiver that sends its headers and then one byte every 300 ms never lets the socket go idle,
 * so only a deadline on the whole answer ends such a request. The endpoint's budget is one place
 * here: while a trickled request held it, no other delivery to the endpoint could go out.
 */
describe('webhook delivery: a receiver trickling its answer', () => {
  const h = useSdkApp('webhook_deadline', {
    env: {
      ACCRUE_WEBHOOK_ALLOW_PRIVATE: '1', ACCRUE_WEBHOOK_FIRST_ATTEMPT_TIMEOUT: '1s', ACCRUE_WEBHOOK_ENDPOINT_CONCURRENCY: '1',
      ACCRUE_WEBHOOK_RETRY_INITIAL: '1s', ACCRUE_WEBHOOK_RETRY_MAX_INTERVAL: '2s',
    },
  });

  test('is cut off at the deadline: the budget place comes back and later deliveries go through', async () => {
    // The first two requests (the dispatcher's first attempt, then a retry activity's) trickle
    // forever; every later one is answered at once.
    const TRICKLED = 2;
    const trickles = new Set<{ res: ServerResponse; timer: NodeJS.Timeout }>();
    const stats = { trickled: 0, cutOff: 0 };
    const answered: string[] = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const id = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id: string }).id;
        if (stats.trickled < TRICKLED) {
          stats.trickled++;
          res.writeHead(200, { 'content-type': 'text/plain' });
          const t = { res, timer: setInterval(() => res.write('.'), 300) };
          trickles.add(t);
          res.on('close', () => {
            clearInterval(t.timer);
            trickles.delete(t);
            stats.cutOff++;
          });
          return;
        }
        answered.push(id);
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
      const r = await http(h.app, 'POST', '/v1/accrue/webhook-endpoints', { token: h.app.adminToken, body: { url } });
      expect(r.status).toBe(201);
      const endpointId = r.json.data.id as string;

      const N = 3;
      const ids = await h.orm.em.fork().transactional(async (tx) => {
        const out: string[] = [];
        for (let i = 0; i < N; i++) out.push((await enqueueNotification(tx, { type: 'invoice.finalized', properties: { invoice_id: `trickle-${i}` }, dedupKey: `deadline-test:${i}` })).id);
        return out;
      });

      await eventually('every notification answered', async () => expect(new Set(answered.filter((id) => ids.includes(id))).size).toBe(N));
      // Both trickled requests were ended by the sender (they would have gone on forever).
      expect(stats.trickled).toBe(TRICKLED);
      await eventually('the trickled requests closed', async () => expect(stats.cutOff).toBe(TRICKLED));
      await eventually('the deliveries recorded', async () => {
        const d = await http(h.app, 'GET', `/v1/accrue/webhook-endpoints/${endpointId}/deliveries?limit=100`, { token: h.app.adminToken });
        const mine = (d.json.data as { notification_id: string; status: string }[]).filter((x) => ids.includes(x.notification_id));
        expect(mine).toHaveLength(N);
        expect(mine.every((x) => x.status === 'DELIVERED')).toBe(true);
      });
    } finally {
      for (const t of trickles) clearInterval(t.timer);
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
