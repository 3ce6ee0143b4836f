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
  /** More `--dynamic-config-value key=value` settings (benchmarks). */
  dynamicConfig?: string[];
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
  // An activity scheduled by a workflow task goes back to the worker in the task's response, not
  // through another poll (the SDK asks for it when it has a free slot): fewer round trips.
  args.push('--dynamic-config-value', 'system.enableActivityEagerExecution=true');
  for (const v of opts.dynamicConfig ?? []) args.push('--dynamic-config-value', v);

  const address = `127.0.0.1:${opts.port}`;
  const server = await startServerProcess({
    name: 'Temporal',
    command: opts.bin,
    args,
    // Go's collector runs less often (GOGC 400: more memory, less CPU; ~10 % of the server's CPU
    // in \`npm run bench:close\`) unless the operator set GOGC.
    spawn: { detached: opts.detached, env: { ...process.env, GOGC: process.env.GOGC ?? '400' } },
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
