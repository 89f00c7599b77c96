// NodeCapacity: statfs answered from memory, refreshed in the background,
// the last answer kept when a node does not answer.
import t from 'tap';
import { NodeCapacity, UNKNOWN_CAPACITY } from '../src/mount/capacity.js';
import type { WStatFsReplyOut } from '../src/wire/types.js';

const reply = (blocksFree: number): WStatFsReplyOut => ({ blockSize: 4096, blocks: 1000, blocksFree, blocksAvailable: blocksFree - 10, files: 500, filesFree: 400, nameMax: 255 });
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('the first statfs waits for the node; later ones answer from memory until the answer is old', async (t) => {
  const answers = [reply(700), reply(600)];
  let asked = 0;
  const cap = new NodeCapacity(async () => {
    asked++;
    await tick(5);
    return answers.shift()!;
  }, 50);
  t.match(await cap.get(), { bsize: 4096, blocks: 1000, bfree: 700, bavail: 690, files: 500, ffree: 400, namemax: 255 }, 'first answer');
  t.equal((await cap.get()).bfree, 700, 'asked again at once: from memory');
  t.equal(asked, 1, 'one question so far');
  await tick(60);
  t.equal((await cap.get()).bfree, 700, 'an old answer is still given while the next one is asked for');
  await tick(20);
  t.equal(asked, 2, 'the old answer was refreshed once');
  t.equal((await cap.get()).bfree, 600, 'then the new answer');
});

t.test('with no node answering, the last answer stays; with none ever, a large free filesystem', async (t) => {
  let up = false;
  const cap = new NodeCapacity(async () => {
    if (!up) throw new Error('EHOSTDOWN');
    return reply(300);
  }, 0);
  t.same(await cap.get(), UNKNOWN_CAPACITY, 'no answer yet');
  up = true;
  await cap.get(); // starts a refresh
  await tick(5);
  t.equal((await cap.get()).bfree, 300, 'answered once the node is up');
  up = false;
  await cap.get();
  await tick(5);
  t.equal((await cap.get()).bfree, 300, 'kept while the node is down');
});

t.test('a node that cannot answer is asked again only once an answer would have aged', async (t) => {
  let asked = 0;
  const cap = new NodeCapacity(async () => {
    asked++;
    throw new Error('UNIMPLEMENTED');
  }, 50);
  for (let i = 0; i < 5; i++) t.same(await cap.get(), UNKNOWN_CAPACITY);
  t.equal(asked, 1, 'five statfs calls, one question');
  await tick(60);
  await cap.get();
  await tick(5);
  t.equal(asked, 2, 'asked again after 50 ms');
});
