import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedWebhook {
  body: string;
  headers: IncomingHttpHeaders;
  /** When the request arrived (before any hold). */
  at: number;
  id: string;
  type: string;
  properties: Record<string, unknown>;
  /** The status this receiver answered; 0 when the sender had given up (closed) before the answer. */
  answered: number;
}

/**
 * A webhook receiver on 127.0.0.1 that records every request (raw body, headers, arrival time)
 * and answers with whatever `answer` says (200 unless changed) — the far end of outbound
 * notifications in tests and in `npm run bench:alerts`. `answer` may take its time (a promise):
 * `held` counts requests waiting for their answer right now (`maxHeld` the most at once), and
 * `abandoned` the requests whose sender closed them before they were answered.
 */
export async function startWebhookReceiver() {
  const received: ReceivedWebhook[] = [];
  let answer: (w: Omit<ReceivedWebhook, 'answered'>) => number | Promise<number> = () => 200;
  const stats = { held: 0, maxHeld: 0, abandoned: 0 };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let parsed: { id?: string; type?: string; properties?: Record<string, unknown> } = {};
      try {
        parsed = JSON.parse(body) as typeof parsed;
      } catch { /* recorded as is */ }
      const w = { body, headers: req.headers, at: Date.now(), id: parsed.id ?? '', type: parsed.type ?? '', properties: parsed.properties ?? {} };
      let gone = false;
      res.on('close', () => {
        if (!res.writableEnded) {
          gone = true;
          stats.abandoned++;
        }
      });
      stats.held++;
      stats.maxHeld = Math.max(stats.maxHeld, stats.held);
      void Promise.resolve(answer(w)).then((status) => {
        stats.held--;
        received.push({ ...w, answered: gone ? 0 : status });
        if (!gone) res.writeHead(status, { 'content-type': 'text/plain' }).end(status < 300 ? 'ok' : 'not now');
      });
    });
  });
  server.keepAliveTimeout = 1;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    received,
    stats,
    answerWith(fn: typeof answer) {
      answer = fn;
    },
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
