import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/**
 * The import rules between Accrue's layers (operations/README.md), read from the source files
 * themselves: each file's import specifiers are parsed with a regular expression, nothing is run.
 * Every answer names the file and the import that breaks a rule, relative to the repository root.
 */

/** The folders whose files the rules speak of; tests are no part of the layering. */
export const LAYERED = ['api', 'activities', 'workflows', 'operations', 'db'] as const;
/** The folders among which no import circle may run. */
export const ACYCLIC = ['api', 'activities', 'workflows', 'operations'] as const;

export interface SourceFile {
  /** Path from the repository root, with forward slashes: `api/routes/contracts.ts`. */
  path: string;
  text: string;
  /** Every module specifier the file imports or re-exports, type-only imports included. */
  imports: string[];
}

/** Block comments and whole-line comments go, so a commented-out import is no import. */
function withoutComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
}

export function importSpecifiers(text: string): string[] {
  const code = withoutComments(text);
  const found: string[] = [];
  const patterns = [
    /(?:^|[;\n])\s*(?:import|export)\s+(?:type\s+)?[^'"`;]*?\s+from\s+['"]([^'"]+)['"]/g, // import … from 'x', export … from 'x'
    /(?:^|[;\n])\s*import\s+['"]([^'"]+)['"]/g, // import 'x' (for its effects)
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g, // import('x')
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) found.push(m[1]!);
  return found;
}

function sourceFilesUnder(root: string, dir: string): string[] {
  const abs = join(root, dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs, { recursive: true, encoding: 'utf8' })
    .map((p) => join(dir, p).split('\\').join('/'))
    .filter((p) => /\.tsx?$/.test(p) && !/\.test\.tsx?$/.test(p) && !p.includes('/testdata/') && statSync(join(root, p)).isFile())
    .sort();
}

export function readLayers(root: string): SourceFile[] {
  return LAYERED.flatMap((dir) => sourceFilesUnder(root, dir)).map((path) => {
    const text = readFileSync(join(root, path), 'utf8');
    return { path, text, imports: importSpecifiers(text) };
  });
}

/** The repository file a relative specifier names (`../db/ids.js` → `db/ids.ts`), or undefined. */
export function resolveImport(root: string, from: string, specifier: string): string | undefined {
  if (!specifier.startsWith('.')) return undefined;
  const base = resolve(root, dirname(from), specifier);
  const candidates = [base, base.replace(/\.js$/, '.ts'), base.replace(/\.jsx$/, '.tsx'), `${base}.ts`, join(base, 'index.ts')];
  const hit = candidates.find((c) => existsSync(c) && statSync(c).isFile());
  return hit ? relative(root, hit).split('\\').join('/') : undefined;
}

const top = (path: string) => path.split('/')[0]!;

/**
 * Only the HTTP layer imports from api/: an activity is a Temporal adapter over operations, and an
 * operation is called by routes and activities alike, so neither reaches into the HTTP layer.
 */
export function importsIntoApi(root: string, files: SourceFile[]): string[] {
  const advice: Record<string, string> = {
    activities: 'an activity never imports from api/ (call the operation in operations/ instead)',
    operations: 'an operation never imports from api/ (input parsing shared with routes lives in operations/input/)',
  };
  return files.filter((f) => top(f.path) !== 'api').flatMap((f) => f.imports
    .filter((s) => top(resolveImport(root, f.path, s) ?? '') === 'api')
    .map((s) => `${f.path} imports '${s}': ${advice[top(f.path)] ?? 'only api/ imports from api/'}`));
}

/** The HTTP layer reaches workflows and activities only through operations/ (workflow ids too: operations/workflow-ids.ts). */
export function apiImportingWorkflows(root: string, files: SourceFile[]): string[] {
  return files.filter((f) => top(f.path) === 'api').flatMap((f) => f.imports
    .filter((s) => ['workflows', 'activities'].includes(top(resolveImport(root, f.path, s) ?? '')))
    .map((s) => `${f.path} imports '${s}': api/ reaches workflows and activities only through operations/`));
}

