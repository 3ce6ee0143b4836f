import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy a test can hold: while held, bytes from clients are kept (counted in `held`) instead
 * of being forwarded, so a process behind it has sent a request that its peer has not received;
 * `release()` forwards them in order and goes back to passing everything through. Replies always
 * pass. Used to put a request exactly between two steps of a route (e.g. between its read of
 * PostgreSQL and its call to Temporal).
 */
export interface HoldableProxy {
  address: string;
  /** Bytes received from clients while held (total since the last hold()). */
  readonly held: number;
  hold(): void;
  release(): void;
  close(): Promise<void>;
}

export async function startHoldableProxy(upstream: string): Promise<HoldableProxy> {
  const [host, port] = [upstream.slice(0, upstream.lastIndexOf(':')), Number(upstream.slice(upstream.lastIndexOf(':') + 1))];
  let holding = false;
  let held = 0;
  const queues = new Map<Socket, { up: Socket; chunks: Buffer[] }>();
  const server: Server = createServer((client) => {
    const up = createConnection({ host, port });
    const entry = { up, chunks: [] as Buffer[] };
    queues.set(client, entry);
    client.on('data', (b: Buffer) => {
      if (holding) {
        entry.chunks.push(b);
        held += b.length;
      } else up.write(b);
    });
    up.on('data', (b: Buffer) => client.write(b));
    const end = () => {
      queues.delete(client);
      client.destroy();
      up.destroy();
    };
    client.on('close', end);
    up.on('close', end);
    client.on('error', end);
    up.on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address() as { port: number };
  return {
    address: `127.0.0.1:${addr.port}`,
    get held() { return held; },
    hold() { holding = true; held = 0; },
    release() {
      holding = false;
      for (const { up, chunks } of queues.values()) for (const b of chunks.splice(0)) up.write(b);
    },
    close: () => new Promise<void>((resolve) => {
      for (const [client, { up }] of queues) { client.destroy(); up.destroy(); }
      server.close(() => resolve());
    }),
  };
}
