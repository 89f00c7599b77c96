// A close under way while another process unlinks (or renames) the same
// file: whichever comes first, the removed name must not be on the node
// afterwards, itself or as a conflict copy (a write-back never brings back a
// removed file), and close() succeeds (the bytes of an unlinked file go with
// it, as they would on a local disk; a renamed one has them under its new
// name). Driven in process against a real node (helpers/write-back-rig.ts),
// so that the two calls can be started at the same moment.
import t, { type Test } from 'tap';
import { chmod, chown, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { errnoOf } from '../src/wire/errors.js';
import { OwnerMap } from '../src/mount/owner-map.js';
import { writeBackRig } from './helpers/write-back-rig.js';
import { waitFor } from './helpers/mount-proc.js';

type Rig = Awaited<ReturnType<typeof writeBackRig>>;
const VARIANTS = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
] as const;
const variant = (landedBefore: boolean, asyncWriteBack: boolean): string => `${landedBefore ? 'a version of it on the node' : 'new'}, write-back ${asyncWriteBack ? 'async' : 'sync'}`;
const outcome = (p: Promise<void>): Promise<string> => p.then(() => 'ok', (e: unknown) => `${errnoOf(e)}: ${(e as Error).message}`);

/** A file open for writing (its handle): new, or with a first version on the node. */
async function openToWrite({ root, vfs, wb }: Rig, name: string, landedBefore: boolean): Promise<number> {
  if (!landedBefore) return (await vfs.create('', name, 0o644)).handle.fh;
  await writeClosed(vfs, name, 'first version\n');
  await waitFor('the first version on the node', async () => (await wb.drain()) === 0);
  if ((await readFile(join(root, name), 'utf8')) !== 'first version\n') throw new Error(`${name}: the first version is not on the node`);
  return (await vfs.open(name, 1 /* O_WRONLY */)).fh;
}

/** A file written and closed through the mount. */
async function writeClosed(vfs: Rig['vfs'], name: string, body: string): Promise<void> {
  const { handle } = await vfs.create('', name, 0o644);
  await vfs.write(handle.fh, 0, Buffer.from(body));
  await vfs.flush(handle.fh);
  await vfs.release(handle.fh);
}

/** The close and the other call started together, each first in turn (the unlink has fewer steps to its lock on the file). */
function together(round: number, close: () => Promise<void>, other: () => Promise<void>): [Promise<string>, Promise<string>] {
  if (round % 2) {
    const c = outcome(close());
    return [c, outcome(other())];
  }
  const o = outcome(other());
  return [outcome(close()), o];
}

for (const [landedBefore, asyncWriteBack] of VARIANTS) {
  t.test(`a close racing an unlink of the same file (${variant(landedBefore, asyncWriteBack)})`, async (t) => {
    const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack });
    const { root, vfs, wb } = rig;
    await vfs.list('');
    for (let round = 0; round < 10; round++) {
      const name = `f${round}`;
      const fh = await openToWrite(rig, name, landedBefore);
      await vfs.write(fh, 0, Buffer.from(`closed while being removed ${round}\n`));
      const [closing, unlinking] = together(round, () => vfs.flush(fh), () => vfs.unlink('', name));
      t.equal(await unlinking, 'ok', `${name}: the unlink succeeds`);
      t.equal(await closing, 'ok', `${name}: so does the close`);
      await vfs.release(fh);
      await waitFor('nothing queued', async () => (await wb.drain()) === 0);
      await t.rejects(stat(join(root, name)), `${name}: not on the node`);
      t.same((await readdir(root)).filter((n) => n.startsWith(`${name}.`)), [], `${name}: nor a conflict copy of it`);
      await t.rejects(vfs.entry(name), `${name}: nor shown by the mount`);
    }
  });
}

for (const [landedBefore, asyncWriteBack] of VARIANTS) {
  t.test(`a close racing a rename of the same file (${variant(landedBefore, asyncWriteBack)})`, async (t) => {
    const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack });
    const { root, vfs, wb } = rig;
    await vfs.list('');
    for (let round = 0; round < 10; round++) {
      const [name, moved] = [`g${round}`, `moved${round}`];
      const fh = await openToWrite(rig, name, landedBefore);
      const body = `closed while being renamed ${round}\n`;
      await vfs.write(fh, 0, Buffer.from(body));
      const [closing, renaming] = together(round, () => vfs.flush(fh), () => vfs.rename('', name, '', moved));
      t.equal(await renaming, 'ok', `${name}: the rename succeeds`);
      t.equal(await closing, 'ok', `${name}: so does the close`);
      await vfs.release(fh);
      await waitFor('nothing queued', async () => (await wb.drain()) === 0);
      t.equal(await readFile(join(root, moved), 'utf8'), body, `${name}: the new name has the closed content on the node`);
      await t.rejects(stat(join(root, name)), `${name}: the old name is gone there`);
      t.same((await readdir(root)).filter((n) => n.startsWith(`${name}.`) || n.startsWith(`${moved}.`)), [], `${name}: no conflict copy`);
    }
  });
}

