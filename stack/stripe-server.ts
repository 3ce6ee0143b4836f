import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './config.js';
import { waitFor } from './net.js';

/**
 * The Stripe-protocol server of the tests: localstripe (PyPI; stateful, so a test can count the
 * invoices and charges it holds) run by test/stripe/localstripe_server.py, which adds the Stripe
 * behaviour Accrue relies on that localstripe lacks (idempotency keys, invoice finalize, declines
 * as 402) and fault injection under /_config. `npm test` installs localstripe into
 * .tools/localstripe and passes its folder as ACCRUE_LOCALSTRIPE_PATH. 127.0.0.1 only.
 */
export interface RunningStripeServer {
  apiBase: string;
  stop(): Promise<void>;
}

export async function startStripeServer(opts: { port: number; pythonPath?: string }): Promise<RunningStripeServer> {
  const python = process.env.ACCRUE_PYTHON ?? 'python3';
  // Its output goes to a file (no pipe keeps this process alive behind it).
  const logFile = join(tmpdir(), `accrue-localstripe-${opts.port}.log`);
  const out = openSync(logFile, 'w');
  const child: ChildProcess = spawn(python, [join(ROOT, 'test', 'stripe', 'localstripe_server.py'), '--port', String(opts.port)], {
    env: { ...process.env, PYTHONPATH: [opts.pythonPath, process.env.PYTHONPATH].filter(Boolean).join(':') },
    stdio: ['ignore', out, out],
  });
  closeSync(out);
  const stderr = () => { try { return readFileSync(logFile, 'utf8').slice(-4000); } catch { return ''; } };
  const apiBase = `http://127.0.0.1:${opts.port}`;
  await waitFor('the Stripe-protocol server (localstripe)', async () => {
    if (child.exitCode !== null) throw new Error(`localstripe exited with ${child.exitCode}: ${stderr()}`);
    const res = await fetch(`${apiBase}/_config/requests`);
    if (!res.ok) throw new Error(`localstripe answered ${res.status}`);
  }, 30_000);
  return {
    apiBase,
    async stop() {
      if (child.exitCode !== null) return;
      // Its state is in memory only: nothing to shut down gracefully.
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
  };
}
