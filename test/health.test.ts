import type { MikroORM } from '@mikro-orm/postgresql';
import { freePort } from '../stack/net.js';
import { createTestDatabase, http, startApp, type RunningApp } from './stack.js';

/** /health is 200 only when both PostgreSQL and Temporal answer; ingest does not need Temporal. */
describe('health', () => {
  let app: RunningApp;
  let orm: MikroORM;

  beforeAll(async () => {
    const db = await createTestDatabase('health');
    orm = db.orm;
    // Nothing listens on this port: Temporal is "down" for this API process.
    app = await startApp({ databaseUrl: db.url, withWorker: false, temporalAddress: `127.0.0.1:${await freePort()}` });
  });
  afterAll(async () => {
    await app?.stop();
    await orm?.close();
  });

  test('503 naming Temporal while it is unreachable, and events are still accepted durably', async () => {
    const health = await http(app, 'GET', '/health');
    expect(health.status).toBe(503);
    expect(health.json).toMatchObject({ status: 'unavailable', postgres: 'ok' });
    expect(health.json.temporal).not.toBe('ok');

    const ingest = await http(app, 'POST', '/v1/ingest', {
      token: app.adminToken,
      // Raw JSON: a number with more digits than a JS double holds.
      rawBody: '[{"transaction_id": "health-1", "customer_id": "c", "event_type": "e", "timestamp": "2026-01-01T00:00:00Z", "properties": {"big": 12345678901234567890.123, "small": 42}}]',
    });
    expect(ingest.status).toBe(200);
    const rows = await orm.em.fork().execute<{ big: string; small: string }[]>(`select properties ->> 'big' as big, jsonb_typeof(properties -> 'small') as small from event where transaction_id = 'health-1'`);
    expect(rows).toEqual([{ big: '12345678901234567890.123', small: 'number' }]); // kept exactly as sent, not as a JS double
  });
});