for (const newer of [false, true]) {
  t.test(`a rename while a close is journaling the content it took${newer ? ', a newer version written since' : ''}: the close lands first, the old name does not come back (write-back async)`, async (t) => {
    // The close has taken the file's content and is writing its record (held
    // here) when the rename comes. The rename commits what the file holds
    // and moves it on the node: the record must land before, not after
    // (under the old name, or over a newer version as a conflict copy).
    let hold: Promise<void> | undefined;
    let holding: () => void = () => {};
    const held = new Promise<void>((r) => (holding = r));
    const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack: true }, {
      journal: (j) => {
        const add = j.add.bind(j);
        j.add = async (e, durability) => {
          if (hold && e.path === 'taken') {
            holding();
            await hold;
          }
          return add(e, durability);
        };
        return j;
      },
    });
    const { root, vfs, wb } = rig;
    await vfs.list('');
    let release!: () => void;
    hold = new Promise<void>((r) => (release = r));
    const { handle } = await vfs.create('', 'taken', 0o644);
    await vfs.write(handle.fh, 0, Buffer.from('closed while renamed\n'));
    const closing = outcome(vfs.flush(handle.fh));
    await held; // the close's record is being written
    // Through the handle still open: a version newer than the one being queued.
    if (newer) await vfs.write(handle.fh, 0, Buffer.from('written after the close\n'));
    const body = newer ? 'written after the close\n' : 'closed while renamed\n';
    const renaming = outcome(vfs.rename('', 'taken', '', 'moved'));
    // Let the rename go as far as it goes while the record is held, then let the record through.
    const early = await Promise.race([renaming, new Promise<string>((r) => setTimeout(() => r('still waiting'), 500))]);
    release();
    t.equal(early, 'still waiting', 'the rename waits for the close');
    t.equal(await renaming, 'ok', 'the rename succeeds');
    t.equal(await closing, 'ok', 'so does the close');
    await vfs.release(handle.fh);
    await waitFor('nothing queued', async () => (await wb.drain()) === 0);
    t.equal(await readFile(join(root, 'moved'), 'utf8'), body, 'the new name has the latest content on the node');
    await t.rejects(stat(join(root, 'taken')), 'the old name is not on the node');
    t.same((await readdir(root)).sort(), ['moved'], 'nothing else there (no conflict copy)');
  });
}

for (const asyncWriteBack of [false, true]) {
  t.test(`a close while the node has renamed the file and the mount has not yet heard: the close names the new path (write-back ${asyncWriteBack ? 'async' : 'sync'})`, async (t) => {
    // A log written and closed over and over while another process renames
    // it: a close that came while the rename was on its way would name the
    // old path, and its version land where no file is any more (a conflict
    // copy of a file that is gone, or the old name made again).
    const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack });
    const { root, vfs, wb, mesh } = rig;
    await vfs.list('');
    await writeClosed(vfs, 'log', 'first version\n');
    await waitFor('the first version on the node', async () => (await wb.drain()) === 0);
    const fh = (await vfs.open('log', 1 /* O_WRONLY */)).fh;
    await vfs.write(fh, 0, Buffer.from('written before the rename\n'));
    // The rename's answer is held once the node has made it.
    let answered!: () => void;
    const atNode = new Promise<void>((r) => (answered = r));
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    const mutate = mesh.mutate.bind(mesh);
    mesh.mutate = async (...args: Parameters<typeof mesh.mutate>) => {
      const r = await mutate(...args);
      if (args[0].rename) {
        answered();
        await hold;
      }
      return r;
    };
    const renaming = outcome(vfs.rename('', 'log', '', 'log.1'));
    await atNode;
    t.ok((await stat(join(root, 'log.1'))).isFile(), 'the node has renamed the file');
    await vfs.write(fh, 0, Buffer.from('written while the rename was on its way\n'));
    const closing = outcome(vfs.flush(fh));
    const early = await Promise.race([closing, new Promise<string>((r) => setTimeout(() => r('still waiting'), 300))]);
    release();
    t.equal(early, 'still waiting', 'the close waits for the rename');
    t.equal(await renaming, 'ok', 'the rename succeeds');
    t.equal(await closing, 'ok', 'so does the close');
    await vfs.release(fh);
    await waitFor('nothing queued', async () => (await wb.drain()) === 0);
    t.equal(await readFile(join(root, 'log.1'), 'utf8'), 'written while the rename was on its way\n', 'the new name has the closed content on the node');
    t.same((await readdir(root)).sort(), ['log.1'], 'the old name is not there, nor a conflict copy');
  });
}

