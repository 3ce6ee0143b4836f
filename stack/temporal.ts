import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTES } from './config.js';
import { assertPortFree } from './net.js';
import { startServerProcess } from './server-process.js';

/**
 * The embedded Temporal: `temporal server start-dev`, with Accrue's search attributes registered.
 * With a db file the server keeps workflows across restarts; without, it is in memory (tests).
 */
export interface RunningTemporal {
  address: string;
  uiUrl?: string;
  pid: number | undefined;
  /** Settles when the server process exits on its own or is stopped. */
  exited: Promise<string>;
  stop(): Promise<void>;
}

export interface TemporalOptions {
  bin: string;
  port: number;
  uiPort?: number;
  dbFile?: string;
  namespace?: string;
  /** Own process group: a terminal's Ctrl-C reaches only the supervisor, which stops it in order. */
  detached?: boolean;
  log?: (line: string) => void;
}

export async function startTemporal(opts: TemporalOptions): Promise<RunningTemporal> {
  const namespace = opts.namespace ?? 'default';
  await assertPortFree(opts.port, 'Temporal', 'ACCRUE_TEMPORAL_PORT');
  if (opts.uiPort) await assertPortFree(opts.uiPort, 'the Temporal Web UI', 'ACCRUE_TEMPORAL_UI_PORT');
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(opts.port), '--namespace', namespace, '--log-level', 'warn'];
  if (opts.uiPort) args.push('--ui-port', String(opts.uiPort));
  else args.push('--headless');
  if (opts.dbFile) args.push('--db-filename', opts.dbFile);
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${name}=${type}`);

  const address = `127.0.0.1:${opts.port}`;
  const server = await startServerProcess({
    name: 'Temporal',
    command: opts.bin,
    args,
    spawn: { detached: opts.detached },
    log: opts.log,
    ready: async () => {
      const connection = await Connection.connect({ address, connectTimeout: 2000 });
      try {
        await connection.workflowService.describeNamespace({ namespace });
      } finally {
        await connection.close();
      }
    },
    readyTimeoutMs: 90_000,
    stopSignal: 'SIGTERM',
  });

  return {
    address,
    uiUrl: opts.uiPort ? `http://127.0.0.1:${opts.uiPort}` : undefined,
    pid: server.pid,
    exited: server.exited,
    stop: server.stop,
  };
}
