import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedWebhook {
  body: string;
  headers: IncomingHttpHeaders;
  at: number;
  id: string;
  type: string;
  properties: Record<string, unknown>;
  /** The status this receiver answered. */
  answered: number;
}

/**
 * A webhook receiver on 127.0.0.1 that records every request (raw body, headers, arrival time)
 * and answers with whatever `answer` says (200 unless changed) — the far end of outbound
 * notifications in tests and in `npm run bench:alerts`.
 */
export async function startWebhookReceiver() {
  const received: ReceivedWebhook[] = [];
  let answer: (w: Omit<ReceivedWebhook, 'answered'>) => number = () => 200;
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
      const status = answer(w);
      received.push({ ...w, answered: status });
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status < 300 ? 'ok' : 'not now');
    });
  });
  server.keepAliveTimeout = 1;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    received,
    answerWith(fn: typeof answer) {
      answer = fn;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