for (const [landedBefore, asyncWriteBack] of VARIANTS) {
  t.test(`a close racing a rename onto the same file (${variant(landedBefore, asyncWriteBack)})`, async (t) => {
    const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack });
    const { root, vfs, wb } = rig;
    await vfs.list('');
    for (let round = 0; round < 10; round++) {
      const [name, other] = [`h${round}`, `other${round}`];
      await writeClosed(vfs, other, `renamed over the file being closed ${round}\n`);
      const fh = await openToWrite(rig, name, landedBefore);
      await vfs.write(fh, 0, Buffer.from(`closed while replaced ${round}\n`));
      const [closing, renaming] = together(round, () => vfs.flush(fh), () => vfs.rename('', other, '', name));
      t.equal(await renaming, 'ok', `${name}: the rename succeeds`);
      t.equal(await closing, 'ok', `${name}: so does the close`);
      await vfs.release(fh);
      await waitFor('nothing queued', async () => (await wb.drain()) === 0);
      // Whichever landed first, the file the rename brought is what the name holds last.
      t.equal(await readFile(join(root, name), 'utf8'), `renamed over the file being closed ${round}\n`, `${name}: has the renamed file on the node`);
      await t.rejects(stat(join(root, other)), `${name}: the renamed file's old name is gone there`);
      t.same((await readdir(root)).filter((n) => n.startsWith(`${name}.`)), [], `${name}: no conflict copy of the replaced file`);
      t.equal((await vfs.entry(name)).attr.size, `renamed over the file being closed ${round}\n`.length, `${name}: the mount shows the renamed file`);
    }
  });
}

for (const asyncWriteBack of [false, true]) {
  t.test(`a write open racing an unlink or a rename of the file (write-back ${asyncWriteBack ? 'async' : 'sync'})`, async (t) => {
    const { root, mesh, vfs, wb } = await writeBackRig(t, {}, 5_000, { asyncWriteBack });
    await vfs.list('');
    // Two orders, each made certain by holding one side at a real wait of its own:
    // - the open ends during the change: the change is held once the node has made
    //   it, before the mount has heard, while the open runs from start to end;
    // - the change overtakes the open: the open's file is one the mount has no chunk
    //   list for, and the node's answer for it is held until the change has landed.
    let openHeld: { path: string; until: Promise<void>; hit?: boolean } | undefined;
    const getManifest = mesh.getManifest.bind(mesh);
    mesh.getManifest = async (path) => {
      const hold = openHeld?.path === path ? openHeld : undefined;
      if (hold) hold.hit = true;
      const m = await getManifest(path);
      await hold?.until;
      return m;
    };
    let changeHeld: { until: Promise<void>; hit?: boolean } | undefined;
    const mutate = mesh.mutate.bind(mesh);
    mesh.mutate = async (req, hashBytes) => {
      const hold = req.unlink || req.rename ? changeHeld : undefined;
      const r = await mutate(req, hashBytes);
      if (hold) {
        hold.hit = true;
        await hold.until;
      }
      return r;
    };
    for (let round = 0; round < 12; round++) {
      const how = (['unlink', 'rename away', 'rename onto'] as const)[round % 3];
      const overtaken = round >= 6;
      const name = `w${round}`;
      const what = `${name} (${how}${overtaken ? ', overtaking the open' : ''})`;
      // Overtaken: a file of several chunks made on the node and listed, whose chunk list the mount has not got.
      const first = overtaken ? randomBytes(3 << 20).toString('base64') : `on the node ${round}\n`;
      if (overtaken) {
        await writeFile(join(root, name), first);
        // (The node indexes it once its watch tells it.)
        await waitFor(`${name} listed`, async () => {
          await vfs.list('');
          return vfs.meta.get(name)?.attr.size === first.length;
        });
        t.notOk(vfs.meta.get(name)?.chunks, `${name}: the mount has no chunk list for it`);
      } else await writeClosed(vfs, name, first);
      if (how === 'rename onto') await writeClosed(vfs, `x${round}`, `renamed onto it ${round}\n`);
      await waitFor('both on the node', async () => (await wb.drain()) === 0);
      const change = (): Promise<void> => (how === 'unlink' ? vfs.unlink('', name) : how === 'rename away' ? vfs.rename('', name, '', `moved${round}`) : vfs.rename('', `x${round}`, '', name));
      let release = (): void => undefined;
      const until = new Promise<void>((r) => (release = r));
      const open = (): Promise<number | string> =>
        vfs.open(name, 1 /* O_WRONLY */).then(
          (h) => h.fh,
          (e: unknown) => errnoOf(e),
        );
      let fh: number | string;
      if (overtaken) {
        openHeld = { path: name, until };
        const opening = open();
        t.equal(await outcome(change()), 'ok', `${what}: the change succeeds`);
        release();
        fh = await opening;
        t.ok(openHeld.hit, `${what}: the open waited for the change`);
        openHeld = undefined;
      } else {
        changeHeld = { until };
        const changing = outcome(change());
        await waitFor('the change made on the node', async () => !!changeHeld?.hit);
        fh = await open();
        release();
        t.equal(await changing, 'ok', `${what}: the change succeeds`);
        changeHeld = undefined;
      }
      const written = `written after ${round}\n`;
      // Overtaken, the open finds the name gone, or opens the file the rename put there.
      if (overtaken && how !== 'rename onto') t.equal(fh, 'ENOENT', `${what}: the open fails as if it came after`);
      else if (typeof fh !== 'number') t.fail(`${what}: the open failed (${fh})`);
      else {
        await vfs.write(fh, 0, Buffer.from(written));
        t.equal(await outcome(vfs.flush(fh)), 'ok', `${what}: the close succeeds`);
        await vfs.release(fh);
      }
      await waitFor('nothing queued', async () => (await wb.drain()) === 0);
      t.same((await readdir(root)).filter((n) => n.startsWith(`${name}.`)), [], `${what}: no conflict copy`);
      if (how !== 'rename onto') await t.rejects(stat(join(root, name)), `${what}: the name is not brought back on the node`);
      if (how === 'rename away') t.ok((await readFile(join(root, `moved${round}`), 'utf8')) === (overtaken ? first : written), `${what}: the new name has the file`);
      if (how === 'rename onto') {
        const renamed = `renamed onto it ${round}\n`;
        // The writer of the replaced file wrote to a file that is gone; the one that opened the renamed file wrote into it.
        t.equal(await readFile(join(root, name), 'utf8'), overtaken ? written + renamed.slice(written.length) : renamed, `${what}: the name holds the renamed file`);
      }
    }
  });
}

