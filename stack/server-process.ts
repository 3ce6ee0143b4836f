import { spawn, type SpawnOptions } from 'node:child_process';
import { waitFor } from './net.js';
import { stopChild } from './services.js';

export interface ServerProcessOptions {
  name: string;
  command: string;
  args: string[];
  spawn?: SpawnOptions;
  log?: (line: string) => void;
  /** Resolves once the server answers; retried until `readyTimeoutMs`. */
  ready: () => Promise<void>;
  readyTimeoutMs: number;
  /** The signal that shuts the server down cleanly (PostgreSQL: SIGINT, a fast shutdown). */
  stopSignal: NodeJS.Signals;
}

export interface ServerProcess {
  pid: number | undefined;
  /** Settles when the process exits, with how it ended ("exit code 1", "SIGKILL"). */
  exited: Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts a server as a child process and waits until it answers. If it exits or never becomes
 * ready, start-up fails with the tail of its output; `stop()` shuts it down (SIGKILL after 20 s).
 */
export async function startServerProcess(opts: ServerProcessOptions): Promise<ServerProcess> {
  const child = spawn(opts.command, opts.args, { ...opts.spawn, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (b: Buffer) => {
    output = (output + b.toString()).slice(-4000);
    opts.log?.(b.toString().trimEnd());
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  let spawnError: Error | undefined;
  child.on('error', (err) => { spawnError = err; });
  const exited = new Promise<string>((resolveExit) => {
    child.once('exit', (code, signal) => resolveExit(signal ?? `exit code ${code}`));
  });

  await waitFor(`${opts.name} to accept connections`, async () => {
    if (spawnError) throw spawnError;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${opts.name} exited during start-up:\n${output}`);
    await opts.ready();
  }, opts.readyTimeoutMs, 100).catch(async (err) => {
    child.kill('SIGKILL');
    throw err;
  });
  return { pid: child.pid, exited, stop: () => stopChild(child, opts.stopSignal, 20_000) };
}