/** What starting, signalling, updating or cancelling a workflow (or a schedule) looks like in code. */
const TEMPORAL_CALL = /\.workflow\s*\.\s*(?:start|signalWithStart|execute|getHandle)\s*\(|\.schedule\s*\.\s*(?:create|getHandle)\s*\(|\.(?:signal|executeUpdate|startUpdate)\s*\(/;

/** The API and the database layer reach Temporal only through operations/ (operations/workflow-client.ts). */
export function temporalOutsideOperations(files: SourceFile[]): string[] {
  return files.filter((f) => top(f.path) === 'api' || top(f.path) === 'db').flatMap((f) => {
    const problems = f.imports.filter((s) => s.startsWith('@temporalio/'))
      .map((s) => `${f.path} imports '${s}': api/ and db/ reach Temporal only through operations/ (take the Client type from operations/workflow-client.ts)`);
    const code = withoutComments(f.text).split('\n');
    code.forEach((line, i) => {
      if (TEMPORAL_CALL.test(line)) problems.push(`${f.path}:${i + 1} talks to Temporal (${line.trim().slice(0, 100)}): start, signal or update workflows in an operation under operations/`);
    });
    return problems;
  });
}

/** A route file exports its router factory (`…Router`) and nothing else: operations and views live elsewhere. */
export function routeExports(files: SourceFile[]): string[] {
  return files.filter((f) => f.path.startsWith('api/routes/')).flatMap((f) => {
    const code = withoutComments(f.text);
    const names = [
      ...[...code.matchAll(/^\s*export\s+(?:declare\s+)?(?:default\s+)?(?:async\s+)?(?:function\*?|const|let|var|class|interface|type|enum)\s+([A-Za-z_$][\w$]*)/gm)].map((m) => m[1]!),
      ...[...code.matchAll(/^\s*export\s+(?:type\s+)?\{([^}]*)\}/gm)].flatMap((m) => m[1]!.split(',').map((n) => n.trim().split(/\s+as\s+/).pop()!).filter(Boolean)),
      ...(/^\s*export\s+default\s+(?!async\b|function\b|class\b)/m.test(code) ? ['default'] : []),
    ];
    return names.filter((n) => !/^[a-z]\w*Router$/.test(n))
      .map((n) => `${f.path} exports '${n}': a route file exports only its router factory (move it to operations/, or to a module of api/ beside the routes)`);
  });
}

/** Every import circle among the files of api/, activities/, workflows/ and operations/, type-only imports included. */
export function importCycles(root: string, files: SourceFile[]): string[] {
  const inScope = new Set(files.filter((f) => (ACYCLIC as readonly string[]).includes(top(f.path))).map((f) => f.path));
  const edges = new Map<string, { to: string; specifier: string }[]>();
  for (const f of files) {
    if (!inScope.has(f.path)) continue;
    edges.set(f.path, f.imports.map((s) => ({ to: resolveImport(root, f.path, s) ?? '', specifier: s })).filter((e) => inScope.has(e.to)));
  }
  const state = new Map<string, 'open' | 'done'>();
  const stack: { file: string; specifier: string }[] = [];
  const cycles = new Map<string, string>();
  const visit = (file: string) => {
    state.set(file, 'open');
    for (const e of edges.get(file) ?? []) {
      stack.push({ file, specifier: e.specifier });
      if (state.get(e.to) === 'open') {
        const loop = stack.slice(stack.findIndex((s) => s.file === e.to));
        // One report per circle, whichever file the walk entered it from.
        const key = loop.map((s) => s.file).sort().join(' ');
        if (!cycles.has(key)) cycles.set(key, `import circle: ${loop.map((s) => `${s.file} --'${s.specifier}'-->`).join(' ')} ${e.to}`);
      } else if (!state.has(e.to)) {
        visit(e.to);
      }
      stack.pop();
    }
    state.set(file, 'done');
  };
  for (const file of [...inScope].sort()) if (!state.has(file)) visit(file);
  return [...cycles.values()];
}
