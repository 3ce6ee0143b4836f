import Metronome from '@metronome/sdk';
import { Client, Connection } from '@temporalio/client';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createTestDatabase, startApp, testStack, type RunningApp } from './stack.js';

/**
 * A test file's own database, API and worker processes, the Metronome SDK pointed at them and a
 * Temporal client, started in beforeAll and stopped in afterAll.
 */
export interface SdkApp {
  app: RunningApp;
  orm: MikroORM;
  dbUrl: string;
  client: Metronome;
  temporal: Client;
}

export function useSdkApp(prefix: string, opts: { gracePeriod?: string; env?: Record<string, string> } = {}): SdkApp {
  const h = {} as SdkApp;
  let connection: Connection | undefined;
  beforeAll(async () => {
    const db = await createTestDatabase(prefix);
    h.orm = db.orm;
    h.dbUrl = db.url;
    h.app = await startApp({ databaseUrl: db.url, gracePeriod: opts.gracePeriod ?? '1s', ...(opts.env ? { env: opts.env } : {}) });
    h.client = new Metronome({ bearerToken: h.app.adminToken, baseURL: h.app.baseURL, maxRetries: 0 });
    connection = await Connection.connect({ address: testStack().temporalAddress });
    h.temporal = new Client({ connection });
  });
  afterAll(async () => {
    await h.app?.stop();
    await connection?.close();
    await h.orm?.close();
  });
  return h;
}
