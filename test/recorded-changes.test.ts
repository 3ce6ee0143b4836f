import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ROOT } from '../stack/config.js';
import { describeUnrecorded, GitHistoryUnavailable, unrecordedWorkflowChanges } from './recorded-changes.js';

/**
 * CI fails when workflow code changed without a history recorded from it (test/histories/README.md):
 * a change that breaks running workflows can only be caught by test/replay.test.ts once its
 * commands are in a recorded history.
 */
describe('every change to workflows/ has a recorded history', () => {
  test('this repository: every commit that changed workflows/ is covered by a history recorded from it or a later commit', () => {
    const unrecorded = unrecordedWorkflowChanges(ROOT);
    if (unrecorded.length) throw new Error(describeUnrecorded(unrecorded));
  });

  describe('the check itself, on scratch repositories', () => {
    const dirs: string[] = [];
    afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
    const repo = () => {
      const dir = mkdtempSync(join(tmpdir(), 'accrue-recorded-'));
      dirs.push(dir);
      git(dir, 'init', '-q', '-b', 'main');
      return dir;
    };
    const git = (dir: string, ...args: string[]) => execFileSync('git', args, {
      cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, GIT_AUTHOR_NAME: 'a', GIT_AUTHOR_EMAIL: 'a@example.test', GIT_COMMITTER_NAME: 'a', GIT_COMMITTER_EMAIL: 'a@example.test' },
    }).trim();
    /** Writes the files and commits them; returns the commit. */
    const commit = (dir: string, message: string, files: Record<string, string>) => {
      for (const [path, text] of Object.entries(files)) {
        mkdirSync(dirname(join(dir, path)), { recursive: true });
        writeFileSync(join(dir, path), text);
      }
      git(dir, 'add', '-A');
      git(dir, 'commit', '-q', '-m', message);
      return git(dir, 'rev-parse', 'HEAD');
    };
    /** What `npm run record:histories` does at HEAD: files labelled with the commit, then committed. */
    const record = (dir: string, scenario = 'x') => {
      const label = git(dir, 'rev-parse', '--short=8', 'HEAD');
      return commit(dir, `histories ${label}`, { [`test/histories/contractWorkflow-${scenario}-${label}.json`]: '{}' });
    };
    const unrecorded = (dir: string) => unrecordedWorkflowChanges(dir).map((c) => c.commit);

    test('a change is unrecorded until histories are recorded from it or a later commit; tests and docs do not count', () => {
      const dir = repo();
      commit(dir, 'first workflow', { 'workflows/contract.ts': '1', 'README.md': 'r' });
      record(dir);
      expect(unrecorded(dir)).toEqual([]);

      const changed = commit(dir, 'contract: new step', { 'workflows/contract.ts': '2' });
      commit(dir, 'workflow tests and docs only', { 'workflows/contract.test.ts': 't', 'workflows/README.md': 'd', 'billing/x.ts': 'b' });
      const found = unrecordedWorkflowChanges(dir);
      expect(found).toEqual([{ commit: changed, subject: 'contract: new step', files: ['workflows/contract.ts'] }]);
      const message = describeUnrecorded(found);
      expect(message).toContain(changed.slice(0, 8));
      expect(message).toContain('npm run record:histories');
      expect(message).toContain('workflows/contract.ts');

      // Recorded from a later commit (not the change itself): covered.
      commit(dir, 'unrelated', { 'api/x.ts': 'x' });
      record(dir);
      expect(unrecorded(dir)).toEqual([]);

      // A nested workflow file counts; a history labelled with a name that is no commit covers nothing.
      const nested = commit(dir, 'nested', { 'workflows/sub/step.ts': 's' });
      commit(dir, 'free label', { 'test/histories/contractWorkflow-x-release1.json': '{}', 'test/histories/contractWorkflow-x-deadbeef.json': '{}' });
      expect(unrecorded(dir)).toEqual([nested]);
    });

    test('after merging, each branch\'s change is covered by its own recording; a branch without one fails alone', () => {
      const dir = repo();
      commit(dir, 'base', { 'workflows/contract.ts': '1', 'workflows/dunning.ts': '1', 'workflows/recharge.ts': '1' });
      record(dir, 'base');
      git(dir, 'checkout', '-q', '-b', 'a');
      commit(dir, 'a: contract', { 'workflows/contract.ts': '2' });
      record(dir, 'a');
      git(dir, 'checkout', '-q', 'main');
      git(dir, 'checkout', '-q', '-b', 'b');
      const b = commit(dir, 'b: dunning', { 'workflows/dunning.ts': '2' });
      record(dir, 'b');
      git(dir, 'checkout', '-q', 'main');
      git(dir, 'checkout', '-q', '-b', 'c');
      const c = commit(dir, 'c: recharge, not recorded', { 'workflows/recharge.ts': '2' });
      git(dir, 'checkout', '-q', 'main');
      // A later commit on main recorded histories too: it does not cover the branches' changes.
      commit(dir, 'main moves on', { 'api/x.ts': '1' });
      record(dir, 'main');
      git(dir, 'merge', '-q', '--no-ff', '-m', 'merge a', 'a');
      git(dir, 'merge', '-q', '--no-ff', '-m', 'merge b', 'b');
      expect(unrecorded(dir)).toEqual([]);
      git(dir, 'merge', '-q', '--no-ff', '-m', 'merge c', 'c');
      expect(unrecorded(dir)).toEqual([c]);
      void b;
    });

    test('a shallow clone or a copy without git fails with what to do, never passes', () => {
      const dir = repo();
      commit(dir, 'one', { 'workflows/contract.ts': '1' });
      commit(dir, 'two', { 'workflows/contract.ts': '2' });
      const shallow = mkdtempSync(join(tmpdir(), 'accrue-shallow-'));
      dirs.push(shallow);
      git(tmpdir(), 'clone', '-q', '--depth', '1', `file://${dir}`, shallow);
      expect(() => unrecordedWorkflowChanges(shallow)).toThrow(GitHistoryUnavailable);
      expect(() => unrecordedWorkflowChanges(shallow)).toThrow(/shallow clone.*git fetch --unshallow/);

      const copy = mkdtempSync(join(tmpdir(), 'accrue-nogit-'));
      dirs.push(copy);
      mkdirSync(join(copy, 'workflows'));
      writeFileSync(join(copy, 'workflows', 'contract.ts'), '1');
      expect(() => unrecordedWorkflowChanges(copy)).toThrow(/git history is unavailable/);
    });
  });
});