for (const asyncWriteBack of [false, true]) {
  t.test(`a close racing an rmdir of its directory, or a rename onto it (write-back ${asyncWriteBack ? 'async' : 'sync'})`, async (t) => {
    const { root, vfs, wb } = await writeBackRig(t, {}, 5_000, { asyncWriteBack });
    await vfs.list('');
    for (let round = 0; round < 8; round++) {
      const how = round % 2 ? 'rename onto' : 'rmdir';
      const [dir, other] = [`d${round}`, `e${round}`];
      await vfs.mkdir('', dir, 0o755);
      if (how === 'rename onto') await vfs.mkdir('', other, 0o755);
      await waitFor('the directories on the node', async () => (await wb.drain()) === 0);
      const { handle } = await vfs.create(dir, 'x', 0o644);
      const body = `closed while its directory goes ${round}\n`;
      await vfs.write(handle.fh, 0, Buffer.from(body));
      const [closing, changing] = together(round >> 1, () => vfs.flush(handle.fh), () => (how === 'rmdir' ? vfs.rmdir('', dir) : vfs.rename('', other, '', dir)));
      // As on a local disk: the directory holds the file being closed.
      t.equal((await changing).split(':')[0], 'ENOTEMPTY', `${dir} (${how}): refused, the directory is not empty`);
      t.equal(await closing, 'ok', `${dir} (${how}): the close succeeds`);
      await vfs.release(handle.fh);
      await waitFor('nothing queued', async () => (await wb.drain()) === 0);
      t.equal(await readFile(join(root, dir, 'x'), 'utf8'), body, `${dir} (${how}): the file is on the node, in its directory`);
      if (how === 'rename onto') t.ok((await stat(join(root, other))).isDirectory(), `${dir}: the other directory is where it was`);
    }
  });
}

t.test('a close whose commit reached the node, its answer lost, racing an unlink of the file', async (t) => {
  const { root, proxy, vfs, wb } = await writeBackRig(t, {}, 1_500);
  await vfs.list('');
  const { handle } = await vfs.create('', 'unanswered', 0o644);
  await vfs.write(handle.fh, 0, Buffer.from('sent, answer lost\n'));
  // The commit reaches the node and takes effect; its answer never comes back.
  proxy.set('mute');
  const closing = outcome(vfs.flush(handle.fh));
  await waitFor('the file on the node', async () => (await readFile(join(root, 'unanswered'), 'utf8')) === 'sent, answer lost\n', 10_000);
  proxy.set('pass');
  // The unlink waits for the close's attempt (its lock), and must not take the file for one the node never saw.
  t.equal(await outcome(vfs.unlink('', 'unanswered')), 'ok', 'the unlink succeeds');
  t.equal(await closing, 'ok', 'so does the close');
  await vfs.release(handle.fh);
  await waitFor('nothing queued', async () => (await wb.drain()) === 0);
  await t.rejects(stat(join(root, 'unanswered')), 'the file is not on the node');
  t.same((await readdir(root)).filter((n) => n.startsWith('unanswered')), [], 'nor a conflict copy of it');
});

