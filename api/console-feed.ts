import pg from 'pg';

export const CONSOLE_CHANNEL = 'accrue_console';

/**
 * The finance pages' live feed: one LISTEN connection on `accrue_console` per API process (the
 * invoice and payment tables notify it on every write, Migration20261212610000_console_change_feed),
 * shared by every open page. A notice tells every subscriber once (notices arriving within
 * `settleMs` are folded into one). When the connection is lost it is made again, and every
 * subscriber is told, since a change may have gone by meanwhile. Started by the first subscriber.
 */
export class ConsoleFeed {
  private readonly subscribers = new Set<() => void>();
  private client: pg.Client | undefined;
  private starting: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly connectionString: string, private readonly settleMs = 200) {}

  /** Calls `onChange` after every change until the returned function is called. */
  subscribe(onChange: () => void): () => void {
    this.subscribers.add(onChange);
    void this.ensureStarted().catch(() => undefined);
    return () => {
      this.subscribers.delete(onChange);
    };
  }

  get listeners(): number {
    return this.subscribers.size;
  }

  private ensureStarted(): Promise<void> {
    if (this.client || this.stopped) return Promise.resolve();
    this.starting ??= this.start().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private async start(): Promise<void> {
    const client = new pg.Client({ connectionString: this.connectionString });
    client.on('notification', (m) => {
      if (m.channel === CONSOLE_CHANNEL) this.changed();
    });
    const lost = () => {
      if (this.client !== client) return;
      this.client = undefined;
      client.end().catch(() => undefined);
      if (!this.stopped) setTimeout(() => void this.ensureStarted().then(() => this.changed(), () => undefined), 1000).unref();
    };
    client.on('error', lost);
    client.on('end', lost);
    this.client = client;
    try {
      await client.connect();
      await client.query(`listen ${CONSOLE_CHANNEL}`);
    } catch (err) {
      lost();
      throw err;
    }
  }

  private changed(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      for (const s of [...this.subscribers]) s();
    }, this.settleMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}
