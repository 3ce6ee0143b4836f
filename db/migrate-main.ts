import { migrate, openOrm } from './orm.js';

/** `node dist/db/migrate-main.js`: applies the checked-in migrations to DATABASE_URL and exits. */
const url = process.env.DATABASE_URL;
if (!url) throw new Error('DATABASE_URL is not set');
const orm = await openOrm(url, { poolMax: 1 });
try {
  const applied = await migrate(orm);
  console.log(`[migrate] ${applied.length ? `applied ${applied.join(', ')}` : 'up to date'}`);
} finally {
  await orm.close();
}
