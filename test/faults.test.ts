// The short fault suite: every scenario of scripts/soak (link faults, kill -9
// of mount and node, a full cache disk, corrupted chunks, a dying replica,
// hostile input) for a few seconds each, through a real node and a real
// mount driven by worker processes. Nothing closed successfully may be lost
// or corrupted, no unexpected error may occur, and nothing may hang.
// `scripts/soak/faults --duration 10m` is the long version.
import t from 'tap';
import { count, verdictLine } from '../scripts/soak/lib/workers.js';
import { describe, HANG_MS, SCENARIOS } from '../scripts/soak/scenarios.js';

const DRIVER = process.env.GHOSTFS_DRIVER ?? 'native';

for (const [name, run] of Object.entries(SCENARIOS)) {
  t.test(`fault scenario ${name}`, async (t) => {
    const r = await run({ driver: DRIVER, durationMs: 12_000, procs: 3 });
    t.comment(describe(r).join('\n'));
    t.ok(r.ops > 0, `work was done: ${verdictLine(r)}`);
    t.equal(r.lost, 0, 'nothing closed successfully was lost');
    t.equal(r.corrupted, 0, 'nothing read or stored was corrupted');
    t.equal(count(r.errors), 0, `no unexpected errors ${JSON.stringify(r.errors)} ${r.examples.join('; ')}`);
    t.same(r.failures, [], 'every worker finished');
    t.ok(r.maxOpMs < HANG_MS, `no operation hung (slowest ${r.maxOpMs} ms)`);
    t.ok(r.mountExit === undefined || r.mountExit === 0, `the final unmount was clean (${r.mountExit ?? 'n/a'})`);
  });
}
