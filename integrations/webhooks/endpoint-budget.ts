/**
 * Concurrency budgets by key — for webhooks, one per endpoint: at most `perKey` holders at a time
 * for each key, shared by everything in the process that sends to that endpoint (the
 * dispatcher's first attempts and the retry activities). A caller waits at most `waitMs` for a
 * place; when none frees up in that time it gets none and decides what to do instead. A slow or
 * dead receiver therefore holds only its own budget: every other endpoint's deliveries go on.
 */
export class ConcurrencyBudgets {
  private readonly lanes = new Map<string, { active: number; waiting: { grant: () => void }[] }>();

  constructor(readonly perKey: number) {
    if (!Number.isInteger(perKey) || perKey < 1) throw new Error(`a budget must be a positive integer: ${perKey}`);
  }

  /** A release function once a place is held, or null when none freed up within `waitMs`. */
  acquire(key: string, waitMs: number): Promise<(() => void) | null> {
    let lane = this.lanes.get(key);
    if (!lane) this.lanes.set(key, (lane = { active: 0, waiting: [] }));
    const l = lane;
    const release = once(() => this.release(key));
    if (l.active < this.perKey) {
      l.active++;
      return Promise.resolve(release);
    }
    if (!(waitMs > 0)) return Promise.resolve(null);
    return new Promise((resolve) => {
      const waiter = {
        // The place passes straight from the releasing holder to this waiter (active unchanged).
        grant: () => {
          if (timer) clearTimeout(timer);
          resolve(release);
        },
      };
      const timer = Number.isFinite(waitMs) ? setTimeout(() => {
        const i = l.waiting.indexOf(waiter);
        if (i >= 0) l.waiting.splice(i, 1);
        this.dropIfIdle(key);
        resolve(null);
      }, waitMs) : undefined;
      l.waiting.push(waiter);
    });
  }

  /** Places held for `key` right now. */
  inUse(key: string): number {
    return this.lanes.get(key)?.active ?? 0;
  }

  private release(key: string): void {
    const lane = this.lanes.get(key);
    if (!lane) return;
    const next = lane.waiting.shift();
    if (next) return next.grant();
    lane.active--;
    this.dropIfIdle(key);
  }

  private dropIfIdle(key: string): void {
    const lane = this.lanes.get(key);
    if (lane && lane.active === 0 && lane.waiting.length === 0) this.lanes.delete(key);
  }
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}
