import pg from 'pg';

export const CONSOLE_CHANNEL = 'accrue_console';
/** The LISTEN connection's `application_name` (how it shows in `pg_stat_activity`). */
export const CONSOLE_FEED_APPLICATION = 'accrue console feed';

/** One open page's ends of the feed. */
export interface FeedSubscriber {
  /**
   * The feed listens: called once it does for a new subscriber, and for every subscriber each time
   * the connection is made again after a loss (a change may have gone by unheard): read everything
   * again. A change committed after this call is always followed by `changed`.
   */
  ready(): void;
  /** Something changed. */
  changed(): void;
}

const FIRST_RETRY_MS = 250;
const LAST_RETRY_MS = 15_000;

/**
 * The finance pages' live feed: one LISTEN connection on `accrue_console` per API process (the
 * invoice and payment tables notify it on every write, Migration20261212610000_console_change_feed),
 * shared by every open page. A notice tells every subscriber once (notices arriving within
 * `settleMs` are folded into one). Started by the first subscriber.
 *
 * A connection can die without a word (the server or a proxy gone, a cut network): it has TCP
 * keep-alive on, and every `probeMs` it must answer `select 1` within `probeMs`, or it is taken
 * as lost. A lost connection (that, an error, or its end) is made again with backoff (250 ms
 * doubling up to 15 s), and when it listens again every subscriber is told `ready`.
 */
export class ConsoleFeed {
  private readonly subscribers = new Set<FeedSubscriber>();
  private client: pg.Client | undefined;
  private listening = false;
  private settleTimer: NodeJS.Timeout | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = FIRST_RETRY_MS;
  private stopped = false;
  private readonly settleMs: number;
  private readonly probeMs: number;

  constructor(private readonly connectionString: string, opts: { settleMs?: number; probeMs?: number } = {}) {
    this.settleMs = opts.settleMs ?? 200;
    this.probeMs = opts.probeMs ?? 20_000;
  }

  /** Tells `subscriber` until the returned function is called; `ready` comes once the feed listens. */
  subscribe(subscriber: FeedSubscriber): () => void {
    this.subscribers.add(subscriber);
    if (this.listening) subscriber.ready();
    else if (!this.client && !this.retryTimer && !this.stopped) void this.start();
    return () => {
      this.subscribers.delete(subscriber);
    };
  }

  get listeners(): number {
    return this.subscribers.size;
  }

  private async start(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.connectionString,
      application_name: CONSOLE_FEED_APPLICATION,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: Math.max(this.probeMs, 10_000),
    });
    client.on('notification', (m) => {
      if (m.channel === CONSOLE_CHANNEL) this.changed();
    });
    client.on('error', () => this.lost(client));
    client.on('end', () => this.lost(client));
    this.client = client;
    try {
      await client.connect();
      await this.answered(client.query(`listen ${CONSOLE_CHANNEL}`));
    } catch {
      this.lost(client);
      return;
    }
    if (this.client !== client) return;
    this.listening = true;
    this.retryMs = FIRST_RETRY_MS;
    this.probe(client);
    for (const s of [...this.subscribers]) s.ready();
  }

  /** `select 1` every `probeMs`, answered within `probeMs`, or the connection is lost. */
  private probe(client: pg.Client): void {
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      this.answered(client.query('select 1')).then(
        () => {
          if (this.client === client && !this.stopped) this.probe(client);
        },
        () => this.lost(client),
      );
    }, this.probeMs);
    this.probeTimer.unref();
  }

  /** `query`, or a rejection when it is not answered within `probeMs`. */
  private answered<T>(query: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.probeMs} ms`)), this.probeMs);
      timer.unref();
    });
    return Promise.race([query, timeout]).finally(() => clearTimeout(timer));
  }

  private lost(client: pg.Client): void {
    if (this.client !== client) return;
    this.client = undefined;
    this.listening = false;
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    // With a query unanswered, end() drops the socket rather than waiting on a dead peer.
    client.end().catch(() => undefined);
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.stopped) void this.start();
    }, this.retryMs);
    this.retryTimer.unref();
    this.retryMs = Math.min(this.retryMs * 2, LAST_RETRY_MS);
  }

  private changed(): void {
    if (this.settleTimer) return;
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      for (const s of [...this.subscribers]) s.changed();
    }, this.settleMs);
    this.settleTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.listening = false;
    for (const t of [this.settleTimer, this.probeTimer, this.retryTimer]) clearTimeout(t);
    this.settleTimer = this.probeTimer = this.retryTimer = undefined;
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}
