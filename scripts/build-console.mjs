// Bundles the console (console/*.tsx: Preact, Pico CSS, uPlot) into dist/console with esbuild, at
// build time: the API serves the files itself (/console), nothing is loaded from a CDN.
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(ROOT, 'dist', 'console');
mkdirSync(join(out, 'assets'), { recursive: true });
await build({
  entryPoints: { finance: join(ROOT, 'console', 'finance.tsx'), embed: join(ROOT, 'console', 'embed.tsx') },
  outdir: join(out, 'assets'),
  bundle: true,
  format: 'esm',
  minify: true,
  sourcemap: true,
  target: ['es2022'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  loader: { '.css': 'css' },
  logLevel: 'warning',
});
for (const page of ['index.html', 'embed.html']) copyFileSync(join(ROOT, 'console', page), join(out, page));
