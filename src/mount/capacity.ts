// What statfs(2) on the mount reports: the filesystem the workspace lives on,
// as the node last described it. df and tools that check for room before
// they write ask often, so a statfs is answered from memory, and an answer
// MAX_AGE_MS old or older is refreshed in the background. Only the first statfs
// waits for a node. While none has answered, the mount reports a large,
// mostly free filesystem, so such tools go on; a node without room still
// refuses a write with ENOSPC.
import { log } from '../log.js';
import type { WStatFsReplyOut } from '../wire/types.js';

export interface Capacity {
  /** The unit of the block counts. */
  bsize: number;
  blocks: number;
  bfree: number;
  /** Free to unprivileged users. */
  bavail: number;
  files: number;
  ffree: number;
  namemax: number;
}

/** Reported until a node has answered. */
export const UNKNOWN_CAPACITY: Capacity = { bsize: 4096, blocks: 2 ** 31, bfree: 2 ** 30, bavail: 2 ** 30, files: 2 ** 31, ffree: 2 ** 30, namemax: 255 };

/** How long an answer is used before the next statfs asks again (in the background). */
const MAX_AGE_MS = 2000;

export class NodeCapacity {
  private last?: Capacity;
  private at = 0;
  private asked = false;
  private asking?: Promise<void>;

  constructor(
    private readonly ask: () => Promise<WStatFsReplyOut>,
    private readonly maxAgeMs = MAX_AGE_MS,
  ) {}

  async get(): Promise<Capacity> {
    if (!this.asked) {
      this.asked = true;
      await this.refresh();
    } else if (Date.now() - this.at >= this.maxAgeMs) {
      void this.refresh();
    }
    return this.last ?? UNKNOWN_CAPACITY;
  }

  private refresh(): Promise<void> {
    this.asking ??= this.ask()
      .then(
        (r) => {
          this.last = { bsize: r.blockSize, blocks: r.blocks, bfree: r.blocksFree, bavail: r.blocksAvailable, files: r.files, ffree: r.filesFree, namemax: r.nameMax };
          this.at = Date.now();
        },
        (err: Error) => {
          // Asked again after as long as an answer lasts: a node without the call is not asked at every statfs.
          this.at = Date.now();
          log.debug({ err: err.message }, 'no node told the size of its filesystem; statfs keeps its last answer');
        },
      )
      .finally(() => (this.asking = undefined));
    return this.asking;
  }
}