/**
 * A rig with the file `log` ("start\n") on the node, whose journal holds
 * the next record of `log` written after holdNextRecord() until released:
 * a hand-over kept on its way.
 */
async function logRig(t: Test, asyncWriteBack: boolean) {
  let hold: Promise<void> | undefined;
  let holding: () => void = () => {};
  const rig = await writeBackRig(t, {}, 5_000, { asyncWriteBack }, {
    journal: (j) => {
      const add = j.add.bind(j);
      j.add = async (...args: Parameters<typeof add>) => {
        const h = hold;
        if (h && args[0].path === 'log') {
          hold = undefined;
          holding();
          await h;
        }
        return add(...args);
      };
      return j;
    },
  });
  await rig.vfs.list('');
  await writeClosed(rig.vfs, 'log', 'start\n');
  await waitFor('the first version on the node', async () => (await rig.wb.drain()) === 0);
  const holdNextRecord = () => {
    let release!: () => void;
    hold = new Promise<void>((r) => (release = r));
    const held = new Promise<void>((r) => (holding = r));
    return { held, release };
  };
  return { ...rig, holdNextRecord };
}

for (const asyncWriteBack of [false, true]) {
  t.test(`a close while the close before it is still handing over the same file: the later version is based on the earlier one, no conflict (write-back ${asyncWriteBack ? 'async' : 'sync'})`, async (t) => {
    // Two shells appending to one log (`echo >> log`): the writer that
    // closes last hands the file over, and a new writer opens, writes and
    // closes while that hand-over is on its way. Its version is made from
    // the one being handed over, so it is based on it: sent with the base
    // the file had before, it would meet that version on the node as
    // someone else's change, and land as a conflict copy. The hand-over's
    // journal record is held here to keep it on its way.
    const { root, vfs, wb, holdNextRecord } = await logRig(t, asyncWriteBack);
    const a = (await vfs.open('log', 1 /* O_WRONLY */)).fh;
    const b = (await vfs.open('log', 1)).fh;
    await vfs.write(a, 6, Buffer.from('A\n'));
    await vfs.write(b, 8, Buffer.from('B\n'));
    // Each close while the other writer has the file open: the last one to go hands it over.
    await vfs.flush(a);
    await vfs.flush(b);
    await vfs.release(a);
    const { held, release } = holdNextRecord();
    const first = outcome(vfs.release(b));
    await held; // its record is being written
    const c = (await vfs.open('log', 1)).fh;
    await vfs.write(c, 10, Buffer.from('C\n'));
    const second = outcome(vfs.flush(c));
    // The later close goes as far as it goes while the earlier hand-over is held.
    await new Promise((r) => setTimeout(r, 300));
    release();
    t.equal(await first, 'ok', 'the hand-over at the last release succeeds');
    t.equal(await second, 'ok', 'so does the later close');
    await vfs.release(c);
    await waitFor('nothing queued', async () => (await wb.drain()) === 0);
    t.equal(await readFile(join(root, 'log'), 'utf8'), 'start\nA\nB\nC\n', 'the node has every line');
    t.same(await readdir(root), ['log'], 'and no conflict copy');
    t.equal(wb.stats.conflicts, 0, 'the mount counted no conflict');
  });
}

t.test('a file another client replaced on the node, opened to append before the mount heard of it: the writer starts from what the node holds', async (t) => {
  // The mount holds the chunk list of the version it last heard of, not its
  // bytes. The node has replaced that version, and no longer has its chunks.
  // (Here nothing tells the mount of changes but its own calls.)
  const rig = await writeBackRig(t, { log: Buffer.from('first version\n') }, 5_000);
  const { root, vfs, wb, mesh } = rig;
  await vfs.list('');
  const reader = await vfs.open('log', 0 /* O_RDONLY */); // fetches the chunk list
  await vfs.release(reader.fh);
  await writeFile(join(root, 'log'), 'replaced by another client\n');
  await waitFor('the node to index the new version', async () => Number((await mesh.stat('log')).attr!.size) === 27);
  t.equal((await vfs.entry('log')).attr.size, 14, 'the mount has not heard of it');
  const h = await vfs.open('log', 1 | 0o2000 /* O_WRONLY | O_APPEND */);
  t.equal((await vfs.entry('log')).attr.size, 27, 'the open starts from the version the node holds');
  // At the offset the kernel gives an O_APPEND write: the size it held, the old version's.
  t.equal(await outcome(vfs.write(h.fh, 14, Buffer.from('appended\n')).then(() => undefined)), 'ok', 'the append succeeds');
  t.equal(await outcome(vfs.flush(h.fh)), 'ok', 'so does the close');
  await vfs.release(h.fh);
  await waitFor('nothing queued', async () => (await wb.drain()) === 0);
  t.equal(await readFile(join(root, 'log'), 'utf8'), 'replaced by another client\nappended\n', 'the node has the append after the other client\'s version');
  t.same(await readdir(root), ['log'], 'and no conflict copy');
});

