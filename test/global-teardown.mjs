import { rmSync } from 'node:fs';

export default async function globalTeardown() {
  const s = globalThis.__ACCRUE_STACK__;
  if (!s) return;
  await Promise.allSettled([s.mail.stop(), s.temporal.stop(), s.postgres.stop()]);
  const { workDir } = JSON.parse(process.env.ACCRUE_TEST_STACK ?? '{}');
  if (workDir) rmSync(workDir, { recursive: true, force: true });
}
