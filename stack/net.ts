import { createServer } from 'node:net';

/** A free TCP port on 127.0.0.1 (for tests, which start their own servers). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolvePort(addr.port) : reject(new Error('no port'))));
    });
  });
}

export async function waitFor<T>(what: string, probe: () => Promise<T>, timeoutMs = 60_000, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      return await probe();
    } catch (err) {
      lastError = err;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${String(lastError)}`);
}

/** A port of ours that something else already listens on (a foreign server, or another `npm start`). */
export class PortInUseError extends Error {}

/**
 * Refuses to start a server on a port that is already taken: readiness probes only talk to the
 * port, so without this a foreign server there would be taken for ours. `setting` names the
 * environment variable that moves the port.
 */
export function assertPortFree(port: number, what: string, setting: string): Promise<void> {
  return new Promise((resolveFree, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE'
        ? new PortInUseError(`${what}: port ${port} on 127.0.0.1 is already in use by another process (another \`npm start\`, or a server of your own?). Stop it, or set ${setting} to a free port.`)
        : err);
    });
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolveFree()));
  });
}