t.test('a file another client replaces again and again, each time before the writer has its chunks: the open keeps up, and the append lands after the last version', async (t) => {
  // A log another mount appends to: each version the open learns of is
  // replaced before its chunks are fetched. More times in a row than a fixed
  // count of retries allowed (5): the append then failed with EIO.
  const rig = await writeBackRig(t, { log: Buffer.from('version 0\n') }, 5_000);
  const { root, vfs, wb, mesh } = rig;
  await vfs.list('');
  const reader = await vfs.open('log', 0 /* O_RDONLY */); // fetches the chunk list
  await vfs.release(reader.fh);
  const REPLACEMENTS = 8;
  let replaced = 0;
  const replace = async (): Promise<void> => {
    const body = `version ${++replaced}, ${'x'.repeat(replaced)}\n`;
    await writeFile(join(root, 'log'), body);
    // Polled often: these waits count against the open's time for starting again.
    for (const end = Date.now() + 10_000; Number((await mesh.stat('log')).attr!.size) !== body.length; await new Promise((r) => setTimeout(r, 5))) {
      if (Date.now() > end) throw new Error('the node did not index the new version within 10 s');
    }
  };
  await replace();
  // Every answer about the file is out of date by the time the mount asks for its chunks.
  const getManifest = mesh.getManifest.bind(mesh);
  mesh.getManifest = async (...args: Parameters<typeof getManifest>) => {
    const answer = await getManifest(...args);
    if (replaced < REPLACEMENTS) await replace();
    return answer;
  };
  const h = await vfs.open('log', 1 | 0o2000 /* O_WRONLY | O_APPEND */);
  mesh.getManifest = getManifest;
  t.equal(replaced, REPLACEMENTS, 'the file was replaced while the open asked');
  const last = await readFile(join(root, 'log'), 'utf8');
  t.equal(await outcome(vfs.write(h.fh, 0, Buffer.from('appended\n')).then(() => undefined)), 'ok', 'the append succeeds');
  t.equal(await outcome(vfs.flush(h.fh)), 'ok', 'so does the close');
  await vfs.release(h.fh);
  await waitFor('nothing queued', async () => (await wb.drain()) === 0);
  t.equal(await readFile(join(root, 'log'), 'utf8'), `${last}appended\n`, 'the node has the append after the last version');
  t.same(await readdir(root), ['log'], 'and no conflict copy');
});

t.test('a read open asking the node for the chunk list while the change feed says the file went: the open does not bring the name back', async (t) => {
  // Longer than the largest chunk (4 MiB), so several chunks whatever the bytes: a listing gives
  // a one-chunk file's list with its entry. (3 MiB of random bytes were one chunk now and then.)
  const rig = await writeBackRig(t, { gone: randomBytes(9 << 20) }, 5_000);
  const { root, vfs, mesh } = rig;
  await vfs.list('');
  t.ok(vfs.meta.get('gone') && !vfs.meta.get('gone')!.chunks, 'listed, without its chunk list');
  const getManifest = mesh.getManifest.bind(mesh);
  mesh.getManifest = async (...args: Parameters<typeof getManifest>) => {
    const answer = await getManifest(...args);
    // Another client removes the file; the change feed applies it as the answer travels.
    await rm(join(root, 'gone'));
    await vfs.meta.put('gone', null);
    return answer;
  };
  const h = await vfs.open('gone', 0 /* O_RDONLY */);
  mesh.getManifest = getManifest;
  t.equal(vfs.meta.get('gone'), undefined, 'the removal the feed applied stands');
  await vfs.release(h.fh);
});

t.test('a new file the node refuses at close (another client made a directory there) is not shown any more', async (t) => {
  const rig = await writeBackRig(t, {}, 5_000);
  const { root, vfs, mesh } = rig;
  await vfs.list('');
  const { handle } = await vfs.create('', 'taken', 0o644);
  await vfs.write(handle.fh, 0, Buffer.from('refused\n'));
  await mkdir(join(root, 'taken'));
  await waitFor('the node to index the directory', async () => ((await mesh.stat('taken')).attr!.mode & 0o170000) === 0o040000);
  t.match(await outcome(vfs.flush(handle.fh)), /^EISDIR/, "the close fails with the node's errno");
  await vfs.release(handle.fh);
  const shown = await vfs.entry('taken').catch(() => undefined);
  t.notOk(shown && (shown.attr.mode & 0o170000) === 0o100000, 'the mount does not show the refused file');
  t.ok((await stat(join(root, 'taken'))).isDirectory(), "the node's directory is untouched");
});

