// PathLocks: work on one path runs in turn; withMany holds several paths at once.
import t from 'tap';
import { PathLocks } from '../src/util/path-locks.js';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('one path at a time, in the order asked, errors not blocking the next', async (t) => {
  const locks = new PathLocks();
  const log: string[] = [];
  const a = locks.with('a', async () => {
    log.push('a1 start');
    await tick(20);
    log.push('a1 end');
    throw new Error('boom');
  });
  const b = locks.with('b', async () => void log.push('b'));
  const a2 = locks.with('a', async () => void log.push('a2'));
  await t.rejects(a, /boom/);
  await Promise.all([b, a2]);
  t.same(log, ['a1 start', 'b', 'a1 end', 'a2'], 'b ran beside a1; a2 waited for a1 even though it failed');
  t.equal(locks.busy('a'), undefined, 'no lock is left once the work is done');
});

t.test('withMany waits for every path and holds them all', async (t) => {
  const locks = new PathLocks();
  const log: string[] = [];
  const x = locks.with('x', async () => {
    await tick(20);
    log.push('x');
  });
  const y = locks.with('y', async () => {
    await tick(40);
    log.push('y');
  });
  const both = locks.withMany(['x', 'y', 'z'], async () => {
    log.push('xyz start');
    await tick(20);
    log.push('xyz end');
  });
  t.ok(locks.busy('z'), 'z is held from the moment it is asked for');
  const z = locks.with('z', async () => void log.push('z'));
  const w = locks.with('w', async () => void log.push('w'));
  await Promise.all([x, y, both, z, w]);
  t.same(log, ['w', 'x', 'y', 'xyz start', 'xyz end', 'z'], 'the batch started after x and y, and z after the batch');
});
