// A directory's entries made durable (after a rename or link into it), with
// concurrent callers sharing the fsyncs.
import { open } from 'node:fs/promises';
import { constants as C } from 'node:fs';

/**
 * Makes a directory's entries durable. Callers that arrive while an fsync of
 * the same directory runs share the next one (it starts after they arrived,
 * so it covers their renames): a burst of commits into one directory costs
 * two directory fsyncs, not one each.
 */
export function fsyncDir(dir: string): Promise<void> {
  let g = dirSyncs.get(dir);
  if (!g) dirSyncs.set(dir, (g = new DirSync(dir)));
  return g.sync();
}

const dirSyncs = new Map<string, DirSync>();

class DirSync {
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;

  constructor(private readonly dir: string) {}

  sync(): Promise<void> {
    if (!this.running) return this.start();
    this.queued ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.start();
      });
    return this.queued;
  }

  private start(): Promise<void> {
    const p: Promise<void> = fsyncDirNow(this.dir).finally(() => {
      if (this.running !== p) return;
      this.running = undefined;
      if (!this.queued) dirSyncs.delete(this.dir);
    });
    this.running = p;
    return p;
  }
}

async function fsyncDirNow(dir: string): Promise<void> {
  const d = await open(dir, C.O_RDONLY | C.O_DIRECTORY);
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