for (const asyncWriteBack of [false, true]) {
  t.test(`the last release of a file while two new writers' hand-over waits behind its own: their lines land too (write-back ${asyncWriteBack ? 'async' : 'sync'})`, async (t) => {
    // Round after round of two shells appending: both writers of a round
    // close while the other has the file open, so the last release hands it
    // over. The next round's last release hands over what that round wrote,
    // after the one before is over: the copy must still be there for it.
    const { root, vfs, wb, holdNextRecord } = await logRig(t, asyncWriteBack);
    /** Two writers open the file, each writes a line and closes while the other has it open. */
    const round = async (lines: [string, number][], last: (release: () => Promise<void>) => void): Promise<void> => {
      const fhs = [(await vfs.open('log', 1 /* O_WRONLY */)).fh, (await vfs.open('log', 1)).fh];
      for (const [i, [line, at]] of lines.entries()) await vfs.write(fhs[i]!, at, Buffer.from(line));
      for (const fh of fhs) await vfs.flush(fh);
      await vfs.release(fhs[0]!);
      last(() => vfs.release(fhs[1]!));
    };
    const { held, release } = holdNextRecord();
    let first!: Promise<string>;
    await round([['A\n', 6], ['B\n', 8]], (r) => (first = outcome(r())));
    await held; // the first round's hand-over is on its way
    let second!: Promise<string>;
    await round([['C\n', 10], ['D\n', 12]], (r) => (second = outcome(r())));
    release();
    t.equal(await first, 'ok', "the first round's last release");
    t.equal(await second, 'ok', "the second round's");
    await waitFor('nothing queued', async () => (await wb.drain()) === 0);
    t.equal(await readFile(join(root, 'log'), 'utf8'), 'start\nA\nB\nC\nD\n', 'the node has every line');
    t.same(await readdir(root), ['log'], 'and no conflict copy');
    t.equal(wb.stats.failed, 0, 'no hand-over failed');
  });
}

t.test('a create that opens an existing file checks its permission with the ids the kernel has (--idmap user)', async (t) => {
  const rig = await writeBackRig(t, {}, 5_000);
  const { root, vfs } = rig;
  await writeFile(join(root, 'read-only'), 'not for writing\n', { mode: 0o444 });
  await chmod(join(root, 'read-only'), 0o444);
  const st = await stat(join(root, 'read-only'));
  // The mount runs as 4242; the node as the file's owner, which the kernel is shown as 4242.
  const node = { uid: st.uid, gid: st.gid };
  vfs.owners = OwnerMap.of('user', { uid: 4242, gid: 4242 }, node);
  await waitFor('the mount to list it', async () => (await vfs.list(''), !!(await vfs.entry('read-only').catch(() => undefined))));
  const O_WRONLY_CREAT = 0o1 | 0o100;
  // The caller is 4242, which reaches the VFS as the node's user: root there when the node runs as root, but not root here.
  t.equal((await outcome(vfs.create('', 'read-only', 0o644, node.uid, node.gid, O_WRONLY_CREAT).then(() => undefined))).split(':')[0], 'EACCES', "its owner may not write a file mode 0444, even when the node's user is root");
  t.equal(await readFile(join(root, 'read-only'), 'utf8'), 'not for writing\n');
  // Nor read one mode 0222 through a create that opens it for reading and writing.
  await writeFile(join(root, 'write-only'), 'not for reading\n', { mode: 0o222 });
  await chmod(join(root, 'write-only'), 0o222);
  await waitFor('the mount to list it', async () => (await vfs.list(''), !!(await vfs.entry('write-only').catch(() => undefined))));
  t.equal((await outcome(vfs.create('', 'write-only', 0o644, node.uid, node.gid, 0o2 | 0o100).then(() => undefined))).split(':')[0], 'EACCES', 'O_RDWR needs read permission too');
});

