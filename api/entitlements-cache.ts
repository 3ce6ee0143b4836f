import pg from 'pg';
import type { MikroORM } from '@mikro-orm/postgresql';
import { NotFoundError } from '../billing/errors.js';
import { Customer } from '../db/entities.js';
import { computeEntitlements, ENTITLEMENTS_CHANNEL, type EntitlementsView } from '../db/entitlements.js';

/**
 * Entitlements in the API's memory, so a product's access check on its hot path is a map lookup.
 * Every API replica LISTENs on `accrue_entitlements`; the transactions that change an input notify
 * the customer's id (`*`: everyone), and the entry is dropped. An entry computed while an
 * invalidation arrived is not kept (a per-customer version), so a stale answer is never cached.
 * While the listening connection is down nothing is cached (every request reads PostgreSQL) until
 * it is back; entries also expire after `maxAgeMs` as a backstop.
 */
export class EntitlementsCache {
  private entries = new Map<string, { view: EntitlementsView; json: string; at: number }>();
  private versions = new Map<string, number>();
  private epoch = 0;
  private inflight = new Map<string, Promise<EntitlementsView>>();
  private client: pg.Client | undefined;
  private listening = false;
  private stopped = false;
  hits = 0;
  misses = 0;

  constructor(private readonly orm: MikroORM, private readonly connectionString: string, private readonly opts: { maxAgeMs: number } = { maxAgeMs: 300_000 }) {}

  async start(): Promise<void> {
    const client = new pg.Client({ connectionString: this.connectionString });
    client.on('notification', (m) => {
      if (m.channel === ENTITLEMENTS_CHANNEL) this.invalidate(m.payload ?? '*');
    });
    const lost = () => {
      if (this.client !== client) return;
      this.listening = false;
      this.client = undefined;
      this.invalidate('*');
      client.end().catch(() => undefined);
      if (!this.stopped) setTimeout(() => void this.start().catch(() => lost()), 1000).unref();
    };
    client.on('error', lost);
    client.on('end', lost);
    this.client = client;
    try {
      await client.connect();
      await client.query(`listen ${ENTITLEMENTS_CHANNEL}`);
    } catch (err) {
      lost();
      throw err;
    }
    this.invalidate('*'); // anything cached before this connection listened may have missed a notice
    this.listening = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.listening = false;
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }

  invalidate(customerId: string): void {
    if (customerId === '*') {
      this.epoch++;
      this.entries.clear();
      return;
    }
    this.versions.set(customerId, (this.versions.get(customerId) ?? 0) + 1);
    this.entries.delete(customerId);
  }

  /** The cached answer as JSON, when there is a current one (the fast path); undefined otherwise. */
  peek(customerId: string): string | undefined {
    const hit = this.entries.get(customerId);
    if (!hit || !this.listening || Date.now() - hit.at >= this.opts.maxAgeMs) return undefined;
    this.hits++;
    return hit.json;
  }

  async get(customerId: string): Promise<{ view: EntitlementsView; cached: boolean }> {
    const hit = this.entries.get(customerId);
    if (hit && this.listening && Date.now() - hit.at < this.opts.maxAgeMs) {
      this.hits++;
      return { view: hit.view, cached: true };
    }
    this.misses++;
    let p = this.inflight.get(customerId);
    if (!p) {
      const version = this.versions.get(customerId) ?? 0;
      const epoch = this.epoch;
      const listening = this.listening;
      p = this.compute(customerId).then((view) => {
        if (listening && this.listening && epoch === this.epoch && version === (this.versions.get(customerId) ?? 0)) this.entries.set(customerId, { view, json: JSON.stringify(view), at: Date.now() });
        return view;
      }).finally(() => this.inflight.delete(customerId));
      this.inflight.set(customerId, p);
    }
    return { view: await p, cached: false };
  }

  private async compute(customerId: string): Promise<EntitlementsView> {
    const em = this.orm.em.fork();
    if (!(await em.findOne(Customer, { id: customerId }, { fields: ['id'] }))) throw new NotFoundError('customer', customerId, 'customer_id');
    return computeEntitlements(em, customerId);
  }
}
