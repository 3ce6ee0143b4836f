import { spawn, type ChildProcess } from 'node:child_process';
import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTES } from './config.js';
import { waitFor } from './net.js';

/**
 * The embedded Temporal: `temporal server start-dev`, with Accrue's search attributes registered.
 * With a db file the server keeps workflows across restarts; without, it is in memory (tests).
 */
export interface RunningTemporal {
  address: string;
  uiUrl?: string;
  stop(): Promise<void>;
}

export interface TemporalOptions {
  bin: string;
  port: number;
  uiPort?: number;
  dbFile?: string;
  namespace?: string;
  log?: (line: string) => void;
}

export async function startTemporal(opts: TemporalOptions): Promise<RunningTemporal> {
  const namespace = opts.namespace ?? 'default';
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(opts.port), '--namespace', namespace, '--log-level', 'warn'];
  if (opts.uiPort) args.push('--ui-port', String(opts.uiPort));
  else args.push('--headless');
  if (opts.dbFile) args.push('--db-filename', opts.dbFile);
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${name}=${type}`);

  const child: ChildProcess = spawn(opts.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let exited = false;
  let output = '';
  const collect = (b: Buffer) => {
    output = (output + b.toString()).slice(-4000);
    opts.log?.(b.toString().trimEnd());
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exitPromise = new Promise<void>((r) => child.on('exit', () => { exited = true; r(); }));
  const address = `127.0.0.1:${opts.port}`;

  await waitFor('Temporal to serve its namespace', async () => {
    if (exited) throw new Error(`temporal exited during start-up:\n${output}`);
    const connection = await Connection.connect({ address, connectTimeout: 2000 });
    try {
      await connection.workflowService.describeNamespace({ namespace });
    } finally {
      await connection.close();
    }
  }, 90_000, 200).catch((err) => {
    child.kill('SIGKILL');
    throw err;
  });

  return {
    address,
    uiUrl: opts.uiPort ? `http://127.0.0.1:${opts.uiPort}` : undefined,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exitPromise;
      clearTimeout(timer);
    },
  };
}