t.test("a create of a name another client made since the kernel's lookup: opens that file (without O_EXCL), as a local disk does", async (t) => {
  const rig = await writeBackRig(t, {}, 5_000);
  const { root, vfs, wb } = rig;
  await vfs.list('');
  // The node has the file; the mount hears of it (here: by listing) after the kernel's lookup found nothing.
  await writeFile(join(root, 'theirs'), 'theirs\n');
  await waitFor('the mount to list it', async () => (await vfs.list(''), !!(await vfs.entry('theirs').catch(() => undefined))));
  const O_WRONLY_CREAT = 0o1 | 0o100;
  t.equal((await outcome(vfs.create('', 'theirs', 0o644, 0, 0, O_WRONLY_CREAT | 0o200 /* O_EXCL */).then(() => undefined))).split(':')[0], 'EEXIST', 'with O_EXCL: EEXIST');
  t.equal((await outcome(vfs.create('', 'theirs', 0o644, 1000, 1000, O_WRONLY_CREAT).then(() => undefined))).split(':')[0], 'EACCES', 'another user may not write a file mode 0644 of root: EACCES, as an open would say');
  const { handle } = await vfs.create('', 'theirs', 0o644, 0, 0, O_WRONLY_CREAT | 0o2000 /* O_APPEND */);
  await vfs.write(handle.fh, 0, Buffer.from('mine\n'));
  t.equal(await outcome(vfs.flush(handle.fh)), 'ok', 'the close succeeds');
  await vfs.release(handle.fh);
  await waitFor('nothing queued', async () => (await wb.drain()) === 0);
  t.equal(await readFile(join(root, 'theirs'), 'utf8'), 'theirs\nmine\n', 'the append went after their content');
  t.same(await readdir(root), ['theirs'], 'no conflict copy');
});

t.test("a create that opens an existing file gives a member of the file's group the group's bits, by a supplementary group too", { skip: process.getuid?.() !== 0 && "changing a file's owner needs root" }, async (t) => {
  const rig = await writeBackRig(t, {}, 5_000);
  const { root, vfs, wb } = rig;
  // Root's file, group 2000 may write it, others may not (the node runs as root here and keeps the owner).
  await writeFile(join(root, 'shared'), 'shared\n');
  await chown(join(root, 'shared'), 0, 2000);
  await chmod(join(root, 'shared'), 0o664);
  await waitFor('the mount to list it', async () => (await vfs.list(''), (await vfs.entry('shared').catch(() => undefined))?.attr.gid === 2000));
  const O_WRONLY_CREAT_APPEND = 0o1 | 0o100 | 0o2000;
  let asked = 0;
  const create = (uid: number, gid: number, groups?: readonly number[]) =>
    outcome(
      vfs.create('', 'shared', 0o644, uid, gid, O_WRONLY_CREAT_APPEND, () => (asked++, groups)).then(async ({ handle }) => {
        await vfs.write(handle.fh, 0, Buffer.from(`by ${uid}\n`));
        await vfs.flush(handle.fh);
        await vfs.release(handle.fh);
      }),
    );
  t.equal((await create(1000, 1000)).split(':')[0], 'EACCES', 'uid 1000 of group 1000, its groups not to be had: the others bits, no writing');
  t.equal((await create(1000, 1000, [1000, 3000])).split(':')[0], 'EACCES', 'nor with supplementary groups that do not include 2000');
  t.equal(await create(1000, 1000, [1000, 2000]), 'ok', 'with 2000 among its supplementary groups: the group may write');
  t.equal(asked, 3, 'the groups were asked for each time they decided');
  t.equal(await create(1001, 2000), 'ok', 'by its own group');
  t.equal(await create(0, 0), 'ok', 'by root');
  t.equal(asked, 3, 'and not asked for when they could not change the answer');
  await waitFor('nothing queued', async () => (await wb.drain()) === 0);
  t.equal(await readFile(join(root, 'shared'), 'utf8'), 'shared\nby 1000\nby 1001\nby 0\n', 'the node has the three appends');

  // Mounted with --idmap user: the node's group (0 here) is shown as the mount's (4242), and the
  // supplementary groups are the kernel's, compared with the group as the kernel is shown it.
  await writeFile(join(root, 'nodes'), 'nodes\n');
  await chmod(join(root, 'nodes'), 0o664);
  const st = await stat(join(root, 'nodes'));
  vfs.owners = OwnerMap.of('user', { uid: 4242, gid: 4242 }, { uid: st.uid, gid: st.gid });
  await waitFor('the mount to list it', async () => (await vfs.list(''), !!(await vfs.entry('nodes').catch(() => undefined))));
  const o = vfs.owners;
  // The caller is the kernel's 1000 of group 1000, as the driver hands it over (the node's ids).
  const swapped = (groups: readonly number[]) => outcome(vfs.create('', 'nodes', 0o644, o.uid(1000), o.gid(1000), O_WRONLY_CREAT_APPEND, () => groups).then(({ handle }) => vfs.release(handle.fh)));
  t.equal((await swapped([st.gid])).split(':')[0], 'EACCES', "the node's own group id among the kernel's groups: not the file's group as the kernel sees it");
  t.equal(await swapped([4242]), 'ok', 'the group the kernel is shown (4242) among them: the group may write');
});
