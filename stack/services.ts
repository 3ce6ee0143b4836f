import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './config.js';

/** Starts an Accrue process (api or worker) from the build, prefixing its output lines. */
export function spawnService(name: 'api' | 'worker', env: NodeJS.ProcessEnv, opts: { quiet?: boolean; detached?: boolean } = {}): ChildProcess {
  const entry = join(ROOT, 'dist', name === 'api' ? 'api/main.js' : 'workers/main.js');
  // ACCRUE_API_NODE_FLAGS: V8/Node flags for API processes (GC tuning experiments).
  const flags = name === 'api' && process.env.ACCRUE_API_NODE_FLAGS ? process.env.ACCRUE_API_NODE_FLAGS.split(/\s+/).filter(Boolean) : [];
  const child = spawn(process.execPath, ['--enable-source-maps', ...flags, entry], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: opts.detached });
  const prefix = (stream: NodeJS.WritableStream) => (b: Buffer) => {
    if (opts.quiet) return;
    for (const line of b.toString().split('\n')) if (line.trim()) stream.write(`[${name}] ${line.replace(/^\[(api|worker)\] /, '')}\n`);
  };
  child.stdout?.on('data', prefix(process.stdout));
  child.stderr?.on('data', prefix(process.stderr));
  return child;
}

export function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolveStop) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolveStop();
    });
    child.kill(signal);
  });
}
