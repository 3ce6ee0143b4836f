import pg from 'pg';
import type { EntityManager } from '@mikro-orm/postgresql';

/**
 * Wake-ups between processes through PostgreSQL: a transaction that leaves work for a loop
 * (`wake`, delivered when it commits; several in one transaction arrive once) lets the loop
 * (`listenForWork`) stop sleeping at once, so an idle loop can sleep long and still answer fast.
 */
export const OUTBOUND_CHANNEL = 'accrue_outbound';

export async function wake(em: EntityManager, channel: string): Promise<void> {
  await em.execute(`select pg_notify(?, '')`, [channel]);
}

export interface Waiter {
  /** Resolves on the next notification on the channel, or after `ms`. */
  wait(ms: number): Promise<void>;
  close(): Promise<void>;
}

/** A dedicated connection LISTENing on `channel`; without one (connection lost) `wait` is a plain sleep. */
export async function listenForWork(connectionString: string, channel: string): Promise<Waiter> {
  let wakeUp: (() => void) | undefined;
  let pending = false;
  const client = new pg.Client({ connectionString });
  client.on('error', () => undefined);
  client.on('notification', () => {
    if (wakeUp) wakeUp();
    else pending = true;
  });
  await client.connect();
  await client.query(`listen ${channel}`);
  return {
    wait(ms) {
      if (pending) {
        pending = false;
        return Promise.resolve();
      }
      return new Promise((resolve) => {
        const timer = setTimeout(done, ms);
        function done() {
          clearTimeout(timer);
          wakeUp = undefined;
          resolve();
        }
        wakeUp = done;
      });
    },
    close: () => client.end().catch(() => undefined),
  };
}
